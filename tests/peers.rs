//! The file scenarios of the peers' own test suites, ported to this API and run on every engine
//! variant; where results could differ, every engine's results, bytes and errors are compared
//! with the first engine's. Each wait has a watchdog, so a hang fails instead of stalling.
//!
//! - tokio-uring (`fs_file`, `driver`, `fixed_buf`): reads across and past the end, exact reads
//!   of a large file, sync on a fresh file, a file dropped while an operation is in flight,
//!   hundreds of futures polled once and dropped, two buffers shared by ten writers.
//! - monoio (`fs_file`): a read at every offset up to and past the end, positional writes that
//!   ignore the descriptor's cursor, a file's descriptor closed when its last handle goes.
//! - compio (`compio-fs` `file`): a read of an empty pipe under a timeout, zero-length writes.
//! - glommio (`dma_file`, `buffered_file`): writes past the end leave zeroed holes (buffered and
//!   direct), reads of an empty file, futures dropped before their first poll.
//! - tokio (`fs_uring*`, `fs_file`): empty and large files read in chunks, many files open at
//!   once and opened over and over, an operation whose completion arrived but whose future is
//!   dropped before it is polled again, a runtime shut down with operations in flight.
//! - Edges the suites touch on: zero-length buffers and vectored members, odd lengths and views,
//!   `IOV_MAX` members, offsets near `i64::MAX` and `u64::MAX`, writes across the largest file
//!   size, a 2.5 GiB buffer, `O_APPEND` descriptors, `/dev/null`, `/dev/zero`, directories,
//!   pipes (`O_NONBLOCK` too) and sockets, a reader racing a writer, `spawn_blocking` callers,
//!   cancellation at every await point, one pool's buffers and one file on two engines.
//!
//! Linux only: the scenarios compare the io_uring engine with the tokio engine and use pipes and
//! device files.
#![cfg(target_os = "linux")]

mod common;

use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use ferrite_io::{Batch, Buf, BufResult, Completed, EngineChoice, Error, File, IoEngine, OpenOptions, SharedIoEngine};

const WATCHDOG: Duration = Duration::from_secs(10);

async fn watchdog<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WATCHDOG, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no result within {WATCHDOG:?}"),
    }
}

/// Every engine variant with the small test config.
fn engines() -> Vec<(&'static str, SharedIoEngine)> {
    common::engines(&common::config(EngineChoice::Auto))
}

/// Waits (under the watchdog) until every buffer of the engine's pool is back.
async fn pool_refills(what: &str, engine: &SharedIoEngine) {
    let refilled = tokio::time::timeout(WATCHDOG, async {
        while engine.pool().available() != engine.pool().capacity() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    if refilled.await.is_err() {
        panic!("{what}: buffers still out after {WATCHDOG:?}: {:?}, {:?}", engine.pool(), engine.stats());
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i % 251) as u8)).collect()
}

/// An error as engines can be compared on: the OS error, else the variant's name.
fn code(e: &Error) -> String {
    match e.raw_os_error() {
        Some(errno) => format!("errno {errno}"),
        None => format!("{e:?}").split([' ', '{', '(']).next().unwrap_or_default().to_string(),
    }
}

/// A result and the bytes its buffer came back with, as text to compare engines on.
fn seen<T: std::fmt::Debug>(result: BufResult<T, Buf<Completed>>) -> String {
    let (result, buf) = result.into_parts();
    match result {
        Ok(value) => format!("Ok({value:?}) {:?}", digest(&buf)),
        Err(e) => format!("Err({}) {:?}", code(&e), digest(&buf)),
    }
}

fn seen_vectored(result: BufResult<usize, Vec<Buf<Completed>>>) -> String {
    let (result, bufs) = result.into_parts();
    let bufs: Vec<_> = bufs.iter().map(|b| digest(b)).collect();
    match result {
        Ok(n) => format!("Ok({n}) {bufs:?}"),
        Err(e) => format!("Err({}) {bufs:?}", code(&e)),
    }
}

fn seen_unit(result: ferrite_io::Result<()>) -> String {
    match result {
        Ok(()) => "Ok".to_string(),
        Err(e) => format!("Err({})", code(&e)),
    }
}

/// Length and FNV-1a hash.
fn digest(bytes: &[u8]) -> (usize, u64) {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (bytes.len(), hash)
}

/// Asserts every engine saw what the first one saw, line by line.
fn agree(scenario: &str, seen: &[(&str, Vec<String>)]) {
    let (first, expected) = &seen[0];
    for (name, lines) in &seen[1..] {
        assert_eq!(lines.len(), expected.len(), "{scenario}: {name} and {first} ran different steps");
        for (step, (got, want)) in lines.iter().zip(expected).enumerate() {
            assert_eq!(got, want, "{scenario}, step {step}: {name} disagrees with {first}");
        }
    }
}

async fn create(engine: &SharedIoEngine, dir: &tempfile::TempDir, name: &str) -> File {
    engine.open(dir.path().join(name), &OpenOptions::new().create(true).truncate(true)).await.expect("open")
}

/// Whether `fd` still names the file with inode `ino` (monoio's check that a descriptor was
/// closed: the number may have been reused since, by another file).
fn still_open(fd: i32, ino: u64) -> bool {
    // SAFETY: `stat` is plain integers; all zeros is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat` into `st`, a live local; a closed `fd` gives EBADF.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    rc == 0 && st.st_ino == ino
}

/// Runs each scenario as two tests, on a multi-thread and on a current-thread runtime (the
/// peers run theirs on both, as tokio's `rt_combinations` do): a completion that arrives later
/// reaches its future through a different path on each.
macro_rules! on_both_runtimes {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn multi_thread() {
                super::$scenario().await
            }

            #[tokio::test(flavor = "current_thread")]
            async fn current_thread() {
                super::$scenario().await
            }
        }
    )*};
}

on_both_runtimes!(
    file_dropped_while_an_operation_is_in_flight,
    timeouts_and_select_leave_no_buffer_behind,
    completed_then_dropped_before_the_next_poll,
    dropped_at_every_await_point,
    readers_race_a_writer,
    futures_dropped_unpolled_or_after_one_poll,
    ten_writers_share_two_buffers,
);

/// monoio `basic_read_at`, glommio `random_io`: a read at every offset from the start to past
/// the end returns the rest of the file, then `Ok(0)`; into caller memory, a pool slot and a
/// view of one; and exact reads succeed up to the end and stop there with the bytes they got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_every_offset_up_to_and_past_the_end() {
    const HELLO: &[u8] = b"hello world...";
    let dir = common::tempdir();
    let mut all = Vec::new();
    for (name, engine) in engines() {
        let path = dir.path().join(name);
        std::fs::write(&path, HELLO).unwrap();
        let file = engine.open(&path, &OpenOptions::new().write(false)).await.unwrap();
        let mut lines = Vec::new();
        for offset in 0..=HELLO.len() + 3 {
            let rest = &HELLO[offset.min(HELLO.len())..];
            let (n, back) = engine.read_at(&file, Buf::from(vec![0; 1024]), offset as u64).await.into_parts();
            assert_eq!((n.unwrap(), &back[..]), (rest.len(), rest), "{name} at {offset}");
            let (n, back) = engine.read_fixed_at(&file, engine.acquire().await, offset as u64).await.into_parts();
            assert_eq!((n.unwrap(), &back[..]), (rest.len(), rest), "{name} fixed at {offset}");
            let view = engine.pool().acquire().await.slice(3..10);
            let (n, back) = engine.read_at(&file, view, offset as u64).await.into_parts();
            let want = &rest[..rest.len().min(7)];
            assert_eq!((n.unwrap(), &back[..], back.range()), (want.len(), want, 3..3 + want.len()), "{name}");
            let exact = engine.read_exact_at(&file, Buf::from(vec![0; 4]), offset as u64).await;
            lines.push(seen(exact));
        }
        let (result, back) = engine.read_exact_at(&file, Buf::from(vec![0; 2 * HELLO.len()]), 0).await.into_parts();
        assert!(matches!(result, Err(Error::UnexpectedEof { done: 14, wanted: 28, .. })), "{name}: {result:?}");
        assert_eq!(&back[..], HELLO, "{name}: the bytes read before the end come back");
        common::assert_pool_full(&engine);
        all.push((name, lines));
    }
    agree("exact reads around the end", &all);
}

/// tokio `test_file_read_empty`, glommio `file_empty_read`, compio/tokio-uring zero-length
/// writes: empty buffers, empty files and empty vectored members, on buffered and direct files.
/// Nothing fails, nothing moves, a write of nothing does not extend the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_length_buffers_files_and_members() {
    let dir = common::tempdir();
    let mut all = Vec::new();
    for (name, engine) in engines() {
        let mut lines = Vec::new();
        for direct in [false, true] {
            let path = dir.path().join(format!("{name}-{direct}"));
            let file = engine.open(&path, &OpenOptions::new().create(true).direct(direct)).await.unwrap();
            let empty = || engine.pool().acquire();
            let none = |buf: Buf<ferrite_io::Free>| buf.slice(0..0);
            lines.push(seen(engine.read_at(&file, empty().await, 0).await));
            lines.push(seen(engine.read_at(&file, none(empty().await), 0).await));
            lines.push(seen(engine.read_at(&file, none(empty().await), 1 << 40).await));
            lines.push(seen(engine.write_at(&file, none(empty().await), 4096).await));
            let mut registered = engine.acquire().await;
            registered.set_len(0).unwrap();
            lines.push(seen(engine.write_fixed_at(&file, registered, 8192).await));
            lines.push(seen(engine.write_all_at(&file, none(empty().await), 4096).await));
            lines.push(seen(engine.write_durable_at(&file, none(empty().await), 4096).await));
            lines.push(seen(engine.read_exact_at(&file, none(empty().await), 0).await));
            lines.push(seen_vectored(engine.read_vectored_at::<ferrite_io::Free>(&file, Vec::new(), 0).await));
            lines.push(seen_vectored(engine.write_vectored_at::<ferrite_io::Free>(&file, Vec::new(), 0).await));
            let members = vec![none(empty().await), none(empty().await)];
            lines.push(seen_vectored(engine.write_vectored_at(&file, members, 0).await));
            let mut batch = Batch::new();
            batch.write_at(&file, none(empty().await), 4096);
            batch.read_at(&file, none(empty().await), 0);
            lines.extend(engine.submit_batch(&mut batch).await.map(seen));
            assert_eq!(engine.submit_batch(&mut Batch::new()).await.count(), 0, "{name}: an empty batch");
            assert_eq!(file.size().unwrap(), 0, "{name} (direct {direct}): writing nothing wrote something");
            engine.sync_all(&file).await.unwrap();
        }
        // Buffered only (caller memory is not aligned): empty members between full ones.
        let file = create(&engine, &dir, &format!("{name}-members")).await;
        let members =
            vec![Buf::from(Vec::new()), Buf::from(b"abc".to_vec()), Buf::from(Vec::new()), Buf::from(b"de".to_vec())];
        lines.push(seen_vectored(engine.write_vectored_at(&file, members, 0).await));
        let members = vec![Buf::from(vec![0; 3]), Buf::from(Vec::new()), Buf::from(vec![0; 4])];
        let (n, back) = engine.read_vectored_at(&file, members, 0).await.into_parts();
        assert_eq!(n.unwrap(), 5, "{name}");
        let back: Vec<&[u8]> = back.iter().map(|b| &b[..]).collect();
        assert_eq!(back, [&b"abc"[..], b"", b"de"], "{name}");
        common::assert_pool_full(&engine);
        all.push((name, lines));
    }
    agree("zero-length operations", &all);
}

/// glommio `write_past_end` (buffered and direct): a write past the end leaves a hole that reads
/// as zeros through a second, read-only handle, and a write into the hole does not move the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_end_leave_zeroed_holes() {
    let dir = common::tempdir();
    let mut all = Vec::new();
    for (name, engine) in engines() {
        let mut lines = Vec::new();
        for direct in [false, true] {
            let path = dir.path().join(format!("{name}-{direct}"));
            let options = OpenOptions::new().create(true).direct(direct);
            let writer = engine.open(&path, &options).await.unwrap();
            let reader = engine.open(&path, &OpenOptions::new().write(false).direct(direct)).await.unwrap();
            // Direct files move whole blocks: one unit is the file's alignment (or 512 bytes).
            let unit = writer.alignment().map_or(512, |a| a.offset as usize);
            let mut tail = engine.acquire().await;
            tail.set_len(unit).unwrap();
            tail.copy_from_slice(&pattern(1, unit));
            let hole_end = 4 * unit as u64;
            assert_eq!(engine.write_at(&writer, tail, hole_end).await.0.unwrap(), unit, "{name}");
            assert_eq!(reader.size().unwrap(), hole_end + unit as u64, "{name}");
            let (n, hole) = engine.read_at(&reader, engine.acquire().await, 0).await.into_parts();
            assert_eq!(n.unwrap(), 5 * unit, "{name}");
            assert!(hole[..4 * unit].iter().all(|&b| b == 0), "{name}: the hole reads as zeros");
            assert_eq!(&hole[4 * unit..], &pattern(1, unit)[..], "{name}");
            let mut middle = hole.into_free();
            middle.set_len(unit).unwrap();
            middle.copy_from_slice(&pattern(2, unit));
            assert_eq!(engine.write_at(&writer, middle, unit as u64).await.0.unwrap(), unit, "{name}");
            assert_eq!(reader.size().unwrap(), hole_end + unit as u64, "{name}: a write into the hole");
            let back = engine.read_at(&reader, engine.acquire().await, 0).await;
            lines.push(seen(back));
        }
        common::assert_pool_full(&engine);
        all.push((name, lines));
    }
    agree("holes", &all);
}

/// The offsets at the top of the range, where the kernel's checks (a negative offset, an
/// offset plus length past `i64::MAX`, past the filesystem's largest file) decide: every
/// operation gets the same result on every engine, and nothing is ever written (an offset read
/// as `-1` would mean "the current position" to `pwritev2` and to io_uring).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_near_the_largest_file_offset() {
    let dir = common::tempdir();
    let top = i64::MAX as u64;
    let offsets = [1 << 44, 1 << 62, top - 8192, top - 100, top - 1, top, top + 1, 1 << 63, u64::MAX - 1, u64::MAX];
    let mut all = Vec::new();
    for (name, engine) in engines() {
        let file = create(&engine, &dir, name).await;
        engine.write_at(&file, Buf::from(b"base".to_vec()), 0).await.0.unwrap();
        let mut lines = Vec::new();
        for offset in offsets {
            let buf = || Buf::from(vec![7u8; 100]);
            lines.push(format!("{offset}: {}", seen(engine.read_at(&file, buf(), offset).await)));
            lines.push(seen(engine.read_at(&file, Buf::from(Vec::new()), offset).await));
            lines.push(seen(engine.write_at(&file, buf(), offset).await));
            lines.push(seen(engine.write_at(&file, Buf::from(Vec::new()), offset).await));
            lines.push(seen(engine.read_exact_at(&file, buf(), offset).await));
            lines.push(seen(engine.write_all_at(&file, buf(), offset).await));
            lines.push(seen(engine.write_durable_at(&file, buf(), offset).await));
            lines.push(seen_vectored(engine.read_vectored_at(&file, vec![buf(), buf()], offset).await));
            lines.push(seen_vectored(engine.write_vectored_at(&file, vec![buf(), buf()], offset).await));
            let mut batch = Batch::new();
            batch.read_at(&file, buf(), offset);
            batch.write_at(&file, buf(), offset);
            lines.extend(engine.submit_batch(&mut batch).await.map(seen));
            assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), b"base", "{name} at {offset}: a write landed");
        }
        all.push((name, lines));
    }
    agree("offsets near the top", &all);
}

/// Writes that cross the largest file the filesystem holds (ext4 with 4 KiB blocks: 16 TiB
/// - 4 KiB) are cut short there, then fail with `EFBIG`; every engine cuts them at the same byte,
/// single and vectored, and `write_all_at` reports the bytes it did write. The file is sparse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_across_the_largest_file_size() {
    let dir = common::tempdir();
    let limit = (1u64 << 44) - 4096;
    let mut all = Vec::new();
    for (name, engine) in engines() {
        let file = create(&engine, &dir, name).await;
        let mut lines = Vec::new();
        for offset in [limit - 150, limit - 50, limit, limit + 50] {
            let buf = || Buf::from(vec![3u8; 100]);
            lines.push(format!("{offset}: {}", seen(engine.write_at(&file, buf(), offset).await)));
            lines.push(seen_vectored(engine.write_vectored_at(&file, vec![buf(), buf()], offset).await));
            let (result, back) = engine.write_all_at(&file, buf(), offset).await.into_parts();
            let placed = match result {
                Ok(()) => "Ok".to_string(),
                Err(Error::Io { op, offset, source, .. }) => format!("{op} failed at {offset}: {source}"),
                Err(e) => panic!("{name}: {e}"),
            };
            lines.push(format!("{placed}, {} bytes back", back.len()));
            lines.push(seen(engine.read_at(&file, Buf::from(vec![0; 100]), offset).await));
            lines.push(format!("size {}", file.size().unwrap()));
        }
        all.push((name, lines));
    }
    agree("writes across the largest file size", &all);
}

/// monoio `basic_write_at` with an `O_APPEND` descriptor: Linux appends a `pwrite` to an
/// `O_APPEND` file whatever its offset, and so do `pwritev2` and io_uring. Every engine must
/// write the same file, and a positional write must not care where the descriptor's cursor is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_mode_and_the_descriptor_cursor() {
    use std::io::Seek;
    let dir = common::tempdir();
    let mut all = Vec::new();
    for (name, engine) in engines() {
        let path = dir.path().join(format!("{name}-append"));
        std::fs::write(&path, b"head:").unwrap();
        let std = std::fs::OpenOptions::new().read(true).append(true).open(&path).unwrap();
        let file = File::from_std(std, false);
        let mut lines = vec![seen(engine.write_at(&file, Buf::from(b"one".to_vec()), 0).await)];
        lines.push(seen(engine.write_all_at(&file, Buf::from(b"two".to_vec()), 1).await));
        lines.push(seen(engine.write_durable_at(&file, Buf::from(b"three".to_vec()), 2).await));
        lines.push(seen_vectored(
            engine.write_vectored_at(&file, vec![Buf::from(b"fo".to_vec()), Buf::from(b"ur".to_vec())], 0).await,
        ));
        lines.push(format!("{:?}", String::from_utf8(std::fs::read(&path).unwrap())));
        // The cursor of another descriptor of the file, and of this one, changes nothing.
        let path = dir.path().join(format!("{name}-cursor"));
        std::fs::write(&path, b"hello world...").unwrap();
        let mut std = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        std.seek(std::io::SeekFrom::Start(8)).unwrap();
        let file = File::from_std(std, false);
        lines.push(seen(engine.write_at(&file, Buf::from(b"ferrite".to_vec()), 6).await));
        lines.push(seen(engine.read_at(&file, Buf::from(vec![0; 64]), 0).await));
        assert_eq!(std::fs::read(&path).unwrap(), b"hello ferrite.", "{name}");
        all.push((name, lines));
    }
    println!("{:#?}", all[0].1);
    assert_eq!(all[0].1[4], "Ok(\"head:onetwothreefour\")", "appended in order");
    agree("O_APPEND", &all);
}

/// Files that are not regular files: `/dev/zero` and `/dev/null` (positional I/O works, sync
/// does not), a directory (opened read-only: reads fail with `EISDIR`, syncs work; opened for
/// writing: the open fails), a descriptor opened write-only (reads fail). Same results on every
/// engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_files_directories_and_write_only_descriptors() {
    let dir = common::tempdir();
    let mut all = Vec::new();
    for (name, engine) in engines() {
        let mut lines = Vec::new();
        for device in ["/dev/zero", "/dev/null"] {
            let file = engine.open(device, &OpenOptions::new()).await.unwrap();
            // A read of /dev/zero may be short (the kernel stops between pages when the thread
            // should yield, and io_uring first tries without blocking), so reads are exact.
            let mut stamped = engine.acquire().await;
            stamped.fill(9);
            lines.push(format!("{device}: {}", seen(engine.read_exact_at(&file, stamped, 1 << 40).await)));
            lines.push(seen(engine.read_exact_at(&file, Buf::from(vec![9; 100]), 0).await));
            let members = vec![Buf::from(vec![9; 10]), Buf::from(vec![9; 10])];
            let (n, back) = engine.read_vectored_at(&file, members, 7).await.into_parts();
            let got: Vec<u8> = back.iter().flat_map(|b| b.iter().copied()).collect();
            assert_eq!(got.len(), n.unwrap(), "{name}");
            assert!(got.iter().all(|&b| b == 0), "{name}: {device} gave bytes that are not zero");
            lines.push(seen(engine.write_at(&file, Buf::from(vec![1; 100]), 0).await));
            lines.push(seen(engine.write_all_at(&file, Buf::from(vec![1; 100]), 3).await));
            lines.push(seen(engine.write_durable_at(&file, Buf::from(vec![1; 100]), 0).await));
            lines.push(seen_unit(engine.sync_all(&file).await));
            lines.push(seen_unit(engine.sync_data(&file).await));
        }
        let sub = dir.path().join(format!("{name}-dir"));
        std::fs::create_dir(&sub).unwrap();
        let error = engine.open(&sub, &OpenOptions::new()).await.unwrap_err();
        lines.push(format!("directory for writing: {}", code(&error)));
        let file = engine.open(&sub, &OpenOptions::new().write(false)).await.unwrap();
        lines.push(seen(engine.read_at(&file, engine.acquire().await, 0).await));
        lines.push(seen(engine.write_at(&file, engine.acquire().await, 0).await));
        lines.push(seen_unit(engine.sync_all(&file).await));
        lines.push(seen_unit(engine.sync_data(&file).await));
        let mut batch = Batch::new();
        batch.read_at(&file, engine.acquire().await, 0);
        lines.extend(engine.submit_batch(&mut batch).await.map(seen));
        let path = dir.path().join(format!("{name}-wo"));
        std::fs::write(&path, b"data").unwrap();
        let file = File::from_std(std::fs::OpenOptions::new().write(true).open(&path).unwrap(), false);
        lines.push(seen(engine.read_at(&file, engine.acquire().await, 0).await));
        lines.push(seen(engine.read_exact_at(&file, Buf::from(vec![0; 4]), 0).await));
        lines.push(seen(engine.write_at(&file, Buf::from(b"DA".to_vec()), 0).await));
        lines.push(seen_unit(engine.sync_all(&file).await));
        common::assert_pool_full(&engine);
        all.push((name, lines));
    }
    println!("{:#?}", all[0].1);
    agree("special files", &all);
}

/// tokio-uring and monoio `sync_doesnt_kill_anything`, and a sync of a read-only descriptor
/// (allowed on Linux): syncs before any write, after one, and on a read-only handle all work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_on_fresh_and_read_only_files() {
    let dir = common::tempdir();
    for (name, engine) in engines() {
        let file = create(&engine, &dir, name).await;
        engine.sync_all(&file).await.unwrap();
        engine.sync_data(&file).await.unwrap();
        engine.write_at(&file, Buf::from(b"foo".to_vec()), 0).await.0.unwrap();
        engine.sync_all(&file).await.unwrap();
        engine.sync_data(&file).await.unwrap();
        let read_only = engine.open(dir.path().join(name), &OpenOptions::new().write(false)).await.unwrap();
        engine.sync_all(&read_only).await.unwrap();
        engine.sync_data(&read_only).await.unwrap();
        let (result, _) = engine.write_durable_at(&read_only, Buf::from(b"bar".to_vec()), 0).await.into_parts();
        assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EBADF), "{name}");
        assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), b"foo");
    }
}

/// Pipes have no positions: `pread` on one fails with `ESPIPE`, while io_uring reads it as a
/// stream (the offset ignored), which the tokio engine now does too. Plain reads and writes,
/// exact ones and vectored ones (which take what the pipe holds, as `readv` does, instead of
/// waiting to fill every member) agree between the engines without the fast path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipes_are_streams_on_every_engine() {
    let all = pipe_steps(engines().into_iter().filter(|(name, _)| !name.ends_with("nowait")).collect()).await;
    assert_eq!(all[0].1[0], "Ok(7) (7, 8789493305340027482)", "{all:#?}");
    agree("pipes", &all);
}

/// As [`pipes_are_streams_on_every_engine`], with the `RWF_NOWAIT` fast path on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipes_are_streams_with_the_fast_path() {
    let all = pipe_steps(engines()).await;
    agree("pipes with the fast path", &all);
}

/// Reads and writes of a pipe on each engine; what each step saw.
async fn pipe_steps(engines: Vec<(&'static str, SharedIoEngine)>) -> Vec<(&'static str, Vec<String>)> {
    use std::io::Write;
    let mut all = Vec::new();
    for (name, engine) in engines {
        let (reader, mut writer) = common::pipe();
        writer.write_all(b"through the pipe").unwrap();
        let mut lines = Vec::new();
        lines.push(seen(watchdog(name, engine.read_at(&reader, Buf::from(vec![0; 7]), 0)).await));
        lines.push(seen(watchdog(name, engine.read_at(&reader, Buf::from(vec![0; 7]), 100)).await));
        // Two bytes left; the vectored read takes them without waiting for more.
        let members = vec![Buf::from(vec![0; 1]), Buf::from(vec![0; 4]), Buf::from(vec![0; 4])];
        lines.push(seen_vectored(watchdog(name, engine.read_vectored_at(&reader, members, 0)).await));
        let writer = File::from_std(writer, false);
        lines.push(seen(watchdog(name, engine.write_at(&writer, Buf::from(b"more".to_vec()), 0)).await));
        lines.push(seen(watchdog(name, engine.write_all_at(&writer, Buf::from(b" and".to_vec()), 9)).await));
        let members = vec![Buf::from(b" then".to_vec()), Buf::from(Vec::new()), Buf::from(b" some".to_vec())];
        lines.push(seen_vectored(watchdog(name, engine.write_vectored_at(&writer, members, 0)).await));
        lines.push(seen(watchdog(name, engine.read_exact_at(&reader, Buf::from(vec![0; 18]), 5)).await));
        lines.push(seen_unit(engine.sync_data(&writer).await));
        lines.push(seen(watchdog(name, engine.write_durable_at(&writer, Buf::from(b"!".to_vec()), 0)).await));
        // The read end gone: EPIPE (Rust ignores SIGPIPE), for plain and vectored writes.
        drop(reader);
        lines.push(seen(watchdog(name, engine.write_at(&writer, Buf::from(b"lost".to_vec()), 0)).await));
        let members = vec![Buf::from(b"lo".to_vec()), Buf::from(b"st".to_vec())];
        lines.push(seen_vectored(watchdog(name, engine.write_vectored_at(&writer, members, 0)).await));
        all.push((name, lines));
    }
    all
}

/// The engines without the fast path: a read of a pipe then waits in the kernel (or on a
/// blocking thread) until the pipe is written, which holds an operation in flight for as long as
/// a test needs. (With the fast path, a pipe fails at once: see
/// [`pipes_are_streams_with_the_fast_path`].)
fn waiting_engines() -> Vec<(&'static str, SharedIoEngine)> {
    engines().into_iter().filter(|(name, _)| !name.ends_with("nowait")).collect()
}

/// A wakeup counter to poll futures by hand with.
struct Woken(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// tokio-uring `complete_ops_on_drop`, monoio `drop_off_runtime`: a read in flight whose future
/// and every handle of its file are dropped keeps the descriptor open until the kernel is done
/// (it could otherwise be reused under the operation), returns its buffer when it completes, and
/// then closes the descriptor.
async fn file_dropped_while_an_operation_is_in_flight() {
    use std::io::Write;
    for (name, engine) in waiting_engines() {
        let (reader, mut writer) = common::pipe();
        let fd = reader.std().as_raw_fd();
        // SAFETY: `stat` is plain integers; all zeros is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes one `stat` into `st`, a live local; `fd` is open (held by `reader`).
        assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
        let mut buf = engine.acquire().await;
        buf.set_len(16).unwrap();
        let mut read = Box::pin(engine.read_at(&reader, buf, 0));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(read.as_mut().poll(&mut cx).is_pending(), "{name}: an empty pipe has nothing to read");
        drop(read);
        drop(reader); // the last handle of the file, but for the one inside the engine
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(still_open(fd, st.st_ino), "{name}: the descriptor was closed under a read in flight");
        assert_eq!(engine.pool().available(), engine.pool().capacity() - 1, "{name}: the buffer is the kernel's");
        writer.write_all(&[5; 16]).unwrap();
        pool_refills(name, &engine).await;
        watchdog(name, async {
            while still_open(fd, st.st_ino) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
    }
}

/// compio `timeout_read`, tokio `cancel_op_future`: a read of an empty pipe under a timeout and
/// in a `select!` against a timer loses; its buffer stays out while the read is in flight and
/// comes back when the pipe is written, and the engine goes on working.
async fn timeouts_and_select_leave_no_buffer_behind() {
    use std::io::Write;
    for (name, engine) in waiting_engines() {
        let (reader, mut writer) = common::pipe();
        let mut buf = engine.acquire().await;
        buf.set_len(16).unwrap();
        let timed = tokio::time::timeout(Duration::from_millis(5), engine.read_at(&reader, buf, 0)).await;
        assert!(timed.is_err(), "{name}: an empty pipe cannot be read in time");
        let mut buf = engine.acquire().await;
        buf.set_len(16).unwrap();
        tokio::select! {
            _ = engine.read_at(&reader, buf, 0) => panic!("{name}: an empty pipe was read"),
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        assert_eq!(engine.pool().available(), engine.pool().capacity() - 2, "{name}");
        writer.write_all(&[1; 32]).unwrap();
        drop(writer); // end of stream: whatever a read did not get, it ends with Ok(0)
        pool_refills(name, &engine).await;
        let (n, _) = watchdog(name, engine.read_at(&reader, Buf::from(vec![0; 8]), 0)).await.into_parts();
        assert_eq!(n.unwrap(), 0, "{name}: the abandoned reads took the data");
        assert_eq!(engine.stats().in_flight, 0, "{name}");
    }
}

/// glommio `cancellation_doest_crash_futures_not_polled` and tokio-uring `too_many_submissions`:
/// 200 write futures dropped before their first poll write nothing; 600 polled once and dropped
/// (far more than a 4-entry ring holds) leave the engine working, every buffer back, nothing in
/// flight, and the file either untouched or holding the one record.
async fn futures_dropped_unpolled_or_after_one_poll() {
    let dir = common::tempdir();
    let config = ferrite_io::IoEngineConfig { uring_entries: 4, ..common::config(EngineChoice::Auto) };
    for (name, engine) in common::engines(&config) {
        let file = create(&engine, &dir, name).await;
        let unpolled: Vec<_> = (0..200).map(|_| engine.write_at(&file, Buf::from(b"x".to_vec()), 0)).collect();
        drop(unpolled);
        let slots: Vec<_> = (0..8).map(|_| engine.pool().try_acquire().unwrap()).collect();
        let unpolled: Vec<_> = slots.into_iter().map(|b| engine.write_at(&file, b, 0)).collect();
        drop(unpolled);
        common::assert_pool_full(&engine);
        assert_eq!(file.size().unwrap(), 0, "{name}: an unpolled future wrote");
        let mut cx = Context::from_waker(Waker::noop());
        for i in 0..600 {
            let buf = if i % 8 == 0 { engine.acquire().await.into_free() } else { Buf::from(b"hello world".to_vec()) };
            let mut buf = buf;
            if buf.len() > 11 {
                buf.set_len(11).unwrap();
                buf.copy_from_slice(b"hello world");
            }
            let mut write = Box::pin(engine.write_at(&file, buf, 0));
            let _ = write.as_mut().poll(&mut cx);
        }
        pool_refills(name, &engine).await;
        watchdog(name, async {
            while engine.stats().in_flight != 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        let content = std::fs::read(dir.path().join(name)).unwrap();
        assert!(content.is_empty() || content == b"hello world", "{name}: {content:?}");
        let (n, _) = watchdog(name, engine.write_all_at(&file, Buf::from(b"after".to_vec()), 0)).await.into_parts();
        n.unwrap();
    }
}

/// tokio `fs_uring_completed_then_dropped_before_repoll`: an operation whose completion arrived
/// and woke its task, but whose future is dropped before it is polled again, gives its buffer
/// back and leaves nothing in flight, round after round.
async fn completed_then_dropped_before_the_next_poll() {
    let dir = common::tempdir();
    let path = dir.path().join("pages");
    std::fs::write(&path, pattern(3, 64 * 4096)).unwrap();
    for (name, engine) in engines() {
        let file = engine.open(&path, &OpenOptions::new().direct(true)).await.unwrap();
        // Without the fast path, half the rounds read a pipe, which certainly goes pending
        // until the test writes it; O_DIRECT reads usually do, but may finish in their submit.
        let waits = !name.ends_with("nowait");
        let mut pending = 0;
        for round in 0..64u64 {
            let mut buf = engine.acquire().await;
            buf.set_len(16).unwrap();
            let (reader, mut writer) = common::pipe();
            let piped = waits && round % 2 == 1;
            let file = if piped { &reader } else { &file };
            let woken = Arc::new(Woken(std::sync::atomic::AtomicUsize::new(0)));
            let waker = Waker::from(woken.clone());
            let mut read = Box::pin(engine.read_at(file, buf, round * 4096));
            if read.as_mut().poll(&mut Context::from_waker(&waker)).is_pending() {
                pending += 1;
                if piped {
                    std::io::Write::write_all(&mut writer, &[1; 16]).unwrap();
                }
                watchdog(name, async {
                    while woken.0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await;
            }
            drop(read);
            pool_refills(&format!("{name} round {round}"), &engine).await;
        }
        assert!(pending >= 32 || !waits, "{name}: the pipe reads did not wait");
        assert_eq!(engine.stats().in_flight, 0, "{name}");
    }
}

/// tokio `shutdown_runtime_with_pending_reads` and `shutdown_runtime_while_performing_io_uring_ops`:
/// a runtime shut down (with a deadline, from another thread) while 50 tasks read and write
/// through an engine created elsewhere: the shutdown returns, every buffer comes back, and the
/// engine works on the next runtime. On a current-thread and on multi-thread runtimes.
/// (On io_uring this found that the futures the shutdown drops abandon their operations while
/// the runtime's watcher still watches the ring, and nothing reaped the ring after the watcher
/// retired: fixed in `uring::wake`, which now hands such a ring to the completion thread.)
#[test]
fn runtime_shut_down_with_operations_in_flight() {
    let dir = common::tempdir();
    let path = dir.path().join("pages");
    std::fs::write(&path, pattern(4, 64 * 4096)).unwrap();
    let setup = tokio::runtime::Runtime::new().unwrap();
    let engines = setup.block_on(async { engines() });
    drop(setup);
    type Build = fn() -> tokio::runtime::Runtime;
    let flavors: [(&str, Build); 3] = [
        ("current", || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()),
        ("multi(1)", || tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()),
        ("multi(4)", || tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap()),
    ];
    for (flavor, build) in flavors.into_iter().cycle().take(6) {
        for (name, engine) in &engines {
            let rt = build();
            let file = rt.block_on(engine.open(&path, &OpenOptions::new().direct(true))).unwrap();
            for task in 0..50u64 {
                let (engine, file) = (engine.clone(), file.clone());
                rt.spawn(async move {
                    for i in 0.. {
                        let mut buf = engine.acquire().await;
                        buf.set_len(4096).unwrap();
                        let page = (task + i) % 64 * 4096;
                        let _ = if i % 4 == 0 {
                            engine.write_at(&file, buf, page).await
                        } else {
                            engine.read_at(&file, buf, page).await
                        };
                        tokio::task::yield_now().await;
                    }
                });
            }
            rt.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
            let (done, shut) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                rt.shutdown_timeout(Duration::from_millis(300));
                done.send(()).unwrap();
            });
            shut.recv_timeout(WATCHDOG).unwrap_or_else(|_| panic!("{name} on {flavor}: the shutdown hung"));
            let next = build();
            next.block_on(async {
                pool_refills(&format!("{name} after {flavor}"), engine).await;
                let (n, _) = watchdog(name, engine.read_at(&file, engine.acquire().await, 0)).await.into_parts();
                assert_eq!(n.unwrap(), 8192, "{name} after {flavor}");
            });
        }
    }
}

/// tokio-uring `pool_next_as_concurrency_limit`: ten writers share a pool of two buffers; each
/// waits for a buffer, writes its record, and the file holds all ten.
async fn ten_writers_share_two_buffers() {
    const RECORD: usize = 80;
    let dir = common::tempdir();
    let config =
        ferrite_io::IoEngineConfig { registered_buffers: 2, buffer_size: 4096, ..common::config(EngineChoice::Auto) };
    let mut files = Vec::new();
    for (name, engine) in common::engines(&config) {
        let file = create(&engine, &dir, name).await;
        let held = [engine.acquire().await, engine.acquire().await]; // every writer has to wait
        let writers: Vec<_> = (0..10u8)
            .map(|i| {
                let (engine, file) = (engine.clone(), file.clone());
                tokio::spawn(async move {
                    let mut buf = engine.acquire().await;
                    buf.set_len(RECORD).unwrap();
                    buf.fill(b'0' + i);
                    engine.write_all_at(&file, buf, RECORD as u64 * u64::from(i)).await.0
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(held);
        for writer in writers {
            watchdog(name, writer).await.unwrap().unwrap();
        }
        let content = std::fs::read(dir.path().join(name)).unwrap();
        let expected: Vec<u8> = (0..10u8).flat_map(|i| [b'0' + i; RECORD]).collect();
        assert_eq!(content, expected, "{name}");
        assert!(engine.pool().waits() > 0, "{name}: nobody had to wait for a buffer");
        files.push(content);
    }
}

/// glommio `random_io` with a writer and a reader at once: readers race a task that writes the
/// file page by page. A read never sees bytes that were never written: each byte is zero (not
/// yet written, or a hole) or its page's value, and it never returns more than the file held.
async fn readers_race_a_writer() {
    const PAGES: u64 = 64;
    const PAGE: usize = 4096;
    let dir = common::tempdir();
    for (name, engine) in engines() {
        let file = create(&engine, &dir, name).await;
        let writer = tokio::spawn({
            let (engine, file) = (engine.clone(), file.clone());
            async move {
                for page in 0..PAGES {
                    let mut buf = engine.acquire().await;
                    buf.set_len(PAGE).unwrap();
                    buf.fill(page as u8 + 1);
                    engine.write_all_at(&file, buf, page * PAGE as u64).await.0.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        let readers: Vec<_> = (0..4u64)
            .map(|seed| {
                let (engine, file) = (engine.clone(), file.clone());
                tokio::spawn(async move {
                    let mut rng = common::Rng(seed * 7919 + 1);
                    for _ in 0..200 {
                        let offset = rng.below(PAGES * PAGE as u64 - 100);
                        let len = 1 + rng.below(2 * PAGE as u64) as usize;
                        let (n, back) = engine.read_at(&file, Buf::from(vec![0xEE; len]), offset).await.into_parts();
                        let n = n.unwrap();
                        assert_eq!(back.len(), n);
                        for (i, &byte) in back.iter().enumerate() {
                            let page = (offset + i as u64) / PAGE as u64;
                            assert!(byte == 0 || byte == page as u8 + 1, "byte {i} of a read at {offset}: {byte}");
                        }
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        watchdog(name, writer).await.unwrap();
        for reader in readers {
            watchdog(name, reader).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let content = std::fs::read(dir.path().join(name)).unwrap();
        assert!(content.chunks(PAGE).enumerate().all(|(i, page)| page.iter().all(|&b| b == i as u8 + 1)), "{name}");
        common::assert_pool_full(&engine);
    }
}

/// tokio `test_file_read_large` and `test_file_read_buffer_larger_than_max`, tokio-uring
/// `basic_read_exact` of a repeated record: a 24 MiB buffer of caller memory written and read
/// back whole, and a file of 4 MiB + 1000 bytes read to its end in chunks of pool buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_buffers_and_files_read_in_chunks() {
    let dir = common::tempdir();
    let big: Vec<u8> = b"hello world...".iter().copied().cycle().take(24 << 20).collect();
    let chunked = pattern(9, (4 << 20) + 1000);
    std::fs::write(dir.path().join("chunked"), &chunked).unwrap();
    for (name, engine) in engines() {
        let file = create(&engine, &dir, name).await;
        let (result, back) = watchdog(name, engine.write_all_at(&file, Buf::from(big.clone()), 3)).await.into_parts();
        result.unwrap();
        assert_eq!(back.len(), big.len());
        let (result, back) =
            watchdog(name, engine.read_exact_at(&file, Buf::from(vec![0; big.len()]), 3)).await.into_parts();
        result.unwrap();
        assert!(back[..] == big[..], "{name}: the 24 MiB came back changed");
        let (n, _) = watchdog(name, engine.read_at(&file, Buf::from(vec![0; big.len() + 4096]), 0)).await.into_parts();
        assert_eq!(n.unwrap(), big.len() + 3, "{name}: one read of the whole file");

        let file = engine.open(dir.path().join("chunked"), &OpenOptions::new().write(false)).await.unwrap();
        let mut read = Vec::new();
        loop {
            let (n, back) =
                watchdog(name, engine.read_at(&file, engine.acquire().await, read.len() as u64)).await.into_parts();
            if n.unwrap() == 0 {
                break;
            }
            read.extend_from_slice(&back);
        }
        assert!(read == chunked, "{name}: the file read in chunks differs");
        common::assert_pool_full(&engine);
    }
}

/// tokio `open_many_files` and `test_file_read_concurrent`: 600 files open at once, each
/// written and read by its own task; then 3000 opens of 64 files, one read each, every handle
/// dropped at once. Every descriptor is closed when its last handle goes (on io_uring, every
/// file also took and gave back a fixed-file index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_files_open_at_once_and_opened_over_and_over() {
    let dir = common::tempdir();
    for (name, engine) in engines() {
        let tasks: Vec<_> = (0..600u32)
            .map(|i| {
                let engine = engine.clone();
                let path = dir.path().join(format!("{name}-{i}"));
                tokio::spawn(async move {
                    let file = engine.open(&path, &OpenOptions::new().create(true)).await.unwrap();
                    let record = format!("file {i}").into_bytes();
                    engine.write_all_at(&file, Buf::from(record.clone()), 0).await.0.unwrap();
                    let (n, back) = engine.read_at(&file, Buf::from(vec![0; 64]), 0).await.into_parts();
                    assert_eq!((n.unwrap(), &back[..]), (record.len(), &record[..]));
                    file
                })
            })
            .collect();
        let mut files = Vec::new();
        for task in tasks {
            files.push(watchdog(name, task).await.unwrap());
        }
        let ids: Vec<_> = files.iter().map(identity).collect();
        drop(files);
        assert!(ids.iter().all(|&(fd, ino)| !still_open(fd, ino)), "{name}: a descriptor outlived its file");
        for i in 0..3000u32 {
            let path = dir.path().join(format!("{name}-{}", i % 64));
            let file = engine.open(&path, &OpenOptions::new().write(false)).await.unwrap();
            let (n, _) = watchdog(name, engine.read_at(&file, Buf::from(vec![0; 16]), 0)).await.into_parts();
            assert!(n.unwrap() > 0, "{name}");
            let id = identity(&file);
            drop(file);
            assert!(!still_open(id.0, id.1), "{name}: the descriptor of a dropped file is open");
        }
        assert_eq!(engine.stats().registered_files, 0, "{name}: fixed-file indices were kept");
    }
}

/// A file's descriptor and inode.
fn identity(file: &File) -> (i32, u64) {
    use std::os::unix::fs::MetadataExt;
    (file.std().as_raw_fd(), file.std().metadata().unwrap().ino())
}

/// Operations driven from `spawn_blocking` threads with `Handle::block_on` (code that bridges a
/// synchronous API to the engine), next to tasks doing the same on the runtime's workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_from_blocking_threads() {
    let dir = common::tempdir();
    for (name, engine) in engines() {
        let file = create(&engine, &dir, name).await;
        let mut joins = Vec::new();
        for i in 0..8u64 {
            let (engine, file) = (engine.clone(), file.clone());
            let work = async move {
                let record = pattern(i as u8, 1000);
                engine.write_all_at(&file, Buf::from(record.clone()), i * 1000).await.0.unwrap();
                let (result, back) = engine.read_exact_at(&file, Buf::from(vec![0; 1000]), i * 1000).await.into_parts();
                result.unwrap();
                assert_eq!(back[..], record[..]);
                engine.sync_data(&file).await.unwrap();
            };
            if i % 2 == 0 {
                let handle = tokio::runtime::Handle::current();
                joins.push(tokio::task::spawn_blocking(move || handle.block_on(work)));
            } else {
                joins.push(tokio::spawn(work));
            }
        }
        for join in joins {
            watchdog(name, join).await.unwrap();
        }
        assert_eq!(file.size().unwrap(), 8000, "{name}");
    }
}

/// Buffers of odd lengths at odd offsets, of caller memory and of views into pool slots that
/// start at odd addresses: every engine writes the same file and reads the same bytes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_lengths_offsets_and_views() {
    let dir = common::tempdir();
    let mut all = Vec::new();
    for (name, engine) in engines() {
        let file = create(&engine, &dir, name).await;
        let mut lines = Vec::new();
        let mut offset = 1u64;
        for (i, len) in [1usize, 3, 511, 513, 4095, 4097, 8185].into_iter().enumerate() {
            let seed = i as u8 * 17;
            lines.push(seen(engine.write_at(&file, Buf::from(pattern(seed, len)), offset).await));
            let mut view = engine.pool().acquire().await.slice(7..7 + len);
            view.copy_from_slice(&pattern(seed + 1, len));
            lines.push(seen(engine.write_all_at(&file, view, offset + len as u64).await));
            let view = engine.acquire().await.slice(3..3 + len);
            let (n, back) = engine.read_fixed_at(&file, view, offset).await.into_parts();
            assert_eq!((n.unwrap(), &back[..]), (len, &pattern(seed, len)[..]), "{name}: {len} at {offset}");
            let boxed = Buf::from(vec![0u8; len].into_boxed_slice());
            let (result, back) = engine.read_exact_at(&file, boxed, offset + len as u64).await.into_parts();
            result.unwrap();
            assert_eq!(back[..], pattern(seed + 1, len)[..], "{name}");
            offset += 2 * len as u64 + 3;
        }
        // As many members as one vectored call takes (IOV_MAX), one byte each.
        let members: Vec<_> = (0..ferrite_io::io::MAX_VECTORED).map(|i| Buf::from(vec![i as u8])).collect();
        lines.push(seen_vectored(engine.write_vectored_at(&file, members, offset).await));
        let members: Vec<_> = (0..ferrite_io::io::MAX_VECTORED).map(|_| Buf::from(vec![0])).collect();
        let (n, back) = engine.read_vectored_at(&file, members, offset).await.into_parts();
        assert_eq!(n.unwrap(), ferrite_io::io::MAX_VECTORED, "{name}");
        assert!(back.iter().enumerate().all(|(i, b)| b[..] == [i as u8]), "{name}");
        lines.push(format!("{:?}", digest(&std::fs::read(dir.path().join(name)).unwrap())));
        common::assert_pool_full(&engine);
        all.push((name, lines));
    }
    agree("odd lengths", &all);
}

/// glommio `mirror_buffer_to_two_files`, and one pool and one file on two engines: a buffer of
/// one engine's pool goes through another engine's plain operations and batches (as a plain
/// buffer) and is refused by its fixed ones; a file used first by one engine (which gives it a
/// fixed-file index there, on io_uring) works on the other, also after the first is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pool_and_one_file_on_two_engines() {
    let dir = common::tempdir();
    let config = common::config(EngineChoice::Auto);
    let mut all = Vec::new();
    let names: Vec<_> = engines().into_iter().map(|(name, _)| name).collect();
    for first_name in names {
        for (second_name, second) in common::engines(&config) {
            // A fresh engine of the first kind for each pair, dropped half-way.
            let choice = if first_name.starts_with("uring") { EngineChoice::Uring } else { EngineChoice::Tokio };
            let fast = first_name.ends_with("nowait");
            let first_config =
                ferrite_io::IoEngineConfig { nowait_fast_path: fast, ..config.clone().with_engine(choice) };
            let first = ferrite_io::create_engine(first_config).unwrap();
            let name = format!("{first_name}+{second_name}");
            let file = create(&first, &dir, &name).await;
            let mut lines = Vec::new();
            let mut page = first.acquire().await;
            page.fill(1);
            lines.push(seen(first.write_fixed_at(&file, page, 0).await));
            // The first engine's registered buffer on the second engine.
            let mut page = first.acquire().await;
            page.fill(2);
            let (result, page) = second.write_fixed_at(&file, page, 8192).await.into_parts();
            lines.push(format!("fixed elsewhere: {}", result.map_or_else(|e| code(&e), |n| n.to_string())));
            let page = page.try_into_registered(&*first).expect("its own pool");
            lines.push(seen(second.write_at(&file, page, 8192).await));
            let mut batch = Batch::new();
            let mut page = first.acquire().await;
            page.fill(3);
            batch.write_at(&file, page, 16384);
            batch.read_at(&file, first.acquire().await, 0);
            lines.extend(second.submit_batch(&mut batch).await.map(seen));
            drop(first);
            lines.push(seen(second.read_at(&file, second.acquire().await, 8192).await));
            lines.push(seen(second.write_durable_at(&file, Buf::from(b"after".to_vec()), 24576).await));
            lines.push(format!("{:?}", digest(&std::fs::read(dir.path().join(&name)).unwrap())));
            common::assert_pool_full(&second);
            all.push((first_name, lines));
        }
    }
    agree("two engines", &all);
}

/// Polls `future` once with a no-op waker.
fn poll_once<F: Future + ?Sized>(future: std::pin::Pin<&mut F>) -> bool {
    future.poll(&mut Context::from_waker(Waker::noop())).is_ready()
}

/// Cancellation by drop at every await point of the composite operations (tokio-uring and
/// monoio `cancel_read`, glommio's cancellation tests, swept instead of sampled): an exact read
/// of a pipe fed 8 bytes at a time, a vectored read of it, and a linked write and sync, each
/// dropped after 0, 1, 2, ... polls until it finishes. Every drop gives the buffers back, leaves
/// nothing in flight, and the engine reads the rest of the stream in order afterwards.
async fn dropped_at_every_await_point() {
    use std::io::Write;
    let dir = common::tempdir();
    for (name, engine) in waiting_engines() {
        let file = create(&engine, &dir, name).await;
        for polls in 0..8 {
            let (reader, mut writer) = common::pipe();
            let (exact, vectored) = {
                let mut exact = Box::pin(engine.read_exact_at(&reader, Buf::from(vec![0; 32]), 0));
                let members = vec![Buf::from(vec![0; 4]), Buf::from(vec![0; 4])];
                let mut vectored = Box::pin(engine.read_vectored_at(&reader, members, 0));
                let mut durable = Box::pin(engine.write_durable_at(&file, Buf::from(vec![polls as u8; 4096]), 0));
                let mut done = [false; 3];
                for _ in 0..polls {
                    done[0] |= !done[0] && poll_once(exact.as_mut());
                    writer.write_all(&[polls as u8; 8]).unwrap();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    done[1] |= !done[1] && poll_once(vectored.as_mut());
                    done[2] |= !done[2] && poll_once(durable.as_mut());
                }
                (done[0], done[1])
            };
            // Whatever the dropped reads did not take is still in the pipe, in order.
            writer.write_all(&[0xFF; 40]).unwrap();
            drop(writer);
            pool_refills(&format!("{name} after {polls} polls"), &engine).await;
            watchdog(name, async {
                while engine.stats().in_flight != 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await;
            let mut rest = Vec::new();
            loop {
                let (n, back) = watchdog(name, engine.read_at(&reader, Buf::from(vec![0; 64]), 0)).await.into_parts();
                if n.unwrap() == 0 {
                    break;
                }
                rest.extend_from_slice(&back);
            }
            let mut fed = vec![polls as u8; 8 * polls];
            fed.extend_from_slice(&[0xFF; 40]);
            assert!(fed.ends_with(&rest), "{name} after {polls} polls: the stream came out of order: {rest:?}");
            let taken = usize::from(exact) * 32 + usize::from(vectored); // a stream read takes 1 to 8
            assert!(rest.len() + taken <= fed.len(), "{name}: finished reads left their bytes in the pipe");
        }
        common::assert_pool_full(&engine);
    }
}

/// A buffer larger than one syscall moves: Linux caps a read or write at 2 GiB - 4 KiB
/// (`MAX_RW_COUNT`), through `pwrite` and through io_uring alike. A 2.5 GiB write to `/dev/null`
/// (of zero pages that are never touched, so it costs no memory) is short by the same amount on
/// the engines without the fast path (with it, a short inline write is continued, so the one
/// `write_at` moves it all), and `write_all_at` finishes it everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_larger_than_one_syscall_moves() {
    const LEN: usize = 5 << 29;
    let mut all = Vec::new();
    for (name, engine) in engines() {
        let null = engine.open("/dev/null", &OpenOptions::new()).await.unwrap();
        let (n, back) = watchdog(name, engine.write_at(&null, Buf::from(vec![0u8; LEN]), 0)).await.into_parts();
        let n = n.unwrap();
        assert!(n < LEN || name.ends_with("nowait"), "{name}: one write of 2.5 GiB moved it all");
        let (result, back) =
            watchdog(name, engine.write_all_at(&null, back.into_free().unslice(), 0)).await.into_parts();
        result.unwrap();
        assert_eq!(back.len(), LEN, "{name}");
        all.push((name, vec![n.to_string()]));
    }
    all.retain(|(name, _)| !name.ends_with("nowait"));
    agree("2.5 GiB", &all);
}

/// More descriptors without positions: a pipe set `O_NONBLOCK` (io_uring waits for an empty
/// one to be written instead of failing with `EAGAIN`, and so does the tokio engine) and a Unix
/// socket (a stream, like a pipe, but one that refuses any offset but 0 with `ESPIPE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonblocking_pipes_and_sockets() {
    use std::io::Write;
    let mut all = Vec::new();
    for (name, engine) in waiting_engines() {
        let mut lines = Vec::new();
        let (reader, mut writer) = common::pipe();
        // SAFETY: fcntl(F_SETFL) takes an integer argument; the descriptor is open (`reader`).
        assert_eq!(unsafe { libc::fcntl(reader.std().as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) }, 0);
        let mut read = Box::pin(engine.read_at(&reader, Buf::from(vec![0; 8]), 0));
        assert!(!poll_once(read.as_mut()), "{name}: an empty pipe was read");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!poll_once(read.as_mut()), "{name}: a read of an empty O_NONBLOCK pipe did not wait");
        writer.write_all(b"ready").unwrap();
        lines.push(seen(watchdog(name, read).await));
        writer.write_all(b"12345678").unwrap();
        lines.push(seen(watchdog(name, engine.read_exact_at(&reader, Buf::from(vec![0; 8]), 0)).await));

        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let socket = File::from_std(std::fs::File::from(OwnedFd::from(ours)), false);
        let mut theirs = theirs;
        theirs.write_all(b"over the socket").unwrap();
        lines.push(seen(watchdog(name, engine.read_at(&socket, Buf::from(vec![0; 4]), 123)).await));
        let members = vec![Buf::from(vec![0; 4]), Buf::from(vec![0; 40])];
        lines.push(seen_vectored(watchdog(name, engine.read_vectored_at(&socket, members, 0)).await));
        // A socket, unlike a pipe, takes no offset but 0 (io_uring passes it to the socket).
        lines.push(seen(watchdog(name, engine.write_at(&socket, Buf::from(b"lost".to_vec()), 9)).await));
        lines.push(seen(watchdog(name, engine.write_all_at(&socket, Buf::from(b"back".to_vec()), 0)).await));
        let mut back = [0; 4];
        theirs.set_read_timeout(Some(WATCHDOG)).unwrap();
        std::io::Read::read_exact(&mut theirs, &mut back).unwrap_or_else(|e| panic!("{name}: {e}: {lines:?}"));
        assert_eq!(&back, b"back", "{name}");
        all.push((name, lines));
    }
    agree("non-blocking pipes and sockets", &all);
}
