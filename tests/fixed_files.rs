//! Registered (fixed) files on the io_uring engine: a file is registered in every ring on its
//! first operation, released with its last handle, and an index is never shared by two files.
#![cfg(all(feature = "io-uring", target_os = "linux"))]

mod common;

use std::time::Duration;

use ferrite_io::{Batch, EngineChoice, IoEngine, IoEngineConfig, OpenOptions, UringEngine};

/// Two rings, every operation through a ring (no fast path).
fn engine() -> UringEngine {
    let config = IoEngineConfig { rings: 2, nowait_fast_path: false, ..common::config(EngineChoice::Uring) };
    UringEngine::new(&config).expect("io_uring must work on the test machines")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

const WATCHDOG: Duration = Duration::from_secs(30);

/// Runs `body` on a thread of its own and fails if it has not finished within [`WATCHDOG`]: a
/// deadlock blocks the thread itself, which a timer on that thread could never report.
fn on_a_thread(body: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        body();
        let _ = done.send(());
    });
    match finished.recv_timeout(WATCHDOG) {
        Ok(()) => thread.join().expect("the body finished"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(thread.join().expect_err("the body panicked"))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("hung for {WATCHDOG:?}: a deadlock"),
    }
}

#[test]
fn files_are_registered_on_first_use_and_released_with_the_last_handle() {
    let dir = common::tempdir();
    runtime().block_on(async {
        tokio::time::timeout(WATCHDOG, async {
            let engine = engine();
            let create = OpenOptions::new().create(true);
            let mut files = Vec::new();
            for i in 0..3 {
                files.push(engine.open(dir.path().join(format!("f{i}")), &create).await.unwrap());
            }
            assert_eq!(engine.stats().registered_files, 0, "opening registers nothing");
            for file in &files {
                let mut buf = engine.acquire().await;
                buf.fill(7);
                engine.write_fixed_at(file, buf, 0).await.0.unwrap();
                engine.sync_data(file).await.unwrap();
            }
            assert_eq!(engine.stats().registered_files, 3);
            let clone = files[0].clone();
            files.remove(0);
            assert_eq!(engine.stats().registered_files, 3, "a handle is still open");
            drop(clone);
            assert_eq!(engine.stats().registered_files, 2);
            files.clear();
            assert_eq!(engine.stats().registered_files, 0);
        })
        .await
        .expect("watchdog");
    });
}

/// Files opened, written through the ring and dropped one after another reuse indices; each
/// file must hold exactly its own bytes, and a long-lived file beside them stays untouched.
#[test]
fn reused_indices_never_mix_files() {
    let dir = common::tempdir();
    let path = |i: usize| dir.path().join(format!("f{i}"));
    runtime().block_on(async {
        tokio::time::timeout(WATCHDOG, async {
            let engine = engine();
            let create = OpenOptions::new().create(true);
            let keeper = engine.open(dir.path().join("keeper"), &create).await.unwrap();
            let mut buf = engine.acquire().await;
            buf.fill(0xEE);
            engine.write_all_at(&keeper, buf, 0).await.0.unwrap();
            for i in 0..40 {
                let file = engine.open(path(i), &create).await.unwrap();
                let mut buf = engine.acquire().await;
                buf.fill(i as u8);
                engine.write_durable_at(&file, buf, 0).await.0.unwrap();
                let (read, back) = engine.read_at(&file, engine.acquire().await, 0).await.into_parts();
                assert_eq!(read.unwrap(), 8192);
                assert!(back.iter().all(|&b| b == i as u8), "file {i} read back another file's bytes");
                assert_eq!(engine.stats().registered_files, 2);
            }
            let (read, back) = engine.read_at(&keeper, engine.acquire().await, 0).await.into_parts();
            assert_eq!(read.unwrap(), 8192);
            assert!(back.iter().all(|&b| b == 0xEE), "the long-lived file was written by another");
        })
        .await
        .expect("watchdog");
    });
    for i in 0..40 {
        let bytes = std::fs::read(path(i)).unwrap();
        assert_eq!(bytes.len(), 8192, "file {i}");
        assert!(bytes.iter().all(|&b| b == i as u8), "file {i} holds another file's bytes");
    }
}

/// A batch entry that fails before it is submitted drops its file under the ring lock; when it
/// holds the file's last handle, the index is parked instead of cleared there (clearing takes
/// the ring locks), nothing deadlocks, and the next registration clears and reuses it.
#[test]
fn a_file_dropped_under_a_ring_lock_parks_its_index() {
    on_a_thread(parks_its_index);
}

fn parks_its_index() {
    let dir = common::tempdir();
    runtime().block_on(async {
        tokio::time::timeout(WATCHDOG, async {
            let engine = engine();
            let create = OpenOptions::new().create(true).direct(true);
            let file = engine.open(dir.path().join("direct"), &create).await.unwrap();
            let mut buf = engine.acquire().await;
            buf.fill(1);
            engine.write_all_at(&file, buf, 0).await.0.unwrap();
            assert_eq!(engine.stats().registered_files, 1);

            let mut batch = Batch::with_capacity(1);
            batch.read_at(&file, engine.acquire().await, 1); // misaligned for O_DIRECT: refused
            drop(file); // the batch holds the last handle
            let results: Vec<_> = engine.submit_batch(&mut batch).await.collect();
            assert!(results[0].0.is_err(), "a misaligned O_DIRECT read is refused");
            drop(results);
            assert_eq!(engine.stats().registered_files, 0);

            let next = engine.open(dir.path().join("next"), &OpenOptions::new().create(true)).await.unwrap();
            let mut buf = engine.acquire().await;
            buf.fill(2);
            engine.write_all_at(&next, buf, 0).await.0.unwrap();
            let (read, back) = engine.read_at(&next, engine.acquire().await, 0).await.into_parts();
            assert_eq!(read.unwrap(), 8192);
            assert!(back.iter().all(|&b| b == 2));
            assert_eq!(engine.stats().registered_files, 1);
        })
        .await
        .expect("watchdog");
    });
    assert!(std::fs::read(dir.path().join("direct")).unwrap().iter().all(|&b| b == 1));
}

/// A file used by two engines keeps the first one's slot; the second goes by descriptor, and
/// both see the same bytes.
#[test]
fn a_file_shared_by_two_engines() {
    let dir = common::tempdir();
    runtime().block_on(async {
        tokio::time::timeout(WATCHDOG, async {
            let (first, second) = (engine(), engine());
            let file = first.open(dir.path().join("shared"), &OpenOptions::new().create(true)).await.unwrap();
            let mut buf = first.acquire().await;
            buf.fill(3);
            first.write_all_at(&file, buf, 0).await.0.unwrap();
            let (read, back) = second.read_at(&file, second.acquire().await, 0).await.into_parts();
            assert_eq!(read.unwrap(), 8192);
            assert!(back.iter().all(|&b| b == 3));
            assert_eq!((first.stats().registered_files, second.stats().registered_files), (1, 0));
        })
        .await
        .expect("watchdog");
    });
}
