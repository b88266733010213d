//! The caller's own memory (`Vec<u8>`, `Box<[u8]>`, `BytesMut`), sub-range views, the zero-copy
//! way out (`into_bytes`) and pool backpressure (`acquire_timeout`, `waits`, the long-wait
//! warning), on every engine.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrite_io::{Buf, BufPool, BufResult, Completed, EngineChoice, IoEngine, OpenOptions};

fn ok<T: std::fmt::Debug>(result: BufResult<T, Buf<Completed>>) -> (T, Buf<Completed>) {
    match result.into_result() {
        Ok(pair) => pair,
        Err((e, _)) => panic!("operation failed: {e}"),
    }
}

/// `len` zeroed bytes at a 4096-aligned address (for `O_DIRECT`).
fn aligned(len: usize) -> bytes::BytesMut {
    let mut bytes = bytes::BytesMut::zeroed(len + 4096);
    let skip = bytes.as_ptr().align_offset(4096);
    bytes::Buf::advance(&mut bytes, skip);
    bytes.truncate(len);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_memory_round_trips_without_copies() {
    let dir = common::tempdir();
    for (name, engine) in common::engines(&common::config(EngineChoice::Auto)) {
        let file = engine.open(dir.path().join(name), &OpenOptions::new().create(true)).await.unwrap();
        // A 100-byte record from a Vec: exactly 100 bytes go out, no slot is used.
        let record: Vec<u8> = (0..100u8).collect();
        let ptr = record[..].as_ptr();
        let (n, back) = ok(engine.write_at(&file, Buf::from(record), 0).await);
        assert_eq!((n, file.size().unwrap()), (100, 100), "{name}");
        assert_eq!(engine.pool().available(), engine.pool().capacity(), "{name}: no slot used");
        let vec = back.into_vec();
        assert_eq!(vec.as_ptr(), ptr, "{name}: the same Vec comes back");
        // Box<[u8]> and BytesMut, appended after it.
        let boxed: Box<[u8]> = vec![0xB0; 28].into_boxed_slice();
        drop(ok(engine.write_all_at(&file, Buf::from(boxed), 100).await));
        let bytes = bytes::BytesMut::from(&[0xC0; 128][..]);
        drop(ok(engine.write_durable_at(&file, Buf::from(bytes), 128).await));
        // Read it all back into a Vec, then into a BytesMut and out as Bytes without a copy.
        let (n, back) = ok(engine.read_at(&file, Buf::from(vec![0; 300]), 0).await);
        assert_eq!((n, back.len()), (256, 256), "{name}: the view is what arrived");
        assert_eq!(&back[..100], &vec[..], "{name}");
        assert!(back[100..128].iter().all(|&b| b == 0xB0) && back[128..].iter().all(|&b| b == 0xC0), "{name}");
        let into = bytes::BytesMut::zeroed(256);
        drop(ok(engine.read_exact_at(&file, Buf::from(into), 0).await));
        let (_, back) = ok(engine.read_at(&file, Buf::from(bytes::BytesMut::zeroed(256)), 0).await);
        let ptr = back[..].as_ptr();
        let shared = back.into_bytes();
        assert_eq!((shared.as_ptr(), shared.len()), (ptr, 256), "{name}: into_bytes does not copy");
        // Vectored, mixing caller memory and a slot.
        let bufs = vec![Buf::from(vec![0; 50]), engine.pool().acquire().await.slice(..50)];
        let (result, back) = engine.read_vectored_at(&file, bufs, 90).await.into_parts();
        assert_eq!(result.unwrap(), 100, "{name}");
        assert_eq!(&back[0][..10], &vec[90..], "{name}");
        assert!(back[1].iter().all(|&b| b == 0xB0 || b == 0xC0), "{name}");
        drop(back);
        common::assert_pool_full(&engine);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_read_into_and_write_from_part_of_a_slot() {
    let dir = common::tempdir();
    for (name, engine) in common::engines(&common::config(EngineChoice::Auto)) {
        let file = engine.open(dir.path().join(name), &OpenOptions::new().create(true)).await.unwrap();
        let mut page = engine.acquire().await;
        page.fill(0x11);
        page[1000..1010].copy_from_slice(b"0123456789");
        // Write bytes 1000..1010 of the slot at file offset 5: no set_len, no copy.
        let (n, page) = ok(engine.write_fixed_at(&file, page.slice(1000..1010), 5).await);
        assert_eq!((n, file.size().unwrap()), (10, 15), "{name}");
        // Read file bytes 5..15 into bytes 20..30 of the same slot, the rest untouched.
        let page = page.try_into_registered(&*engine).unwrap().slice(20..30);
        let (n, page) = ok(engine.read_fixed_at(&file, page, 5).await);
        assert_eq!((n, page.range()), (10, 20..30), "{name}");
        assert_eq!(&page[..], b"0123456789", "{name}");
        let whole = page.into_free().unslice();
        assert_eq!(whole.len(), whole.capacity(), "{name}");
        assert!(whole[..20].iter().chain(&whole[30..1000]).all(|&b| b == 0x11), "{name}: outside the view");
        // A short read narrows the view to what arrived; it keeps its start.
        let (n, short) = ok(engine.read_at(&file, whole.slice(100..200), 10).await);
        assert_eq!((n, short.range()), (5, 100..105), "{name}");
        // set_len moves the end of a view, within the room after its start.
        let mut view = short.into_free();
        view.set_len(8092).unwrap();
        assert!(matches!(view.set_len(8093), Err(ferrite_io::Error::Length { len: 8093, capacity: 8092 })));
        drop(view);
        common::assert_pool_full(&engine);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn into_bytes_returns_the_slot_when_the_last_clone_drops() {
    let dir = common::tempdir();
    for (name, engine) in common::engines(&common::config(EngineChoice::Auto)) {
        let file = engine.open(dir.path().join(name), &OpenOptions::new().create(true)).await.unwrap();
        drop(ok(engine.write_at(&file, Buf::from(vec![0x42; 8192]), 0).await));
        let (_, page) = ok(engine.read_fixed_at(&file, engine.acquire().await, 0).await);
        let ptr = page[..].as_ptr();
        let bytes = page.into_bytes();
        assert_eq!(bytes.as_ptr(), ptr, "{name}: the slot itself, not a copy");
        let head = bytes.slice(..16);
        drop(bytes);
        assert_eq!(engine.pool().available(), engine.pool().capacity() - 1, "{name}: still shared");
        assert!(head.iter().all(|&b| b == 0x42));
        drop(head);
        common::assert_pool_full(&engine);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_io_checks_the_alignment_of_caller_memory() {
    let dir = common::tempdir();
    let path = dir.path().join("direct");
    std::fs::write(&path, vec![0x5A; 65536]).unwrap();
    for (name, engine) in common::engines(&common::config(EngineChoice::Auto)) {
        let file = engine.open(&path, &OpenOptions::new().direct(true)).await.unwrap();
        // Aligned caller memory works as a slot does.
        let (n, back) = ok(engine.read_at(&file, Buf::from(aligned(8192)), 4096).await);
        assert_eq!(n, 8192, "{name}");
        assert!(back.iter().all(|&b| b == 0x5A), "{name}");
        drop(ok(engine.write_at(&file, back.into_free(), 8192).await));
        // Memory at an odd address is refused, not silently used; the buffer comes back whole.
        let odd = Buf::from(vec![7u8; 4097]).slice(1..);
        let (result, back) = engine.write_at(&file, odd, 0).await.into_parts();
        assert!(result.is_err(), "{name}: an O_DIRECT write from an odd address must fail");
        assert_eq!((back.range(), back[0]), (1..4097, 7), "{name}");
        let odd = back.into_free();
        let (result, _) = engine.read_exact_at(&file, odd, 0).await.into_parts();
        assert!(result.is_err(), "{name}");
    }
}

/// A `tracing` subscriber for this thread that writes into a shared string.
fn capture() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(log.clone());
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || sink.clone()).finish();
    (log, tracing::subscriber::set_default(subscriber))
}

#[test]
fn a_long_acquire_warns_once_and_counts_as_a_wait() {
    let (log, _guard) = capture();
    // Current-thread runtime: the waiting future runs on this thread, under the subscriber.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let pool = BufPool::new(1, 4096).unwrap();
        let held = pool.acquire().await;
        assert_eq!(pool.waits(), 0, "no wait yet");
        // A short wait times out quietly.
        assert!(pool.acquire_timeout(Duration::from_millis(100)).await.is_none());
        assert_eq!(pool.waits(), 1);
        assert!(log.lock().unwrap().is_empty(), "no warning for a short wait");
        // A wait past one second warns, once, however long it goes on.
        assert!(pool.acquire_timeout(Duration::from_millis(2300)).await.is_none());
        assert_eq!(pool.waits(), 2);
        let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("BufPool::acquire is waiting").count(), 1, "{text}");
        assert!(text.contains("WARN") && text.contains("buffers=1"), "{text}");
        // With a buffer back, acquire_timeout returns it at once and does not count a wait.
        drop(held);
        assert!(pool.acquire_timeout(Duration::from_millis(1)).await.is_some());
        assert_eq!(pool.waits(), 2);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_timeout_gets_a_buffer_returned_while_it_waits() {
    let pool = BufPool::new(1, 4096).unwrap();
    let held = pool.acquire().await;
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire_timeout(Duration::from_secs(10)).await.map(|b| b.index()) }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(held);
    let got = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken, not timed out");
    assert_eq!(got.unwrap(), Some(0));
    assert_eq!(pool.waits(), 1);
}

/// Polls `future` to completion on this thread with a waker that unparks it: an executor that
/// is not tokio.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park_timeout(Duration::from_secs(1));
    }
}

#[test]
fn acquire_waits_outside_a_tokio_runtime() {
    let pool = BufPool::new(1, 4096).unwrap();
    let held = pool.try_acquire().unwrap();
    let returner = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
    });
    // No tokio context here: the wait must not need tokio's timer.
    let buf = block_on(pool.acquire());
    assert_eq!((buf.index(), pool.waits()), (0, 1));
    returner.join().unwrap();
}

/// `acquire_timeout` with the largest timeout a caller can type is a wait without a deadline:
/// no overflow panic, and the buffer that comes back ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_timeout_waits_without_a_deadline() {
    let pool = ferrite_io::BufPool::new(1, 4096).unwrap();
    let held = pool.acquire_timeout(std::time::Duration::MAX).await.expect("a free buffer");
    let giver = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        drop(held);
    });
    let waited =
        tokio::time::timeout(std::time::Duration::from_secs(20), pool.acquire_timeout(std::time::Duration::MAX));
    assert!(waited.await.expect("watchdog").is_some(), "the returned buffer ends the wait");
    giver.await.unwrap();
}
