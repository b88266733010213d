//! Zero heap allocations per operation on the io_uring hot path, and zero copies for fixed
//! buffers: the kernel reads straight into the pool slot.
//!
//! # How allocations are counted
//!
//! A counting `#[global_allocator]` wraps `System`. It counts an `alloc`, `alloc_zeroed` or
//! `realloc` only when the calling thread is *armed* (a thread-local probe id), so:
//!
//! - the test harness and the other tests of this binary, which run in parallel on their own
//!   threads, never pollute a measurement;
//! - everything that runs on the measuring thread while it is armed is counted. Each test builds a
//!   **current-thread** runtime and measures inside `block_on`, so that thread runs the operation
//!   futures, the submission (`io_uring_enter`) and the inline reap, tokio's I/O driver when
//!   `block_on` parks, the ring's reactor watcher (which reaps when the eventfd fires) and the
//!   waker calls. Nothing of the hot path can
//!   hide on another userspace thread (io-wq workers are kernel threads and do not allocate from
//!   our heap).
//!
//! Counting every thread while armed would have worked for the runtime alone, but not for the
//! parallel tests in this binary; a thread-local flag is the reliable choice.
//!
//! On an armed allocation the allocator disarms itself, captures a backtrace (at most
//! [`MAX_TRACES`] per probe), and re-arms; a failing test prints those backtraces, which name the
//! allocating call.
//!
//! Every loop runs [`WARMUP`] operations first (slab, wakers, tracing callsites, page cache), then
//! [`OPS`] measured ones. The `probe_*` tests check that the counter is not blind: it sees an
//! allocation in the measured code and one in another task of the runtime (where tokio's
//! reactor runs the watcher), and not one on another thread.
//!
//! Single reads and writes are measured twice: on the ring alone (`nowait_fast_path = false`) and
//! with the default config, whose `RWF_NOWAIT` fast path finishes page-cache hits inline.
#![cfg(all(feature = "io-uring", target_os = "linux"))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ferrite_io::{
    Batch, Buf, BufResult, Completed, EngineChoice, File, Free, IoEngine, IoEngineConfig, Registered, UringEngine,
};

// ---------------------------------------------------------------------------------------------
// The counting allocator
// ---------------------------------------------------------------------------------------------

/// Backtraces kept per probe.
const MAX_TRACES: usize = 8;

struct CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

thread_local! {
    /// The id of the probe measuring on this thread; 0 when disarmed. `const`-initialized and
    /// without `Drop`, so reading it from the allocator never allocates or registers a
    /// destructor.
    static ARMED: Cell<usize> = const { Cell::new(0) };
    /// Allocations counted on this thread since it was armed.
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

/// Backtraces of counted allocations, tagged with the probe id.
static TRACES: Mutex<Vec<(usize, Backtrace)>> = Mutex::new(Vec::new());

static NEXT_PROBE: AtomicUsize = AtomicUsize::new(1);

/// Counts one allocation if this thread is armed. Disarms around the bookkeeping, whose own
/// allocations (the backtrace, the `Vec` push) are then neither counted nor recursive.
fn note_allocation() {
    let Ok(id) = ARMED.try_with(|armed| armed.replace(0)) else {
        return; // thread teardown: thread-locals are gone, and nothing is armed then
    };
    if id == 0 {
        return;
    }
    let count = COUNT.get() + 1;
    COUNT.set(count);
    if count <= MAX_TRACES {
        let trace = Backtrace::force_capture();
        TRACES.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((id, trace));
    }
    ARMED.set(id);
}

// SAFETY: every method forwards its arguments unchanged to `System`, so the allocator contract
// (sizes, alignment, pointer validity) is `System`'s. The bookkeeping touches only thread-locals,
// atomics and a mutex and never unwinds; while it allocates, the thread is disarmed, so it does
// not recurse.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator with
        // `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator with
        // `layout`, and the caller upholds `GlobalAlloc::realloc`'s contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Counts the allocations made on this thread between `arm` and `disarm`.
struct Probe {
    id: usize,
    label: String,
}

impl Probe {
    /// Arms this thread. `label` is built by the caller, before arming.
    fn arm(label: String) -> Probe {
        let id = NEXT_PROBE.fetch_add(1, Ordering::Relaxed);
        COUNT.set(0);
        ARMED.set(id);
        Probe { id, label }
    }

    fn disarm(mut self) -> Report {
        ARMED.set(0);
        let count = COUNT.get();
        let mut traces = TRACES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = traces.iter().filter(|(id, _)| *id == self.id).map(|(_, trace)| trace.to_string()).collect();
        traces.retain(|(id, _)| *id != self.id);
        Report { label: std::mem::take(&mut self.label), count, traces: mine }
    }
}

impl Drop for Probe {
    /// A panic inside the measured region disarms too, so the unwinding is not counted.
    fn drop(&mut self) {
        ARMED.set(0);
    }
}

struct Report {
    label: String,
    count: usize,
    traces: Vec<String>,
}

impl Report {
    fn assert_zero(&self, ops: usize) {
        eprintln!(
            "{}: {} allocations in {ops} operations ({:.3} per operation)",
            self.label,
            self.count,
            self.count as f64 / ops as f64
        );
        if self.count != 0 {
            let mut message =
                format!("{}: {} heap allocations in {ops} measured operations, expected 0\n", self.label, self.count);
            for (i, trace) in self.traces.iter().enumerate() {
                let trace = trim(trace);
                message.push_str(&format!("\n--- allocation {} ---\n{trace}\n", i + 1));
            }
            panic!("{message}");
        }
    }
}

/// The frames between the allocator's own and tokio's `block_on`: the caller that allocated.
fn trim(trace: &str) -> String {
    let lines: Vec<&str> = trace.lines().collect();
    // Skip past the `__rust_alloc`-style frame and its `at` line.
    let start = lines.iter().position(|l| l.contains("__rustc::__rust_")).map_or(0, |i| i + 2);
    let end = lines[start..].iter().position(|l| l.contains("CoreGuard::block_on")).map_or(lines.len(), |i| start + i);
    lines[start..end].join("\n")
}

#[test]
fn probe_counts_allocations() {
    // Two allocations and one reallocation: the counter sees both kinds.
    let probe = Probe::arm("control".into());
    let boxed = black_box(Box::new(7u64));
    let mut grown = black_box(Vec::<u64>::with_capacity(1));
    grown.push(1);
    grown.push(2);
    let report = probe.disarm();
    drop((boxed, grown));
    assert_eq!(report.count, 3, "Box::new + Vec::with_capacity + one realloc");
    assert_eq!(report.traces.len(), 3, "one backtrace per allocation");

    // Another thread's allocations, made while this thread is armed, are not counted here.
    let (go, done) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|s| {
        s.spawn(|| {
            while !go.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            black_box(vec![1u8; 100]);
            done.store(true, Ordering::Release);
        });
        let probe = Probe::arm("other thread".into());
        go.store(true, Ordering::Release);
        while !done.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        let report = probe.disarm();
        assert_eq!(report.count, 0, "another thread's allocation was counted");
    });
}

/// Allocates once, under a name the backtrace shows.
#[inline(never)]
fn allocate_in_task() {
    black_box(Box::new(1u64));
}

#[test]
fn probe_counts_other_tasks_on_the_runtime_thread() {
    // The engine's reaper is a task of the runtime, not code of the measured loop: a
    // current-thread runtime runs it on the armed thread, so what it allocates is counted.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let go = std::sync::Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn({
            let go = go.clone();
            async move {
                go.notified().await;
                allocate_in_task();
            }
        });
        tokio::task::yield_now().await; // the task runs up to `notified` (and warms the runtime)
        let probe = Probe::arm("another task".into());
        go.notify_one();
        while !task.is_finished() {
            tokio::task::yield_now().await;
        }
        let report = probe.disarm();
        assert!(report.count >= 1, "the task's allocation was not counted");
        assert!(
            report.traces.iter().any(|t| t.contains("allocate_in_task")),
            "no backtrace names the task's allocation: {:#?}",
            report.traces
        );
    });
}

// ---------------------------------------------------------------------------------------------
// The fixture
// ---------------------------------------------------------------------------------------------

const BLOCK: usize = 4096;
const FILE_LEN: usize = 1 << 20;
const BLOCKS: usize = FILE_LEN / BLOCK;
const WARMUP: usize = 100;
const OPS: usize = 1000;

/// Spreads operations over the whole file (37 is coprime with 256 blocks).
fn offset(i: usize) -> usize {
    (i * 37 % BLOCKS) * BLOCK
}

/// File bytes that differ per block and per position, so a block read at the wrong offset or a
/// stale buffer cannot pass.
fn contents() -> Vec<u8> {
    (0..FILE_LEN).map(|i| ((i / BLOCK) as u8).wrapping_mul(31) ^ (i % 251) as u8).collect()
}

/// Which hot path an engine takes for a single read or write.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// `nowait_fast_path = false`: every operation is an io_uring submission.
    Ring,
    /// The default config: buffered reads that hit the page cache finish inline with
    /// `preadv2(RWF_NOWAIT)` on the calling thread; the rest (and every write ext4 refuses to do
    /// without blocking) goes to the ring.
    Default,
}

// Field order is drop order: the engine (which drains the ring) goes before the runtime.
struct Fixture {
    mode: Path,
    engine: UringEngine,
    file: File,
    expected: Vec<u8>,
    path: std::path::PathBuf,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn fixture(path: Path) -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let base = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("target tmp dir");
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let file_path = dir.path().join("data");
    let expected = contents();
    std::fs::write(&file_path, &expected).expect("prefill 1 MiB");
    let std_file = std::fs::OpenOptions::new().read(true).write(true).open(&file_path).expect("open");
    let config = IoEngineConfig {
        engine: EngineChoice::Uring,
        uring_entries: 64,
        registered_buffers: 4,
        buffer_size: BLOCK,
        direct_io: false,
        nowait_fast_path: match path {
            Path::Ring => false,
            Path::Default => IoEngineConfig::default().nowait_fast_path,
        },
        // One ring: with one per CPU, the first operation on another ring (when the thread
        // migrates) registers that ring with the runtime's reactor once, inside the measurement.
        rings: 1,
    };
    let engine = {
        let _runtime = rt.enter();
        UringEngine::new(&config).expect("io_uring must work on the test machines")
    };
    Fixture { mode: path, engine, file: File::from_std(std_file, false), expected, path: file_path, rt, _dir: dir }
}

impl Fixture {
    fn block(&self, offset: usize) -> &[u8] {
        &self.expected[offset..offset + BLOCK]
    }
}

fn ok<T>(label: &str, result: BufResult<T, Buf<Completed>>) -> (T, Buf<Completed>) {
    match result.into_result() {
        Ok(pair) => pair,
        Err((e, _)) => panic!("{label} failed: {e}"),
    }
}

fn registered(engine: &UringEngine, buf: Buf<Completed>) -> Buf<Registered> {
    buf.try_into_registered(engine).expect("a buffer of the engine's own pool")
}

/// Runs `fut`, adding 1 to `went_async` if it was not ready on its first poll: its completion
/// then came later, through io-wq, the eventfd, tokio's I/O driver, the ring's watcher and a wake.
async fn track<F: Future>(fut: F, went_async: &Cell<usize>) -> F::Output {
    let mut fut = pin!(fut);
    let mut pending = false;
    let output = std::future::poll_fn(|cx| {
        let poll = fut.as_mut().poll(cx);
        pending |= poll.is_pending();
        poll
    })
    .await;
    went_async.set(went_async.get() + usize::from(pending));
    output
}

/// Runs [`WARMUP`] rounds unmeasured, then [`OPS`] rounds with this thread armed, and asserts
/// that they allocated nothing. A round is `ops_per_round` operations; `state` (the buffers)
/// goes through every round. Returns the final state and how many operations were pending on
/// their first poll.
async fn measure<S>(
    fx: &Fixture,
    what: &str,
    ops_per_round: usize,
    mut state: S,
    mut round: impl AsyncFnMut(&Fixture, S, usize, &Cell<usize>) -> S,
) -> (S, usize) {
    let went_async = Cell::new(0);
    for i in 0..WARMUP {
        state = round(fx, state, i, &went_async).await;
    }
    // The first completion that arrives after its submit registers the ring's watcher with this
    // runtime's reactor: once per runtime and ring, not per operation. Whether any warm-up
    // round did depends on the kernel (a buffered write completes inside its submit while its
    // pages are dirty, and goes to io-wq once writeback runs), so syncs, which always go to
    // io-wq, make sure of it before the measurement (retried: a sync of a clean file can finish
    // on io-wq before its submit has reaped).
    let warm = Cell::new(0);
    for _ in 0..100 {
        track(fx.engine.sync_data(&fx.file), &warm).await.expect("warm-up sync_data");
        if warm.get() > 0 {
            break;
        }
    }
    assert!(warm.get() > 0, "no warm-up sync completed after its submit");
    went_async.set(0);
    let label = format!("{what} [{:?} path]", fx.mode);
    let probe = Probe::arm(label);
    for i in 0..OPS {
        state = round(fx, state, i, &went_async).await;
    }
    let report = probe.disarm();
    let ops = OPS * ops_per_round;
    eprintln!(
        "{}: {} of {ops} operations were pending on their first poll and woken later \
         (completion via io-wq, eventfd, watcher)",
        report.label,
        went_async.get()
    );
    report.assert_zero(ops);
    (state, went_async.get())
}

// ---------------------------------------------------------------------------------------------
// The operations
// ---------------------------------------------------------------------------------------------

/// READ_FIXED of 4 KiB into the same slot; checks the bytes arrived in the slot itself.
async fn read_fixed_once(
    fx: &Fixture,
    mut buf: Buf<Registered>,
    i: usize,
    went_async: &Cell<usize>,
) -> Buf<Registered> {
    let off = offset(i);
    buf.fill(0xEE); // whatever was there before is gone: the kernel must write the block
    let slot = buf[..].as_ptr();
    let result = track(fx.engine.read_fixed_at(&fx.file, buf, off as u64), went_async).await;
    let (n, back) = ok("read_fixed_at", result);
    assert_eq!(n, BLOCK, "short fixed read");
    // Zero copies: the slice the caller reads is the registered slot the kernel wrote, not an
    // intermediate buffer the engine copied from.
    assert_eq!(back[..].as_ptr(), slot, "the bytes are not in the pool slot");
    assert!(back[..] == *fx.block(off), "wrong bytes at {off}");
    registered(&fx.engine, back)
}

#[test]
fn read_fixed_at_allocates_nothing_and_lands_in_the_slot() {
    for path in [Path::Ring, Path::Default] {
        let fx = fixture(path);
        fx.rt.block_on(async {
            let buf = fx.engine.acquire().await;
            let first_slot = buf[..].as_ptr();
            let (buf, _) = measure(&fx, "read_fixed_at 4 KiB", 1, buf, read_fixed_once).await;
            assert_eq!(buf[..].as_ptr(), first_slot, "recycling kept the same slot");
        });
    }
}

/// READ of 4 KiB into a `Buf<Free>` (no fixed-buffer index).
async fn read_once(fx: &Fixture, mut buf: Buf<Free>, i: usize, went_async: &Cell<usize>) -> Buf<Free> {
    let off = offset(i);
    buf.fill(0xEE);
    let slot = buf[..].as_ptr();
    let result = track(fx.engine.read_at(&fx.file, buf, off as u64), went_async).await;
    let (n, back) = ok("read_at", result);
    assert_eq!(n, BLOCK, "short read");
    assert_eq!(back[..].as_ptr(), slot, "the bytes are not in the pool slot");
    assert!(back[..] == *fx.block(off), "wrong bytes at {off}");
    back.into_free()
}

#[test]
fn read_at_free_buffer_allocates_nothing() {
    for path in [Path::Ring, Path::Default] {
        let fx = fixture(path);
        fx.rt.block_on(async {
            let buf = fx.engine.pool().acquire().await;
            drop(measure(&fx, "read_at 4 KiB, Buf<Free>", 1, buf, read_once).await);
        });
    }
}

/// WRITE_FIXED of 4 KiB (buffered), rewriting the block the file already holds.
async fn write_fixed_once(
    fx: &Fixture,
    mut buf: Buf<Registered>,
    i: usize,
    went_async: &Cell<usize>,
) -> Buf<Registered> {
    let off = offset(i);
    buf.copy_from_slice(fx.block(off));
    let result = track(fx.engine.write_fixed_at(&fx.file, buf, off as u64), went_async).await;
    let (n, back) = ok("write_fixed_at", result);
    assert_eq!(n, BLOCK, "short fixed write");
    registered(&fx.engine, back)
}

#[test]
fn write_fixed_at_allocates_nothing() {
    for path in [Path::Ring, Path::Default] {
        let fx = fixture(path);
        fx.rt.block_on(async {
            let buf = fx.engine.acquire().await;
            drop(measure(&fx, "write_fixed_at 4 KiB", 1, buf, write_fixed_once).await);
        });
        assert!(std::fs::read(&fx.path).expect("read back") == fx.expected, "the fixed writes did not land");
    }
}

async fn sync_once(fx: &Fixture, (): (), _: usize, went_async: &Cell<usize>) {
    track(fx.engine.sync_data(&fx.file), went_async).await.expect("sync_data");
}

#[test]
fn sync_data_allocates_nothing() {
    // The fast path does not touch syncs: the ring only.
    let fx = fixture(Path::Ring);
    fx.rt.block_on(async {
        let ((), went_async) = measure(&fx, "sync_data", 1, (), sync_once).await;
        // fsync always goes through io-wq, so nearly every one completes after the submitting
        // `io_uring_enter` returned: the eventfd, tokio's I/O driver, the ring's watcher and the
        // waker ran (on this armed thread) inside the measurement.
        assert!(went_async > 0, "the asynchronous completion path was not exercised");
    });
}

/// `read_exact_at` then `write_all_at` of the same block, with a registered buffer (fixed ops)
/// and with a free one (plain ops): four operations per call.
async fn exact_once(
    fx: &Fixture,
    (fixed, plain): (Buf<Registered>, Buf<Free>),
    i: usize,
    went_async: &Cell<usize>,
) -> (Buf<Registered>, Buf<Free>) {
    let off = offset(i);
    let slot = fixed[..].as_ptr();
    let result = track(fx.engine.read_exact_at(&fx.file, fixed, off as u64), went_async).await;
    let (_, back) = ok("read_exact_at (fixed)", result);
    assert_eq!(back[..].as_ptr(), slot, "the bytes are not in the pool slot");
    assert!(back[..] == *fx.block(off), "wrong bytes at {off}");
    let back = registered(&fx.engine, back);
    let result = track(fx.engine.write_all_at(&fx.file, back, off as u64), went_async);
    let (_, back) = ok("write_all_at (fixed)", result.await);
    let fixed = registered(&fx.engine, back);

    let result = track(fx.engine.read_exact_at(&fx.file, plain, off as u64), went_async).await;
    let (_, back) = ok("read_exact_at (plain)", result);
    assert!(back[..] == *fx.block(off), "wrong bytes at {off}");
    let result = track(fx.engine.write_all_at(&fx.file, back.into_free(), off as u64), went_async);
    let (_, back) = ok("write_all_at (plain)", result.await);
    (fixed, back.into_free())
}

#[test]
fn read_exact_at_and_write_all_at_allocate_nothing() {
    for path in [Path::Ring, Path::Default] {
        let fx = fixture(path);
        fx.rt.block_on(async {
            let bufs = (fx.engine.acquire().await, fx.engine.pool().acquire().await);
            let what = "read_exact_at + write_all_at, fixed and plain";
            drop(measure(&fx, what, 4, bufs, exact_once).await);
        });
        assert!(std::fs::read(&fx.path).expect("read back") == fx.expected, "the writes changed the file");
    }
}

/// A reused `Batch` of four fixed reads, refilled and resubmitted every round: one batch costs
/// no allocation (the batch keeps its slot list, the results are drained out of it).
async fn batch_once(
    fx: &Fixture,
    (mut batch, mut bufs): (Batch, Vec<Buf<Registered>>),
    i: usize,
    went_async: &Cell<usize>,
) -> (Batch, Vec<Buf<Registered>>) {
    let offsets: [usize; 4] = std::array::from_fn(|k| offset(i * 4 + k));
    for (buf, &off) in bufs.drain(..).zip(&offsets) {
        batch.read_at(&fx.file, buf, off as u64);
    }
    let results = track(fx.engine.submit_batch(&mut batch), went_async).await;
    for (result, &off) in results.zip(&offsets) {
        let (n, back) = ok("submit_batch", result);
        assert_eq!(n, BLOCK, "short batch read");
        assert!(back[..] == *fx.block(off), "wrong bytes at {off}");
        bufs.push(registered(&fx.engine, back));
    }
    assert!(batch.is_empty());
    (batch, bufs)
}

#[test]
fn submit_batch_allocates_nothing() {
    for path in [Path::Ring, Path::Default] {
        let fx = fixture(path);
        fx.rt.block_on(async {
            let mut bufs = Vec::with_capacity(4);
            for _ in 0..4 {
                bufs.push(fx.engine.acquire().await);
            }
            let state = (Batch::with_capacity(4), bufs);
            drop(measure(&fx, "submit_batch of 4 fixed reads", 4, state, batch_once).await);
        });
    }
}
