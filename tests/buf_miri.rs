//! The buffer pool, the typestate transitions that need no engine, and the page format on pool
//! buffers: small enough to run under miri, which checks every unsafe access of the pool
//! (`cargo +nightly miri test --test buf_miri`, in `.ci/run`). They run in the normal suite too.

use std::sync::Arc;

use ferrite_io::hybridlog::page::{self, PAYLOAD_START, PageError};
use ferrite_io::{Buf, BufPool, Free};

#[test]
fn pool_accounting_and_bytes() {
    let pool = BufPool::new(4, 4096).unwrap();
    let mut held: Vec<Buf<Free>> = (0..4).map(|_| pool.try_acquire().unwrap()).collect();
    assert!(pool.try_acquire().is_none(), "every slot is out");
    assert_eq!(pool.available(), 0);
    for (i, buf) in held.iter_mut().enumerate() {
        assert_eq!((buf.len(), buf.capacity()), (4096, 4096));
        buf.fill(i as u8 + 1);
    }
    // Each slot is its own memory.
    for (i, buf) in held.iter().enumerate() {
        assert!(buf.iter().all(|&b| b == i as u8 + 1));
    }
    let mut first = held.remove(0);
    first.set_len(100).unwrap();
    assert_eq!(first.len(), 100);
    assert!(first.set_len(4097).is_err(), "past capacity");
    first.set_len(4096).unwrap();
    assert_eq!(first[4000], 1, "bytes past the length keep what they held");
    drop(first);
    assert_eq!(pool.available(), 1);
    let again = pool.try_acquire().unwrap();
    assert_eq!(again[0], 1, "a returned slot keeps its bytes");
    drop(again);
    drop(held);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn buffers_move_between_threads() {
    let pool = Arc::new(BufPool::new(8, 4096).unwrap());
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for round in 0..3u8 {
                    let mut buf = pool.try_acquire().expect("two slots per thread");
                    buf.fill(t ^ round);
                    let moved = std::thread::spawn(move || buf).join().unwrap();
                    assert!(moved.iter().all(|&b| b == t ^ round));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(pool.available(), 8);
    // The pool outlives none of its buffers: dropping the handle first is fine.
    let buf = pool.try_acquire().unwrap();
    drop(pool);
    assert_eq!(buf.len(), 4096);
}

#[test]
fn page_format_on_pool_buffers() {
    let pool = BufPool::new(2, 8192).unwrap();
    let mut buf = pool.try_acquire().unwrap();
    buf[PAYLOAD_START..PAYLOAD_START + 700].fill(0x42);
    page::seal(&mut buf, 8192, 5, 700, 0, true).unwrap();
    let info = page::verify(&buf, 8192).unwrap();
    assert!(info.is_open());
    assert_eq!(&buf[info.payload()], &[0x42; 700][..]);
    // The next flush of the open page, torn: the previous one survives.
    let mut next = pool.try_acquire().unwrap();
    next.copy_from_slice(&buf);
    next[PAYLOAD_START + 700..PAYLOAD_START + 3000].fill(0x43);
    page::seal(&mut next, 8192, 6, 3000, 700, false).unwrap();
    next[PAYLOAD_START + 2048..PAYLOAD_START + 2560].fill(0);
    assert_eq!(page::verify(&next, 8192).unwrap().payload_len, 700);
    next[PAYLOAD_START + 100] ^= 1;
    assert!(matches!(page::verify(&next, 8192), Err(PageError::Checksum { .. })));
}
