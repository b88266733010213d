//! The engines at the edges of their configuration and under misbehaving callers: every
//! operation on a one-entry ring (and the per-page-sync flusher on one), far more operations in
//! flight than the CQ holds, a waker that panics, the `direct_io` key, and the statistics that
//! report all of it, a fallback's reason included. Both engines run every test that applies to
//! them, the ring-limit and waker tests on a current-thread and on a multi-thread runtime; every
//! wait has a watchdog.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::Beat;
use ferrite_io::hybridlog::page::{self, PAYLOAD_START};
use ferrite_io::hybridlog::{FlusherConfig, PageFlusher, SyncPolicy};
use ferrite_io::{Batch, EngineChoice, IoEngine, IoEngineConfig, OpenOptions, SharedIoEngine};

const PAGE: usize = 4096;
const WATCHDOG: Duration = Duration::from_secs(20);

async fn watchdog<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(WATCHDOG, future).await.unwrap_or_else(|_| panic!("{what}: hung (watchdog)"))
}

/// Runs `test` in `Runtime::block_on` of each runtime flavour, on a thread of its own watched
/// from the test's thread (`common::watched`): each step the test begins must end within the
/// watchdog, even when what stalls is the runtime under test, which its own timers cannot see.
fn on_each_flavour<F, Fut>(test: F)
where
    F: Fn(Beat) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()>,
{
    for (flavour, build) in common::FLAVOURS {
        common::watched(flavour, move |beat| build().block_on(test(beat)));
    }
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..PAGE).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

async fn filled(engine: &SharedIoEngine, seed: u8) -> ferrite_io::Buf<ferrite_io::Registered> {
    let mut buf = engine.acquire().await;
    buf.copy_from_slice(&pattern(seed));
    buf
}

/// `uring_entries = 1` is documented as valid, so every operation must work on it.
/// Both engines, rings of one SQ entry (a CQ of two) where io_uring is the engine.
fn one_entry_ring() -> IoEngineConfig {
    IoEngineConfig {
        uring_entries: 1,
        rings: 1,
        registered_buffers: 16,
        buffer_size: PAGE,
        ..common::config(EngineChoice::Auto)
    }
}

#[test]
fn every_operation_on_a_one_entry_ring() {
    on_each_flavour(every_operation_on_a_one_entry_ring_on);
}

async fn every_operation_on_a_one_entry_ring_on(beat: Beat) {
    let dir = common::tempdir();
    let config = one_entry_ring();
    for (name, engine) in common::engines(&config) {
        for direct in [false, true] {
            let what = format!("{name} direct={direct}");
            beat.step(&what);
            let path = dir.path().join(format!("{name}-{direct}"));
            let file =
                engine.open(&path, &OpenOptions::new().create(true).truncate(true).direct(direct)).await.unwrap();
            {
                assert_eq!(engine.write_at(&file, filled(&engine, 1).await, 0).await.0.unwrap(), PAGE, "{what}");
                assert_eq!(engine.write_fixed_at(&file, filled(&engine, 2).await, 4096).await.0.unwrap(), PAGE);
                engine.write_all_at(&file, filled(&engine, 3).await, 8192).await.0.unwrap();
                engine.write_durable_at(&file, filled(&engine, 4).await, 12288).await.0.unwrap();
                let bufs = vec![filled(&engine, 5).await, filled(&engine, 6).await];
                assert_eq!(engine.write_vectored_at(&file, bufs, 16384).await.0.unwrap(), 2 * PAGE);
                engine.sync_all(&file).await.unwrap();
                engine.sync_data(&file).await.unwrap();
                let (n, buf) = engine.read_at(&file, engine.acquire().await, 0).await.into_parts();
                assert_eq!((n.unwrap(), &buf[..]), (PAGE, &pattern(1)[..]), "{what}");
                let (n, buf) = engine.read_fixed_at(&file, engine.acquire().await, 4096).await.into_parts();
                assert_eq!((n.unwrap(), &buf[..]), (PAGE, &pattern(2)[..]), "{what}");
                let (r, buf) = engine.read_exact_at(&file, engine.acquire().await, 12288).await.into_parts();
                r.unwrap();
                assert_eq!(&buf[..], &pattern(4)[..], "{what}");
                let bufs = vec![engine.acquire().await, engine.acquire().await];
                let (n, bufs) = engine.read_vectored_at(&file, bufs, 16384).await.into_parts();
                assert_eq!(n.unwrap(), 2 * PAGE);
                assert_eq!((&bufs[0][..], &bufs[1][..]), (&pattern(5)[..], &pattern(6)[..]), "{what}");
                let mut batch = Batch::new();
                for page in 0..6u64 {
                    batch.read_at(&file, engine.acquire().await, page * PAGE as u64);
                }
                let results: Vec<_> = engine.submit_batch(&mut batch).await.collect();
                assert_eq!(results.len(), 6);
                for (page, r) in results.iter().enumerate() {
                    assert_eq!(r.0.as_ref().unwrap(), &PAGE, "{what} batch page {page}");
                    assert_eq!(&r.1[..], &pattern(page as u8 + 1)[..], "{what} batch page {page}");
                }
            }
            common::assert_pool_full(&engine);
        }
    }
}

/// A batch larger than the ring's room as the first thing a fresh engine does: its first
/// entries are in flight with no future waiting on them yet while the batch waits for room, so
/// the wait itself must see that the ring gets reaped. On each runtime flavour (in
/// `Runtime::block_on`, outside any task) and under `UringEngine::block_on`.
#[test]
fn a_batch_larger_than_the_ring_on_a_fresh_engine() {
    on_each_flavour(|beat| async move {
        for round in 0..20 {
            beat.step(format!("round {round}"));
            batch_larger_than_the_ring(&beat).await;
        }
    });
    #[cfg(all(feature = "io-uring", target_os = "linux"))]
    common::watched("UringEngine::block_on", |beat| {
        let config = IoEngineConfig { engine: EngineChoice::Uring, ..one_entry_ring() };
        for round in 0..20 {
            beat.step(format!("round {round}"));
            let dir = common::tempdir();
            let path = eight_pages(&dir);
            let engine = ferrite_io::UringEngine::new(&config).unwrap();
            let file = direct_without_runtime(&path);
            engine.block_on(async {
                let mut batch = Batch::new();
                for page in 0..6u64 {
                    batch.read_at(&file, engine.acquire().await, page * PAGE as u64);
                }
                for (page, r) in engine.submit_batch(&mut batch).await.enumerate() {
                    assert_eq!(r.0.unwrap(), PAGE, "block_on batch page {page}");
                    assert_eq!(&r.1[..], &pattern(page as u8)[..]);
                }
            });
        }
    });
}

/// A file in `dir` of eight pages, page `i` filled with `pattern(i)`.
fn eight_pages(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("data");
    std::fs::write(&path, (0..8u8).flat_map(pattern).collect::<Vec<u8>>()).unwrap();
    path
}

/// `path` opened for O_DIRECT reads without a runtime (`engine.open` runs on tokio's blocking
/// pool).
#[cfg(all(feature = "io-uring", target_os = "linux"))]
fn direct_without_runtime(path: &std::path::Path) -> ferrite_io::File {
    use std::os::unix::fs::OpenOptionsExt;
    let std = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).unwrap();
    ferrite_io::File::from_std(std, true)
}

async fn batch_larger_than_the_ring(beat: &Beat) {
    let dir = common::tempdir();
    let path = eight_pages(&dir);
    for (name, engine) in common::engines(&one_entry_ring()) {
        beat.step(name);
        let file = engine.open(&path, &OpenOptions::new().direct(true)).await.unwrap();
        let mut batch = Batch::new();
        for page in 0..6u64 {
            batch.read_at(&file, engine.acquire().await, page * PAGE as u64);
        }
        for (page, r) in engine.submit_batch(&mut batch).await.enumerate() {
            assert_eq!(r.0.unwrap(), PAGE, "{name} batch page {page}");
            assert_eq!(&r.1[..], &pattern(page as u8)[..], "{name} batch page {page}");
        }
    }
}

/// A CQ of 2 and 3 to 8 O_DIRECT reads and syncs at once, round after round: every operation
/// completes and wakes its task (no completion stranded in an overflow), and the CQ never
/// overflows because operations beyond its size wait for room.
#[test]
fn more_operations_than_the_cq_holds() {
    on_each_flavour(more_operations_than_the_cq_holds_on);
}

async fn more_operations_than_the_cq_holds_on(beat: Beat) {
    let dir = common::tempdir();
    let path = dir.path().join("data");
    let pages: Vec<u8> = (0..64u8).flat_map(|i| std::iter::repeat_n(i, PAGE)).collect();
    std::fs::write(&path, pages).unwrap();
    let config = IoEngineConfig {
        uring_entries: 1,
        registered_buffers: 16,
        buffer_size: PAGE,
        ..common::config(EngineChoice::Auto)
    };
    let rounds = if cfg!(debug_assertions) { 1500 } else { 5000 };
    for (name, engine) in common::engines(&config) {
        beat.step(format!("{name}: open"));
        let file = engine.open(&path, &OpenOptions::new().direct(true)).await.unwrap();
        let mut rng = common::Rng(0x5EED);
        for round in 0..rounds {
            beat.step(format!("{name} round {round}"));
            let n = 3 + rng.below(6) as usize;
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..n {
                let (engine, file) = (engine.clone(), file.clone());
                let page = rng.below(64);
                tasks.spawn(async move {
                    if i % 4 == 3 {
                        engine.sync_data(&file).await.unwrap();
                        return;
                    }
                    let buf = engine.acquire().await;
                    let (n, buf) = engine.read_fixed_at(&file, buf, page * PAGE as u64).await.into_parts();
                    assert_eq!(n.unwrap(), PAGE);
                    assert!(buf.iter().all(|&b| u64::from(b) == page));
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
        }
        let stats = engine.stats();
        assert_eq!((stats.cq_overflows, stats.in_flight), (0, 0), "{name}: {stats:?}");
        if engine.backend() == ferrite_io::Backend::Uring {
            assert!(stats.ring_waits > 0, "{name}: the cap was never reached: {stats:?}");
            assert!(stats.in_flight_high_water <= 2, "{name}: more in flight than the CQ holds: {stats:?}");
        }
        common::assert_pool_full(&engine);
    }
}

/// Defect 3's first symptom: a flusher that syncs every page links each write to its sync, two
/// entries, which a one-entry ring refused (EBUSY) on the first page. Pins the write-then-sync
/// path for rings too small to link: several pages flush, each with its own sync, and land intact.
#[test]
fn per_page_sync_flusher_on_a_one_entry_ring() {
    on_each_flavour(per_page_sync_flusher_on_a_one_entry_ring_on);
}

async fn per_page_sync_flusher_on_a_one_entry_ring_on(beat: Beat) {
    const PAGES: u64 = 8;
    let dir = common::tempdir();
    let config = one_entry_ring();
    for (name, engine) in common::engines(&config) {
        for direct in [false, true] {
            let what = format!("{name} direct={direct}");
            beat.step(format!("{what}: open"));
            let path = dir.path().join(format!("{name}-{direct}.log"));
            let file =
                engine.open(&path, &OpenOptions::new().create(true).truncate(true).direct(direct)).await.unwrap();
            let flusher = Arc::new(PageFlusher::new(
                engine.clone(),
                file,
                FlusherConfig { page_size: PAGE, depth: 4, sync: SyncPolicy::PerPage, ..FlusherConfig::default() },
            ));
            let syncs = engine.stats().syncs;
            beat.step(format!("{what}: flush {PAGES} pages"));
            let mut flushes = tokio::task::JoinSet::new();
            for index in 0..PAGES {
                let flusher = flusher.clone();
                flushes.spawn(async move {
                    let mut buf = flusher.engine().acquire().await;
                    let payload = format!("page {index}");
                    buf[PAYLOAD_START..PAYLOAD_START + payload.len()].copy_from_slice(payload.as_bytes());
                    let (result, back) = flusher.flush(buf, index * PAGE as u64, payload.len()).await.into_parts();
                    (index, result.map_err(|e| e.to_string()), back.len())
                });
            }
            while let Some(done) = flushes.join_next().await {
                let (index, result, len) = done.unwrap();
                assert_eq!(result, Ok(()), "{what}: page {index}");
                assert_eq!(len, PAGE, "{what}: page {index} comes back whole");
            }
            assert_eq!(flusher.flushed_until(), PAGES * PAGE as u64, "{what}");
            assert_eq!(flusher.poisoned().map(|e| e.to_string()), None, "{what}");
            let stats = engine.stats();
            assert_eq!(stats.syncs - syncs, PAGES, "{what}: one sync per page: {stats:?}");
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len(), PAGES as usize * PAGE, "{what}");
            for (index, at) in (0..PAGES).map(|i| (i, i as usize * PAGE)) {
                let info = page::verify(&bytes[at..at + PAGE], at as u64).unwrap_or_else(|e| panic!("{what}: {e}"));
                let payload = info.payload();
                assert_eq!(&bytes[at + payload.start..at + payload.end], format!("page {index}").as_bytes(), "{what}");
            }
            common::assert_pool_full(&engine);
        }
    }
}

/// A waker that panics when woken is called by whoever delivers its completion. It must not
/// stop the engine: the panic is contained, and every later operation still completes.
#[test]
fn a_panicking_waker_stalls_nothing() {
    on_each_flavour(a_panicking_waker_stalls_nothing_on);
}

/// A waker that counts its wake-ups, then panics: the count proves the panic happened.
struct Bomb(std::sync::atomic::AtomicU32);

impl std::task::Wake for Bomb {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        panic!("this waker panics on purpose");
    }
}

impl Bomb {
    fn new() -> Arc<Bomb> {
        Arc::new(Bomb(std::sync::atomic::AtomicU32::new(0)))
    }

    fn exploded(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst) > 0
    }
}

async fn a_panicking_waker_stalls_nothing_on(beat: Beat) {
    use std::task::{Context, Poll, Waker};
    let dir = common::tempdir();
    let path = dir.path().join("data");
    std::fs::write(&path, vec![9u8; 64 * PAGE]).unwrap();
    let config = IoEngineConfig { registered_buffers: 16, buffer_size: PAGE, ..common::config(EngineChoice::Auto) };
    for (name, engine) in common::engines(&config) {
        beat.step(format!("{name}: open"));
        // O_DIRECT: a read waits for the device, so its completion comes after its submit.
        let file = engine.open(&path, &OpenOptions::new().direct(true)).await.unwrap();
        let mut exploded = 0;
        for round in 0..20u64 {
            let what = format!("{name} round {round}");
            beat.step(format!("{what}: a read whose waker panics"));
            let bomb = Bomb::new();
            let mut read = Box::pin(engine.read_at(&file, engine.acquire().await, round * PAGE as u64));
            let first = read.as_mut().poll(&mut Context::from_waker(&Waker::from(bomb.clone())));
            let done = match first {
                // Done inside its submit: no waker was needed, and this round proves nothing.
                Poll::Ready(done) => done,
                Poll::Pending => {
                    // Not polled again until whoever delivers its completion has woken the bomb.
                    while !bomb.exploded() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    exploded += 1;
                    read.await
                }
            };
            assert_eq!(done.0.unwrap(), PAGE, "{what}");
            // Operations of other tasks that complete later are still delivered.
            beat.step(format!("{what}: reads after a panicking waker"));
            let mut tasks = tokio::task::JoinSet::new();
            for page in 0..8u64 {
                let (engine, file) = (engine.clone(), file.clone());
                tasks.spawn(async move {
                    engine.read_at(&file, engine.acquire().await, page * PAGE as u64).await.0.unwrap()
                });
            }
            while let Some(n) = tasks.join_next().await {
                assert_eq!(n.unwrap(), PAGE, "{what}");
            }
        }
        // Without this the test would pass without a single panic had every read completed inline.
        assert!(exploded > 0, "{name}: no read went pending, so no waker panicked");
        common::assert_pool_full(&engine);
    }
}

/// Tasks waiting for ring room are woken together when completions free it; one of them with a
/// panicking waker must not cost the others theirs. (tokio's semaphore, which holds the room,
/// drops the rest of a batch of wakers when one panics; the engine hands it wakers that cannot.)
#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[test]
fn a_panicking_waker_waiting_for_ring_room_strands_no_other_waiter() {
    on_each_flavour(a_panicking_waker_waiting_for_ring_room_strands_no_other_waiter_on);
}

#[cfg(all(feature = "io-uring", target_os = "linux"))]
async fn a_panicking_waker_waiting_for_ring_room_strands_no_other_waiter_on(beat: Beat) {
    use std::task::{Context, Waker};
    let dir = common::tempdir();
    let path = dir.path().join("data");
    std::fs::write(&path, vec![5u8; 8 * PAGE]).unwrap();
    let config = IoEngineConfig {
        uring_entries: 2, // a CQ of 4: room for 3 operations in flight
        rings: 1,
        registered_buffers: 16,
        buffer_size: PAGE,
        nowait_fast_path: false,
        ..common::config(EngineChoice::Uring)
    };
    let engine = ferrite_io::create_engine(config).unwrap();
    let file = engine.open(&path, &OpenOptions::new()).await.unwrap();
    for round in 0..5u32 {
        let what = format!("round {round}");
        beat.step(format!("{what}: three reads of an empty pipe take all the room"));
        let (pipe, mut writer) = common::pipe();
        let pipe = Arc::new(pipe);
        let mut holders = tokio::task::JoinSet::new();
        for _ in 0..3 {
            let (engine, pipe) = (engine.clone(), pipe.clone());
            holders.spawn(async move {
                let mut buf = engine.acquire().await;
                buf.set_len(1).unwrap();
                engine.read_at(&pipe, buf, 0).await.0.unwrap()
            });
        }
        while engine.stats().in_flight < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        beat.step(format!("{what}: a bomb, a task and a bomb wait for room, in that order"));
        let (first, second) = (Bomb::new(), Bomb::new());
        let mut early = Box::pin(engine.read_at(&file, engine.acquire().await, 0));
        assert!(early.as_mut().poll(&mut Context::from_waker(&Waker::from(first.clone()))).is_pending());
        let waiter = {
            let (engine, file) = (engine.clone(), file.clone());
            tokio::spawn(async move { engine.read_at(&file, engine.acquire().await, PAGE as u64).await.0.unwrap() })
        };
        while engine.stats().ring_waits < u64::from(2 + 3 * round) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut late = Box::pin(engine.read_at(&file, engine.acquire().await, 2 * PAGE as u64));
        assert!(late.as_mut().poll(&mut Context::from_waker(&Waker::from(second.clone()))).is_pending());
        beat.step(format!("{what}: the pipe is written; all three waiters get room"));
        std::io::Write::write_all(&mut writer, &[1, 2, 3]).unwrap();
        while let Some(n) = holders.join_next().await {
            assert_eq!(n.unwrap(), 1, "{what}");
        }
        assert_eq!(waiter.await.unwrap(), PAGE, "{what}: the task between the bombs");
        while !(first.exploded() && second.exploded()) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(early.await.0.unwrap(), PAGE, "{what}");
        assert_eq!(late.await.0.unwrap(), PAGE, "{what}");
    }
    common::assert_pool_full(&engine);
}

/// The `direct_io` key decides how files the engine opens are opened, unless `OpenOptions` say.
/// (Linux: the `O_DIRECT` flag is read back with `fcntl`.)
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_io_key_is_the_default_for_open() {
    use std::os::fd::AsRawFd;
    fn o_direct(file: &ferrite_io::File) -> bool {
        // SAFETY: F_GETFL reads the descriptor's flags; the descriptor is open for the borrow.
        let flags = unsafe { libc::fcntl(file.std().as_raw_fd(), libc::F_GETFL) };
        flags & libc::O_DIRECT != 0
    }
    let dir = common::tempdir();
    for direct_io in [false, true] {
        let config = IoEngineConfig { direct_io, ..common::config(EngineChoice::Auto) };
        for (name, engine) in common::engines(&config) {
            assert_eq!(engine.direct_io(), direct_io);
            let path = dir.path().join(format!("{name}-{direct_io}"));
            let default = engine.open(&path, &OpenOptions::new().create(true)).await.unwrap();
            assert_eq!((default.is_direct(), o_direct(&default)), (direct_io, direct_io), "{name}");
            for explicit in [false, true] {
                let file = engine.open(&path, &OpenOptions::new().direct(explicit)).await.unwrap();
                assert_eq!((file.is_direct(), o_direct(&file)), (explicit, explicit), "{name}: OpenOptions wins");
            }
        }
    }
}

/// Statistics count what happened, the same way on both engines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_operations_and_bytes() {
    let dir = common::tempdir();
    let config = IoEngineConfig { registered_buffers: 16, buffer_size: PAGE, ..common::config(EngineChoice::Auto) };
    for (name, engine) in common::engines(&config) {
        let file = engine.open(dir.path().join(name), &OpenOptions::new().create(true)).await.unwrap();
        for page in 0..4u64 {
            engine.write_all_at(&file, filled(&engine, page as u8).await, page * PAGE as u64).await.0.unwrap();
        }
        engine.write_durable_at(&file, filled(&engine, 9).await, 4 * PAGE as u64).await.0.unwrap();
        engine.sync_data(&file).await.unwrap();
        let mut batch = Batch::new();
        for page in 0..5u64 {
            batch.read_at(&file, engine.acquire().await, page * PAGE as u64);
        }
        for r in engine.submit_batch(&mut batch).await {
            assert_eq!(r.0.unwrap(), PAGE);
        }
        let (n, _) = engine.read_at(&file, engine.acquire().await, 0).await.into_parts();
        assert_eq!(n.unwrap(), PAGE);
        let s = engine.stats();
        assert_eq!((s.writes, s.bytes_written, s.syncs), (5, 5 * PAGE as u64, 2), "{name}: {s:?}");
        assert_eq!((s.reads, s.bytes_read, s.in_flight), (6, 6 * PAGE as u64, 0), "{name}: {s:?}");
        if engine.backend() == ferrite_io::Backend::Uring {
            assert_eq!(s.inline_completions + s.later_completions, s.submitted, "{name}: {s:?}");
            assert!(s.rings >= 1 && s.submitted >= 5, "{name}: {s:?}");
        } else {
            assert_eq!((s.rings, s.submitted), (0, 0), "{name}: {s:?}");
        }
        assert_eq!(s.fallback_reason, None);
    }
}

/// `auto` where io_uring is refused falls back to the tokio engine, and its statistics say why
/// (pins `fallback_reason`: the snapshot carries the selection's reason). The refusal is a
/// seccomp filter that fails `io_uring_setup` with EPERM on the one thread that creates the
/// engine; it ends with that thread.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[test]
fn a_fallback_names_its_reason_in_the_statistics() {
    let filter = common::SyscallFilter::refuse(&[libc::SYS_io_uring_setup], libc::EPERM);
    let (backend, reason, stats) = common::on_a_thread("create_engine(auto) without io_uring", move || {
        filter.install().expect("install a seccomp filter on this thread");
        let engine = ferrite_io::create_engine(common::config(EngineChoice::Auto)).expect("auto falls back, not fails");
        let reason = match &engine.selection().reason {
            ferrite_io::Reason::FellBack(why) => Some(why.to_string()),
            _ => None,
        };
        (engine.backend(), reason, engine.stats())
    });
    assert_eq!(backend, ferrite_io::Backend::Tokio);
    let reason = reason.expect("the selection says it fell back");
    assert!(reason.contains("io_uring_setup") && reason.contains("EPERM"), "{reason}");
    assert_eq!(stats.fallback_reason.as_ref(), Some(&reason), "{stats:?}");
    // No fallback, no reason: `auto` here keeps io_uring, and a requested engine never fell back.
    for choice in [EngineChoice::Auto, EngineChoice::Uring, EngineChoice::Tokio] {
        let engine = ferrite_io::create_engine(common::config(choice)).unwrap();
        assert_eq!(engine.stats().fallback_reason, None, "{choice}");
    }
}

/// Futures dropped while their operations are in flight (single operations, and a batch larger
/// than the ring's room, dropped while it waits for room) give every buffer back, even when
/// nothing else ever runs on the engine again: something must reap their completions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_operations_return_their_buffers_unprompted() {
    use std::future::Future;
    use std::task::{Context, Waker};
    let dir = common::tempdir();
    let path = dir.path().join("data");
    std::fs::write(&path, vec![3u8; 64 * PAGE]).unwrap();
    let config = one_entry_ring();
    for (name, engine) in common::engines(&config) {
        let file = engine.open(&path, &OpenOptions::new().direct(true)).await.unwrap();
        for round in 0..20u64 {
            let mut cx = Context::from_waker(Waker::noop());
            if round % 2 == 0 {
                let mut batch = Batch::new();
                for page in 0..8u64 {
                    batch.read_at(&file, engine.acquire().await, page * PAGE as u64);
                }
                let mut submit = Box::pin(engine.submit_batch(&mut batch));
                let _ = submit.as_mut().poll(&mut cx);
                drop(submit);
                assert!(batch.is_empty(), "{name}: a dropped submit empties the batch");
            } else {
                let mut read = Box::pin(engine.read_at(&file, engine.acquire().await, round * PAGE as u64));
                let _ = read.as_mut().poll(&mut cx);
                drop(read);
            }
            // Nothing else touches the engine: every buffer must still come back.
            watchdog(&format!("{name} round {round}"), async {
                while engine.pool().available() != engine.pool().capacity() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await;
        }
        assert_eq!(engine.stats().in_flight, 0, "{name}");
    }
}

/// A wait for ring room behind operations whose runtime has stopped running: a current-thread
/// runtime's task holds the ring's only room with an O_DIRECT read, and the runtime idles (its
/// reactor runs only inside its `block_on`). `UringEngine::block_on` on this thread then waits
/// for room; the completion thread must reap the idle runtime's read for it, and keep watching
/// the ring until it has, though the eventfd it finds readable at once is stale (only that
/// thread ever reads the counter back, and the earlier reads signalled it).
#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[test]
fn a_wait_for_room_behind_an_idle_runtime_ends() {
    common::watched("room behind an idle runtime", |beat| {
        let dir = common::tempdir();
        let path = eight_pages(&dir);
        let config = IoEngineConfig { engine: EngineChoice::Uring, ..one_entry_ring() };
        let engine = Arc::new(ferrite_io::UringEngine::new(&config).unwrap());
        let file = direct_without_runtime(&path);
        let idle = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for round in 0..200 {
            beat.step(format!("round {round}"));
            let (task_engine, task_file) = (engine.clone(), file.clone());
            let last = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let pushed = last.clone();
            let reader = idle.spawn(async move {
                // Reads that complete through the reactor (each signals the eventfd), then
                // one left in flight when the runtime stops running: pushed in the poll
                // that sets `last`.
                for page in 0..4u64 {
                    let buf = task_engine.acquire().await.into_free();
                    task_engine.read_at(&task_file, buf, page * PAGE as u64).await.0.unwrap();
                }
                let buf = task_engine.acquire().await.into_free();
                last.store(true, std::sync::atomic::Ordering::Relaxed);
                task_engine.read_at(&task_file, buf, 4 * PAGE as u64).await.0.unwrap()
            });
            idle.block_on(async {
                while !pushed.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::task::yield_now().await;
                }
            });
            let (n, buf) = engine.block_on(async {
                let buf = engine.acquire().await.into_free();
                engine.read_at(&file, buf, 5 * PAGE as u64).await.into_parts()
            });
            assert_eq!(n.unwrap(), PAGE, "round {round}");
            assert_eq!(&buf[..], &pattern(5)[..], "round {round}");
            drop(buf);
            assert_eq!(idle.block_on(reader).unwrap(), PAGE, "round {round}");
        }
    });
}

/// `UringEngine::block_on` called from a task of a current-thread runtime blocks that runtime's
/// only thread, so its reactor cannot run: a wait for ring room there (a batch larger than the
/// ring, on a fresh engine) must be served by the engine's own thread, not that reactor.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[test]
fn block_on_inside_a_current_thread_task_gets_ring_room() {
    common::watched("block_on in a current-thread task", |beat| {
        let dir = common::tempdir();
        let path = eight_pages(&dir);
        let config = IoEngineConfig { engine: EngineChoice::Uring, ..one_entry_ring() };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for round in 0..20 {
            beat.step(format!("round {round}"));
            let path = path.clone();
            let config = config.clone();
            let task = async move {
                let engine = ferrite_io::UringEngine::new(&config).unwrap();
                let file = engine.open(&path, &OpenOptions::new().direct(true)).await.unwrap();
                let mut batch = Batch::new();
                for page in 0..6u64 {
                    batch.read_at(&file, engine.acquire().await, page * PAGE as u64);
                }
                engine.block_on(async {
                    for (page, r) in engine.submit_batch(&mut batch).await.enumerate() {
                        assert_eq!(r.0.unwrap(), PAGE, "round {round} page {page}");
                        assert_eq!(&r.1[..], &pattern(page as u8)[..], "round {round} page {page}");
                    }
                });
            };
            runtime.block_on(async { tokio::spawn(task).await }).unwrap();
        }
    });
}
