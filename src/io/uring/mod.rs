//! [`UringEngine`]: owned-buffer I/O on real io_uring instances through the `io-uring` crate.
//!
//! - **Rings** (`ring.rs`): one per CPU by default (`io.rings`), all sharing one registered
//!   buffer table (`IORING_REGISTER_CLONE_BUFFERS`, else each registers the pool) and one io-wq
//!   backend (`IORING_SETUP_ATTACH_WQ`). A submitter uses the ring of the CPU it runs on, so
//!   submitters on different cores never share a lock. Each ring caps its operations in flight
//!   at its CQ size, so the CQ cannot overflow.
//! - **Submission** is inline: the calling task locks its ring, pushes its entries, calls
//!   `io_uring_enter` and reaps before unlocking. A read that hits the page cache completes
//!   inside that syscall and its future is ready on the first poll, with no thread hop.
//! - **Later completions** (`wake.rs`) reach the waiting future through a watcher registered with
//!   the waiter's own runtime's reactor, or the engine's completion thread where there is no
//!   reactor. Nothing depends on the runtime that created the engine.
//! - **Ownership.** Each operation has a slot holding its buffers (`Buf<InFlight>`) and `iovec`s,
//!   so nothing the kernel points at can be freed or reused early. A future dropped before its
//!   completion marks the slot *ignored* and leaves a handle of its file in it; the slot and its
//!   buffers are freed when the completion arrives (I2). A forgotten future leaks only its slot.
//!   While the future lives, its borrow of the caller's `File` keeps the file (`ring::Payload`).
//!   A batch entry's buffer stays in its batch slot through the submit, under the ring's lock,
//!   and moves into its ring slot only if it did not complete inside the submit
//!   ([`UringEngine::submit_batch`]'s body).
//! - **Shutdown.** Dropping the engine stops its completion thread, retires its watchers,
//!   cancels everything outstanding and waits (up to [`DRAIN_TIMEOUT`]) for every completion.
//!   Whatever is still in flight after that is leaked, with its buffers and therefore the arena,
//!   never freed under the kernel (I3).
//! - **Fixed buffers.** Slot `i` of the engine's pool is fixed buffer `i` on every ring. A
//!   `Buf<Registered>` of this pool goes through READ_FIXED/WRITE_FIXED; any other buffer through
//!   READ/WRITE.
//! - **Files** (`files.rs`): each file gets one index in every ring's fixed-file table on its
//!   first operation, given back with its last handle.
//!
//! Weighed and not used (figures in the README, `cargo bench --bench io -- ring_setup`):
//! `IORING_SETUP_SQPOLL` was slower at queue depth 1 on the 2-CPU machine (the polling thread
//! takes the CPU the completion work needs) and spends a core; `SINGLE_ISSUER`/`DEFER_TASKRUN`
//! measured within noise of a plain ring and need every submit and every reap of a ring on the
//! thread that created it, while a tokio task
//! moves between workers and is woken by whichever thread runs the reactor; `COOP_TASKRUN`
//! (no interrupt for a submitter that is running; a sleeping one is still woken) measured no
//! different at queue depth 1 (paired 1.045-1.059x against 1.035-1.116x for a plain ring,
//! alternating runs), and would hold the completions of a worker busy in user space until its
//! next syscall.

mod files;
mod ring;
pub(super) use files::Fixed;
mod wake;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, squeue, types};

use super::detect::{self, Unsupported};
use super::nowait::{FastPath, Nowait};
use super::stats::{EngineStats, Tally};
use super::tokio_io::check_offset;
use super::{
    Batch, BatchResults, BatchSlot, BufResult, File, IoEngine, MAX_VECTORED, Reason, Rw, Selection, Stage, foreign,
    is_fixed,
};
use crate::buf::{Buf, BufPool, Completed, InFlight, Registered, Submittable};
use crate::config::{EngineChoice, IoEngineConfig};
use crate::error::{Backend, Error, Op, Result};
use ring::{IoVecs, Key, Payload, RingCore};

/// How long dropping the engine waits for outstanding operations before leaking them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The io_uring engine.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::{IoEngine, IoEngineConfig, OpenOptions, UringEngine};
/// # let dir = tempfile::tempdir().unwrap();
/// let engine = UringEngine::new(&IoEngineConfig::default())?;
/// let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
/// let mut buf = engine.acquire().await; // Buf<Registered>: fixed buffer of this engine
/// buf.fill(9);
/// let written = engine.write_fixed_at(&file, buf, 0).await;
/// assert_eq!(written.0?, 65536);
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
pub struct UringEngine {
    shared: Arc<Shared>,
    selection: Selection,
    fast: FastPath,
    direct_io: bool,
}

/// What the engine's rings, watchers and completion thread share.
struct Shared {
    rings: Box<[RingCore]>,
    /// Fixed-file indices, the same in every ring.
    files: files::Table,
    thread: wake::Thread,
    /// The registered arena; dropped after the rings, so it lives as long as they do (I3).
    pool: BufPool,
}

impl UringEngine {
    /// Sets up `config.rings` rings (0: one per CPU) of `config.uring_entries` entries, maps a
    /// pool of `config.registered_buffers` x `config.buffer_size` bytes and registers it as
    /// fixed buffers. Needs no runtime: it can be created anywhere and used from any runtime or
    /// thread.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] with the typed reason when io_uring cannot be used,
    /// [`Error::Config`] for a bad config, [`Error::Map`] when the arena cannot be mapped.
    ///
    /// ```
    /// use ferrite_io::{IoEngine, IoEngineConfig, UringEngine};
    /// // Four rings of 64 entries, 16 fixed buffers of 16 KiB, files O_DIRECT unless asked not.
    /// let config = IoEngineConfig {
    ///     rings: 4,
    ///     uring_entries: 64,
    ///     registered_buffers: 16,
    ///     buffer_size: 16 << 10,
    ///     direct_io: true,
    ///     ..IoEngineConfig::default()
    /// };
    /// let engine = UringEngine::new(&config)?;
    /// assert_eq!((engine.rings(), engine.pool().capacity()), (4, 16));
    /// assert!(engine.direct_io());
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    pub fn new(config: &IoEngineConfig) -> Result<Self> {
        config.validate()?;
        let (first, info) = detect::setup(config.uring_entries)?;
        let pool = BufPool::new(config.registered_buffers, config.buffer_size)?;
        let iovecs = pool.iovecs();
        // SAFETY: the iovecs cover the pool's arena, which `Shared` keeps alive for as long as
        // the rings exist (I3) and which never moves (I4).
        unsafe { first.submitter().register_buffers(&iovecs) }.map_err(|e| {
            detect::classify("io_uring_register(BUFFERS)", &e, detect::io_uring_disabled_sysctl(), config.uring_entries)
        })?;
        let wanted = match config.rings {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        let mut rings = Vec::with_capacity(wanted);
        let first_fd = first.as_raw_fd();
        rings.push(ring_core(first)?);
        while rings.len() < wanted {
            match more_ring(config.uring_entries, first_fd, &iovecs) {
                Ok(uring) => rings.push(ring_core(uring)?),
                Err(e) => {
                    tracing::warn!(error = %e, rings = rings.len(), wanted, "could not set up another ring; using fewer");
                    break;
                }
            }
        }
        let files = fixed_files(&rings);
        let shared = Arc::new(Shared {
            rings: rings.into_boxed_slice(),
            files,
            thread: wake::Thread::new().map_err(|e| unsupported("eventfd", &e))?,
            pool,
        });
        let (requested, reason) = match config.engine {
            EngineChoice::Auto => (EngineChoice::Auto, Reason::Probed(info)),
            _ => (EngineChoice::Uring, Reason::Requested(EngineChoice::Uring)),
        };
        let selection = Selection { requested, backend: Backend::Uring, reason };
        Ok(UringEngine { fast: FastPath::new(config.nowait_fast_path), shared, selection, direct_io: config.direct_io })
    }

    /// Runs `future` to completion on the calling thread, with no runtime, and returns its
    /// output. For a thread dedicated to I/O (a page flusher, a recovery scan) that wants the
    /// latency of a raw ring's loop: while an operation of this engine is in flight, the
    /// thread sleeps inside `io_uring_enter` on the operation's ring, where the kernel finishes
    /// the operation and ends the sleep directly. Futures awaited through tokio's reactor pay a
    /// second trip instead (the reactor's `epoll_wait` is interrupted, then called again), and
    /// futures polled outside any runtime otherwise wait for the engine's completion thread.
    ///
    /// - Operations that need tokio (`open`, and everything on a [`TokioEngine`](crate::TokioEngine))
    ///   still need a runtime: open files with [`File::from_std`] here, or enter a runtime first.
    /// - Other wake-ups (a channel, an operation on another of the engine's rings) are seen at
    ///   once when nothing of this engine is in flight, and within 1 ms (the ring's tick)
    ///   otherwise.
    /// - It blocks the calling thread: do not call it from async code.
    ///
    /// ```
    /// use ferrite_io::{File, IoEngine, IoEngineConfig, UringEngine};
    ///
    /// let engine = UringEngine::new(&IoEngineConfig::default())?;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let std = std::fs::OpenOptions::new().read(true).write(true).create(true).open(dir.path().join("pages"))?;
    /// let file = File::from_std(std, false);
    /// let (written, read) = engine.block_on(async {
    ///     let mut page = engine.acquire().await;
    ///     page.fill(7);
    ///     let written = engine.write_fixed_at(&file, page, 0).await;
    ///     let page = written.1.try_into_registered(&engine).expect("a slot of the engine's pool");
    ///     let read = engine.read_fixed_at(&file, page, 0).await;
    ///     (written.0, read)
    /// });
    /// assert_eq!(written?, 65536);
    /// assert!(read.0? == 65536 && read.1.iter().all(|&b| b == 7));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        wake::block_on(&self.shared, future)
    }

    /// Operations submitted whose completion has not been reaped yet, over all rings. An
    /// operation whose future was dropped before its completion counts until its buffers are
    /// back in their pools: once this reads 0 after the futures are dropped, every buffer they
    /// held is available again.
    ///
    /// ```
    /// use ferrite_io::{IoEngineConfig, UringEngine};
    /// let engine = UringEngine::new(&IoEngineConfig::default())?;
    /// assert_eq!(engine.in_flight(), 0);
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    pub fn in_flight(&self) -> usize {
        self.stats().in_flight as usize
    }

    /// The number of rings: `io.rings`, or one per CPU when it is 0 (fewer if the kernel
    /// refused more, with a warning).
    ///
    /// ```
    /// use ferrite_io::{IoEngineConfig, UringEngine};
    /// let engine = UringEngine::new(&IoEngineConfig { rings: 2, ..IoEngineConfig::default() })?;
    /// assert_eq!(engine.rings(), 2);
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    pub fn rings(&self) -> usize {
        self.shared.rings.len()
    }

    /// The ring for the calling thread: the one of the CPU it ran on at most [`CPU_REUSE`] picks
    /// ago.
    #[inline]
    fn pick(&self) -> usize {
        let n = self.shared.rings.len();
        if n == 1 {
            return 0;
        }
        // One ring per CPU by default: then no division on the path of every operation.
        let cpu = current_cpu();
        if cpu < n { cpu } else { cpu % n }
    }

    /// Submits one entry on `file` built from `payload`'s memory on ring `index`, waiting for
    /// ring room first.
    async fn start<'a>(
        &'a self,
        index: usize,
        file: &'a File,
        entry: squeue::Entry,
        payload: Payload,
    ) -> std::result::Result<Started<'a>, (io::Error, Payload)> {
        if let Err(e) = self.room(index, 1).await {
            return Err((e, payload));
        }
        Ok(match self.push(index, file, entry, payload, None)? {
            Pushed::Done(done) => Started::Done(Some(done)),
            Pushed::Later(key) => Started::Later(OpFuture::new(&self.shared, index, file, key)),
        })
    }

    /// Takes room for `n` entries on ring `index`, waiting while it is full; the ring is reaped
    /// meanwhile through the waiter's own path (`wake::reap_for_room`).
    fn room(&self, index: usize, n: u32) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.shared.rings[index].room(n, move || wake::reap_for_room(&self.shared, index))
    }

    /// Pushes one entry on ring `index`, whose room for it the caller took, and submits it.
    /// Gives the room back if the entry was refused. With `wait`, an operation left in flight
    /// already waits with that waker and claim (see `OpFuture::new`), as if its future had been
    /// polled once, under the same lock.
    fn push(
        &self,
        index: usize,
        file: &File,
        entry: squeue::Entry,
        payload: Payload,
        wait: Option<(&std::task::Waker, &mut Option<wake::Claim>)>,
    ) -> std::result::Result<Pushed, (io::Error, Payload)> {
        let core = &self.shared.rings[index];
        let mut path = None;
        let pushed = {
            let mut ring = core.lock();
            match ring.reserve(1, &core.counters) {
                Err(e) => Err((e, payload)),
                Ok(()) => ring.push(entry, payload).map(|key| {
                    core.counters.pushed(1);
                    ring.submit_and_reap(&core.counters);
                    ring.hold_if_queued(key, file);
                    // Work the kernel finished inside the submit (most page-cache reads) is
                    // handed over now, saving the future a second trip through the lock.
                    let done = ring.take_done(key).ok_or(key);
                    if let (Err(key), Some((waker, claim))) = (&done, wait) {
                        let key = *key;
                        ring.wait(key, waker);
                        path = Some(wake::wait_path(&self.shared, index, &mut ring, claim, [key]));
                    }
                    done
                }),
            }
        };
        if let Some(path) = path {
            wake::arm(&self.shared, index, path);
        }
        match pushed {
            Ok(Ok(done)) => {
                core.counters.inline.fetch_add(1, Relaxed);
                Ok(Pushed::Done(done))
            }
            Ok(Err(key)) => Ok(Pushed::Later(key)),
            Err(refused) => {
                core.unroom(1);
                Err(refused)
            }
        }
    }

    /// Reads or writes `buf[start..]` at `offset` on ring `index` (its fast path counted there)
    /// and returns the syscall-style result.
    #[allow(clippy::too_many_arguments)]
    async fn rw_range(
        &self,
        index: usize,
        rw: Rw,
        fixed: bool,
        file: &File,
        mut buf: Buf<InFlight>,
        start: usize,
        offset: u64,
    ) -> (io::Result<usize>, Buf<InFlight>) {
        match self.prologue(index, rw, file, &mut buf, start, offset) {
            Step::Done(result) => (result, buf),
            Step::Ring(inline) => self.on_ring(index, rw, fixed, file, buf, start, inline, offset).await,
        }
    }

    /// What an operation on `buf[start..]` at `offset` does before any ring work, synchronously:
    /// the checks, then the fast path. A page-cache hit ends here. Always inlined, so that the
    /// fast path's syscall sits in the operation's own future (a separate frame measured about
    /// 1% of a cached read).
    #[inline(always)]
    fn prologue(&self, index: usize, rw: Rw, file: &File, buf: &mut Buf<InFlight>, start: usize, offset: u64) -> Step {
        if rw == Rw::Read && start > 0 && file.direct_read_ended(offset) {
            return Step::Done(Ok(0));
        } // at the misaligned end
        if let Err(e) = check_offset(offset).and_then(|()| file.check_buf(buf, start, offset)) {
            return Step::Done(Err(e));
        }
        // Page-cache hits finish inline; a short inline transfer continues on the ring.
        let counters = &self.shared.rings[index].counters;
        match self.fast.attempt(rw, file, buf, start, offset, counters) {
            Nowait::Done(n) if n == 0 || start + n == buf.len() => Step::Done(Ok(n)),
            Nowait::Failed(e) => Step::Done(Err(e)),
            Nowait::Done(n) => Step::Ring(n),
            Nowait::WouldBlock | Nowait::Unsupported => Step::Ring(0),
        }
    }

    /// The rest of `buf[start..]`, after `inline` bytes the fast path moved, through ring `index`.
    #[allow(clippy::too_many_arguments)]
    fn on_ring<'a>(
        &'a self,
        index: usize,
        rw: Rw,
        fixed: bool,
        file: &'a File,
        buf: Buf<InFlight>,
        start: usize,
        inline: usize,
        offset: u64,
    ) -> RingRw<'a, impl Future<Output = io::Result<()>> + Send + 'a> {
        RingRw {
            engine: self,
            file,
            index,
            rw,
            fixed,
            start,
            inline,
            offset,
            buf: Some(buf),
            op: None,
            waiting: false,
            // Not polled (and so not started) unless the ring is full: an `async fn` does nothing
            // before its first poll.
            room: self.room(index, 1),
        }
    }

    /// Counts a finished read or write on ring `index`.
    #[inline]
    fn count(&self, index: usize, rw: Rw, bytes: usize) {
        self.shared.rings[index].counters.done(rw, bytes);
    }

    /// One read or write of all of `buf` at `offset`; `fixed_only` refuses a buffer that is not
    /// this engine's (the `*_fixed_at` calls). The engine's only async layer on a fast-path
    /// read: the trait's methods return this future itself (`Engine` adds its dispatch), and a
    /// page-cache hit finishes in `prologue` without building the ring's future (each nested
    /// `async fn` would copy the buffer and arguments into its own state first).
    async fn rw<S: Submittable>(
        &self,
        rw: Rw,
        fixed_only: bool,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<usize, Buf<Completed>> {
        let fixed = is_fixed(&buf, &self.shared.pool);
        if fixed_only && !fixed {
            return foreign(buf, &self.shared.pool);
        }
        let index = self.pick();
        let mut buf = buf.into_in_flight();
        let (result, buf) = match self.prologue(index, rw, file, &mut buf, 0, offset) {
            Step::Done(result) => (result, buf),
            Step::Ring(inline) => self.on_ring(index, rw, fixed, file, buf, 0, inline, offset).await,
        };
        match result {
            Ok(n) => {
                self.count(index, rw, n);
                BufResult(Ok(n), buf.into_completed(n))
            }
            Err(e) => {
                BufResult(Err(Error::os(rw.op(fixed, false), file, offset, Backend::Uring, e)), buf.into_failed())
            }
        }
    }

    /// Continues `buf[done..]` until all of it moved; `Ok(0)` ends it early.
    async fn rw_all(
        &self,
        rw: Rw,
        fixed: bool,
        file: &File,
        mut buf: Buf<InFlight>,
        mut done: usize,
        offset: u64,
    ) -> BufResult<(), Buf<Completed>> {
        let (op, wanted, index) = (rw.op(fixed, false), buf.len(), self.pick());
        while done < wanted {
            let (result, back) = self.rw_range(index, rw, fixed, file, buf, done, offset + done as u64).await;
            buf = back;
            match result {
                Ok(0) if rw == Rw::Read => {
                    let e = Error::UnexpectedEof { op, path: file.path().map(Into::into), offset, done, wanted };
                    return BufResult(Err(e), buf.into_completed(done));
                }
                Ok(0) => {
                    let e = Error::WriteZero { op, path: file.path().map(Into::into), offset, done, wanted };
                    return BufResult(Err(e), buf.into_failed());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let e = Error::os(op, file, offset + done as u64, Backend::Uring, e);
                    return BufResult(Err(e), buf.into_failed());
                }
            }
        }
        self.count(index, rw, done);
        BufResult(Ok(()), buf.into_completed(done))
    }

    async fn vectored<S: Submittable>(
        &self,
        rw: Rw,
        file: &File,
        bufs: Vec<Buf<S>>,
        offset: u64,
    ) -> BufResult<usize, Vec<Buf<Completed>>> {
        let op = rw.op(false, true);
        let bufs: Vec<Buf<InFlight>> = bufs.into_iter().map(Buf::into_in_flight).collect();
        let invalid = if bufs.len() > MAX_VECTORED {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        } else {
            check_offset(offset).and_then(|()| file.check_bufs(&bufs, offset))
        };
        let result = match invalid {
            Err(e) => Err((e, bufs)),
            Ok(()) => {
                let iovecs = IoVecs(
                    bufs.iter().map(|b| libc::iovec { iov_base: b.as_ptr().cast(), iov_len: b.len() }).collect(),
                );
                let on = On::file(&self.shared, file);
                let (ptr, n) = (iovecs.0.as_ptr(), iovecs.0.len() as u32);
                let entry = match rw {
                    Rw::Read => opcode::Readv::new(on.fd, ptr, n).offset(offset).build(),
                    Rw::Write => opcode::Writev::new(on.fd, ptr, n).offset(offset).build(),
                }
                .flags(on.flags);
                match self.start(self.pick(), file, entry, Payload::many(bufs, iovecs)).await {
                    Ok(op) => {
                        let (result, payload) = op.await;
                        match result {
                            Ok(n) => Ok((n, payload.into_many())),
                            Err(e) => Err((e, payload.into_many())),
                        }
                    }
                    Err((e, payload)) => Err((e, payload.into_many())),
                }
            }
        };
        match result {
            Ok((n, bufs)) => {
                self.count(self.pick(), rw, n);
                let mut left = n;
                let bufs = bufs
                    .into_iter()
                    .map(|b| {
                        let got = left.min(b.len());
                        left -= got;
                        b.into_completed(got)
                    })
                    .collect();
                BufResult(Ok(n), bufs)
            }
            Err((e, bufs)) => BufResult(
                Err(Error::os(op, file, offset, Backend::Uring, e)),
                bufs.into_iter().map(|b| b.into_failed()).collect(),
            ),
        }
    }

    async fn sync(&self, file: &File, data_only: bool) -> Result<()> {
        let op = if data_only { Op::SyncData } else { Op::SyncAll };
        let entry = sync_entry(On::file(&self.shared, file), data_only);
        let result = match self.start(self.pick(), file, entry, Payload::none()).await {
            Ok(future) => future.await.0,
            Err((e, _)) => Err(e),
        };
        if result.is_ok() {
            self.shared.rings[self.pick()].counters.synced();
        }
        result.map(drop).map_err(|e| Error::os(op, file, 0, Backend::Uring, e))
    }

    /// WRITE linked to FSYNC(DATASYNC) in one submission on ring `index`: the write's future
    /// and the sync's (or why the sync could not be queued; then the write went alone).
    #[allow(clippy::type_complexity)]
    async fn start_linked<'a>(
        &'a self,
        index: usize,
        fixed: bool,
        file: &'a File,
        buf: Buf<InFlight>,
        offset: u64,
    ) -> std::result::Result<(OpFuture<'a>, io::Result<OpFuture<'a>>), (io::Error, Buf<InFlight>)> {
        let core = &self.shared.rings[index];
        if let Err(e) = self.room(index, 2).await {
            return Err((e, buf));
        }
        let on = On::file(&self.shared, file);
        let write = rw_entry(Rw::Write, fixed, on, &buf, 0, offset).flags(squeue::Flags::IO_LINK);
        let pushed = {
            let mut ring = core.lock();
            match ring.reserve(2, &core.counters) {
                Err(e) => Err((e, buf)),
                Ok(()) => match ring.push(write, Payload::one(buf)) {
                    Err((e, payload)) => Err((e, payload.into_one())),
                    Ok(write) => {
                        let sync = ring.push(sync_entry(on, true), Payload::none());
                        core.counters.pushed(if sync.is_ok() { 2 } else { 1 });
                        ring.submit_and_reap(&core.counters);
                        ring.hold_if_queued(write, file);
                        if let Ok(sync) = sync {
                            ring.hold_if_queued(sync, file);
                        }
                        Ok((write, sync.map_err(|(e, _)| e)))
                    }
                },
            }
        };
        match pushed {
            Ok((write, sync)) => {
                if sync.is_err() {
                    core.unroom(1);
                }
                let sync = sync.map(|key| OpFuture::new(&self.shared, index, file, key));
                Ok((OpFuture::new(&self.shared, index, file, write), sync))
            }
            Err(refused) => {
                core.unroom(2);
                Err(refused)
            }
        }
    }
}

fn ring_core(uring: IoUring) -> Result<RingCore> {
    let eventfd = new_eventfd().map_err(|e| unsupported("eventfd", &e))?;
    uring
        .submitter()
        .register_eventfd(eventfd.as_raw_fd())
        .map_err(|e| unsupported("io_uring_register(EVENTFD)", &e))?;
    Ok(RingCore::new(uring, eventfd))
}

/// A further ring sharing the first ring's io-wq and fixed buffers.
fn more_ring(entries: u32, first: std::os::fd::RawFd, iovecs: &[libc::iovec]) -> io::Result<IoUring> {
    let uring = IoUring::builder().setup_attach_wq(first).build(entries)?;
    if uring.submitter().register_buffers_clone(first).is_err() {
        // Before 6.12: register the same arena again (pinned once more).
        // SAFETY: as for the first ring: the arena outlives every ring (I3) and never moves (I4).
        unsafe { uring.submitter().register_buffers(iovecs) }?;
    }
    Ok(uring)
}

fn unsupported(stage: &'static str, e: &io::Error) -> Unsupported {
    detect::classify(stage, e, None, 0)
}

/// A non-blocking, close-on-exec eventfd with a zero counter.
pub(super) fn new_eventfd() -> io::Result<OwnedFd> {
    use rustix::event::{EventfdFlags, eventfd};
    Ok(eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?)
}

/// How many picks reuse a thread's last answer from the kernel about its CPU.
const CPU_REUSE: u32 = 64;

thread_local! {
    /// The CPU this thread ran on when it last asked, and how many more picks may use it.
    static CPU: std::cell::Cell<(usize, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// The CPU the calling thread runs on, asked of libc (`sched_getcpu`) once every [`CPU_REUSE`]
/// calls: asking on every call measured 1.5-2% of a cached read's time (paired with a direct
/// `preadv2`: 1.184-1.193x with it, 1.17x without). A thread that moved to another CPU keeps
/// its old CPU's ring for at most that many operations: any ring serves any thread, so only the
/// lock's locality suffers, briefly.
#[inline]
fn current_cpu() -> usize {
    CPU.with(|cached| {
        let (cpu, left) = cached.get();
        if left > 0 {
            cached.set((cpu, left - 1));
            return cpu;
        }
        // SAFETY: sched_getcpu(3) takes no arguments and only reads the calling thread's CPU.
        let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(0);
        cached.set((cpu, CPU_REUSE - 1));
        cpu
    })
}

/// Where `UringEngine::prologue` left an operation.
enum Step {
    /// Finished (or refused) without the ring.
    Done(io::Result<usize>),
    /// Goes on through the ring, after this many bytes the fast path moved.
    Ring(usize),
}

/// The entry for `buf[start..]` at `offset`. Its pointer stays valid while the payload that owns
/// `buf` is in the ring's slab, or, for a batch entry, its batch slot holds it under the ring's
/// lock (I2, I4).
#[inline]
fn rw_entry(rw: Rw, fixed: bool, on: On, buf: &Buf<InFlight>, start: usize, offset: u64) -> squeue::Entry {
    let fd = on.fd;
    let ptr = buf.as_ptr().wrapping_add(start);
    let len = (buf.len() - start) as u32;
    let index = buf.index() as u16;
    match (rw, fixed) {
        (Rw::Read, false) => opcode::Read::new(fd, ptr, len).offset(offset).build(),
        (Rw::Write, false) => opcode::Write::new(fd, ptr, len).offset(offset).build(),
        (Rw::Read, true) => opcode::ReadFixed::new(fd, ptr, len, index).offset(offset).build(),
        (Rw::Write, true) => opcode::WriteFixed::new(fd, ptr, len, index).offset(offset).build(),
    }
    .flags(on.flags)
}

fn sync_entry(on: On, data_only: bool) -> squeue::Entry {
    let flags = if data_only { types::FsyncFlags::DATASYNC } else { types::FsyncFlags::empty() };
    opcode::Fsync::new(on.fd).flags(flags).build().flags(on.flags)
}

/// Which file an entry names: a fixed-file index (with `IOSQE_FIXED_FILE`) or a descriptor.
#[derive(Clone, Copy)]
struct On {
    fd: types::Fd,
    flags: squeue::Flags,
}

impl On {
    /// `file` on this engine's rings, registering it on its first operation (see `files`).
    #[inline]
    fn file(shared: &Arc<Shared>, file: &File) -> On {
        match files::index(shared, file) {
            Some(index) => On { fd: types::Fd(index as i32), flags: squeue::Flags::FIXED_FILE },
            None => On { fd: types::Fd(file.fd()), flags: squeue::Flags::empty() },
        }
    }
}

/// Sparse fixed-file tables of the same size on every ring, or none (then files go by
/// descriptor): before 5.19 the kernel has no sparse tables.
fn fixed_files(rings: &[RingCore]) -> files::Table {
    let size = files::Table::size();
    let all = size > 0 && rings.iter().all(|core| core.lock().register_files(size).is_ok());
    if !all {
        tracing::debug!("no sparse fixed-file tables; files go by descriptor");
    }
    files::Table::new(if all { size } else { 0 })
}

/// A CQE result as a syscall-style result.
#[inline]
fn syscall_result(result: i32) -> io::Result<usize> {
    if result < 0 { Err(io::Error::from_raw_os_error(-result)) } else { Ok(result as usize) }
}

/// Waits for one operation; yields its syscall-style result and its payload.
struct OpFuture<'a> {
    shared: &'a Arc<Shared>,
    ring: usize,
    /// The operation's file, borrowed from the caller; its slot keeps a handle of it only if
    /// this future is dropped before the completion (see `ring::Payload`).
    file: &'a File,
    /// The operation still in the slab, or `None` once taken.
    key: Option<Key>,
    /// Held while it waits under `block_on` (see `wake::Driving`).
    claim: Option<wake::Claim>,
}

impl<'a> OpFuture<'a> {
    fn new(shared: &'a Arc<Shared>, ring: usize, file: &'a File, key: Key) -> Self {
        OpFuture { shared, ring, file, key: Some(key), claim: None }
    }
}

impl std::future::Future for OpFuture<'_> {
    type Output = (io::Result<usize>, Payload);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(key) = self.key else { return Poll::Pending };
        let this = &mut *self;
        let core = &this.shared.rings[this.ring];
        let mut ring = core.lock();
        // Woken for its completion, which the watcher reaped: no reap needed, but entries a
        // partial submit left queued still go to the kernel (their futures may be waiting on
        // them with nothing else in flight to signal). Otherwise reap, then decide to wait.
        let mut done = ring.take_done(key);
        if done.is_none() {
            ring.unwait(key);
            ring.progress(&core.counters);
            done = ring.take_done(key);
        } else if ring.sq_pending() {
            ring.progress(&core.counters);
        }
        if let Some((result, payload)) = done {
            wake::release(&mut ring, &mut this.claim);
            drop(ring);
            core.counters.later.fetch_add(1, Relaxed);
            this.key = None;
            return Poll::Ready((syscall_result(result), payload));
        }
        ring.wait(key, cx.waker());
        let path = wake::wait_path(this.shared, this.ring, &mut ring, &mut this.claim, [key]);
        drop(ring);
        wake::arm(this.shared, this.ring, path);
        Poll::Pending
    }
}

impl Drop for OpFuture<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let core = &self.shared.rings[self.ring];
            let mut ring = core.lock();
            wake::release(&mut ring, &mut self.claim);
            if ring.abandon(key, Some(self.file)) {
                watch_for_abandoned(self.shared, self.ring, ring, [key]);
            }
        }
    }
}

/// An operation [`UringEngine::start`] submitted: finished inside the submit, or in flight.
enum Started<'a> {
    /// The CQE's result and the payload, until handed out.
    Done(Option<(i32, Payload)>),
    Later(OpFuture<'a>),
}

impl std::future::Future for Started<'_> {
    type Output = (io::Result<usize>, Payload);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Started::Done(done) => {
                let Some((result, payload)) = done.take() else { panic!("Started polled after it finished") };
                Poll::Ready((syscall_result(result), payload))
            }
            Started::Later(op) => Pin::new(op).poll(cx),
        }
    }
}

/// Where [`UringEngine::push`] left an entry.
enum Pushed {
    /// Finished inside the submit: the CQE's result and the payload.
    Done((i32, Payload)),
    /// In flight under this key.
    Later(Key),
}

pin_project_lite::pin_project! {
    /// One read or write of `buf[start + inline..]` through a ring, written out by hand rather
    /// than as nested `async fn`s, which each kept their own copy of the entry, the payload and
    /// the arguments: a single read's future, which holds this state even when a page-cache
    /// hit never reaches the ring, went from 856 to 384 bytes. Yields the syscall-style result
    /// (counting the `inline` bytes the fast path moved) and the buffer.
    struct RingRw<'a, R> {
        engine: &'a UringEngine,
        file: &'a File,
        index: usize,
        rw: Rw,
        fixed: bool,
        start: usize,
        inline: usize,
        offset: u64,
        // The buffer until it is pushed.
        buf: Option<Buf<InFlight>>,
        // The operation once pushed, unless it finished inside the submit.
        op: Option<OpFuture<'a>>,
        // The wait for ring room, polled only when there is none at once, and whether it began.
        waiting: bool,
        #[pin]
        room: R,
    }
}

impl<R: Future<Output = io::Result<()>>> Future for RingRw<'_, R> {
    type Output = (io::Result<usize>, Buf<InFlight>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inline = *this.inline;
        let end = |result: io::Result<usize>, buf| match result {
            Ok(n) => (Ok(inline + n), buf),
            // Bytes already moved are a (short) result, as for a syscall.
            Err(_) if inline > 0 => (Ok(inline), buf),
            Err(e) => (Err(e), buf),
        };
        if let Some(op) = this.op {
            let (result, payload) = std::task::ready!(Pin::new(op).poll(cx));
            *this.op = None;
            return Poll::Ready(end(result, payload.into_one()));
        }
        let engine = *this.engine;
        let Some(buf) = this.buf.take() else { panic!("RingRw polled after it finished") };
        // Once the wait for room has begun, only it may take the room (the semaphore is fair).
        if *this.waiting || !engine.shared.rings[*this.index].try_room(1) {
            *this.waiting = true;
            match this.room.poll(cx) {
                Poll::Pending => {
                    *this.buf = Some(buf);
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(end(Err(e), buf)),
                Poll::Ready(Ok(())) => {}
            }
        }
        let (at, offset) = (*this.start + inline, *this.offset + inline as u64);
        let entry = rw_entry(*this.rw, *this.fixed, On::file(&engine.shared, this.file), &buf, at, offset);
        let mut claim = None;
        match engine.push(*this.index, this.file, entry, Payload::one(buf), Some((cx.waker(), &mut claim))) {
            Ok(Pushed::Done((result, payload))) => Poll::Ready(end(syscall_result(result), payload.into_one())),
            Ok(Pushed::Later(key)) => {
                let (shared, ring, file) = (&engine.shared, *this.index, *this.file);
                *this.op = Some(OpFuture { shared, ring, file, key: Some(key), claim });
                Poll::Pending
            }
            Err((e, payload)) => Poll::Ready(end(Err(e), payload.into_one())),
        }
    }
}

/// An abandoned operation is still in flight: make sure its completion will be reaped (and its
/// buffers returned) even if no other operation ever touches the ring, by arming a watcher of
/// the current runtime or the completion thread.
fn watch_for_abandoned(
    shared: &Arc<Shared>,
    index: usize,
    mut ring: ring::Locked<'_>,
    keys: impl IntoIterator<Item = Key>,
) {
    let path = wake::path(shared, index, &mut ring, keys);
    drop(ring);
    wake::arm(shared, index, path);
}

/// The key of a batch slot in flight on a ring.
fn submitted_key(slot: &BatchSlot) -> Option<Key> {
    match slot.stage {
        Stage::Submitted(key) => Some(Key::from_user_data(key)),
        _ => None,
    }
}

/// Waits for every operation of a batch that went to ring `ring` and did not finish inline.
/// Dropped before they all finished, it abandons each one still in flight (its buffer returns
/// at its completion) and empties the batch.
struct BatchWait<'a, 'b> {
    shared: &'a Arc<Shared>,
    ring: usize,
    slots: &'b mut Vec<BatchSlot>,
    /// Operations still in flight.
    left: usize,
    /// Held while it waits under `block_on` (see `wake::Driving`).
    claim: Option<wake::Claim>,
}

impl std::future::Future for BatchWait<'_, '_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let core = &this.shared.rings[this.ring];
        let mut ring = core.lock();
        for key in this.slots.iter().filter_map(submitted_key) {
            ring.unwait(key);
        }
        ring.progress(&core.counters);
        let mut tally = Tally::default();
        for slot in this.slots.iter_mut() {
            let Some(key) = submitted_key(slot) else { continue };
            match ring.take_done(key) {
                Some((result, payload)) => {
                    tally.later += 1;
                    slot.buf = Some(payload.into_one());
                    finish(&mut tally, slot, result);
                    this.left -= 1;
                }
                None => ring.wait(key, cx.waker()),
            }
        }
        core.counters.add(&tally);
        if this.left == 0 {
            wake::release(&mut ring, &mut this.claim);
            return Poll::Ready(());
        }
        let keys = this.slots.iter().filter_map(submitted_key);
        let path = wake::wait_path(this.shared, this.ring, &mut ring, &mut this.claim, keys);
        drop(ring);
        wake::arm(this.shared, this.ring, path);
        Poll::Pending
    }
}

impl Drop for BatchWait<'_, '_> {
    fn drop(&mut self) {
        if self.left == 0 {
            return;
        }
        let core = &self.shared.rings[self.ring];
        let mut ring = core.lock();
        wake::release(&mut ring, &mut self.claim);
        // A submit that unwound between pushing entries and handing their memory to the ring
        // left them here: the ring takes them now, as the submit would have.
        for slot in self.slots.iter_mut() {
            adopt(&mut ring, slot);
        }
        let mut in_flight = false;
        for key in self.slots.iter().filter_map(submitted_key) {
            in_flight |= ring.abandon(key, None);
        }
        if in_flight {
            watch_for_abandoned(self.shared, self.ring, ring, self.slots.iter().filter_map(submitted_key));
        } else {
            drop(ring);
        }
        self.slots.clear();
    }
}

/// Records a batch entry's completion `result` (a CQE's) in its slot, counted.
#[inline]
fn finish(tally: &mut Tally, slot: &mut BatchSlot, result: i32) {
    match syscall_result(result) {
        Ok(n) => {
            tally.done(slot.rw, n);
            slot.stage = Stage::Done(n);
        }
        Err(e) => failed(slot, e),
    }
}

/// A batch entry's failure, out of line so that [`finish`] inlines into the batch's loops. The
/// operation's name is worked out only here: for every entry, it was about 3% of a batch's
/// instructions.
#[cold]
fn failed(slot: &mut BatchSlot, e: io::Error) {
    let error = Error::os(slot.rw.op(slot.fixed, false), &slot.file, slot.offset, Backend::Uring, e);
    slot.stage = Stage::Failed(Box::new(error));
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        self.shared.thread.stop();
        // Files dropped from here on (payloads freed by the drain) leave the rings' tables to
        // go with the rings.
        self.shared.files.close();
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        for core in self.shared.rings.iter() {
            let mut ring = core.lock();
            for watcher in ring.watchers.drain(..) {
                watcher.retire();
            }
            let leaked = ring.drain(deadline, &core.counters);
            if leaked > 0 {
                tracing::error!(leaked, "io_uring drain timed out; leaking in-flight buffers");
            }
        }
    }
}

impl std::fmt::Debug for UringEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringEngine")
            .field("selection", &self.selection)
            .field("rings", &self.shared.rings.len())
            .field("pool", &self.shared.pool)
            .finish()
    }
}

impl IoEngine for UringEngine {
    fn backend(&self) -> Backend {
        Backend::Uring
    }

    fn selection(&self) -> &Selection {
        &self.selection
    }

    fn pool(&self) -> &BufPool {
        &self.shared.pool
    }

    fn direct_io(&self) -> bool {
        self.direct_io
    }

    fn stats(&self) -> EngineStats {
        let mut stats = EngineStats { rings: self.shared.rings.len() as u64, ..EngineStats::default() };
        for core in self.shared.rings.iter() {
            core.counters.add_to(&mut stats);
        }
        stats.buffer_waits = self.shared.pool.waits();
        stats.completion_thread = self.shared.thread.running();
        stats.completion_thread_reaps = self.shared.thread.reaps();
        stats.registered_files = self.shared.files.registered();
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
        let fixed = is_fixed(&buf, &self.shared.pool);
        self.rw_all(Rw::Read, fixed, file, buf.into_in_flight(), 0, offset).await
    }

    async fn write_all_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<(), Buf<Completed>> {
        let fixed = is_fixed(&buf, &self.shared.pool);
        self.rw_all(Rw::Write, fixed, file, buf.into_in_flight(), 0, offset).await
    }

    async fn write_durable_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<(), Buf<Completed>> {
        let fixed = is_fixed(&buf, &self.shared.pool);
        let buf = buf.into_in_flight();
        let wanted = buf.len();
        if let Err(e) = check_offset(offset).and_then(|()| file.check_buf(&buf, 0, offset)) {
            let e = Error::os(Rw::Write.op(fixed, false), file, offset, Backend::Uring, e);
            return BufResult(Err(e), buf.into_failed());
        }
        let index = self.pick();
        // A ring whose SQ holds one entry cannot link: write, then sync.
        if self.shared.rings[index].sq_entries < 2 {
            let written = self.rw_all(Rw::Write, fixed, file, buf, 0, offset).await;
            return match written.0 {
                Ok(()) => BufResult(self.sync(file, true).await, written.1),
                Err(_) => written,
            };
        }
        let (write, sync) = match self.start_linked(index, fixed, file, buf, offset).await {
            Ok(pair) => pair,
            Err((e, buf)) => {
                let e = Error::os(Rw::Write.op(fixed, false), file, offset, Backend::Uring, e);
                return BufResult(Err(e), buf.into_failed());
            }
        };
        let (written, payload) = write.await;
        let synced = match sync {
            Ok(sync) => sync.await.0,
            Err(e) => Err(e),
        };
        let buf = payload.into_one();
        match written {
            Ok(n) if n == wanted => {
                self.count(index, Rw::Write, n);
                if synced.is_ok() {
                    self.shared.rings[index].counters.synced();
                }
                let result = synced.map(drop).map_err(|e| Error::os(Op::SyncData, file, offset, Backend::Uring, e));
                BufResult(result, buf.into_completed(n))
            }
            // A short write broke the link (the sync reports ECANCELED): finish, then sync.
            Ok(n) => {
                let rest = self.rw_all(Rw::Write, fixed, file, buf, n, offset).await;
                match rest.0 {
                    Ok(()) => BufResult(self.sync(file, true).await, rest.1),
                    Err(_) => rest,
                }
            }
            Err(e) => {
                let e = Error::os(Rw::Write.op(fixed, false), file, offset, Backend::Uring, e);
                BufResult(Err(e), buf.into_failed())
            }
        }
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
        self.sync(file, false).await
    }

    async fn sync_data(&self, file: &File) -> Result<()> {
        self.sync(file, true).await
    }

    async fn submit_batch<'b>(&self, batch: &'b mut Batch) -> BatchResults<'b> {
        // The whole batch goes to one ring in as few io_uring_enter calls as ring room and the
        // SQ's size allow (one, when it fits), not through the fast path: one syscall for the
        // batch is cheaper than one per operation, and page-cache hits complete inside it
        // anyway. What completed inside a submit is collected under the same lock.
        let index = self.pick();
        let core = &self.shared.rings[index];
        let pool = self.shared.pool.id();
        // Owns the batch's slots from here: dropped early (even while waiting for room), it
        // abandons every operation already in flight and empties the batch.
        // A slot still in flight here belongs to a submit whose future was forgotten: its key
        // names that submit's operation (its ring slot keeps the buffer, leaked with it), which
        // this submit must neither wait for nor take.
        for slot in batch.slots.iter_mut() {
            if let Stage::Pushed(_) | Stage::Submitted(_) = slot.stage {
                slot.stage = Stage::Gone;
            }
        }
        let mut wait = BatchWait { shared: &self.shared, ring: index, slots: &mut batch.slots, left: 0, claim: None };
        let mut next = 0;
        while next < wait.slots.len() {
            // As much as there is ring room for (at least one, waited for) and fits the SQ.
            let room = core.room.available_permits().clamp(1, core.sq_entries);
            let want = (wait.slots.len() - next).min(room) as u32;
            if let Err(e) = self.room(index, want).await {
                fail_rest(&mut wait.slots[next..], pool, &e);
                break;
            }
            let end = next + want as usize;
            let mut ring = core.lock();
            let (mut unused, mut count, mut tally) = (0, 0, Tally::default());
            // SQ room for the whole chunk at once; if a partial flush left too little, each entry
            // asks for its own, as one at a time always did.
            let whole = ring.reserve(want as usize, &core.counters).is_ok();
            // A batch usually names one file many times: look up its fixed index once. Every
            // entry holds a handle of its file from before this loop, so no two files met here
            // ever share an identity.
            let mut last: Option<(usize, On)> = None;
            // Each entry is pushed with an empty ring slot; its buffer stays in the batch slot,
            // under this lock, until the submit's reap shows whether it completed inside the
            // submit (most do: the result is stored and the buffer never moves) or the ring
            // adopts it (below). Nothing between the push and the adoption awaits, so no caller
            // can drop or forget the batch meanwhile; an unwind from in between is caught by
            // `BatchWait`'s drop, which adopts what is left.
            for slot in &mut wait.slots[next..end] {
                // Only what a forgotten `BatchResults` or future left behind is not `Added`: its
                // room goes back.
                let (Stage::Added, Some(buf)) = (&slot.stage, &slot.buf) else {
                    unused += 1;
                    continue;
                };
                slot.fixed = slot.fixed && buf.pool_id() == pool;
                let valid = check_offset(slot.offset).and_then(|()| slot.file.check_buf(buf, 0, slot.offset));
                let room = valid.and_then(|()| if whole { Ok(()) } else { ring.reserve(1, &core.counters) });
                let pushed = room.and_then(|()| {
                    let on = match last {
                        Some((file, on)) if file == slot.file.identity() => on,
                        _ => On::file(&self.shared, &slot.file),
                    };
                    last = Some((slot.file.identity(), on));
                    let entry = rw_entry(slot.rw, slot.fixed, on, buf, 0, slot.offset);
                    ring.push(entry, Payload::none()).map_err(|(e, _)| e)
                });
                match pushed {
                    Ok(key) => {
                        slot.stage = Stage::Pushed(key.user_data());
                        wait.left += 1;
                        count += 1;
                    }
                    Err(e) => {
                        unused += 1;
                        failed(slot, e);
                    }
                }
            }
            if count > 0 {
                core.counters.pushed(count);
            }
            ring.submit_and_reap(&core.counters);
            for slot in &mut wait.slots[next..end] {
                let Stage::Pushed(key) = slot.stage else { continue };
                match ring.take_result(Key::from_user_data(key)) {
                    Some(result) => {
                        tally.inline += 1;
                        wait.left -= 1;
                        finish(&mut tally, slot, result);
                    }
                    None => adopt(&mut ring, slot),
                }
            }
            drop(ring);
            core.counters.add(&tally);
            if unused > 0 {
                core.unroom(unused);
            }
            next = end;
        }
        if wait.left > 0 {
            (&mut wait).await;
        }
        drop(wait);
        BatchResults::new(&mut batch.slots)
    }
}

/// Hands the buffer of a batch entry pushed by a submit to its ring slot (see [`Ring::adopt`]),
/// with a handle of its file (the batch's own may go before the completion): the entry is
/// `Submitted` from now on. Any other slot stays as it is.
fn adopt(ring: &mut ring::Locked<'_>, slot: &mut BatchSlot) {
    let Stage::Pushed(key) = slot.stage else { return };
    if let Some(buf) = slot.buf.take() {
        ring.adopt(Key::from_user_data(key), Payload::owned(slot.file.clone(), buf));
    }
    slot.stage = Stage::Submitted(key);
}

/// Fails every operation of `slots` not yet submitted with `error`.
fn fail_rest(slots: &mut [BatchSlot], pool: u64, error: &io::Error) {
    for slot in slots.iter_mut().filter(|slot| matches!(slot.stage, Stage::Added)) {
        let fixed = slot.fixed && slot.buf.as_ref().is_some_and(|buf| buf.pool_id() == pool);
        let e = io::Error::from(error.kind());
        let e = Error::os(slot.rw.op(fixed, false), &slot.file, slot.offset, Backend::Uring, e);
        slot.stage = Stage::Failed(Box::new(e));
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    /// A batch future dropped between pushing its entries and handing their buffers to the ring
    /// (an unwind out of the submit could do that) must hand them over in its drop: the kernel
    /// writes into them until the completion, so they may return to the pool only then. The
    /// read is on an empty pipe, so it stays in flight until the test writes.
    #[test]
    fn a_batch_dropped_before_the_ring_adopted_its_buffer_hands_it_over() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let engine = UringEngine::new(&IoEngineConfig { rings: 1, ..IoEngineConfig::default() }).unwrap();
            let (reader, mut writer) = std::io::pipe().unwrap();
            let file = File::from_std(std::fs::File::from(std::os::fd::OwnedFd::from(reader)), false);
            let pool = engine.pool();
            let mut batch = Batch::new();
            batch.read_at(&file, engine.acquire().await, 0);
            let core = &engine.shared.rings[0];
            core.room(1, || {}).await.unwrap();
            {
                let mut ring = core.lock();
                ring.reserve(1, &core.counters).unwrap();
                let slot = &mut batch.slots[0];
                let on = On::file(&engine.shared, &slot.file);
                let entry = rw_entry(slot.rw, true, on, slot.buf.as_ref().unwrap(), 0, 0);
                let key = ring.push(entry, Payload::none()).map_err(|(e, _)| e).unwrap();
                slot.stage = Stage::Pushed(key.user_data());
                ring.submit_and_reap(&core.counters);
            }
            drop(BatchWait { shared: &engine.shared, ring: 0, slots: &mut batch.slots, left: 1, claim: None });
            assert!(batch.is_empty());
            assert_eq!(pool.available(), pool.capacity() - 1, "the buffer went back while the kernel had it");
            std::io::Write::write_all(&mut writer, b"late").unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while pool.available() < pool.capacity() {
                assert!(Instant::now() < deadline, "the buffer never came back after its completion");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }

    /// A `submit_batch` future forgotten with a read in flight leaves that read's key in the
    /// batch. The next submit of the same batch must neither take the old read's result as its
    /// own nor count it among its operations (it did once: the old result came back for the new
    /// read, or `left` underflowed and the wait hung), on one ring and on two.
    #[test]
    fn a_batch_reused_after_a_forgotten_submit_returns_only_its_own_results() {
        for rings in [1, 2] {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async {
                let config = IoEngineConfig { rings, nowait_fast_path: false, ..IoEngineConfig::default() };
                let engine = UringEngine::new(&config).unwrap();
                let pipe = || {
                    let (reader, writer) = std::io::pipe().unwrap();
                    (File::from_std(std::fs::File::from(std::os::fd::OwnedFd::from(reader)), false), writer)
                };
                let ((old, mut old_writer), (new, mut new_writer)) = (pipe(), pipe());
                let mut batch = Batch::new();
                batch.read_at(&old, engine.acquire().await, 0);
                let mut forgotten = Box::pin(engine.submit_batch(&mut batch));
                let mut cx = Context::from_waker(Waker::noop());
                assert!(forgotten.as_mut().poll(&mut cx).is_pending(), "a read of an empty pipe waits");
                std::mem::forget(forgotten);
                batch.read_at(&new, engine.acquire().await, 0);
                std::io::Write::write_all(&mut old_writer, b"old").unwrap();
                let writer = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(100));
                    std::io::Write::write_all(&mut new_writer, b"new!").unwrap();
                    new_writer
                });
                let results: Vec<_> = tokio::time::timeout(Duration::from_secs(10), engine.submit_batch(&mut batch))
                    .await
                    .expect("hung")
                    .collect();
                assert_eq!(results.len(), 1, "rings {rings}");
                let (n, buf) = results.into_iter().next().unwrap().into_parts();
                assert_eq!((n.unwrap(), &buf[..]), (4, &b"new!"[..]), "rings {rings}");
                drop(writer.join().unwrap());
            });
        }
    }

    /// A submit the kernel takes only part of (it stops at an entry it refuses while reading
    /// it) leaves the rest queued. The future of the refused entry is ready at its next poll;
    /// that poll must still hand the rest to the kernel: with nothing else in flight, no
    /// signal would ever come for them.
    #[test]
    fn a_ready_future_submits_what_a_partial_submit_left_queued() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let engine = UringEngine::new(&IoEngineConfig { rings: 1, ..IoEngineConfig::default() }).unwrap();
            let file = File::from_std(tempfile::tempfile().unwrap(), false);
            let core = &engine.shared.rings[0];
            core.room(2, || {}).await.unwrap();
            let (refused, queued) = {
                let mut ring = core.lock();
                ring.reserve(2, &core.counters).unwrap();
                // Flag bit 7 is no flag: the kernel refuses the entry before issuing it and
                // stops reading the submission queue there.
                let bad = opcode::Nop::new().build().flags(squeue::Flags::from_bits_retain(1 << 7));
                let refused = ring.push(bad, Payload::none()).map_err(|(e, _)| e).unwrap();
                let nop = opcode::Nop::new().build();
                let queued = ring.push(nop, Payload::none()).map_err(|(e, _)| e).unwrap();
                ring.submit_and_reap(&core.counters);
                assert!(ring.sq_pending(), "the kernel took the entry after the refused one");
                (refused, queued)
            };
            let mut cx = Context::from_waker(Waker::noop());
            let mut first = std::pin::pin!(OpFuture::new(&engine.shared, 0, &file, refused));
            let Poll::Ready((result, _)) = first.as_mut().poll(&mut cx) else { panic!("the refusal is reaped") };
            assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EINVAL));
            assert!(!core.lock().sq_pending(), "the entry left queued was not submitted");
            let mut second = std::pin::pin!(OpFuture::new(&engine.shared, 0, &file, queued));
            let Poll::Ready((result, _)) = second.as_mut().poll(&mut cx) else {
                panic!("a nop completes in its submit")
            };
            assert_eq!(result.unwrap(), 0);
        });
    }
}
