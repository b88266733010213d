//! [`TokioEngine`]: the owned-buffer API on tokio's blocking pool, for every platform and for
//! hosts where io_uring is blocked.
//!
//! Each call moves its buffers into one blocking task that runs `pread`/`pwrite`/`fsync` and
//! moves them back: no byte is copied. Composite calls (`read_exact_at`, `write_durable_at`, a
//! whole [`Batch`]) run in a single task, so they pay for one thread hop, not one per syscall. A
//! dropped future leaves the task running with the buffers; they return to the pool when the
//! syscall is done (I2).

use std::io;
use std::os::unix::fs::FileExt;

use super::nowait::{FastPath, Nowait};
use super::{Batch, BatchOp, BufResult, File, IoEngine, MAX_VECTORED, Reason, Rw, Selection, foreign, is_fixed};
use crate::buf::{Buf, BufPool, Completed, InFlight, Registered, Submittable};
use crate::config::{EngineChoice, IoEngineConfig};
use crate::error::{Backend, Error, Op, Result};

/// The portable engine: tokio's blocking pool running positional syscalls.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::{IoEngine, IoEngineConfig, OpenOptions, TokioEngine};
/// # let dir = tempfile::tempdir().unwrap();
/// let engine = TokioEngine::new(&IoEngineConfig::default())?;
/// let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
/// let mut buf = engine.pool().acquire().await;
/// buf.fill(1);
/// let (written, _buf) = engine.write_at(&file, buf, 0).await.into_result().map_err(|(e, _)| e)?;
/// assert_eq!(written, 65536);
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
#[derive(Debug)]
pub struct TokioEngine {
    pool: BufPool,
    selection: Selection,
    fast: FastPath,
}

impl TokioEngine {
    /// An engine with a pool of `config.registered_buffers` buffers of `config.buffer_size`
    /// bytes. Does not need a runtime until the first operation.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid config, [`Error::Map`] when the arena cannot be mapped.
    pub fn new(config: &IoEngineConfig) -> Result<Self> {
        let selection = Selection {
            requested: EngineChoice::Tokio,
            backend: Backend::Tokio,
            reason: Reason::Requested(EngineChoice::Tokio),
        };
        Self::with_selection(config, selection)
    }

    pub(crate) fn with_selection(config: &IoEngineConfig, selection: Selection) -> Result<Self> {
        config.validate()?;
        Ok(TokioEngine {
            pool: BufPool::new(config.registered_buffers, config.buffer_size)?,
            selection,
            fast: FastPath::new(config.nowait_fast_path),
        })
    }

    async fn rw<S: Submittable>(
        &self,
        rw: Rw,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<usize, Buf<Completed>> {
        let op = rw.op(is_fixed(&buf, &self.pool), false);
        let mut buf = buf.into_in_flight();
        // Page-cache hits finish inline, without a trip through the blocking pool.
        let inline = match self.fast.attempt(rw, file, &mut buf, 0, offset) {
            Nowait::Done(n) if n == 0 || n == buf.len() => return complete(op, offset, Ok(n), buf),
            Nowait::Failed(e) => return complete(op, offset, Err(e), buf),
            Nowait::Done(n) => n,
            Nowait::WouldBlock | Nowait::Unsupported => 0,
        };
        let file = file.clone();
        blocking(move || {
            let result = match rw_once(rw, file.std(), &mut buf, inline, offset + inline as u64) {
                Ok(n) => Ok(inline + n),
                Err(_) if inline > 0 => Ok(inline),
                Err(e) => Err(e),
            };
            complete(op, offset, result, buf)
        })
        .await
    }

    async fn rw_fixed(
        &self,
        rw: Rw,
        file: &File,
        buf: Buf<Registered>,
        offset: u64,
    ) -> BufResult<usize, Buf<Completed>> {
        if !is_fixed(&buf, &self.pool) {
            return foreign(buf, &self.pool);
        }
        self.rw(rw, file, buf, offset).await
    }

    async fn exact<S: Submittable>(
        &self,
        rw: Rw,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<(), Buf<Completed>> {
        let fixed = is_fixed(&buf, &self.pool);
        let mut buf = buf.into_in_flight();
        let done = match self.fast.attempt(rw, file, &mut buf, 0, offset) {
            Nowait::Done(n) if n == buf.len() => return BufResult(Ok(()), buf.into_completed(n)),
            Nowait::Failed(e) => return BufResult(Err(err(rw.op(fixed, false), offset, e)), buf.into_failed()),
            Nowait::Done(n) => n,
            Nowait::WouldBlock | Nowait::Unsupported => 0,
        };
        let file = file.clone();
        blocking(move || exact(rw, fixed, file.std(), buf, offset, done)).await
    }
}

/// Runs `f` on the blocking pool. A panic in `f` is resumed here; if the runtime is shutting
/// down and cancels the task, this future never completes (its task is being dropped anyway).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => std::future::pending().await,
    }
}

fn err(op: Op, offset: u64, source: io::Error) -> Error {
    Error::os(op, offset, Backend::Tokio, source)
}

/// `EINVAL` for offsets the kernel reads as negative; checked before any syscall on both engines.
pub(crate) fn check_offset(offset: u64) -> io::Result<()> {
    if offset > i64::MAX as u64 { Err(io::Error::from_raw_os_error(libc::EINVAL)) } else { Ok(()) }
}

/// One `pread`/`pwrite` of `buf[start..]` at `offset`, retrying `EINTR`.
fn rw_once(rw: Rw, file: &std::fs::File, buf: &mut Buf<InFlight>, start: usize, offset: u64) -> io::Result<usize> {
    check_offset(offset)?;
    // SAFETY: the tokio engine performs its I/O on this blocking thread itself; no kernel
    // operation holds the slot (I2), and `buf` is owned by this task.
    let bytes = unsafe { buf.bytes_mut() };
    let bytes = &mut bytes[start..];
    loop {
        let result = match rw {
            Rw::Read => file.read_at(bytes, offset),
            Rw::Write => file.write_at(bytes, offset),
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Repeats `rw_once` from `done` until `buf` is full or a call transfers nothing. Returns the
/// bytes done and the error that stopped it, if any.
fn rw_full(
    rw: Rw,
    file: &std::fs::File,
    buf: &mut Buf<InFlight>,
    offset: u64,
    mut done: usize,
) -> (usize, io::Result<()>) {
    while done < buf.len() {
        match rw_once(rw, file, buf, done, offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

fn complete(op: Op, offset: u64, result: io::Result<usize>, buf: Buf<InFlight>) -> BufResult<usize, Buf<Completed>> {
    match result {
        Ok(n) => BufResult(Ok(n), buf.into_completed(n)),
        Err(e) => BufResult(Err(err(op, offset, e)), buf.into_failed()),
    }
}

/// `read_exact_at`/`write_all_at` in one blocking call.
fn exact(
    rw: Rw,
    fixed: bool,
    file: &std::fs::File,
    mut buf: Buf<InFlight>,
    offset: u64,
    done: usize,
) -> BufResult<(), Buf<Completed>> {
    let wanted = buf.len();
    let op = rw.op(fixed, false);
    let (done, result) = rw_full(rw, file, &mut buf, offset, done);
    match result {
        Err(e) => BufResult(Err(err(op, offset + done as u64, e)), buf.into_failed()),
        Ok(()) if done == wanted => BufResult(Ok(()), buf.into_completed(done)),
        Ok(()) if rw == Rw::Read => {
            let e = Error::UnexpectedEof { op, offset, done, wanted };
            BufResult(Err(e), buf.into_completed(done))
        }
        Ok(()) => BufResult(Err(Error::WriteZero { op, offset, done, wanted }), buf.into_failed()),
    }
}

/// preadv/pwritev semantics over pread/pwrite: buffers in order, stop at the first short one.
fn vectored(
    rw: Rw,
    file: &std::fs::File,
    bufs: Vec<Buf<InFlight>>,
    offset: u64,
) -> BufResult<usize, Vec<Buf<Completed>>> {
    let op = rw.op(false, true);
    if bufs.len() > MAX_VECTORED {
        let e = err(op, offset, io::Error::from_raw_os_error(libc::EINVAL));
        return BufResult(Err(e), bufs.into_iter().map(|b| b.into_failed()).collect());
    }
    let mut total = 0usize;
    let mut failure = None;
    let mut moved = Vec::with_capacity(bufs.len());
    for mut buf in bufs {
        let mut done = 0;
        if failure.is_none() && moved.iter().all(|(b, d): &(Buf<InFlight>, usize)| *d == b.len()) {
            let (n, result) = rw_full(rw, file, &mut buf, offset + total as u64, 0);
            (done, total) = (n, total + n);
            failure = result.err();
        }
        moved.push((buf, done));
    }
    match failure {
        // Like the syscall: an error before any progress is the result; after some, the progress.
        Some(e) if total == 0 => {
            BufResult(Err(err(op, offset, e)), moved.into_iter().map(|(b, _)| b.into_failed()).collect())
        }
        _ => BufResult(Ok(total), moved.into_iter().map(|(b, done)| b.into_completed(done)).collect()),
    }
}

fn batch_op(op: BatchOp, pool: u64) -> BufResult<usize, Buf<Completed>> {
    let code = op.rw.op(op.fixed && op.buf.pool_id() == pool, false);
    let BatchOp { rw, file, mut buf, offset, .. } = op;
    let result = rw_once(rw, file.std(), &mut buf, 0, offset);
    complete(code, offset, result, buf)
}

impl IoEngine for TokioEngine {
    fn backend(&self) -> Backend {
        Backend::Tokio
    }

    fn selection(&self) -> &Selection {
        &self.selection
    }

    fn pool(&self) -> &BufPool {
        &self.pool
    }

    async fn read_at<S: Submittable>(&self, file: &File, buf: Buf<S>, offset: u64) -> BufResult<usize, Buf<Completed>> {
        self.rw(Rw::Read, file, buf, offset).await
    }

    async fn write_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<usize, Buf<Completed>> {
        self.rw(Rw::Write, file, buf, offset).await
    }

    async fn read_fixed_at(&self, file: &File, buf: Buf<Registered>, offset: u64) -> BufResult<usize, Buf<Completed>> {
        self.rw_fixed(Rw::Read, file, buf, offset).await
    }

    async fn write_fixed_at(&self, file: &File, buf: Buf<Registered>, offset: u64) -> BufResult<usize, Buf<Completed>> {
        self.rw_fixed(Rw::Write, file, buf, offset).await
    }

    async fn read_exact_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<(), Buf<Completed>> {
        self.exact(Rw::Read, file, buf, offset).await
    }

    async fn write_all_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<(), Buf<Completed>> {
        self.exact(Rw::Write, file, buf, offset).await
    }

    async fn write_durable_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<(), Buf<Completed>> {
        let fixed = is_fixed(&buf, &self.pool);
        let (file, buf) = (file.clone(), buf.into_in_flight());
        blocking(move || {
            let written = exact(Rw::Write, fixed, file.std(), buf, offset, 0);
            match written.0 {
                Ok(()) => BufResult(file.std().sync_data().map_err(|e| err(Op::SyncData, offset, e)), written.1),
                Err(_) => written,
            }
        })
        .await
    }

    async fn read_vectored_at<S: Submittable>(
        &self,
        file: &File,
        bufs: Vec<Buf<S>>,
        offset: u64,
    ) -> BufResult<usize, Vec<Buf<Completed>>> {
        let file = file.clone();
        let bufs: Vec<_> = bufs.into_iter().map(Buf::into_in_flight).collect();
        blocking(move || vectored(Rw::Read, file.std(), bufs, offset)).await
    }

    async fn write_vectored_at<S: Submittable>(
        &self,
        file: &File,
        bufs: Vec<Buf<S>>,
        offset: u64,
    ) -> BufResult<usize, Vec<Buf<Completed>>> {
        let file = file.clone();
        let bufs: Vec<_> = bufs.into_iter().map(Buf::into_in_flight).collect();
        blocking(move || vectored(Rw::Write, file.std(), bufs, offset)).await
    }

    async fn sync_all(&self, file: &File) -> Result<()> {
        let file = file.clone();
        blocking(move || file.std().sync_all().map_err(|e| err(Op::SyncAll, 0, e))).await
    }

    async fn sync_data(&self, file: &File) -> Result<()> {
        let file = file.clone();
        blocking(move || file.std().sync_data().map_err(|e| err(Op::SyncData, 0, e))).await
    }

    async fn submit_batch(&self, batch: Batch) -> Vec<BufResult<usize, Buf<Completed>>> {
        let pool = self.pool.id();
        // Page-cache hits finish inline; whatever would block goes to one blocking task.
        let mut results: Vec<Option<BufResult<usize, Buf<Completed>>>> = Vec::with_capacity(batch.len());
        let mut rest = Vec::new();
        for (i, mut op) in batch.ops.into_iter().enumerate() {
            let code = op.rw.op(op.fixed && op.buf.pool_id() == pool, false);
            match self.fast.attempt(op.rw, &op.file, &mut op.buf, 0, op.offset) {
                Nowait::Done(n) if n == 0 || n == op.buf.len() => {
                    results.push(Some(complete(code, op.offset, Ok(n), op.buf)))
                }
                Nowait::Failed(e) => results.push(Some(complete(code, op.offset, Err(e), op.buf))),
                Nowait::Done(_) | Nowait::WouldBlock | Nowait::Unsupported => {
                    results.push(None);
                    rest.push((i, op));
                }
            }
        }
        if !rest.is_empty() {
            let done =
                blocking(move || rest.into_iter().map(|(i, op)| (i, batch_op(op, pool))).collect::<Vec<_>>()).await;
            for (i, result) in done {
                results[i] = Some(result);
            }
        }
        results.into_iter().flatten().collect()
    }
}
