//! [`UringEngine`]: owned-buffer I/O on a real io_uring through the `io-uring` crate.
//!
//! - **Submission** is inline: the calling task takes a short lock on the ring, pushes its
//!   entries, calls `io_uring_enter`, and reaps the completion queue before unlocking. A read that
//!   hits the page cache completes inside that syscall, so its future is ready on the first poll
//!   with no thread hop.
//! - **Later completions** (device I/O, work punted to io-wq) signal an eventfd registered with
//!   the ring. A reaper task awaits it with tokio's `AsyncFd`, drains the queue and wakes the
//!   futures. Every poll reaps too, so progress never depends on the reaper alone. The eventfd
//!   is silenced for the duration of each submit (see `Ring::submit_and_reap`), so completions
//!   reaped inline never wake the reaper.
//! - **Batches** are pushed whole and submitted with one `io_uring_enter`.
//! - **Ownership.** Each operation has a slot in a slab, keyed by a generation-tagged
//!   `user_data`. The slot holds the operation's buffers (`Buf<InFlight>`), `iovec`s and a
//!   clone of the file, so nothing the kernel points at can be freed or reused early. A future
//!   dropped before its completion marks the slot *ignored*; the slot and its buffers are freed
//!   when the completion arrives (I2). A forgotten future leaks only its slot.
//! - **Shutdown.** Dropping the engine cancels everything outstanding and waits (up to
//!   [`DRAIN_TIMEOUT`]) for every completion. Whatever is still in flight after that is leaked,
//!   with its buffers and therefore the arena, never freed under the kernel (I3).
//! - **Fixed buffers.** The engine's pool is registered slot by slot, so slot `i` is fixed
//!   buffer `i`. A `Buf<Registered>` of this pool goes through READ_FIXED/WRITE_FIXED; any other
//!   buffer through READ/WRITE.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, squeue, types};
use slab::Slab;
use tokio::io::unix::AsyncFd;

use super::detect::{self, Unsupported};
use super::nowait::{FastPath, Nowait};
use super::tokio_io::check_offset;
use super::{Batch, BufResult, File, IoEngine, MAX_VECTORED, Reason, Rw, Selection, foreign, is_fixed};
use crate::buf::{Buf, BufPool, Completed, InFlight, Registered, Submittable};
use crate::config::{EngineChoice, IoEngineConfig};
use crate::error::{Backend, Error, Op, Result};

/// How long dropping the engine waits for outstanding operations before leaking them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `user_data` of cancellation requests, whose completions are ignored.
const CANCEL: u64 = u64::MAX;

/// The io_uring engine.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::{IoEngine, IoEngineConfig, OpenOptions, UringEngine};
/// # let dir = tempfile::tempdir().unwrap();
/// let engine = UringEngine::new(&IoEngineConfig::default())?;
/// let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
/// let mut buf = engine.acquire().await; // Buf<Registered>: fixed buffer of this ring
/// buf.fill(9);
/// let written = engine.write_fixed_at(&file, buf, 0).await;
/// assert_eq!(written.0?, 65536);
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
pub struct UringEngine {
    core: Arc<Core>,
    selection: Selection,
    reaper: tokio::task::JoinHandle<()>,
    fast: FastPath,
}

struct Core {
    ring: Mutex<Ring>,
    /// The registered arena; held here so it lives as long as the ring (I3).
    pool: BufPool,
}

struct Ring {
    uring: IoUring,
    ops: Slab<Slot>,
    generation: u32,
    /// Entries pushed over the engine's life.
    pushed: u64,
    /// Whether the eventfd can be silenced: the CQ flags word exists since 5.8; the check is
    /// on `IORING_FEAT_POLL_32BITS` (5.9), the nearest feature bit.
    can_quiet: bool,
}

struct Slot {
    generation: u32,
    state: State,
    payload: Payload,
}

enum State {
    /// Submitted; the future (if polled yet) waits with this waker.
    Waiting(Option<Waker>),
    /// The completion arrived with this result; the future has not taken it yet.
    Done(i32),
    /// The future is gone; free the slot at the completion.
    Ignored,
}

/// What an operation keeps alive until its completion: its buffers, the `iovec`s that point at
/// them, and the file, whose descriptor number must not be reused while the kernel may use it.
struct Payload {
    bufs: Bufs,
    _iovecs: Option<IoVecs>,
    _file: File,
}

enum Bufs {
    None,
    One(Buf<InFlight>),
    Many(Vec<Buf<InFlight>>),
}

/// The `iovec` array of a vectored operation, pointing into the payload's own buffers.
struct IoVecs(Vec<libc::iovec>);

// SAFETY: the pointers in the array point into slots owned by the same `Payload`'s buffers
// (I1), which move between threads with it; the array is only read by the kernel.
unsafe impl Send for IoVecs {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    index: u32,
    generation: u32,
}

impl Key {
    fn user_data(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    fn from_user_data(data: u64) -> Key {
        Key { index: data as u32, generation: (data >> 32) as u32 }
    }
}

impl UringEngine {
    /// Sets up a ring of `config.uring_entries`, maps a pool of `config.registered_buffers` x
    /// `config.buffer_size` bytes and registers it as fixed buffers. Must be called inside a
    /// tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] with the typed reason when io_uring cannot be used,
    /// [`Error::NoRuntime`] outside a tokio runtime, [`Error::Config`] for a bad config.
    pub fn new(config: &IoEngineConfig) -> Result<Self> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime("UringEngine::new"))?;
        let (uring, info) = detect::setup(config.uring_entries)?;
        let pool = BufPool::new(config.registered_buffers, config.buffer_size)?;
        let iovecs = pool.iovecs();
        // SAFETY: the iovecs cover the pool's arena, which `Core` keeps alive for as long as the
        // ring exists (I3) and which never moves (I4).
        unsafe { uring.submitter().register_buffers(&iovecs) }.map_err(|e| {
            detect::classify("io_uring_register(BUFFERS)", &e, detect::io_uring_disabled_sysctl(), config.uring_entries)
        })?;
        let eventfd = new_eventfd().map_err(|e| unsupported("eventfd", &e))?;
        uring
            .submitter()
            .register_eventfd(eventfd.as_raw_fd())
            .map_err(|e| unsupported("io_uring_register(EVENTFD)", &e))?;
        let eventfd = {
            let _enter = runtime.enter();
            // SAFETY: `OwnedFd` owns the descriptor, so it stays open and refers to the same eventfd
            // for the whole life of the `AsyncFd`, which takes ownership of it.
            unsafe { AsyncFd::register_with_interest(eventfd, tokio::io::Interest::READABLE) }
                .map_err(|e| unsupported("AsyncFd", &e.into_parts().1))?
        };
        let capacity = uring.params().cq_entries() as usize;
        let core = Arc::new(Core {
            ring: Mutex::new(Ring {
                can_quiet: uring.params().is_feature_poll_32bits(),
                uring,
                ops: Slab::with_capacity(capacity),
                generation: 0,
                pushed: 0,
            }),
            pool,
        });
        let reaper = runtime.spawn(reap_loop(Arc::downgrade(&core), eventfd));
        let (requested, reason) = match config.engine {
            EngineChoice::Auto => (EngineChoice::Auto, Reason::Probed(info)),
            _ => (EngineChoice::Uring, Reason::Requested(EngineChoice::Uring)),
        };
        let selection = Selection { requested, backend: Backend::Uring, reason };
        Ok(UringEngine { fast: FastPath::new(config.nowait_fast_path), core, selection, reaper })
    }

    /// Operations submitted and not yet completed and collected (for tests and metrics).
    pub fn in_flight(&self) -> usize {
        self.core.lock().ops.len()
    }

    /// Entries submitted to the ring over the engine's life (operations served inline by the
    /// `RWF_NOWAIT` fast path are not counted).
    pub fn submitted(&self) -> u64 {
        self.core.lock().pushed
    }

    /// Submits one entry built from `payload`'s memory.
    fn start(&self, entry: squeue::Entry, payload: Payload) -> std::result::Result<OpFuture<'_>, (io::Error, Payload)> {
        let mut ring = self.core.lock();
        if let Err(e) = ring.reserve(1) {
            return Err((e, payload));
        }
        let key = ring.push(entry, payload)?;
        ring.submit_and_reap();
        // Work the kernel finished inside the submit (most page-cache reads on the ring) is
        // handed over now, saving the future a second trip through the lock.
        match ring.take_done(key) {
            Some(done) => Ok(OpFuture::ready(&self.core, done)),
            None => Ok(OpFuture::new(&self.core, key)),
        }
    }

    /// Reads or writes `buf[start..]` at `offset` and returns the syscall-style result.
    async fn rw_range(
        &self,
        rw: Rw,
        fixed: bool,
        file: &File,
        mut buf: Buf<InFlight>,
        start: usize,
        offset: u64,
    ) -> (io::Result<usize>, Buf<InFlight>) {
        if let Err(e) = check_offset(offset) {
            return (Err(e), buf);
        }
        // Page-cache hits finish inline; a short inline transfer continues on the ring.
        let inline = match self.fast.attempt(rw, file, &mut buf, start, offset) {
            Nowait::Done(n) if n == 0 || start + n == buf.len() => return (Ok(n), buf),
            Nowait::Failed(e) => return (Err(e), buf),
            Nowait::Done(n) => n,
            Nowait::WouldBlock | Nowait::Unsupported => 0,
        };
        let entry = rw_entry(rw, fixed, file, &buf, start + inline, offset + inline as u64);
        let (result, buf) = match self.start(entry, Payload::one(file, buf)) {
            Ok(op) => {
                let (result, payload) = op.await;
                (result, payload.into_one())
            }
            Err((e, payload)) => (Err(e), payload.into_one()),
        };
        match result {
            Ok(n) => (Ok(inline + n), buf),
            // Bytes already moved are a (short) result, as for a syscall.
            Err(_) if inline > 0 => (Ok(inline), buf),
            Err(e) => (Err(e), buf),
        }
    }

    async fn rw<S: Submittable>(
        &self,
        rw: Rw,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<usize, Buf<Completed>> {
        let fixed = is_fixed(&buf, &self.core.pool);
        let (result, buf) = self.rw_range(rw, fixed, file, buf.into_in_flight(), 0, offset).await;
        let op = rw.op(fixed, false);
        match result {
            Ok(n) => BufResult(Ok(n), buf.into_completed(n)),
            Err(e) => BufResult(Err(Error::os(op, offset, Backend::Uring, e)), buf.into_failed()),
        }
    }

    async fn rw_fixed(
        &self,
        rw: Rw,
        file: &File,
        buf: Buf<Registered>,
        offset: u64,
    ) -> BufResult<usize, Buf<Completed>> {
        if !is_fixed(&buf, &self.core.pool) {
            return foreign(buf, &self.core.pool);
        }
        self.rw(rw, file, buf, offset).await
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
        let (op, wanted) = (rw.op(fixed, false), buf.len());
        while done < wanted {
            let (result, back) = self.rw_range(rw, fixed, file, buf, done, offset + done as u64).await;
            buf = back;
            match result {
                Ok(0) if rw == Rw::Read => {
                    return BufResult(Err(Error::UnexpectedEof { op, offset, done, wanted }), buf.into_completed(done));
                }
                Ok(0) => {
                    return BufResult(Err(Error::WriteZero { op, offset, done, wanted }), buf.into_failed());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let e = Error::os(op, offset + done as u64, Backend::Uring, e);
                    return BufResult(Err(e), buf.into_failed());
                }
            }
        }
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
            check_offset(offset)
        };
        let result = match invalid {
            Err(e) => Err((e, bufs)),
            Ok(()) => {
                let iovecs = IoVecs(
                    bufs.iter().map(|b| libc::iovec { iov_base: b.as_ptr().cast(), iov_len: b.len() }).collect(),
                );
                let fd = types::Fd(file.fd());
                let (ptr, n) = (iovecs.0.as_ptr(), iovecs.0.len() as u32);
                let entry = match rw {
                    Rw::Read => opcode::Readv::new(fd, ptr, n).offset(offset).build(),
                    Rw::Write => opcode::Writev::new(fd, ptr, n).offset(offset).build(),
                };
                match self.start(entry, Payload { bufs: Bufs::Many(bufs), _iovecs: Some(iovecs), _file: file.clone() })
                {
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
                Err(Error::os(op, offset, Backend::Uring, e)),
                bufs.into_iter().map(|b| b.into_failed()).collect(),
            ),
        }
    }

    async fn sync(&self, file: &File, data_only: bool) -> Result<()> {
        let op = if data_only { Op::SyncData } else { Op::SyncAll };
        let result = match self.start(sync_entry(file, data_only), Payload::sync(file)) {
            Ok(future) => future.await.0,
            Err((e, _)) => Err(e),
        };
        result.map(drop).map_err(|e| Error::os(op, 0, Backend::Uring, e))
    }
}

fn unsupported(stage: &'static str, e: &io::Error) -> Unsupported {
    detect::classify(stage, e, None, 0)
}

fn new_eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd(2) takes no pointers; it returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Wakes on the eventfd and reaps. Holds only a `Weak` so it never keeps the ring alive.
///
/// The eventfd counter is never read, which saves a syscall per wake-up: tokio registers the
/// descriptor edge-triggered, and every signal is a new edge whatever the counter holds. After
/// reaping, `clear_ready` drops the readiness only if no new edge arrived since `readable()`
/// returned (tokio compares event ticks), so a completion signalled during the reap wakes the
/// loop again.
async fn reap_loop(core: Weak<Core>, eventfd: AsyncFd<OwnedFd>) {
    loop {
        let Ok(mut ready) = eventfd.readable().await else {
            return;
        };
        let Some(core) = core.upgrade() else {
            return;
        };
        core.lock().progress();
        drop(core);
        ready.clear_ready();
    }
}

/// The entry for `buf[start..]` at `offset`. Its pointer stays valid while the payload that owns
/// `buf` is in the ring's slab (I2, I4).
fn rw_entry(rw: Rw, fixed: bool, file: &File, buf: &Buf<InFlight>, start: usize, offset: u64) -> squeue::Entry {
    let fd = types::Fd(file.fd());
    let ptr = buf.as_ptr().wrapping_add(start);
    let len = (buf.len() - start) as u32;
    let index = buf.index() as u16;
    match (rw, fixed) {
        (Rw::Read, false) => opcode::Read::new(fd, ptr, len).offset(offset).build(),
        (Rw::Write, false) => opcode::Write::new(fd, ptr, len).offset(offset).build(),
        (Rw::Read, true) => opcode::ReadFixed::new(fd, ptr, len, index).offset(offset).build(),
        (Rw::Write, true) => opcode::WriteFixed::new(fd, ptr, len, index).offset(offset).build(),
    }
}

fn sync_entry(file: &File, data_only: bool) -> squeue::Entry {
    let flags = if data_only { types::FsyncFlags::DATASYNC } else { types::FsyncFlags::empty() };
    opcode::Fsync::new(types::Fd(file.fd())).flags(flags).build()
}

impl Payload {
    fn sync(file: &File) -> Payload {
        Payload { bufs: Bufs::None, _iovecs: None, _file: file.clone() }
    }

    fn one(file: &File, buf: Buf<InFlight>) -> Payload {
        Payload::owned(file.clone(), buf)
    }

    fn owned(file: File, buf: Buf<InFlight>) -> Payload {
        Payload { bufs: Bufs::One(buf), _iovecs: None, _file: file }
    }

    fn into_one(self) -> Buf<InFlight> {
        match self.bufs {
            Bufs::One(buf) => buf,
            _ => unreachable!("single-buffer operations carry one buffer"),
        }
    }

    fn into_many(self) -> Vec<Buf<InFlight>> {
        match self.bufs {
            Bufs::Many(bufs) => bufs,
            _ => unreachable!("vectored operations carry a buffer list"),
        }
    }
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, Ring> {
        // No panic can leave `Ring` half-updated in a way later users could observe wrongly:
        // each slot transition is a single assignment.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cancels everything outstanding and waits for every completion, up to `timeout`; leaks
    /// what is still in flight after that (I3).
    fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut ring = self.lock();
        let pending: Vec<u64> = ring
            .ops
            .iter()
            .filter(|(_, slot)| !matches!(slot.state, State::Done(_)))
            .map(|(index, slot)| Key { index: index as u32, generation: slot.generation }.user_data())
            .collect();
        for user_data in pending {
            let cancel = opcode::AsyncCancel::new(user_data).build().user_data(CANCEL);
            if ring.reserve(1).is_ok() {
                // SAFETY: a cancel request points at no memory.
                let _ = unsafe { ring.uring.submission().push(&cancel) };
            }
        }
        loop {
            ring.submit_and_reap();
            ring.ops.retain(|_, slot| !matches!(slot.state, State::Done(_)));
            if ring.ops.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                tracing::error!(in_flight = ring.ops.len(), "io_uring drain timed out; leaking in-flight buffers");
                for slot in ring.ops.drain() {
                    std::mem::forget(slot);
                }
                return;
            }
            drop(ring);
            std::thread::sleep(Duration::from_millis(1));
            ring = self.lock();
        }
    }
}

impl Ring {
    /// Makes room for `n` entries in the submission queue, flushing it to the kernel if needed.
    fn reserve(&mut self, n: usize) -> io::Result<()> {
        if self.sq_room() < n {
            self.submit()?;
        }
        if self.sq_room() < n {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        Ok(())
    }

    fn sq_room(&mut self) -> usize {
        let sq = self.uring.submission();
        sq.capacity() - sq.len()
    }

    /// Queues `entry` with a new slot holding `payload`. The caller has reserved room.
    fn push(&mut self, entry: squeue::Entry, payload: Payload) -> std::result::Result<Key, (io::Error, Payload)> {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let index = self.ops.insert(Slot { generation, state: State::Waiting(None), payload });
        let key = Key { index: index as u32, generation };
        let entry = entry.user_data(key.user_data());
        // SAFETY: every pointer in `entry` points into the buffers or iovecs of the payload just
        // stored in `ops`, which stays there until this entry's completion arrives (I2), inside
        // an arena that outlives the ring (I3) and never moves (I4).
        let pushed = unsafe { self.uring.submission().push(&entry) };
        match pushed {
            Ok(()) => {
                self.pushed += 1;
                Ok(key)
            }
            Err(_) => {
                let slot = self.ops.remove(index);
                Err((io::Error::from_raw_os_error(libc::EBUSY), slot.payload))
            }
        }
    }

    /// Hands queued entries to the kernel. `EINTR`, `EAGAIN` and `EBUSY` are retried after
    /// reaping; an entry that was pushed stays owned by its slot whatever happens here.
    fn submit(&mut self) -> io::Result<()> {
        let mut attempts = 0;
        loop {
            match self.uring.submit() {
                Ok(_) => return Ok(()),
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY))
                        && attempts < 1000 =>
                {
                    attempts += 1;
                    self.reap();
                    std::thread::yield_now();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Submits what is queued and reaps.
    ///
    /// The eventfd is silenced around the submit: whatever completes while it is silent (inside
    /// the submit, which is where page-cache hits complete, or anywhere else at that moment) is
    /// reaped here before the lock is released, and a signal would only wake the reaper on
    /// another CPU for nothing (a cross-CPU wake-up costs microseconds in a VM). No completion
    /// is lost: the kernel publishes the CQ tail, then issues a full barrier (in
    /// `io_cqring_wake`), then reads the flag to decide whether to signal; here the flag is
    /// cleared with a locked read-modify-write, then a full fence, then the CQ is read again.
    /// With a full barrier between the write and the read on both sides, at least one side sees
    /// the other's write: the kernel signals, or the second reap finds the completion.
    fn submit_and_reap(&mut self) {
        if self.can_quiet {
            self.uring.completion().disable_eventfd();
        }
        if let Err(e) = self.submit() {
            // The entries stay queued and owned by their slots; the next enter submits them.
            tracing::error!(error = %e, "io_uring_enter failed; entries stay queued");
        }
        self.reap();
        if self.can_quiet {
            self.uring.completion().enable_eventfd();
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            self.reap();
        }
    }

    /// Submits entries a failed `io_uring_enter` left queued, then reaps: a waiting future never
    /// depends on some other operation being submitted after it.
    fn progress(&mut self) {
        if !self.uring.submission().is_empty() {
            if let Err(e) = self.submit() {
                tracing::error!(error = %e, "io_uring_enter failed; entries stay queued");
            }
        }
        self.reap();
    }

    /// Moves every completion into its slot and wakes the waiting future; frees ignored slots.
    fn reap(&mut self) {
        loop {
            self.reap_cq();
            // Completions that did not fit the CQ wait in the kernel's overflow list, which only
            // an io_uring_enter(GETEVENTS) flushes and which raises no eventfd signal. (The
            // io-uring crate's `submit` adds GETEVENTS when the overflow flag is set.)
            if !self.uring.submission().cq_overflow() {
                return;
            }
            if let Err(e) = self.uring.submit() {
                tracing::error!(error = %e, "io_uring_enter to flush the CQ overflow failed");
                return;
            }
        }
    }

    /// Moves what is in the CQ ring now into the slots (see `reap`).
    fn reap_cq(&mut self) {
        let Ring { uring, ops, .. } = self;
        for cqe in uring.completion() {
            if cqe.user_data() == CANCEL {
                continue;
            }
            let key = Key::from_user_data(cqe.user_data());
            let Some(slot) = ops.get_mut(key.index as usize).filter(|s| s.generation == key.generation) else {
                tracing::error!(user_data = cqe.user_data(), "completion for an unknown operation");
                continue;
            };
            match std::mem::replace(&mut slot.state, State::Done(cqe.result())) {
                State::Waiting(waker) => {
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
                // The kernel is done with the memory: the buffers go back to the pool (I2).
                State::Ignored => drop(ops.remove(key.index as usize)),
                State::Done(_) => tracing::error!(user_data = cqe.user_data(), "second completion"),
            }
        }
    }

    /// The result and payload of `key` if it completed; otherwise remembers `waker`.
    fn take(&mut self, key: Key, waker: &Waker) -> Option<(i32, Payload)> {
        if let Some(done) = self.take_done(key) {
            return Some(done);
        }
        let slot = self.ops.get_mut(key.index as usize)?;
        match &mut slot.state {
            State::Done(_) => None,
            State::Waiting(stored) => {
                match stored {
                    Some(w) if w.will_wake(waker) => {}
                    _ => *stored = Some(waker.clone()),
                }
                None
            }
            State::Ignored => None,
        }
    }

    /// The result and payload of `key` if it completed (the slot is freed).
    fn take_done(&mut self, key: Key) -> Option<(i32, Payload)> {
        let State::Done(result) = self.ops.get(key.index as usize)?.state else {
            return None;
        };
        Some((result, self.ops.remove(key.index as usize).payload))
    }

    /// The future of `key` is gone: free the slot now if it completed, else at its completion.
    fn abandon(&mut self, key: Key) {
        if let Some(slot) = self.ops.get_mut(key.index as usize) {
            if matches!(slot.state, State::Done(_)) {
                drop(self.ops.remove(key.index as usize));
            } else {
                slot.state = State::Ignored;
            }
        }
    }
}

/// A batch entry: finished (or refused), pushed to the ring, or awaited.
enum Step<'a> {
    Done(io::Result<usize>, Buf<InFlight>),
    Pushed(Key),
    Waiting(OpFuture<'a>),
}

/// A CQE result as a syscall-style result.
fn syscall_result(result: i32) -> io::Result<usize> {
    if result < 0 { Err(io::Error::from_raw_os_error(-result)) } else { Ok(result as usize) }
}

/// Waits for one operation; yields its syscall-style result and its payload.
struct OpFuture<'a> {
    core: &'a Core,
    /// The operation still in the slab, or `None` once taken.
    key: Option<Key>,
    /// An operation that completed inside its submit: the result, to hand out on first poll.
    ready: Option<(i32, Payload)>,
}

impl<'a> OpFuture<'a> {
    fn new(core: &'a Core, key: Key) -> Self {
        OpFuture { core, key: Some(key), ready: None }
    }

    fn ready(core: &'a Core, done: (i32, Payload)) -> Self {
        OpFuture { core, key: None, ready: Some(done) }
    }
}

impl std::future::Future for OpFuture<'_> {
    type Output = (io::Result<usize>, Payload);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let taken = match (self.ready.take(), self.key) {
            (Some(done), _) => Some(done),
            (None, Some(key)) => {
                let mut ring = self.core.lock();
                ring.progress();
                ring.take(key, cx.waker())
            }
            (None, None) => None,
        };
        match taken {
            Some((result, payload)) => {
                self.key = None;
                Poll::Ready((syscall_result(result), payload))
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for OpFuture<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.core.lock().abandon(key);
        }
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        self.reaper.abort();
        self.core.drain(DRAIN_TIMEOUT);
    }
}

impl std::fmt::Debug for UringEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringEngine").field("selection", &self.selection).field("pool", &self.core.pool).finish()
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
        &self.core.pool
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
        let fixed = is_fixed(&buf, &self.core.pool);
        self.rw_all(Rw::Read, fixed, file, buf.into_in_flight(), 0, offset).await
    }

    async fn write_all_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<(), Buf<Completed>> {
        let fixed = is_fixed(&buf, &self.core.pool);
        self.rw_all(Rw::Write, fixed, file, buf.into_in_flight(), 0, offset).await
    }

    async fn write_durable_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<(), Buf<Completed>> {
        let fixed = is_fixed(&buf, &self.core.pool);
        let buf = buf.into_in_flight();
        let wanted = buf.len();
        if let Err(e) = check_offset(offset) {
            let e = Error::os(Rw::Write.op(fixed, false), offset, Backend::Uring, e);
            return BufResult(Err(e), buf.into_failed());
        }
        // WRITE linked to FSYNC(DATASYNC), both in one submission.
        let write = rw_entry(Rw::Write, fixed, file, &buf, 0, offset).flags(squeue::Flags::IO_LINK);
        let pair = {
            let mut ring = self.core.lock();
            match ring.reserve(2) {
                Err(e) => Err((e, buf)),
                Ok(()) => match ring.push(write, Payload::one(file, buf)) {
                    Err((e, payload)) => Err((e, payload.into_one())),
                    Ok(write_key) => {
                        let sync_key = ring.push(sync_entry(file, true), Payload::sync(file));
                        ring.submit_and_reap();
                        Ok((OpFuture::new(&self.core, write_key), sync_key.map(|k| OpFuture::new(&self.core, k))))
                    }
                },
            }
        };
        let (write, sync) = match pair {
            Ok(pair) => pair,
            Err((e, buf)) => {
                let e = Error::os(Rw::Write.op(fixed, false), offset, Backend::Uring, e);
                return BufResult(Err(e), buf.into_failed());
            }
        };
        let (written, payload) = write.await;
        let synced = match sync {
            Ok(sync) => sync.await.0,
            Err((e, _)) => Err(e),
        };
        let buf = payload.into_one();
        match written {
            Ok(n) if n == wanted => {
                let result = synced.map(drop).map_err(|e| Error::os(Op::SyncData, offset, Backend::Uring, e));
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
                let e = Error::os(Rw::Write.op(fixed, false), offset, Backend::Uring, e);
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

    async fn submit_batch(&self, batch: Batch) -> Vec<BufResult<usize, Buf<Completed>>> {
        // The whole batch goes to the ring in one io_uring_enter (more only if it outgrows the
        // queue), not through the fast path: one syscall for the batch is cheaper than one per
        // operation, and page-cache hits complete inside it anyway. What completed inside the
        // submit is collected under the same lock.
        if batch.is_empty() {
            return Vec::new();
        }
        let mut steps: Vec<(Op, u64, Step<'_>)> = Vec::with_capacity(batch.ops.len());
        {
            let mut ring = self.core.lock();
            for op in batch.ops {
                let fixed = op.fixed && op.buf.pool_id() == self.core.pool.id();
                let step = match check_offset(op.offset).and_then(|()| ring.reserve(1)) {
                    Err(e) => Step::Done(Err(e), op.buf),
                    Ok(()) => {
                        let entry = rw_entry(op.rw, fixed, &op.file, &op.buf, 0, op.offset);
                        match ring.push(entry, Payload::owned(op.file, op.buf)) {
                            Ok(key) => Step::Pushed(key),
                            Err((e, payload)) => Step::Done(Err(e), payload.into_one()),
                        }
                    }
                };
                steps.push((op.rw.op(fixed, false), op.offset, step));
            }
            ring.submit_and_reap();
            for (_, _, step) in &mut steps {
                if let Step::Pushed(key) = *step {
                    if let Some((result, payload)) = ring.take_done(key) {
                        *step = Step::Done(syscall_result(result), payload.into_one());
                    }
                }
            }
        }
        // Every operation still in flight gets its future before the first await, so dropping
        // this future part-way abandons each one (its slot and buffer are freed at its
        // completion). Made after the lock is released: `OpFuture`'s drop takes the lock.
        for (_, _, step) in &mut steps {
            if let Step::Pushed(key) = *step {
                *step = Step::Waiting(OpFuture::new(&self.core, key));
            }
        }
        let mut results = Vec::with_capacity(steps.len());
        for (code, offset, step) in steps.drain(..) {
            let (result, buf) = match step {
                Step::Waiting(op) => {
                    let (result, payload) = op.await;
                    (result, payload.into_one())
                }
                Step::Done(result, buf) => (result, buf),
                Step::Pushed(_) => unreachable!("every pushed step got its future above"),
            };
            results.push(match result {
                Ok(n) => BufResult(Ok(n), buf.into_completed(n)),
                Err(e) => BufResult(Err(Error::os(code, offset, Backend::Uring, e)), buf.into_failed()),
            });
        }
        results
    }
}
