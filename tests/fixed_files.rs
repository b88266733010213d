//! Registered (fixed) files on the io_uring engine: a file is put in every ring's fixed-file
//! table on its first operation, its operations go by that index, and the slots are emptied
//! when its last handle goes, wherever that happens. The kernel's own account is the oracle:
//! `/proc/self/fdinfo/<ring>` lists the file in each slot of each ring's table.
#![cfg(all(feature = "io-uring", target_os = "linux"))]

mod common;

use std::os::fd::AsRawFd;
use std::path::Path;
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

/// In how many fixed-file slots, over every io_uring instance of this process, the kernel holds
/// `path` now.
fn slots_holding(path: &Path) -> usize {
    let path = path.to_str().expect("utf-8 path");
    let mut slots = 0;
    for fd in std::fs::read_dir("/proc/self/fd").expect("procfs").flatten() {
        let is_ring =
            std::fs::read_link(fd.path()).is_ok_and(|target| target.to_str() == Some("anon_inode:[io_uring]"));
        let info = std::fs::read_to_string(Path::new("/proc/self/fdinfo").join(fd.file_name()));
        if let (true, Ok(info)) = (is_ring, info) {
            slots +=
                info.lines().filter(|line| line.trim_start().split_once(": ").is_some_and(|(_, p)| p == path)).count();
        }
    }
    slots
}

#[test]
fn files_are_registered_on_first_use_and_released_with_the_last_handle() {
    let dir = common::tempdir();
    let paths: Vec<_> = (0..3).map(|i| dir.path().join(format!("f{i}"))).collect();
    runtime().block_on(async {
        tokio::time::timeout(WATCHDOG, async {
            let engine = engine();
            let create = OpenOptions::new().create(true);
            let mut files = Vec::new();
            for path in &paths {
                files.push(engine.open(path, &create).await.unwrap());
            }
            assert_eq!(engine.stats().registered_files, 0, "opening registers nothing");
            assert_eq!(slots_holding(&paths[0]), 0);
            for file in &files {
                let mut buf = engine.acquire().await;
                buf.fill(7);
                engine.write_fixed_at(file, buf, 0).await.0.unwrap();
                engine.sync_data(file).await.unwrap();
            }
            assert_eq!(engine.stats().registered_files, 3);
            for path in &paths {
                assert_eq!(slots_holding(path), 2, "{path:?} in one slot of each of the 2 rings");
            }
            let clone = files[0].clone();
            files.remove(0);
            assert_eq!(slots_holding(&paths[0]), 2, "a handle is still open");
            drop(clone);
            assert_eq!((engine.stats().registered_files, slots_holding(&paths[0])), (2, 0));
            files.clear();
            assert_eq!(engine.stats().registered_files, 0);
            assert!(paths.iter().all(|path| slots_holding(path) == 0), "the kernel lets go of closed files");
        })
        .await
        .expect("watchdog");
    });
}

/// Operations go by the index, not by the descriptor: once registered, the file's descriptor
/// number is made to point at another file (`dup2`), and a write through the engine still lands
/// in the registered file.
#[test]
fn operations_go_by_the_index_not_the_descriptor() {
    let dir = common::tempdir();
    let (registered, other) = (dir.path().join("registered"), dir.path().join("other"));
    runtime().block_on(async {
        tokio::time::timeout(WATCHDOG, async {
            let engine = engine();
            let file = engine.open(&registered, &OpenOptions::new().create(true)).await.unwrap();
            let mut buf = engine.acquire().await;
            buf.fill(1);
            engine.write_all_at(&file, buf, 0).await.0.unwrap();
            let decoy = std::fs::File::create(&other).unwrap();
            // SAFETY: dup2 takes two descriptor numbers and no pointers; both are open (`decoy`
            // and `file` own them), and `file`'s number keeps being owned by `file` afterwards.
            let duped = unsafe { libc::dup2(decoy.as_raw_fd(), file.std().as_raw_fd()) };
            assert_eq!(duped, file.std().as_raw_fd());
            let mut buf = engine.acquire().await;
            buf.fill(2);
            engine.write_all_at(&file, buf, 0).await.0.unwrap();
            engine.sync_data(&file).await.unwrap();
        })
        .await
        .expect("watchdog");
    });
    assert!(std::fs::read(&registered).unwrap().iter().all(|&b| b == 2), "the write went to the registered file");
    assert_eq!(std::fs::read(&other).unwrap().len(), 0, "nothing went by the descriptor");
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

/// A batch registers a file it is the first to use, and its entries finish under the ring lock:
/// when an entry holds the file's last handle, the file is released right there (registering
/// and releasing take no lock of the engine), without a deadlock, and the kernel lets go of it.
#[test]
fn a_batch_registers_and_releases_under_the_ring_lock() {
    on_a_thread(batch_registers_and_releases);
}

fn batch_registers_and_releases() {
    let dir = common::tempdir();
    let path = dir.path().join("batched");
    runtime().block_on(async {
        tokio::time::timeout(WATCHDOG, async {
            let engine = engine();
            let file = engine.open(&path, &OpenOptions::new().create(true).direct(true)).await.unwrap();
            let mut batch = Batch::with_capacity(2);
            let mut buf = engine.acquire().await;
            buf.fill(3);
            batch.write_at(&file, buf, 0);
            for result in engine.submit_batch(&mut batch).await {
                result.0.unwrap();
            }
            assert_eq!((engine.stats().registered_files, slots_holding(&path)), (1, 2), "registered by the batch");

            batch.read_at(&file, engine.acquire().await, 1); // misaligned for O_DIRECT: refused
            drop(file); // the batch holds the last handle
            let results: Vec<_> = engine.submit_batch(&mut batch).await.collect();
            assert!(results[0].0.is_err(), "a misaligned O_DIRECT read is refused");
            drop(results);
            assert_eq!((engine.stats().registered_files, slots_holding(&path)), (0, 0), "released at once");
        })
        .await
        .expect("watchdog");
    });
    assert!(std::fs::read(&path).unwrap()[..8192].iter().all(|&b| b == 3));
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

/// An operation whose future is dropped while the kernel still has it keeps its file: the
/// caller's last handle may go at once, but the file stays in its slots until the completion
/// arrives, and leaves them then. (Operations borrow their caller's file while their future
/// lives and clone it only when dropped early.) A read of an empty FIFO waits in the kernel
/// until a writer comes, which makes "in flight" last as long as the test needs.
#[test]
fn a_dropped_operation_keeps_its_file_until_it_completes() {
    let dir = common::tempdir();
    let path = dir.path().join("fifo");
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path of a live CString.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    runtime().block_on(async {
        tokio::time::timeout(WATCHDOG, async {
            let engine = engine();
            // Read-write: opening a FIFO so never waits for the other end.
            let file = engine.open(&path, &OpenOptions::new().write(true)).await.unwrap();
            let mut buf = engine.acquire().await;
            buf.set_len(8).unwrap();
            let read = engine.read_at(&file, buf, 0);
            let waited = tokio::time::timeout(Duration::from_millis(50), read).await;
            assert!(waited.is_err(), "nothing to read yet: still in flight when dropped");
            drop(file);
            assert_eq!(engine.in_flight(), 1);
            assert_eq!(slots_holding(&path), 2, "the abandoned read keeps its file in both rings");

            let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            std::io::Write::write_all(&mut writer, b"released").unwrap();
            while engine.in_flight() > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!((engine.stats().registered_files, slots_holding(&path)), (0, 0), "released at the completion");
            assert_eq!(engine.pool().available(), engine.pool().capacity(), "the buffer is back");
        })
        .await
        .expect("watchdog");
    });
}
