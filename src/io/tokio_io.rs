//! [`TokioEngine`]: the owned-buffer API on tokio's blocking pool, for every platform and for
//! hosts where io_uring is blocked.
//!
//! Each call moves its buffers into one blocking task that runs `pread`/`pwrite`/`fsync` and
//! moves them back: no byte is copied. Composite calls (`read_exact_at`, `write_durable_at`, a
//! whole [`Batch`]) run in a single task, so they pay for one thread hop, not one per syscall. A
//! dropped future leaves the task running with the buffers; they return to the pool when the
//! syscall is done (I2). When the blocking pool refuses the task (its runtime has shut down),
//! the buffers come back with [`Error::Cancelled`] instead of the call waiting forever.

use std::io;

use super::nowait::{FastPath, Nowait};
use super::stats::{Counters, EngineStats};
use super::{
    Batch, BatchResults, BatchSlot, BufResult, File, IoEngine, MAX_VECTORED, PositionalIo, Reason, Rw, Selection,
    Stage, foreign, is_fixed,
};
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
    direct_io: bool,
    counters: std::sync::Arc<Counters>,
}

impl TokioEngine {
    /// An engine with a pool of `config.registered_buffers` buffers of `config.buffer_size`
    /// bytes. Does not need a runtime until the first operation.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid config, [`Error::Map`] when the arena cannot be mapped.
    ///
    /// ```
    /// use ferrite_io::{IoEngine, IoEngineConfig, TokioEngine};
    /// // Works anywhere (no io_uring needed); 8 buffers of 4 KiB.
    /// let config = IoEngineConfig { registered_buffers: 8, buffer_size: 4096, ..IoEngineConfig::default() };
    /// let engine = TokioEngine::new(&config)?;
    /// assert_eq!((engine.pool().capacity(), engine.backend()), (8, ferrite_io::Backend::Tokio));
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
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
            direct_io: config.direct_io,
            counters: std::sync::Arc::default(),
        })
    }

    /// One read or write of all of `buf` at `offset`; `fixed_only` refuses a buffer that is not
    /// this engine's (the `*_fixed_at` calls). The trait's methods return this future itself:
    /// each `async fn` layer above it would copy the buffer and arguments first.
    async fn rw<S: Submittable>(
        &self,
        rw: Rw,
        fixed_only: bool,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<usize, Buf<Completed>> {
        let fixed = is_fixed(&buf, &self.pool);
        if fixed_only && !fixed {
            return foreign(buf, &self.pool);
        }
        let op = rw.op(fixed, false);
        let mut buf = buf.into_in_flight();
        // Page-cache hits finish inline, without a trip through the blocking pool.
        let inline = match self.fast.attempt(rw, file, &mut buf, 0, offset, &self.counters) {
            Nowait::Done(n) if n == 0 || n == buf.len() => return self.complete(rw, op, file, offset, Ok(n), buf),
            Nowait::Failed(e) => return self.complete(rw, op, file, offset, Err(e), buf),
            Nowait::Done(n) => n,
            Nowait::WouldBlock | Nowait::Unsupported => 0,
        };
        let owned = file.clone();
        let ran = self
            .blocking(buf, move |mut buf| {
                let result = match rw_once(rw, &owned, &mut buf, inline, offset + inline as u64) {
                    Ok(n) => Ok(inline + n),
                    Err(_) if inline > 0 => Ok(inline),
                    Err(e) => Err(e),
                };
                (result, buf)
            })
            .await;
        match ran {
            Ok((result, buf)) => self.complete(rw, op, file, offset, result, buf),
            Err((buf, stopped)) => BufResult(Err(stopped.error(op, file.path(), offset)), buf.into_failed()),
        }
    }

    /// An operation's result, counted.
    fn complete(
        &self,
        rw: Rw,
        op: Op,
        file: &File,
        offset: u64,
        result: io::Result<usize>,
        buf: Buf<InFlight>,
    ) -> BufResult<usize, Buf<Completed>> {
        if let Ok(n) = result {
            self.counters.done(rw, n);
        }
        complete(op, file, offset, result, buf)
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
        let done = match self.fast.attempt(rw, file, &mut buf, 0, offset, &self.counters) {
            Nowait::Done(n) if n == buf.len() => {
                self.counters.done(rw, n);
                return BufResult(Ok(()), buf.into_completed(n));
            }
            Nowait::Failed(e) => return BufResult(Err(err(rw.op(fixed, false), file, offset, e)), buf.into_failed()),
            Nowait::Done(n) => n,
            Nowait::WouldBlock | Nowait::Unsupported => 0,
        };
        let owned = file.clone();
        let ran = self.blocking(buf, move |buf| exact(rw, fixed, &owned, buf, offset, done)).await;
        let result = unstopped(ran, rw.op(fixed, false), file.path(), offset);
        if result.0.is_ok() {
            self.counters.done(rw, result.1.len());
        }
        result
    }

    /// Runs `f(input)` on the blocking pool, counted as in flight. A panic in `f` is resumed
    /// here. When no task can run it (no runtime, or one that has shut down and drops the task
    /// unrun), `input` comes back with the reason, so the caller can return its buffers with an
    /// error instead of waiting forever.
    async fn blocking<I: Send + 'static, T: Send + 'static>(
        &self,
        input: I,
        f: impl FnOnce(I) -> T + Send + 'static,
    ) -> std::result::Result<T, (I, Stopped)> {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Err((input, Stopped::NoRuntime));
        };
        /// Sends the input back if the closure is dropped before it ran.
        struct Unrun<I> {
            input: Option<I>,
            back: Option<tokio::sync::oneshot::Sender<I>>,
        }
        impl<I> Drop for Unrun<I> {
            fn drop(&mut self) {
                if let (Some(input), Some(back)) = (self.input.take(), self.back.take()) {
                    let _ = back.send(input);
                }
            }
        }
        /// Counts the operation as in flight for as long as its closure exists (run or not),
        /// even when the future waiting for it is dropped.
        struct Flight(std::sync::Arc<Counters>);
        impl Drop for Flight {
            fn drop(&mut self) {
                self.0.finish(1);
            }
        }
        let (back, returned) = tokio::sync::oneshot::channel();
        let mut unrun = Unrun { input: Some(input), back: Some(back) };
        self.counters.start(1);
        let flight = Flight(self.counters.clone());
        let task = handle.spawn_blocking(move || {
            let _flight = flight;
            let input = unrun.input.take().expect("the closure runs once");
            f(input)
        });
        let joined = task.await;
        match joined {
            Ok(value) => Ok(value),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: tokio drops a blocking task's closure before it reports the
            // cancellation, and the closure never ran, so the input is waiting in the channel.
            Err(_) => match returned.await {
                Ok(input) => Err((input, Stopped::Shutdown)),
                Err(_) => unreachable!("a cancelled blocking task's closure sends its input back when dropped"),
            },
        }
    }

    async fn vectored<S: Submittable>(
        &self,
        rw: Rw,
        file: &File,
        bufs: Vec<Buf<S>>,
        offset: u64,
    ) -> BufResult<usize, Vec<Buf<Completed>>> {
        let owned = file.clone();
        let bufs: Vec<_> = bufs.into_iter().map(Buf::into_in_flight).collect();
        match self.blocking(bufs, move |bufs| vectored(rw, &owned, bufs, offset)).await {
            Ok(result) => {
                if let Ok(n) = result.0 {
                    self.counters.done(rw, n);
                }
                result
            }
            Err((bufs, stopped)) => BufResult(
                Err(stopped.error(rw.op(false, true), file.path(), offset)),
                bufs.into_iter().map(Buf::into_failed).collect(),
            ),
        }
    }

    async fn sync(&self, file: &File, op: Op) -> Result<()> {
        let owned = file.clone();
        let ran = self
            .blocking((), move |()| match op {
                Op::SyncAll => owned.std().sync_all(),
                _ => owned.std().sync_data(),
            })
            .await;
        match ran {
            Ok(Ok(())) => {
                self.counters.synced();
                Ok(())
            }
            Ok(Err(e)) => Err(err(op, file, 0, e)),
            Err(((), stopped)) => Err(stopped.error(op, file.path(), 0)),
        }
    }
}

/// Why the blocking pool could not run an operation.
#[derive(Debug, Clone, Copy)]
enum Stopped {
    /// Not inside a tokio runtime.
    NoRuntime,
    /// The runtime has shut down (for example `Handle::block_on` after it was dropped).
    Shutdown,
}

impl Stopped {
    fn error(self, op: Op, path: Option<&std::path::Path>, offset: u64) -> Error {
        match self {
            Stopped::NoRuntime => Error::NoRuntime("the tokio engine"),
            Stopped::Shutdown => Error::Cancelled { op, path: path.map(Into::into), offset },
        }
    }
}

/// The result of a blocking call that returns its own `BufResult`, or the buffers back with
/// the reason it could not run.
fn unstopped<T>(
    ran: std::result::Result<BufResult<T, Buf<Completed>>, (Buf<InFlight>, Stopped)>,
    op: Op,
    path: Option<&std::path::Path>,
    offset: u64,
) -> BufResult<T, Buf<Completed>> {
    match ran {
        Ok(result) => result,
        Err((buf, stopped)) => BufResult(Err(stopped.error(op, path, offset)), buf.into_failed()),
    }
}

fn err(op: Op, file: &File, offset: u64, source: io::Error) -> Error {
    Error::os(op, file, offset, Backend::Tokio, source)
}

/// `EINVAL` for offsets the kernel reads as negative; checked before any syscall on both engines.
#[inline]
pub(crate) fn check_offset(offset: u64) -> io::Result<()> {
    if offset > i64::MAX as u64 { Err(io::Error::from_raw_os_error(libc::EINVAL)) } else { Ok(()) }
}

/// `EINVAL` when the range `offset..offset + len` ends past `i64::MAX`, as the kernel checks one
/// `preadv`/`pwritev` (and a ring's vectored entry) as a whole. The tokio engine runs a vectored
/// operation as one call per buffer, each of which would pass the check on its own.
fn check_end(offset: u64, len: u64) -> io::Result<()> {
    check_offset(offset.saturating_add(len))
}

/// One `pread`/`pwrite` of `buf[start..]` at `offset`, retrying `EINTR`; a direct file's
/// alignment is checked first, as the io_uring engine checks it before submitting.
fn rw_once(rw: Rw, file: &File, buf: &mut Buf<InFlight>, start: usize, offset: u64) -> io::Result<usize> {
    if rw == Rw::Read && start > 0 && file.direct_read_ended(offset) {
        return Ok(0); // a short direct read stopped at the file's (misaligned) end
    }
    check_offset(offset)?;
    file.check_buf(buf, start, offset)?;
    check_socket(file, offset)?;
    let (stream, mut file) = (file.is_stream(), file.std());
    // SAFETY: the tokio engine performs its I/O on this blocking thread itself; no kernel
    // operation holds the slot (I2), and `buf` is owned by this task.
    let bytes = unsafe { buf.bytes_mut() };
    let bytes = &mut bytes[start..];
    loop {
        // A file without positions (a pipe) is read and written as a stream, as io_uring does.
        let result = match (rw, stream) {
            (Rw::Read, false) => file.read_at(bytes, offset),
            (Rw::Write, false) => file.write_at(bytes, offset),
            (Rw::Read, true) => io::Read::read(&mut file, bytes),
            (Rw::Write, true) => io::Write::write(&mut file, bytes),
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if stream && e.kind() == io::ErrorKind::WouldBlock => wait_ready(file, rw)?,
            other => return other,
        }
    }
}

/// `ESPIPE` for an offset other than 0 on a socket, as io_uring's read or write of one returns.
fn check_socket(file: &File, offset: u64) -> io::Result<()> {
    if file.is_socket() && offset != 0 { Err(io::Error::from_raw_os_error(libc::ESPIPE)) } else { Ok(()) }
}

/// Waits until a non-blocking stream can move bytes in direction `rw`. io_uring does not fail
/// a read of an empty `O_NONBLOCK` pipe with `EAGAIN`: it waits for the pipe to become readable
/// and then reads. The tokio engine waits the same way, on its blocking thread.
#[cfg(unix)]
fn wait_ready(file: &std::fs::File, rw: Rw) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let events = match rw {
        Rw::Read => libc::POLLIN,
        Rw::Write => libc::POLLOUT,
    };
    let mut poll = libc::pollfd { fd: file.as_raw_fd(), events, revents: 0 };
    loop {
        // SAFETY: `poll` is one live, exclusively borrowed pollfd; the descriptor is open for the
        // borrow of `file`.
        if unsafe { libc::poll(&mut poll, 1, -1) } >= 0 {
            return Ok(()); // ready, or an error condition the next call reports
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Off unix no file is a stream ([`File::is_stream`]), so nothing waits here.
#[cfg(not(unix))]
fn wait_ready(_file: &std::fs::File, _rw: Rw) -> io::Result<()> {
    Ok(())
}

/// Repeats `rw_once` from `done` until `buf` is full or a call transfers nothing. Returns the
/// bytes done and the error that stopped it, if any.
fn rw_full(rw: Rw, file: &File, buf: &mut Buf<InFlight>, offset: u64, mut done: usize) -> (usize, io::Result<()>) {
    while done < buf.len() {
        match rw_once(rw, file, buf, done, offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

fn complete(
    op: Op,
    file: &File,
    offset: u64,
    result: io::Result<usize>,
    buf: Buf<InFlight>,
) -> BufResult<usize, Buf<Completed>> {
    match result {
        Ok(n) => BufResult(Ok(n), buf.into_completed(n)),
        Err(e) => BufResult(Err(err(op, file, offset, e)), buf.into_failed()),
    }
}

/// `read_exact_at`/`write_all_at` in one blocking call.
fn exact(
    rw: Rw,
    fixed: bool,
    file: &File,
    mut buf: Buf<InFlight>,
    offset: u64,
    done: usize,
) -> BufResult<(), Buf<Completed>> {
    let wanted = buf.len();
    let op = rw.op(fixed, false);
    let (done, result) = rw_full(rw, file, &mut buf, offset, done);
    match result {
        Err(e) => BufResult(Err(err(op, file, offset + done as u64, e)), buf.into_failed()),
        Ok(()) if done == wanted => BufResult(Ok(()), buf.into_completed(done)),
        Ok(()) if rw == Rw::Read => {
            let e = Error::UnexpectedEof { op, path: file.path().map(Into::into), offset, done, wanted };
            BufResult(Err(e), buf.into_completed(done))
        }
        Ok(()) => {
            let e = Error::WriteZero { op, path: file.path().map(Into::into), offset, done, wanted };
            BufResult(Err(e), buf.into_failed())
        }
    }
}

/// preadv/pwritev semantics over pread/pwrite: buffers in order, stop at the first short one.
fn vectored(rw: Rw, file: &File, bufs: Vec<Buf<InFlight>>, offset: u64) -> BufResult<usize, Vec<Buf<Completed>>> {
    let op = rw.op(false, true);
    // Like the syscall, a misaligned member of a direct operation refuses the whole of it.
    let invalid = if bufs.len() > MAX_VECTORED {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    } else {
        let total = bufs.iter().map(|b| b.len() as u64).sum();
        check_offset(offset).and_then(|()| check_end(offset, total)).and_then(|()| file.check_bufs(&bufs, offset))
    };
    if let Err(e) = invalid {
        let e = err(op, file, offset, e);
        return BufResult(Err(e), bufs.into_iter().map(|b| b.into_failed()).collect());
    }
    if file.is_stream() {
        return stream_vectored(rw, file, bufs, offset);
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
            BufResult(Err(err(op, file, offset, e)), moved.into_iter().map(|(b, _)| b.into_failed()).collect())
        }
        _ => BufResult(Ok(total), moved.into_iter().map(|(b, done)| b.into_completed(done)).collect()),
    }
}

/// `readv`/`writev` on a file without positions, as io_uring runs a vectored entry on one: a
/// single call, which takes what the stream has now instead of waiting to fill every member.
fn stream_vectored(
    rw: Rw,
    file: &File,
    mut bufs: Vec<Buf<InFlight>>,
    offset: u64,
) -> BufResult<usize, Vec<Buf<Completed>>> {
    let mut std = file.std();
    let result = check_socket(file, offset).and_then(|()| {
        loop {
            // SAFETY: as in `rw_once`: the I/O runs on this thread, and the buffers are this task's.
            let mut slices: Vec<_> = bufs.iter_mut().map(|b| io::IoSliceMut::new(unsafe { b.bytes_mut() })).collect();
            let result = match rw {
                Rw::Read => io::Read::read_vectored(&mut std, &mut slices),
                Rw::Write => {
                    let slices: Vec<_> = slices.iter().map(|s| io::IoSlice::new(s)).collect();
                    io::Write::write_vectored(&mut std, &slices)
                }
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = wait_ready(std, rw) {
                        break Err(e);
                    }
                }
                other => break other,
            }
        }
    });
    match result {
        Ok(n) => {
            let mut left = n;
            let bufs = bufs
                .into_iter()
                .map(|b| {
                    let done = left.min(b.len());
                    left -= done;
                    b.into_completed(done)
                })
                .collect();
            BufResult(Ok(n), bufs)
        }
        Err(e) => {
            BufResult(Err(err(rw.op(false, true), file, offset, e)), bufs.into_iter().map(Buf::into_failed).collect())
        }
    }
}

/// Runs one operation of a batch on the calling (blocking) thread.
fn batch_op(slot: &mut BatchSlot, pool: u64, counters: &Counters) {
    let Some(buf) = slot.buf.as_mut() else { return };
    let code = slot.rw.op(slot.fixed && buf.pool_id() == pool, false);
    let result = rw_once(slot.rw, &slot.file, buf, 0, slot.offset);
    settle(slot, code, result, counters);
}

/// Records a batch operation's result in its slot, counted.
fn settle(slot: &mut BatchSlot, code: Op, result: io::Result<usize>, counters: &Counters) {
    if let Ok(n) = result {
        counters.done(slot.rw, n);
    }
    let result = result.map_err(|e| err(code, &slot.file, slot.offset, e));
    slot.finish(result);
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

    fn direct_io(&self) -> bool {
        self.direct_io
    }

    fn stats(&self) -> EngineStats {
        let mut stats = EngineStats::default();
        self.counters.add_to(&mut stats);
        stats.buffer_waits = self.pool.waits();
        if let Reason::FellBack(why) = &self.selection.reason {
            stats.fallback_reason = Some(why.to_string());
        }
        stats
    }

    fn read_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Buf<Completed>>> + Send {
        self.rw(Rw::Read, false, file, buf, offset)
    }

    fn write_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Buf<Completed>>> + Send {
        self.rw(Rw::Write, false, file, buf, offset)
    }

    fn read_fixed_at(
        &self,
        file: &File,
        buf: Buf<Registered>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Buf<Completed>>> + Send {
        self.rw(Rw::Read, true, file, buf, offset)
    }

    fn write_fixed_at(
        &self,
        file: &File,
        buf: Buf<Registered>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Buf<Completed>>> + Send {
        self.rw(Rw::Write, true, file, buf, offset)
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
        let (owned, buf) = (file.clone(), buf.into_in_flight());
        let ran = self
            .blocking(buf, move |buf| {
                let written = exact(Rw::Write, fixed, &owned, buf, offset, 0);
                match written.0 {
                    Ok(()) => {
                        BufResult(owned.std().sync_data().map_err(|e| err(Op::SyncData, &owned, offset, e)), written.1)
                    }
                    Err(_) => written,
                }
            })
            .await;
        let result = unstopped(ran, Rw::Write.op(fixed, false), file.path(), offset);
        if result.0.is_ok() {
            self.counters.done(Rw::Write, result.1.len());
            self.counters.synced();
        }
        result
    }

    async fn read_vectored_at<S: Submittable>(
        &self,
        file: &File,
        bufs: Vec<Buf<S>>,
        offset: u64,
    ) -> BufResult<usize, Vec<Buf<Completed>>> {
        self.vectored(Rw::Read, file, bufs, offset).await
    }

    async fn write_vectored_at<S: Submittable>(
        &self,
        file: &File,
        bufs: Vec<Buf<S>>,
        offset: u64,
    ) -> BufResult<usize, Vec<Buf<Completed>>> {
        self.vectored(Rw::Write, file, bufs, offset).await
    }

    async fn sync_all(&self, file: &File) -> Result<()> {
        self.sync(file, Op::SyncAll).await
    }

    async fn sync_data(&self, file: &File) -> Result<()> {
        self.sync(file, Op::SyncData).await
    }

    async fn submit_batch<'b>(&self, batch: &'b mut Batch) -> BatchResults<'b> {
        let pool = self.pool.id();
        // Page-cache hits finish inline; whatever would block goes to one blocking task.
        let mut rest = 0;
        for slot in batch.slots.iter_mut().filter(|slot| matches!(slot.stage, Stage::Added)) {
            let Some(buf) = slot.buf.as_mut() else { continue };
            let code = slot.rw.op(slot.fixed && buf.pool_id() == pool, false);
            let outcome = self.fast.attempt(slot.rw, &slot.file, buf, 0, slot.offset, &self.counters);
            let result = match outcome {
                Nowait::Done(n) if n == 0 || n == buf.len() => Ok(n),
                Nowait::Failed(e) => Err(e),
                Nowait::Done(_) | Nowait::WouldBlock | Nowait::Unsupported => {
                    rest += 1;
                    continue;
                }
            };
            settle(slot, code, result, &self.counters);
        }
        if rest > 0 {
            // The slot list itself moves to the blocking task and back: no allocation.
            let slots = std::mem::take(&mut batch.slots);
            let counters = self.counters.clone();
            let ran = self
                .blocking(slots, move |mut slots| {
                    for slot in slots.iter_mut().filter(|slot| matches!(slot.stage, Stage::Added)) {
                        batch_op(slot, pool, &counters);
                    }
                    slots
                })
                .await;
            batch.slots = match ran {
                Ok(slots) => slots,
                Err((mut slots, stopped)) => {
                    for slot in slots.iter_mut().filter(|slot| matches!(slot.stage, Stage::Added)) {
                        let fixed = slot.fixed && slot.buf.as_ref().is_some_and(|buf| buf.pool_id() == pool);
                        let code = slot.rw.op(fixed, false);
                        slot.finish(Err(stopped.error(code, slot.file.path(), slot.offset)));
                    }
                    slots
                }
            };
        }
        BatchResults::new(&mut batch.slots)
    }
}
