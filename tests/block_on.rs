//! `UringEngine::block_on`: a thread with no runtime drives the engine's futures itself and
//! sleeps inside `io_uring_enter` while its operations are in flight. Every test runs its body on
//! a thread of its own under a watchdog, so a lost wake-up fails instead of hanging.
//!
//! The operations do not finish inside their submit: O_DIRECT reads go to the device and
//! `fdatasync` goes to io-wq, so their completions arrive while the thread waits in the ring.

#![cfg(all(feature = "io-uring", target_os = "linux"))]

mod common;

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use ferrite_io::{Batch, File, IoEngine, IoEngineConfig, UringEngine};

const PAGE: usize = 4096;
const WATCHDOG: Duration = Duration::from_secs(20);

fn engine() -> Arc<UringEngine> {
    let config =
        IoEngineConfig { registered_buffers: 16, buffer_size: PAGE, ..common::config(ferrite_io::EngineChoice::Uring) };
    Arc::new(UringEngine::new(&config).expect("io_uring must work on the test machines"))
}

/// A file of 64 pages, page `i` filled with byte `i`, opened for O_DIRECT without a runtime.
fn data_file(dir: &tempfile::TempDir) -> File {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.path().join("data");
    let bytes: Vec<u8> = (0..64u8).flat_map(|i| std::iter::repeat_n(i, PAGE)).collect();
    std::fs::write(&path, bytes).unwrap();
    let std = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(&path).unwrap();
    File::from_std(std, true)
}

/// Runs `body` on a thread of its own; fails the test if it does not finish within the watchdog.
fn watched<T: Send + 'static>(what: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)));
    });
    match finished.recv_timeout(WATCHDOG) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what}: never finished (watchdog after {WATCHDOG:?})"),
    }
}

/// Waits until every buffer is back in the pool (an abandoned operation returns its buffer at
/// its completion, which the engine reaps on its own).
fn wait_pool_full(engine: &UringEngine) {
    let deadline = Instant::now() + WATCHDOG;
    while engine.pool().available() != engine.pool().capacity() {
        assert!(Instant::now() < deadline, "a buffer never came back: {:?}", engine.pool());
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn operations_complete_while_the_thread_waits_in_the_ring() {
    let engine = engine();
    let dir = common::tempdir();
    let file = data_file(&dir);
    let stats = watched("reads, a write, syncs and a batch", move || {
        engine.block_on(async {
            read_pages(&engine, &file, 0..64).await;
            let mut buf = engine.acquire().await;
            buf.fill(0xEE);
            engine.write_all_at(&file, buf, 63 * PAGE as u64).await.0.unwrap();
            engine.sync_data(&file).await.unwrap();
            engine.sync_all(&file).await.unwrap();
            let mut batch = Batch::with_capacity(4);
            for page in [1u64, 20, 40, 63] {
                batch.read_at(&file, engine.acquire().await, page * PAGE as u64);
            }
            let results: Vec<_> = engine.submit_batch(&mut batch).await.collect();
            for (result, page) in results.into_iter().zip([1u8, 20, 40, 0xEE]) {
                let (n, buf) = result.into_parts();
                assert_eq!(n.unwrap(), PAGE);
                assert!(buf.iter().all(|&b| b == page), "batch page {page}");
            }
        });
        engine.stats()
    });
    assert!(stats.later_completions > 0, "no completion arrived after its submit: {stats:?}");
    assert!(!stats.completion_thread, "the completion thread served a wait that the ring's own should have: {stats:?}");
}

#[test]
fn a_wake_from_another_thread_ends_the_wait() {
    let engine = engine();
    let dir = common::tempdir();
    let file = data_file(&dir);
    watched("a channel alone, then a channel beside a read", move || {
        // Nothing of the engine in flight: the thread parks until the sender wakes it.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(7u32).unwrap();
        });
        assert_eq!(engine.block_on(rx).unwrap(), 7);
        sender.join().unwrap();
        // A read and a channel at once: both finish, whichever wakes the thread first.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sender = std::thread::spawn(move || tx.send(9u32).unwrap());
        let (read, value) = engine.block_on(async {
            let buf = engine.acquire().await;
            let read = engine.read_fixed_at(&file, buf, 5 * PAGE as u64);
            join(read, rx).await
        });
        sender.join().unwrap();
        assert_eq!(value.unwrap(), 9);
        let (result, buf) = read.into_parts();
        assert_eq!(result.unwrap(), PAGE);
        assert!(buf.iter().all(|&b| b == 5));
    });
}

/// The thread sleeps in the ring while a read of an empty pipe is in flight, a read whose
/// completion does not come until the end: the wake-up from the channel must end that sleep
/// (through the ring's tick) or nothing ever will.
#[test]
fn a_wake_from_elsewhere_ends_a_sleep_whose_operation_does_not_complete() {
    let engine = engine();
    watched("a channel beside a read of an empty pipe", move || {
        let (reader, writer) = std::io::pipe().unwrap();
        let pipe = File::from_std(std::fs::File::from(std::os::fd::OwnedFd::from(reader)), false);
        // Each round leaves its read (and buffer) in flight; the pool holds 16.
        for round in 0..8u32 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let sender = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                tx.send(round).unwrap();
            });
            let value = engine.block_on(async {
                let mut buf = engine.acquire().await;
                buf.set_len(1).unwrap();
                let read = std::pin::pin!(engine.read_fixed_at(&pipe, buf, 0));
                first(read, rx).await
            });
            sender.join().unwrap();
            assert_eq!(value, Some(round), "round {round}");
        }
        // The reads dropped in flight get their bytes now, and their buffers go back.
        std::io::Write::write_all(&mut std::fs::File::from(std::os::fd::OwnedFd::from(writer)), &[1; 8]).unwrap();
        wait_pool_full(&engine);
    });
}

/// Threads under `block_on` and a runtime's tasks share one ring, each reaping the others'
/// completions at times; every sleep still ends, with every read's bytes right.
#[test]
fn sleepers_and_other_reapers_share_a_ring() {
    let config = IoEngineConfig {
        rings: 1,
        registered_buffers: 32,
        buffer_size: PAGE,
        ..common::config(ferrite_io::EngineChoice::Uring)
    };
    let engine = Arc::new(UringEngine::new(&config).unwrap());
    let dir = common::tempdir();
    let file = Arc::new(data_file(&dir));
    watched("two block_on threads and four tasks on one ring", move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (engine, file) = (engine.clone(), file.clone());
                runtime.spawn(async move { read_pages(&engine, &file, (0..400).map(|i| (i * 7) % 64)).await })
            })
            .collect();
        let sleepers: Vec<_> = (0..2)
            .map(|_| {
                let (engine, file) = (engine.clone(), file.clone());
                std::thread::spawn(move || engine.block_on(read_pages(&engine, &file, (0..400).map(|i| (i * 7) % 64))))
            })
            .collect();
        for sleeper in sleepers {
            sleeper.join().unwrap();
        }
        runtime.block_on(async {
            for task in tasks {
                task.await.unwrap();
            }
        });
    });
}

#[test]
fn an_operation_dropped_under_block_on_still_returns_its_buffer() {
    let engine = engine();
    let dir = common::tempdir();
    let file = data_file(&dir);
    watched("reads polled once and dropped", move || {
        for page in 0..32u64 {
            engine.block_on(async {
                let buf = engine.acquire().await;
                let mut read = std::pin::pin!(engine.read_fixed_at(&file, buf, page * PAGE as u64));
                // One poll submits the read; then the future is dropped with it in flight.
                std::future::poll_fn(|cx| {
                    let _ = read.as_mut().poll(cx);
                    Poll::Ready(())
                })
                .await;
            });
        }
        // `block_on` returned before those completions: someone else must reap them.
        wait_pool_full(&engine);
    });
}

#[test]
fn a_panic_inside_block_on_leaves_the_thread_as_it_was() {
    let engine = engine();
    let dir = common::tempdir();
    let file = data_file(&dir);
    watched("a read polled by another executor after a panic", move || {
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.block_on(async { panic!("inside block_on") });
        }));
        assert!(panicked.is_err());
        // Had the thread still counted as driving `block_on`, this read would wait for a ring
        // wait that nobody does, and the plain executor below would never be woken.
        let buf = engine.pool().try_acquire().unwrap().try_into_registered(&*engine).unwrap();
        let (result, buf) = common::park_on(engine.read_fixed_at(&file, buf, 3 * PAGE as u64)).into_parts();
        assert_eq!(result.unwrap(), PAGE);
        assert!(buf.iter().all(|&b| b == 3));
    });
}

#[test]
fn another_engines_operations_inside_block_on_are_woken_by_that_engine() {
    let (driver, other) = (engine(), engine());
    let dir = common::tempdir();
    let file = data_file(&dir);
    watched("reads on a second engine", move || {
        driver.block_on(async {
            read_pages(&other, &file, 0..16).await;
        });
    });
}

/// Polls two futures until both are done.
async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut first, mut second) = (None, None);
    std::future::poll_fn(|cx| {
        if first.is_none() {
            if let Poll::Ready(out) = a.as_mut().poll(cx) {
                first = Some(out);
            }
        }
        if second.is_none() {
            if let Poll::Ready(out) = b.as_mut().poll(cx) {
                second = Some(out);
            }
        }
        if first.is_some() && second.is_some() { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    (first.unwrap(), second.unwrap())
}

/// Reads each page of `pages` (of [`data_file`]) with `engine`, checking its bytes.
async fn read_pages(engine: &UringEngine, file: &File, pages: impl IntoIterator<Item = u64>) {
    for page in pages {
        let (result, buf) = engine.read_fixed_at(file, engine.acquire().await, page * PAGE as u64).await.into_parts();
        assert_eq!(result.unwrap(), PAGE);
        assert!(buf.iter().all(|&b| u64::from(b) == page), "page {page}");
    }
}

/// Polls both futures until `b` is done; `a`'s output is dropped if it finishes first.
async fn first<A: Future, B: Future<Output = Result<T, E>>, T, E>(a: A, b: B) -> Option<T> {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let mut a_done = false;
    std::future::poll_fn(|cx| {
        if !a_done {
            a_done = a.as_mut().poll(cx).is_ready();
        }
        b.as_mut().poll(cx).map(Result::ok)
    })
    .await
}

/// Two operations wait in the ring, and the future then polls only the one its waker names, as
/// `FuturesUnordered` does: after the first completes, the thread must keep waiting where the
/// second can end the wait. It parked with nobody watching the ring, and the second read's
/// completion (a pipe read, satisfied 50 ms later) never woke it.
#[test]
fn an_operation_not_polled_again_still_ends_the_wait() {
    let engine = engine();
    let dir = common::tempdir();
    let file = data_file(&dir);
    watched("a read polled only when its own waker fires", move || {
        let (reader, writer) = std::io::pipe().unwrap();
        let pipe = File::from_std(std::fs::File::from(std::os::fd::OwnedFd::from(reader)), false);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            std::io::Write::write_all(&mut std::fs::File::from(std::os::fd::OwnedFd::from(writer)), &[4; 8]).unwrap();
        });
        let (page, byte) = engine.block_on(async {
            let (a, mut b) = (engine.acquire().await, engine.acquire().await);
            b.set_len(1).unwrap();
            let mut a = std::pin::pin!(engine.read_fixed_at(&file, a, 9 * PAGE as u64));
            let mut b = std::pin::pin!(engine.read_fixed_at(&pipe, b, 0));
            let b_woken = Arc::new(Flag::default());
            let (mut a_out, mut polled) = (None, false);
            std::future::poll_fn(|cx| {
                *b_woken.waker.lock().unwrap() = Some(cx.waker().clone());
                let b_waker = std::task::Waker::from(b_woken.clone());
                let poll_b = !polled || b_woken.woken.swap(false, std::sync::atomic::Ordering::AcqRel);
                if a_out.is_none() {
                    if let Poll::Ready(out) = a.as_mut().poll(cx) {
                        a_out = Some(out);
                    }
                }
                polled = true;
                if poll_b {
                    if let Poll::Ready(out) = b.as_mut().poll(&mut std::task::Context::from_waker(&b_waker)) {
                        return Poll::Ready((a_out.take().expect("the device read finishes first"), out));
                    }
                }
                Poll::Pending
            })
            .await
        });
        writer.join().unwrap();
        let ((n, page), (m, byte)) = (page.into_parts(), byte.into_parts());
        assert_eq!((n.unwrap(), m.unwrap()), (PAGE, 1));
        assert!(page.iter().all(|&b| b == 9));
        assert_eq!(byte[0], 4);
    });
}

/// A waker that records that it fired, then wakes the task's own (see the test above).
#[derive(Default)]
struct Flag {
    woken: std::sync::atomic::AtomicBool,
    waker: std::sync::Mutex<Option<std::task::Waker>>,
}

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, std::sync::atomic::Ordering::Release);
        if let Some(waker) = self.waker.lock().unwrap().as_ref() {
            waker.wake_by_ref();
        }
    }
}
