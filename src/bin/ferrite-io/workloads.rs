//! Benchmark workloads, shared by `ferrite-io bench` and the Criterion benches
//! (`benches/io.rs` includes this file), so both measure exactly the same code.
//!
//! A [`Row`] is an operation (the rows of the performance table), a [`Backend`] is what runs it:
//! the crate's two engines, and the baselines they are judged against: a raw io-uring loop with
//! no safety layer, plain `pread`/`pwrite` on the calling thread, `spawn_blocking` + `pread`, and
//! `tokio::fs`. [`Bench::run`] performs `iters` operations of one row on one backend and returns
//! the elapsed time; queue-depth rows keep that many operations in flight.
//!
//! The engine-core rows: O_DIRECT at queue depth 32 from one task (32 futures) as well as from
//! 32 tasks, and scaling with 1 and 2 submitting tasks (threads for the baselines), CPU-bound
//! (cached reads through the ring, fast path off) and on the device (O_DIRECT, 32 in flight in
//! all). A counting allocator gives allocations per operation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(uring)]
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferrite_io::{
    Batch, Buf, BufResult, Completed, Engine, File, IoEngine, IoEngineConfig, OpenOptions, PositionalIo, SharedIoEngine,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Counts every heap allocation of the process (one relaxed add each), so the bench can report
/// allocations per operation for each backend.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees hold; the counter has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's `layout` obligations pass through unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (every allocation goes through it) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`, and the caller's `new_size` obligations pass through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations made by the whole process so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Size of the data file the read rows use and the write file the sequential row fills.
pub const FILE_SIZE: u64 = 256 << 20;
/// The files [`Bench::new`] lays out in its directory, and their sizes.
pub const FILES: [(&str, u64); 4] = [
    ("ferrite-io-bench-data.bin", FILE_SIZE),
    ("ferrite-io-bench-seq.bin", FILE_SIZE),
    ("ferrite-io-bench-write.bin", 64 << 20),
    ("ferrite-io-bench-sync.bin", 1 << 20),
];
const PAGE: usize = 4096;
const SEQ_BLOCK: usize = 128 << 10;
const BATCH: usize = 8;

/// An operation of the performance table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// 4 KiB random read served from the page cache.
    CachedRead4k,
    /// 4 KiB buffered random write.
    BufferedWrite4k,
    /// A batch of 8 cached 4 KiB random reads.
    Batch8,
    /// A 4 KiB write followed by fdatasync.
    Fdatasync4k,
    /// O_DIRECT 4 KiB random reads with this many in flight.
    DirectRandread(usize),
    /// O_DIRECT 128 KiB sequential writes, 8 in flight.
    DirectSeqwrite128k,
    /// O_DIRECT 4 KiB random reads, 32 in flight from one task (32 futures).
    DirectOneTask32,
    /// Cached 4 KiB random reads through the ring (fast path off), from this many submitting
    /// tasks (threads for the baselines): the CPU-bound scaling rows.
    ScaleCached(usize),
    /// O_DIRECT 4 KiB random reads, 32 in flight in all, from this many submitting tasks
    /// (threads with a ring each for the raw baseline).
    ScaleDirect(usize),
}

impl Row {
    /// Every row, in table order.
    pub const ALL: [Row; 13] = [
        Row::CachedRead4k,
        Row::BufferedWrite4k,
        Row::Batch8,
        Row::Fdatasync4k,
        Row::DirectRandread(1),
        Row::DirectRandread(8),
        Row::DirectRandread(32),
        Row::DirectOneTask32,
        Row::DirectSeqwrite128k,
        Row::ScaleCached(1),
        Row::ScaleCached(2),
        Row::ScaleDirect(1),
        Row::ScaleDirect(2),
    ];

    /// The stable name used in bench ids, JSON and the fio comparison.
    pub fn name(self) -> &'static str {
        match self {
            Row::CachedRead4k => "cached_read_4k",
            Row::BufferedWrite4k => "buffered_write_4k",
            Row::Batch8 => "batch8_cached_read_4k",
            Row::Fdatasync4k => "fdatasync_4k",
            Row::DirectRandread(1) => "direct_randread_qd1",
            Row::DirectRandread(8) => "direct_randread_qd8",
            Row::DirectRandread(_) => "direct_randread_qd32",
            Row::DirectSeqwrite128k => "direct_seqwrite_128k_qd8",
            Row::DirectOneTask32 => "direct_randread_qd32_one_task",
            Row::ScaleCached(1) => "scale_cached_read_1_thread",
            Row::ScaleCached(_) => "scale_cached_read_2_threads",
            Row::ScaleDirect(1) => "scale_direct_qd32_1_thread",
            Row::ScaleDirect(_) => "scale_direct_qd32_2_threads",
        }
    }

    /// Bytes one operation moves (for MB/s).
    pub fn bytes(self) -> usize {
        match self {
            Row::Batch8 => BATCH * PAGE,
            Row::DirectSeqwrite128k => SEQ_BLOCK,
            _ => PAGE,
        }
    }

    /// Whether the row is reported as a rate (IOPS, MB/s) rather than a latency.
    pub fn is_rate(self) -> bool {
        matches!(self, Row::DirectRandread(depth) if depth > 1)
            || matches!(
                self,
                Row::DirectSeqwrite128k | Row::DirectOneTask32 | Row::ScaleCached(_) | Row::ScaleDirect(_)
            )
    }

    /// Operations in flight in all (threads for `pread`).
    fn depth(self) -> usize {
        match self {
            Row::DirectRandread(depth) => depth,
            Row::DirectSeqwrite128k => 8,
            Row::DirectOneTask32 | Row::ScaleDirect(_) => 32,
            Row::ScaleCached(threads) => threads,
            _ => 1,
        }
    }

    /// Submitting tasks (threads with a ring each, for the raw ring) of a scaling row.
    pub fn submitters(self) -> usize {
        match self {
            Row::ScaleCached(n) | Row::ScaleDirect(n) => n,
            _ => 1,
        }
    }

    fn direct(self) -> bool {
        matches!(self, Row::DirectRandread(_) | Row::DirectSeqwrite128k | Row::DirectOneTask32 | Row::ScaleDirect(_))
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What runs a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `UringEngine` with `Buf<Free>` (READ/WRITE).
    #[cfg(uring)]
    Uring,
    /// `UringEngine` with `Buf<Registered>` (READ_FIXED/WRITE_FIXED).
    #[cfg(uring)]
    UringFixed,
    /// `TokioEngine`.
    Tokio,
    /// A raw io-uring loop, no safety layer, fixed buffers: the practical limit of the ring.
    #[cfg(uring)]
    RawRing,
    /// The same loop on a ring with `IORING_SETUP_SQPOLL` (a kernel thread polls the SQ): what
    /// an SQPOLL mode could gain on the O_DIRECT rows with one submitter.
    #[cfg(uring)]
    RawSqpoll,
    /// `pread`/`pwrite` on the calling thread (one thread per queue slot for depth > 1).
    Pread,
    /// `preadv2(RWF_NOWAIT)` on the calling thread: the floor of the engines' inline fast path
    /// (cached rows only; a refused read falls back to `pread`). Linux only.
    #[cfg(target_os = "linux")]
    Nowait,
    /// `tokio::task::spawn_blocking` around `pread`/`pwrite`.
    SpawnBlocking,
    /// `tokio::fs::File` (seek + read/write); cannot do O_DIRECT.
    TokioFs,
}

impl Backend {
    /// Every backend, in table order.
    pub const ALL: &'static [Backend] = &[
        #[cfg(uring)]
        Backend::Uring,
        #[cfg(uring)]
        Backend::UringFixed,
        Backend::Tokio,
        #[cfg(uring)]
        Backend::RawRing,
        #[cfg(uring)]
        Backend::RawSqpoll,
        Backend::Pread,
        #[cfg(target_os = "linux")]
        Backend::Nowait,
        Backend::SpawnBlocking,
        Backend::TokioFs,
    ];

    /// The stable name used in bench ids and JSON.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(uring)]
            Backend::Uring => "uring",
            #[cfg(uring)]
            Backend::UringFixed => "uring_fixed",
            Backend::Tokio => "tokio_engine",
            #[cfg(uring)]
            Backend::RawRing => "raw_ring",
            #[cfg(uring)]
            Backend::RawSqpoll => "raw_sqpoll",
            Backend::Pread => "pread",
            #[cfg(target_os = "linux")]
            Backend::Nowait => "nowait",
            Backend::SpawnBlocking => "spawn_blocking",
            Backend::TokioFs => "tokio_fs",
        }
    }

    /// Whether this backend can run `row` at all (`tokio::fs` cannot do O_DIRECT: its internal
    /// buffer is not aligned, so the kernel answers EINVAL; `nowait` is the floor of the cached
    /// reads only).
    pub fn supports(self, row: Row) -> bool {
        let scaling = matches!(row, Row::ScaleCached(_) | Row::ScaleDirect(_));
        match self {
            Backend::TokioFs => !row.direct() && !scaling,
            #[cfg(target_os = "linux")]
            Backend::Nowait => matches!(row, Row::CachedRead4k | Row::Batch8),
            Backend::Tokio | Backend::SpawnBlocking => !scaling,
            #[cfg(uring)]
            Backend::RawSqpoll => matches!(row, Row::DirectRandread(_) | Row::DirectOneTask32),
            _ => true,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Files, engines and offsets for all rows. Build once, run many times.
pub struct Bench {
    /// `None` when the config chose the tokio engine, or `auto` found io_uring unavailable.
    #[cfg(uring)]
    uring: Option<Uring>,
    tokio: SharedIoEngine,
    /// Buffered handles of the data file and the random-write file, and the fsync file.
    cached: Files,
    write: Files,
    sync: Files,
    /// O_DIRECT handles of the data file and the sequential-write file.
    direct: Files,
    seq: Files,
    offsets: Vec<u64>,
    next: usize,
    seq_next: u64,
}

/// One file opened every way a backend needs it.
struct Files {
    engine: File,
    std: Arc<std::fs::File>,
    path: PathBuf,
}

impl Files {
    async fn open(path: &Path, direct: bool) -> ferrite_io::Result<Files> {
        let engine = File::open(path, &OpenOptions::new().direct(direct)).await?;
        // A second descriptor of the same open file: direct I/O (a file status flag) included.
        let std = engine.std().try_clone().map_err(io_error_at(ferrite_io::Op::Open, path))?;
        Ok(Files { engine, std: Arc::new(std), path: path.to_path_buf() })
    }

    async fn tokio_fs(&self) -> ferrite_io::Result<tokio::fs::File> {
        let file = tokio::fs::OpenOptions::new().read(true).write(true).open(&self.path).await;
        file.map_err(io_error_at(ferrite_io::Op::Open, &self.path))
    }
}

/// An error of the bench's own code (a baseline, the layout, a task), in the crate's error type.
fn io_error(source: std::io::Error) -> ferrite_io::Error {
    ferrite_io::Error::Io {
        op: ferrite_io::Op::Open,
        path: None,
        offset: 0,
        backend: ferrite_io::Backend::Tokio,
        source,
    }
}

/// As [`io_error`], for `op` on `path`: the message names the file and what was done to it.
fn io_error_at(op: ferrite_io::Op, path: &Path) -> impl FnOnce(std::io::Error) -> ferrite_io::Error {
    move |source| ferrite_io::Error::Io {
        op,
        path: Some(path.to_path_buf()),
        offset: 0,
        backend: ferrite_io::Backend::Tokio,
        source,
    }
}

/// Lays out `path` with `size` bytes of real (non-sparse) data unless it already has them;
/// `progress` hears of every MiB written. Yields to the runtime after each, so a caller that
/// races this against Ctrl-C can stop it.
async fn lay_out(path: &Path, size: u64, progress: &dyn Fn(u64)) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == size) {
        progress(size);
        return Ok(());
    }
    let file = std::fs::File::create(path)?;
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    for offset in (0..size).step_by(chunk.len()) {
        file.write_all_at(&chunk, offset)?;
        progress(chunk.len() as u64);
        tokio::task::yield_now().await;
    }
    file.sync_all()
}

/// Reads the whole file once so the cached rows hit the page cache.
fn warm(path: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0;
    while file.read_at(&mut buf, offset)? > 0 {
        offset += buf.len() as u64;
    }
    Ok(())
}

/// The io_uring engine and the raw ring, unless `config` asks for tokio; `auto` without a
/// working io_uring gives `None`, `uring` gives the error.
#[cfg(uring)]
/// The io_uring side of the bench: the engine, the same engine without the fast path (for the
/// CPU-bound scaling rows), and one raw ring per submitting thread (the scaling rows use two).
#[cfg(uring)]
struct Uring {
    engine: SharedIoEngine,
    ring_only: SharedIoEngine,
    /// Behind a lock the measuring task takes (see [`Bench::raw_run`]): a task that panics
    /// leaves them poisoned, not gone.
    raw: Arc<Mutex<Vec<raw::Ring>>>,
    /// `None` where the kernel refuses SQPOLL (before 5.11 without privileges, or a container's
    /// policy): the column is left out then.
    sqpoll: Option<Arc<Mutex<Vec<raw::Ring>>>>,
}

#[cfg(uring)]
fn uring(config: &IoEngineConfig) -> ferrite_io::Result<Option<Uring>> {
    use ferrite_io::EngineChoice;
    let engine = match config.engine {
        EngineChoice::Tokio => return Ok(None),
        EngineChoice::Auto => match ferrite_io::create_engine(config.clone())? {
            engine if engine.backend() == ferrite_io::Backend::Uring => engine,
            _ => return Ok(None),
        },
        EngineChoice::Uring => ferrite_io::create_engine(config.clone())?,
    };
    let ring_only = IoEngineConfig { nowait_fast_path: false, ..config.clone().with_engine(EngineChoice::Uring) };
    let ring = |setup| raw::Ring::new(32, SEQ_BLOCK, setup).map_err(io_error);
    let raw = Arc::new(Mutex::new(vec![ring(raw::Setup::Plain)?, ring(raw::Setup::Plain)?]));
    let sqpoll = ring(raw::Setup::Sqpoll)
        .inspect_err(|e| tracing::warn!(error = %e, "no SQPOLL ring here: the raw_sqpoll column is left out"))
        .ok()
        .map(|ring| Arc::new(Mutex::new(vec![ring])));
    Ok(Some(Uring { engine, ring_only: ferrite_io::create_engine(ring_only)?, raw, sqpoll }))
}

impl Bench {
    /// Creates (or reuses) the [`FILES`] in `dir`, an existing directory on a real disk (not
    /// tmpfs), and the engines: `config` with the pool the rows need; its `engine` decides
    /// whether the io_uring backends run (see [`runs`](Self::runs)). `progress` hears of every
    /// MiB laid out. Must run inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// Any I/O or engine error.
    pub async fn new(dir: &Path, config: &IoEngineConfig, progress: &dyn Fn(u64)) -> ferrite_io::Result<Bench> {
        let [data, seq, write, sync] = FILES.map(|(name, _)| dir.join(name));
        for ((_, size), path) in FILES.iter().zip([&data, &seq, &write, &sync]) {
            lay_out(path, *size, progress).await.map_err(io_error_at(ferrite_io::Op::Write, path))?;
        }
        warm(&data).map_err(io_error_at(ferrite_io::Op::Read, &data))?;
        let config = IoEngineConfig { registered_buffers: 64, buffer_size: SEQ_BLOCK, ..config.clone() };
        let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
        let offsets = (0..1 << 16).map(|_| rng.u64(0..FILE_SIZE / PAGE as u64) * PAGE as u64).collect();
        Ok(Bench {
            #[cfg(uring)]
            uring: uring(&config)?,
            tokio: Arc::new(Engine::Tokio(ferrite_io::TokioEngine::new(&config)?)),
            cached: Files::open(&data, false).await?,
            write: Files::open(&write, false).await?,
            sync: Files::open(&sync, false).await?,
            direct: Files::open(&data, true).await?,
            seq: Files::open(&seq, true).await?,
            offsets,
            next: 0,
            seq_next: 0,
        })
    }

    /// Whether `backend` runs here: the io_uring ones only when the config let io_uring in.
    pub fn runs(&self, backend: Backend) -> bool {
        match backend {
            #[cfg(uring)]
            Backend::Uring | Backend::UringFixed | Backend::RawRing => self.uring.is_some(),
            #[cfg(uring)]
            Backend::RawSqpoll => self.uring.as_ref().is_some_and(|uring| uring.sqpoll.is_some()),
            _ => true,
        }
    }

    /// The io_uring engine's counters, when it runs.
    pub fn uring_stats(&self) -> Option<ferrite_io::EngineStats> {
        #[cfg(uring)]
        if let Some(uring) = &self.uring {
            return Some(uring.engine.stats());
        }
        None
    }

    /// The counters of the io_uring engine without the fast path (the scaling rows'), when
    /// io_uring runs.
    pub fn ring_only_stats(&self) -> Option<ferrite_io::EngineStats> {
        #[cfg(uring)]
        if let Some(uring) = &self.uring {
            return Some(uring.ring_only.stats());
        }
        None
    }

    /// The tokio engine's counters.
    pub fn tokio_stats(&self) -> ferrite_io::EngineStats {
        self.tokio.stats()
    }

    /// The io_uring engines and the raw rings, or the error a backend that needs them returns.
    #[cfg(uring)]
    fn ring(&mut self) -> ferrite_io::Result<&mut Uring> {
        let missing = || io_error(std::io::Error::other("io_uring is not in use (see Bench::runs)"));
        self.uring.as_mut().ok_or_else(missing)
    }

    fn offset(&mut self) -> u64 {
        self.next = (self.next + 1) % self.offsets.len();
        self.offsets[self.next]
    }

    /// `n` offsets for the next operations of `row`.
    fn offsets(&mut self, row: Row, n: u64) -> Vec<u64> {
        (0..n)
            .map(|_| match row {
                Row::DirectSeqwrite128k => {
                    let offset = self.seq_next;
                    self.seq_next = (self.seq_next + SEQ_BLOCK as u64) % FILE_SIZE;
                    offset
                }
                Row::BufferedWrite4k => self.offset() % (64 << 20),
                Row::Fdatasync4k => 0,
                _ => self.offset(),
            })
            .collect()
    }

    /// Names the file and the operation of `row` in an error of a baseline.
    fn failed(&self, row: Row) -> impl FnOnce(std::io::Error) -> ferrite_io::Error + Send + 'static {
        let op = if is_write(row) { ferrite_io::Op::Write } else { ferrite_io::Op::Read };
        let path = self.files(row).path.clone();
        move |source| io_error_at(op, &path)(source)
    }

    /// Writes back what a write row left dirty, outside the timed part, so that the write-back
    /// does not run into the samples of whatever is measured next.
    ///
    /// # Errors
    ///
    /// The `fdatasync`'s.
    pub fn settle(&self, row: Row) -> ferrite_io::Result<()> {
        if is_write(row) {
            self.files(row).std.sync_data().map_err(self.failed(row))?;
        }
        Ok(())
    }

    fn files(&self, row: Row) -> &Files {
        match row {
            Row::CachedRead4k | Row::Batch8 | Row::ScaleCached(_) => &self.cached,
            Row::BufferedWrite4k => &self.write,
            Row::Fdatasync4k => &self.sync,
            Row::DirectRandread(_) | Row::DirectOneTask32 | Row::ScaleDirect(_) => &self.direct,
            Row::DirectSeqwrite128k => &self.seq,
        }
    }

    /// Runs `iters` operations of `row` on `backend` and returns the elapsed time. Setup (buffer
    /// acquisition, offset generation) is outside the timed part where a backend allows it.
    ///
    /// # Errors
    ///
    /// The first operation that fails.
    pub async fn run(&mut self, row: Row, backend: Backend, iters: u64) -> ferrite_io::Result<Duration> {
        let offsets = self.offsets(row, iters);
        match backend {
            #[cfg(uring)]
            Backend::Uring | Backend::UringFixed => {
                let uring = self.ring()?;
                // The CPU-bound scaling rows go through the ring: the engine without the fast path.
                let engine = if matches!(row, Row::ScaleCached(_)) { &uring.ring_only } else { &uring.engine }.clone();
                engine_run(&engine, self.files(row), row, &offsets, backend == Backend::UringFixed).await
            }
            Backend::Tokio => engine_run(&self.tokio, self.files(row), row, &offsets, true).await,
            #[cfg(uring)]
            Backend::RawRing | Backend::RawSqpoll => self.raw_run(row, backend, offsets).await,
            Backend::Pread => {
                let (file, failed) = (self.files(row).std.clone(), self.failed(row));
                in_task(async move { pread_run(&file, row, &offsets).map_err(failed) }).await
            }
            #[cfg(target_os = "linux")]
            Backend::Nowait => {
                let (file, failed) = (self.files(row).std.clone(), self.failed(row));
                in_task(async move { nowait_run(&file, row, &offsets).map_err(failed) }).await
            }
            Backend::SpawnBlocking => {
                let (file, failed) = (self.files(row).std.clone(), self.failed(row));
                in_task(async move { blocking_run(&file, row, &offsets).await.map_err(failed) }).await
            }
            Backend::TokioFs => {
                let file = self.files(row).tokio_fs().await?;
                let failed = self.failed(row);
                in_task(async move { tokio_fs_run(file, row, &offsets).await.map_err(failed) }).await
            }
        }
    }
}

#[cfg(uring)]
impl Bench {
    /// Runs `row` on the raw rings (`RawRing`) or the SQPOLL ring (`RawSqpoll`) in a task, as
    /// every backend runs (see [`in_task`]). The task holds the rings' lock and a handle of the
    /// file: the descriptor it submits on stays this file's even if the bench is dropped
    /// meanwhile (Ctrl-C), as the other baselines' tasks hold theirs.
    async fn raw_run(&mut self, row: Row, backend: Backend, offsets: Vec<u64>) -> ferrite_io::Result<Duration> {
        let (file, failed) = (self.files(row).std.clone(), self.failed(row));
        let uring = self.ring()?;
        let rings = match backend {
            Backend::RawSqpoll => uring.sqpoll.clone(),
            _ => Some(uring.raw.clone()),
        };
        let rings = rings.ok_or_else(|| io_error(std::io::Error::other("no SQPOLL ring here (see Bench::runs)")))?;
        in_task(async move {
            let mut rings = rings.lock().unwrap_or_else(PoisonError::into_inner);
            let fd = std::os::fd::AsRawFd::as_raw_fd(&*file);
            raw::run(&mut rings, fd, row, &offsets).map_err(failed)
        })
        .await
    }
}

/// Latencies of O_DIRECT 4 KiB random reads at queue depth 1, one per operation, rotating
/// operation by operation between the io_uring engine (fixed buffer), the raw ring waited for in
/// the kernel, the raw ring waited for through tokio's reactor ([`raw::OnTokio`]), and the
/// engine driven by `UringEngine::block_on`, which waits in the kernel as the raw ring does.
#[cfg(uring)]
pub struct Paired {
    pub uring_fixed: Vec<f64>,
    pub raw_ring: Vec<f64>,
    pub raw_ring_tokio: Vec<f64>,
    pub block_on: Vec<f64>,
}

#[cfg(uring)]
impl Bench {
    /// Runs `pairs` rotations of queue-depth-1 O_DIRECT reads, one through the engine, one
    /// through the raw ring waited for in the kernel, one through the raw ring waited for
    /// through the runtime's reactor, and one through the engine under `block_on`, rotating
    /// which goes first, in one task on the runtime. A device whose latency drifts over seconds
    /// (a shared virtual disk) moves all sides alike, so the ratios of their medians show the
    /// engine's own cost, which per-round ratios of separate runs bury under the drift. The raw ring blocks the task's worker while it waits,
    /// as a raw loop does, and so does `block_on`; the third side is what any library on tokio
    /// pays at least (see [`raw::OnTokio`]).
    ///
    /// # Errors
    ///
    /// The first operation that fails.
    pub async fn paired_qd1(&mut self, pairs: usize) -> ferrite_io::Result<Paired> {
        let offsets = self.offsets(Row::DirectRandread(1), 4 * pairs as u64);
        let file = self.direct.engine.clone();
        let direct = self.direct.std.clone();
        let engine = self.ring()?.engine.clone();
        let task = tokio::spawn(async move {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&*direct);
            let mut paired = Paired {
                uring_fixed: Vec::with_capacity(pairs),
                raw_ring: Vec::with_capacity(pairs),
                raw_ring_tokio: Vec::with_capacity(pairs),
                block_on: Vec::with_capacity(pairs),
            };
            let result = async {
                let mut ring = raw::Ring::new(1, PAGE, raw::Setup::Plain).map_err(io_error)?;
                let mut on_tokio = raw::OnTokio::new().map_err(io_error)?;
                let mut buf = engine.acquire().await;
                buf.set_len(PAGE)?;
                let Engine::Uring(uring) = &*engine else {
                    return Err(io_error(std::io::Error::other("the paired QD1 comparison needs the io_uring engine")));
                };
                for (i, four) in offsets.chunks_exact(4).enumerate() {
                    for side in (0..4).map(|k| (i + k) % 4) {
                        let start = Instant::now();
                        match side {
                            0 => {
                                buf = engine_op(&engine, &file, Row::DirectRandread(1), buf, four[0], true).await?;
                                paired.uring_fixed.push(start.elapsed().as_secs_f64() * 1e6);
                            }
                            1 => {
                                ring.one(fd, four[1]).map_err(io_error)?;
                                paired.raw_ring.push(start.elapsed().as_secs_f64() * 1e6);
                            }
                            2 => {
                                on_tokio.one(fd, four[2]).await.map_err(io_error)?;
                                paired.raw_ring_tokio.push(start.elapsed().as_secs_f64() * 1e6);
                            }
                            _ => {
                                let read = engine_op(&engine, &file, Row::DirectRandread(1), buf, four[3], true);
                                buf = uring.block_on(read)?;
                                paired.block_on.push(start.elapsed().as_secs_f64() * 1e6);
                            }
                        }
                    }
                }
                Ok::<_, ferrite_io::Error>(())
            }
            .await;
            result.map(|()| paired)
        });
        task.await.map_err(|e| io_error(std::io::Error::other(e)))?
    }
}

/// Per-operation times of cached 4 KiB reads in chunks, alternating chunk by chunk between the
/// io_uring engine (fixed buffer, fast path on) and bare `preadv2(RWF_NOWAIT)`.
#[cfg(uring)]
pub struct PairedCached {
    pub uring_fixed: Vec<f64>,
    pub nowait: Vec<f64>,
}

/// Reads per chunk of [`Bench::paired_cached`]: a few milliseconds, short enough that both sides
/// of a pair see the same machine, long enough that switching sides costs nothing measurable.
/// Chunks of 200 reads put the engine about 5% closer to `nowait` than long runs do (one
/// build, two runs each: 1.043x and 1.047x at 200 reads, 1.078x and 1.098x at 2000, 1.094x
/// and 1.105x at 20,000), so 200 flattered the engine.
#[cfg(uring)]
pub const CHUNK: usize = 2000;

#[cfg(uring)]
impl Bench {
    /// Runs `chunks` pairs of [`CHUNK`] cached reads, one chunk through the engine and one
    /// through `preadv2(RWF_NOWAIT)` (the engine's fast path without the engine), alternating
    /// which goes first, in one task, on different offsets (so neither side warms the other's
    /// pages). As for the QD1 pairs: both sides of a pair see the same moment of a shared
    /// machine, which separate 60 ms samples do not.
    ///
    /// # Errors
    ///
    /// The first operation that fails.
    pub async fn paired_cached(&mut self, chunks: usize) -> ferrite_io::Result<PairedCached> {
        let offsets = self.offsets(Row::CachedRead4k, (2 * chunks * CHUNK) as u64);
        let (file, std) = (self.cached.engine.clone(), self.cached.std.clone());
        let engine = self.ring()?.engine.clone();
        let path = self.cached.path.clone();
        let task = tokio::spawn(async move {
            let mut paired =
                PairedCached { uring_fixed: Vec::with_capacity(chunks), nowait: Vec::with_capacity(chunks) };
            let mut buf = engine.acquire().await;
            buf.set_len(PAGE)?;
            for (i, pair) in offsets.chunks_exact(2 * CHUNK).enumerate() {
                let (ours, theirs) = pair.split_at(CHUNK);
                for side in [i % 2, 1 - i % 2] {
                    let start = Instant::now();
                    if side == 0 {
                        // The read itself, as an application's read loop awaits it, not through
                        // `engine_op`, which serves every row and whose larger future is built
                        // and moved per read (1.073x and 1.090x through it, 1.057-1.078x
                        // without, in five runs of one build).
                        for &offset in ours {
                            let done = check(engine.read_fixed_at(&file, buf, offset).await)?;
                            buf = registered(&engine, done, PAGE)?;
                        }
                        paired.uring_fixed.push(start.elapsed().as_secs_f64() * 1e6 / CHUNK as f64);
                    } else {
                        nowait_run(&std, Row::CachedRead4k, theirs)
                            .map_err(io_error_at(ferrite_io::Op::Read, &path))?;
                        paired.nowait.push(start.elapsed().as_secs_f64() * 1e6 / CHUNK as f64);
                    }
                }
            }
            Ok::<_, ferrite_io::Error>(paired)
        });
        task.await.map_err(|e| io_error(std::io::Error::other(e)))?
    }
}

/// Per-batch times of batches of [`BATCH`] cached 4 KiB reads in chunks, alternating chunk by
/// chunk between the io_uring engine (`submit_batch`, fixed buffers) and the raw ring
/// (`READ_FIXED` entries, one `io_uring_enter` per batch).
#[cfg(uring)]
pub struct PairedBatch {
    pub uring_fixed: Vec<f64>,
    pub raw_ring: Vec<f64>,
}

/// Batches per chunk of [`Bench::paired_batch`]: about 2.5 ms.
#[cfg(uring)]
pub const BATCH_CHUNK: usize = 250;

/// The span the hot variant of [`Bench::paired_batch`] reads from: the first 1 MiB of the file,
/// whose pages and page-cache entries stay in the CPU's caches, so the kernel's share of a
/// batch is as small as it gets and the engine's own cost shows the most.
#[cfg(uring)]
pub const HOT_SPAN: u64 = 1 << 20;

#[cfg(uring)]
impl Bench {
    /// Runs `chunks` pairs of [`BATCH_CHUNK`] batches, one chunk through the engine and one
    /// through the raw ring, alternating which goes first, in one task, on different offsets:
    /// anywhere in the file, or with `hot` inside its first [`HOT_SPAN`] bytes.
    /// The batch row's per-round ratios of separate 60 ms samples ranged over 1.13-1.38x in three
    /// runs of one build on the shared 2-vCPU machine; both sides of a pair see the same moment.
    ///
    /// # Errors
    ///
    /// The first operation that fails.
    pub async fn paired_batch(&mut self, chunks: usize, hot: bool) -> ferrite_io::Result<PairedBatch> {
        let mut offsets = self.offsets(Row::Batch8, (2 * chunks * BATCH_CHUNK) as u64);
        if hot {
            // Every read of a batch inside the span: its last is `(BATCH - 1) * 64 KiB` further.
            let starts = (HOT_SPAN - BATCH as u64 * 65536) / PAGE as u64;
            offsets.iter_mut().for_each(|offset| *offset = *offset / PAGE as u64 % starts * PAGE as u64);
        }
        let (file, std) = (self.cached.engine.clone(), self.cached.std.clone());
        let engine = self.ring()?.engine.clone();
        let path = self.cached.path.clone();
        let task = tokio::spawn(async move {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&*std);
            let mut paired =
                PairedBatch { uring_fixed: Vec::with_capacity(chunks), raw_ring: Vec::with_capacity(chunks) };
            let mut ring = raw::Ring::new(BATCH, PAGE, raw::Setup::Plain).map_err(io_error)?;
            let mut batches = Batches::new(&engine).await?;
            for (i, pair) in offsets.chunks_exact(2 * BATCH_CHUNK).enumerate() {
                let (ours, theirs) = pair.split_at(BATCH_CHUNK);
                for side in [i % 2, 1 - i % 2] {
                    let start = Instant::now();
                    if side == 0 {
                        batches.run(&engine, &file, ours).await?;
                        paired.uring_fixed.push(start.elapsed().as_secs_f64() * 1e6 / BATCH_CHUNK as f64);
                    } else {
                        ring.run(fd, Row::Batch8, theirs.iter().copied(), 1)
                            .map_err(io_error_at(ferrite_io::Op::Read, &path))?;
                        paired.raw_ring.push(start.elapsed().as_secs_f64() * 1e6 / BATCH_CHUNK as f64);
                    }
                }
            }
            Ok::<_, ferrite_io::Error>(paired)
        });
        task.await.map_err(|e| io_error(std::io::Error::other(e)))?
    }
}

fn is_write(row: Row) -> bool {
    matches!(row, Row::BufferedWrite4k | Row::Fdatasync4k | Row::DirectSeqwrite128k)
}

fn check<T>(result: BufResult<T, Buf<Completed>>) -> ferrite_io::Result<Buf<Completed>> {
    let (result, buf) = result.into_parts();
    result.map(|_| buf)
}

/// The offsets of one measurement, handed to its submitters (tasks or threads) as each asks for
/// more, as a work queue hands out work. A submitter that starts late, or runs on a CPU the
/// hypervisor gives less time, takes fewer: the measurement times the row's operations on every
/// submitter together, not twice the slower of two fixed halves. On this 2-vCPU machine the two
/// halves of a cached-read row differed by up to 20%, which showed as lost scaling in every
/// backend alike.
struct Feed {
    offsets: Vec<u64>,
    taken: AtomicUsize,
    chunk: usize,
}

impl Feed {
    /// One offset at a time, except on the CPU-bound scaling rows, whose submitters take 64: a
    /// counter updated per 2 us read would bounce between the cores and cost what is measured.
    /// A device operation takes tens of microseconds, so there the counter costs nothing, and
    /// the sequential write stays one sequential stream with 8 in flight, as fio's iodepth=8.
    fn new(offsets: Vec<u64>, row: Row) -> Feed {
        let chunk = if matches!(row, Row::ScaleCached(_)) { 64 } else { 1 };
        Feed { offsets, taken: AtomicUsize::new(0), chunk }
    }

    /// The next chunk nobody has taken, or `None` once all are.
    fn take(&self) -> Option<&[u64]> {
        let start = self.taken.fetch_add(self.chunk, Ordering::Relaxed);
        self.offsets.get(start..(start + self.chunk).min(self.offsets.len()))
    }

    /// The offsets one submitter gets, taken a chunk at a time as it goes.
    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::from_fn(|| self.take()).flatten().copied()
    }
}

/// One read or write of `row` through an engine; hands the buffer back for reuse. The
/// `fdatasync` row's sync is the caller's ([`synced`]): held in here, its future (over 600
/// bytes) made this one over 700 bytes, built and copied twice for every operation of every row
/// (cached reads in a loop outside the tree: 1.10-1.11x `nowait` through such a wrapper,
/// 1.05-1.06x awaiting `read_fixed_at` directly).
async fn engine_op(
    engine: &Engine,
    file: &File,
    row: Row,
    buf: Buf<ferrite_io::Registered>,
    offset: u64,
    fixed: bool,
) -> ferrite_io::Result<Buf<ferrite_io::Registered>> {
    let done = match (is_write(row), fixed) {
        (false, true) => check(engine.read_fixed_at(file, buf, offset).await)?,
        (false, false) => check(engine.read_at(file, buf.into_free(), offset).await)?,
        (true, true) => check(engine.write_fixed_at(file, buf, offset).await)?,
        (true, false) => check(engine.write_at(file, buf.into_free(), offset).await)?,
    };
    registered(engine, done, row.bytes().min(SEQ_BLOCK))
}

/// The buffers and the reusable [`Batch`] of the batch row: refilled every round, so that steady
/// state allocates nothing.
struct Batches {
    bufs: Vec<Buf<ferrite_io::Registered>>,
    batch: Batch,
}

impl Batches {
    async fn new(engine: &Engine) -> ferrite_io::Result<Batches> {
        let mut bufs = Vec::with_capacity(BATCH);
        for _ in 0..BATCH {
            let mut buf = engine.acquire().await;
            buf.set_len(PAGE)?;
            bufs.push(buf);
        }
        Ok(Batches { bufs, batch: Batch::with_capacity(BATCH) })
    }

    /// One batch of [`BATCH`] reads per offset (see [`batch_offset`]), submitted and collected.
    async fn run(&mut self, engine: &Engine, file: &File, offsets: &[u64]) -> ferrite_io::Result<()> {
        for &offset in offsets {
            for (i, buf) in self.bufs.drain(..).enumerate() {
                self.batch.read_at(file, buf, batch_offset(offset, i));
            }
            for result in engine.submit_batch(&mut self.batch).await {
                self.bufs.push(registered(engine, check(result)?, PAGE)?);
            }
        }
        Ok(())
    }
}

/// Ends an operation of `row`: the `fdatasync` row syncs after each write.
async fn synced(engine: &Engine, file: &File, row: Row) -> ferrite_io::Result<()> {
    if row == Row::Fdatasync4k {
        engine.sync_data(file).await?;
    }
    Ok(())
}

/// Runs `work` as a task on the runtime's workers, as application code runs, instead of on the
/// thread that called `block_on`: completions then wake it on the same worker, with no
/// cross-thread unpark in the measured path. Every backend runs its loop this way, the
/// baselines too, so that no backend is measured on another kind of thread than the others.
async fn in_task(
    work: impl std::future::Future<Output = ferrite_io::Result<Duration>> + Send + 'static,
) -> ferrite_io::Result<Duration> {
    tokio::spawn(work).await.map_err(|e| io_error(std::io::Error::other(e)))?
}

async fn engine_run(
    engine: &SharedIoEngine,
    files: &Files,
    row: Row,
    offsets: &[u64],
    fixed: bool,
) -> ferrite_io::Result<Duration> {
    let (engine, file, offsets) = (engine.clone(), files.engine.clone(), offsets.to_vec());
    in_task(async move { engine_loop(&engine, &file, row, &offsets, fixed).await }).await
}

async fn engine_loop(
    engine: &SharedIoEngine,
    file: &File,
    row: Row,
    offsets: &[u64],
    fixed: bool,
) -> ferrite_io::Result<Duration> {
    let single = row.bytes().min(SEQ_BLOCK);
    if row == Row::Batch8 {
        let mut batches = Batches::new(engine).await?;
        let start = Instant::now();
        batches.run(engine, file, offsets).await?;
        return Ok(start.elapsed());
    }
    if let Row::DirectOneTask32 | Row::ScaleDirect(_) = row {
        return futures_run(engine, file, row, offsets, fixed).await;
    }
    let depth = row.depth();
    if depth == 1 {
        let mut buf = engine.acquire().await;
        buf.set_len(single)?;
        let start = Instant::now();
        for &offset in offsets {
            buf = engine_op(engine, file, row, buf, offset, fixed).await?;
            synced(engine, file, row).await?;
        }
        return Ok(start.elapsed());
    }
    // Queue depth: `depth` tasks on the runtime, each with its own buffer, fed from one `Feed`.
    let mut tasks = tokio::task::JoinSet::new();
    let feed = Arc::new(Feed::new(offsets.to_vec(), row));
    let mut bufs = Vec::with_capacity(depth);
    for _ in 0..depth {
        let mut buf = engine.acquire().await;
        buf.set_len(single)?;
        bufs.push(buf);
    }
    let start = Instant::now();
    for buf in bufs {
        let (engine, file, feed) = (engine.clone(), file.clone(), feed.clone());
        tasks.spawn(async move {
            let mut buf = buf;
            for offset in feed.iter() {
                buf = engine_op(&engine, &file, row, buf, offset, fixed).await?;
                synced(&engine, &file, row).await?;
            }
            Ok::<_, ferrite_io::Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| io_error(std::io::Error::other(e)))??;
    }
    Ok(start.elapsed())
}

/// `row.submitters()` tasks, each keeping its share of the row's 32 operations in flight as
/// futures polled together (`FuturesUnordered`: only the woken ones are polled again).
async fn futures_run(
    engine: &SharedIoEngine,
    file: &File,
    row: Row,
    offsets: &[u64],
    fixed: bool,
) -> ferrite_io::Result<Duration> {
    use futures_util::StreamExt;
    use futures_util::stream::FuturesUnordered;
    let tasks = row.submitters();
    let per_task = row.depth() / tasks;
    let mut bufs = Vec::with_capacity(row.depth());
    for _ in 0..row.depth() {
        let mut buf = engine.acquire().await;
        buf.set_len(PAGE)?;
        bufs.push(buf);
    }
    let mut set = tokio::task::JoinSet::new();
    let feed = Arc::new(Feed::new(offsets.to_vec(), row));
    let start = Instant::now();
    for _ in 0..tasks {
        let (engine, file, feed) = (engine.clone(), file.clone(), feed.clone());
        let mine: Vec<_> = bufs.drain(..per_task.min(bufs.len())).collect();
        set.spawn(async move {
            let mut next = feed.iter();
            let mut flight = FuturesUnordered::new();
            for (buf, offset) in mine.into_iter().zip(next.by_ref()) {
                flight.push(engine_op(&engine, &file, row, buf, offset, fixed));
            }
            while let Some(done) = flight.next().await {
                let buf = done?;
                if let Some(offset) = next.next() {
                    flight.push(engine_op(&engine, &file, row, buf, offset, fixed));
                }
            }
            Ok::<_, ferrite_io::Error>(())
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.map_err(|e| io_error(std::io::Error::other(e)))??;
    }
    Ok(start.elapsed())
}

/// Recycles a completed buffer of `engine`'s own pool for the next operation of `len` bytes.
fn registered(engine: &Engine, buf: Buf<Completed>, len: usize) -> ferrite_io::Result<Buf<ferrite_io::Registered>> {
    let mut buf = match buf.try_into_registered(engine) {
        Ok(buf) => buf,
        Err(_) => unreachable!("the buffer came from this engine's pool"),
    };
    buf.set_len(len)?;
    Ok(buf)
}

/// The `i`-th read of a batch starting at `offset`: 64 KiB apart, inside the file.
fn batch_offset(offset: u64, i: usize) -> u64 {
    offset.wrapping_add(i as u64 * 65536) % FILE_SIZE
}

/// A page-aligned buffer for the syscall baselines (O_DIRECT needs 4096 alignment).
fn aligned(len: usize) -> std::io::Result<memmap2::MmapMut> {
    memmap2::MmapMut::map_anon(len)
}

fn sync_op(file: &std::fs::File, row: Row, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    if is_write(row) {
        file.write_all_at(buf, offset)?;
    } else {
        file.read_exact_at(buf, offset)?;
    }
    if row == Row::Fdatasync4k {
        file.sync_data()?;
    }
    Ok(())
}

fn pread_run(file: &std::fs::File, row: Row, offsets: &[u64]) -> std::io::Result<Duration> {
    let depth = row.depth();
    let len = row.bytes().min(SEQ_BLOCK);
    if depth == 1 {
        let mut buf = aligned(len)?;
        let start = Instant::now();
        for &offset in offsets {
            if row == Row::Batch8 {
                for i in 0..BATCH {
                    file.read_exact_at(&mut buf[..PAGE], batch_offset(offset, i))?;
                }
            } else {
                sync_op(file, row, &mut buf, offset)?;
            }
        }
        return Ok(start.elapsed());
    }
    let feed = Feed::new(offsets.to_vec(), row);
    let start = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..depth)
            .map(|_| {
                let feed = &feed;
                scope.spawn(move || {
                    let mut buf = aligned(len)?;
                    feed.iter().try_for_each(|offset| sync_op(file, row, &mut buf, offset))
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().unwrap_or_else(|_| Err(std::io::Error::other("worker panicked"))))
    })?;
    Ok(start.elapsed())
}

/// Cached reads with `preadv2(RWF_NOWAIT)`, what the engines' fast path issues; a read the
/// kernel refuses (`EAGAIN`: not cached, or a readahead mark) is redone with `pread`, as the
/// engines redo it on the ring or the blocking pool.
#[cfg(target_os = "linux")]
fn nowait_run(file: &std::fs::File, row: Row, offsets: &[u64]) -> std::io::Result<Duration> {
    use std::os::fd::AsRawFd;
    let reads = if row == Row::Batch8 { BATCH } else { 1 };
    let mut buf = aligned(PAGE)?;
    let start = Instant::now();
    for &offset in offsets {
        for i in 0..reads {
            let at = if row == Row::Batch8 { batch_offset(offset, i) } else { offset };
            let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: PAGE };
            // SAFETY: `iov` describes `buf`, a live mapping of PAGE bytes borrowed mutably for
            // the call; the kernel writes at most PAGE bytes into it.
            let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at as libc::off_t, libc::RWF_NOWAIT) };
            if n != PAGE as isize {
                file.read_exact_at(&mut buf, at)?;
            }
        }
    }
    Ok(start.elapsed())
}

async fn blocking_run(file: &Arc<std::fs::File>, row: Row, offsets: &[u64]) -> std::io::Result<Duration> {
    let depth = row.depth();
    let len = row.bytes().min(SEQ_BLOCK);
    let join = |e: tokio::task::JoinError| std::io::Error::other(e);
    if row == Row::Batch8 {
        let start = Instant::now();
        // The naive way: one blocking task per read, all awaited together.
        for &offset in offsets {
            let reads: Vec<_> = (0..BATCH)
                .map(|i| {
                    let file = file.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut buf = [0u8; PAGE];
                        file.read_exact_at(&mut buf, batch_offset(offset, i))
                    })
                })
                .collect();
            for read in reads {
                read.await.map_err(join)??;
            }
        }
        return Ok(start.elapsed());
    }
    let feed = Arc::new(Feed::new(offsets.to_vec(), row));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..depth {
        let (file, feed) = (file.clone(), feed.clone());
        tasks.spawn(async move {
            let mut buf = aligned(len)?;
            for offset in feed.iter() {
                let file = file.clone();
                buf = tokio::task::spawn_blocking(move || sync_op(&file, row, &mut buf, offset).map(|()| buf))
                    .await
                    .map_err(join)??;
            }
            Ok::<_, std::io::Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(join)??;
    }
    Ok(start.elapsed())
}

/// `tokio::fs` as its users write it: seek, then read or write (it has no positional calls).
/// Only the buffered rows, so every operation is one page.
async fn tokio_fs_run(mut file: tokio::fs::File, row: Row, offsets: &[u64]) -> std::io::Result<Duration> {
    let mut buf = vec![0u8; PAGE];
    let start = Instant::now();
    for &offset in offsets {
        let reads = if row == Row::Batch8 { BATCH } else { 1 };
        for i in 0..reads {
            file.seek(std::io::SeekFrom::Start(batch_offset(offset, i))).await?;
            if is_write(row) {
                file.write_all(&buf).await?;
                file.flush().await?;
            } else {
                file.read_exact(&mut buf).await?;
            }
        }
        if row == Row::Fdatasync4k {
            file.sync_data().await?;
        }
    }
    Ok(start.elapsed())
}

/// The raw io-uring baseline: one ring, fixed buffers, no locks, no slab, no futures.
#[cfg(uring)]
pub mod raw {
    use std::io;
    use std::os::fd::{AsRawFd, OwnedFd, RawFd};
    use std::time::{Duration, Instant};

    use io_uring::{IoUring, opcode, types};
    use rustix::event::{EventfdFlags, eventfd};
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    use super::{BATCH, Feed, PAGE, Row, batch_offset, is_write};

    /// Runs `row` on one thread per submitter, each with a ring of its own and its share of the
    /// operations in flight.
    pub fn run(rings: &mut [Ring], fd: RawFd, row: Row, offsets: &[u64]) -> io::Result<Duration> {
        let threads = row.submitters();
        let depth = row.depth() / threads;
        if threads == 1 {
            return rings[0].run(fd, row, offsets.iter().copied(), depth);
        }
        let feed = Feed::new(offsets.to_vec(), row);
        let start = Instant::now();
        std::thread::scope(|scope| {
            let feed = &feed;
            let workers: Vec<_> = rings
                .iter_mut()
                .take(threads)
                .map(|ring| scope.spawn(move || ring.run(fd, row, feed.iter(), depth)))
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().unwrap_or_else(|_| Err(io::Error::other("raw ring panicked"))).map(drop))
        })?;
        Ok(start.elapsed())
    }

    /// A raw ring waited for through tokio's reactor instead of in the kernel: the ring signals
    /// an eventfd, which sits in an `AsyncFd`, and the task that submitted reaps the ring itself
    /// when the reactor wakes it. No locks, slots, relays or counters: the least a library on
    /// tokio can do for one operation at queue depth 1, so the floor under the engine's figure.
    /// What it pays over [`Ring::one`] is the runtime's: the wait in `epoll_wait` instead of in
    /// `io_uring_enter`, and the wake-up of the task.
    pub struct OnTokio {
        ring: Ring,
        ready: AsyncFd<OwnedFd>,
        /// A read was submitted and its completion not yet taken (its `one` was dropped).
        pending: bool,
    }

    impl OnTokio {
        /// A ring of its own with one fixed buffer and an eventfd in the current runtime's
        /// reactor.
        pub fn new() -> io::Result<OnTokio> {
            let ring = Ring::new(1, PAGE, Setup::Plain)?;
            let eventfd = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?;
            ring.ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
            // SAFETY: the `AsyncFd` takes ownership of the `OwnedFd`, so the descriptor stays
            // open and names this eventfd for as long as it is registered.
            let ready = unsafe { AsyncFd::register_with_interest(eventfd, Interest::READABLE) }?;
            Ok(OnTokio { ring, ready, pending: false })
        }

        /// One 4 KiB read into the fixed buffer at `offset`; the task sleeps until the reactor
        /// reports the eventfd (allocates nothing).
        pub async fn one(&mut self, fd: RawFd, offset: u64) -> io::Result<()> {
            if self.pending {
                // The completion of a read whose `one` was dropped: not this read's result.
                let _ = self.reap().await;
            }
            self.ring.push(fd, Row::DirectRandread(1), 0, PAGE, offset)?;
            self.ring.ring.submit()?;
            self.pending = true;
            match self.reap().await? {
                n if n >= 0 => Ok(()),
                errno => Err(io::Error::from_raw_os_error(-errno)),
            }
        }

        /// Waits for the one read in flight and returns its result.
        async fn reap(&mut self) -> io::Result<i32> {
            loop {
                if let Some(cqe) = self.ring.ring.completion().next() {
                    self.pending = false;
                    return Ok(cqe.result());
                }
                // Readiness is cleared before the CQ is looked at again: a completion after
                // the clear signals the eventfd again, so none is slept through.
                self.ready.readable().await?.clear_ready();
            }
        }
    }

    pub struct Ring {
        ring: IoUring,
        arena: memmap2::MmapMut,
        slot: usize,
        /// The descriptor registered as fixed file 0, used instead of the one passed in.
        fixed_file: Option<RawFd>,
    }

    /// How a raw ring is set up: the options the engine's design considered (the CLI uses
    /// `Plain` and `Sqpoll`; the Criterion benches compare all three).
    #[derive(Clone, Copy, Debug)]
    #[allow(dead_code)]
    pub enum Setup {
        Plain,
        /// `IORING_SETUP_SQPOLL`: a kernel thread polls the SQ (idle after 1 ms without work, so
        /// it does not spin into the next measurement).
        Sqpoll,
        /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`: completion work runs only
        /// when the creating thread waits in the ring, and only that thread may submit.
        DeferTaskrun,
    }

    impl Ring {
        /// A ring of 64 entries set up as `setup`, with `slots` fixed buffers of `slot` bytes.
        pub fn new(slots: usize, slot: usize, setup: Setup) -> io::Result<Ring> {
            let ring = match setup {
                Setup::Plain => IoUring::new(64)?,
                Setup::Sqpoll => IoUring::builder().setup_sqpoll(1).build(64)?,
                Setup::DeferTaskrun => IoUring::builder().setup_single_issuer().setup_defer_taskrun().build(64)?,
            };
            let mut arena = memmap2::MmapMut::map_anon(slots * slot)?;
            let base = arena.as_mut_ptr();
            let iovecs: Vec<libc::iovec> = (0..slots)
                .map(|i| libc::iovec { iov_base: base.wrapping_add(i * slot).cast(), iov_len: slot })
                .collect();
            // A read of `OnTokio::one` dropped mid-wait may still be in flight when the ring
            // closes: the kernel's pin on registered pages, taken here and released when the
            // closed ring's last request is done, keeps those pages from reuse until then.
            // SAFETY: the iovecs cover `arena`, which `Ring` owns and drops after `ring` (fields
            // drop in declaration order); `run` and `one` wait for every completion.
            unsafe { ring.submitter().register_buffers(&iovecs) }?;
            Ok(Ring { ring, arena, slot, fixed_file: None })
        }

        /// Registers `fd` as fixed file 0; every later operation uses it (`IOSQE_FIXED_FILE`),
        /// whatever descriptor it is given. For the Criterion benches.
        #[allow(dead_code)]
        pub fn register_file(&mut self, fd: RawFd) -> io::Result<()> {
            self.ring.submitter().register_files(&[fd])?;
            self.fixed_file = Some(fd);
            Ok(())
        }

        /// Pushes one operation on slot `slot`; `len` bytes at `offset`.
        fn push(&mut self, fd: RawFd, row: Row, slot: usize, len: usize, offset: u64) -> io::Result<()> {
            let ptr = self.arena.as_mut_ptr().wrapping_add(slot * self.slot);
            let (len, index) = (len as u32, slot as u16);
            let entry = match (is_write(row), self.fixed_file.is_some()) {
                (true, false) => opcode::WriteFixed::new(types::Fd(fd), ptr, len, index).offset(offset).build(),
                (true, true) => opcode::WriteFixed::new(types::Fixed(0), ptr, len, index).offset(offset).build(),
                (false, false) => opcode::ReadFixed::new(types::Fd(fd), ptr, len, index).offset(offset).build(),
                (false, true) => opcode::ReadFixed::new(types::Fixed(0), ptr, len, index).offset(offset).build(),
            }
            .user_data(slot as u64);
            // SAFETY: `ptr..ptr+len` lies in registered slot `slot` of `arena`, which outlives
            // the operation: every pushed entry is waited for before `run` returns.
            unsafe { self.ring.submission().push(&entry) }.map_err(|_| io::Error::other("submission queue full"))
        }

        /// One 4 KiB read into slot 0 at `offset`, waited for (allocates nothing).
        pub fn one(&mut self, fd: RawFd, offset: u64) -> io::Result<()> {
            self.push(fd, Row::DirectRandread(1), 0, PAGE, offset)?;
            self.ring.submit_and_wait(1)?;
            match self.ring.completion().next().map(|cqe| cqe.result()) {
                Some(n) if n >= 0 => Ok(()),
                Some(errno) => Err(io::Error::from_raw_os_error(-errno)),
                None => Err(io::Error::other("no completion after waiting for one")),
            }
        }

        /// Reaps every completion into `done`, cleared first and reused: the baseline allocates
        /// nothing per operation, as the engine does not.
        fn reap(&mut self, done: &mut Vec<usize>) -> io::Result<()> {
            done.clear();
            for cqe in self.ring.completion() {
                if cqe.result() < 0 {
                    return Err(io::Error::from_raw_os_error(-cqe.result()));
                }
                done.push(cqe.user_data() as usize);
            }
            Ok(())
        }

        /// Runs `row` on this ring with `depth` operations in flight; the time it took.
        pub fn run(
            &mut self,
            fd: RawFd,
            row: Row,
            mut offsets: impl Iterator<Item = u64>,
            depth: usize,
        ) -> io::Result<Duration> {
            let len = row.bytes().min(self.slot);
            let mut done = Vec::with_capacity(depth.max(BATCH));
            let start = Instant::now();
            match row {
                Row::Batch8 => {
                    for offset in offsets {
                        for i in 0..BATCH {
                            self.push(fd, row, i, PAGE, batch_offset(offset, i))?;
                        }
                        self.ring.submit_and_wait(BATCH)?;
                        self.reap(&mut done)?;
                    }
                }
                Row::Fdatasync4k => {
                    for offset in offsets {
                        self.push(fd, row, 0, len, offset)?;
                        self.ring.submit_and_wait(1)?;
                        self.reap(&mut done)?;
                        let sync = opcode::Fsync::new(types::Fd(fd)).flags(types::FsyncFlags::DATASYNC).build();
                        // SAFETY: an fsync entry points at no memory.
                        unsafe { self.ring.submission().push(&sync) }
                            .map_err(|_| io::Error::other("submission queue full"))?;
                        self.ring.submit_and_wait(1)?;
                        self.reap(&mut done)?;
                    }
                }
                _ => {
                    let mut in_flight = 0;
                    for slot in 0..depth {
                        if let Some(offset) = offsets.next() {
                            self.push(fd, row, slot, len, offset)?;
                            in_flight += 1;
                        }
                    }
                    while in_flight > 0 {
                        self.ring.submit_and_wait(1)?;
                        self.reap(&mut done)?;
                        for &slot in &done {
                            in_flight -= 1;
                            if let Some(offset) = offsets.next() {
                                self.push(fd, row, slot, len, offset)?;
                                in_flight += 1;
                            }
                        }
                    }
                }
            }
            Ok(start.elapsed())
        }
    }
}
