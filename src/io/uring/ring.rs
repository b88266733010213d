//! One io_uring instance and the operations in flight on it.
//!
//! - [`RingCore`] is what the engine keeps per ring: the ring behind a mutex, the cap on
//!   operations in flight, the eventfd the kernel signals, and the ring's counters.
//! - [`Ring`] is the state behind the mutex: the `IoUring`, and a slab of [`Slot`]s ([`Slots`]),
//!   one per operation, keyed by a generation-tagged `user_data` ([`Key`]). A slot owns
//!   everything the kernel may touch until the operation's completion arrives (I2). The one
//!   exception is a batch entry while its submitter holds the ring's lock: its buffer stays in
//!   the batch until the submit's reap, and the slot adopts it before the lock is released
//!   unless the entry completed inside the submit ([`Ring::adopt`]); on an unwind out of the
//!   submit, the batch future's drop adopts it.
//! - [`Locked`] is the lock guard. Reaping never calls a waker under the lock: it queues them,
//!   and the guard wakes them after unlocking, each behind `catch_unwind`, so a panicking waker
//!   neither poisons the ring nor stops the other wake-ups.
//!
//! **The cap.** A ring holds at most one operation fewer in flight than its completion queue
//! has entries: a semaphore of that many permits, one taken per entry pushed and given back
//! when its completion is reaped out of the CQ (not when its future collects it, so a batch
//! that waits for all of its operations cannot hold the room its own later operations need). The CQ
//! therefore can never overflow; submitters beyond the cap wait asynchronously. The last CQ
//! entry is the tick's.
//!
//! **The tick.** A thread that sleeps in the ring ([`RingCore::sleep`], for `block_on`) waits
//! for the CQ's tail to move past where it was when the sleep began, with no timer of its own:
//! arming one on every wait cost about 1.8 us per wait on this host (a 1 ms `EXT_ARG` timeout
//! against none, O_DIRECT QD1 at 33 us per read: 1.09-1.10x the raw ring with it, 1.03-1.045x
//! without). Two things could leave such a sleep with no completion to end it: its operation's
//! completion reaped by another thread just before the sleep began, and a wake-up from
//! elsewhere. The tick bounds both: while anyone sleeps in the ring, a 1 ms `IORING_OP_TIMEOUT`
//! is always pending on it, and whoever reaps its completion arms the next one if a sleeper
//! is still registered. A sleeper registers and arms a tick if none is pending, and a reaper
//! clears the pending flag and counts sleepers, each under the ring's lock: no sleeper is ever
//! without a tick that completes after it registered, and a tick completion that comes after
//! the sleep began ends it. One timer per millisecond per ring, not one per wait.

use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use io_uring::{IoUring, squeue};
use tokio::sync::Semaphore;

use super::wake::Watcher;
use crate::buf::{Buf, InFlight};
use crate::io::File;
use crate::io::stats::Counters;

/// `user_data` of cancellation requests, whose completions are ignored.
pub(super) const CANCEL: u64 = u64::MAX;
/// `user_data` of the tick (see the module docs).
const TICK: u64 = u64::MAX - 1;
/// How long a tick runs: the bound on how late a sleeper notices a completion reaped by someone
/// else or a wake-up from elsewhere.
const TICK_NS: u32 = 1_000_000;

/// What the engine keeps per ring.
pub(super) struct RingCore {
    ring: Mutex<Ring>,
    /// The ring's descriptor, owned by the `IoUring` in `ring`.
    fd: RawFd,
    /// One permit per operation the CQ can hold; a slot holds one from push to free.
    pub(super) room: Semaphore,
    /// The submission queue's size: a linked pair needs two entries in one submit.
    pub(super) sq_entries: usize,
    /// Signalled by the kernel for completions that arrive outside a submit.
    pub(super) eventfd: OwnedFd,
    pub(super) counters: Counters,
    /// Whether the engine's completion thread polls this ring's eventfd (see `wake::Thread`).
    pub(super) watched: AtomicBool,
}

/// The state behind a ring's mutex.
pub(super) struct Ring {
    uring: IoUring,
    ops: Slots,
    /// Whether the eventfd can be silenced: the CQ flags word exists since 5.8; the check is
    /// on `IORING_FEAT_POLL_32BITS` (5.9), the nearest feature bit.
    can_quiet: bool,
    /// One reactor watcher per tokio runtime that has waited on this ring (see `wake`).
    pub(super) watchers: Vec<Arc<Watcher>>,
    /// Wakers of completed operations, woken by [`Locked`] after it unlocks.
    to_wake: Vec<Waker>,
    /// Payloads of abandoned operations that completed, dropped by [`Locked`] after it unlocks
    /// (dropping a buffer returns it to its pool, which wakes a task waiting in `acquire`), each
    /// with whether its operation still counts as in flight: it stops counting only once its
    /// buffers are back, so `in_flight() == 0` means every abandoned buffer is in its pool.
    to_drop: Vec<(Payload, bool)>,
    /// Completions reaped under this lock: their CQ entries are free again, so [`Locked`] gives
    /// their permits back after it unlocks.
    reaped: usize,
    /// Of those, the ones whose future collects the result: they leave flight at the unlock.
    settled: usize,
    /// Keys of the entries pushed, ticks and cancellations included (see [`Queued`]).
    queued: Queued,
    /// The errno of a submit failure that broke the ring for good.
    broken: Option<i32>,
    /// Threads sleeping in the ring now (see the module docs).
    sleepers: usize,
    /// Operations in flight whose waiter relies on the completion thread (`Slot::thread`).
    thread_waiters: usize,
    /// Whether a tick is submitted (or queued) and its completion not yet reaped.
    tick_pending: bool,
    /// A tick completion was reaped since the last look.
    ticked: bool,
    /// What a tick entry points at, boxed so that it never moves while the entry is queued.
    tick_timeout: Box<io_uring::types::Timespec>,
}

pub(super) struct Slot {
    generation: u32,
    state: State,
    payload: Payload,
    /// In flight, with a waiter (or, abandoned, nobody) that relies on the completion thread
    /// to reap it: counted in `Ring::thread_waiters`.
    thread: bool,
}

enum State {
    /// A free entry of [`Slots`].
    Vacant,
    /// Submitted; the future (once it has been polled) waits with this waker.
    Waiting(Option<Waker>),
    /// The completion arrived with this result; the future has not taken it yet.
    Done(i32),
    /// The future is gone; free the slot at the completion.
    Ignored,
}

/// What an operation keeps alive until its completion: its buffers, the `iovec`s that point at
/// them, and, when nobody else does, a handle of its file.
///
/// **The file.** An entry names its file by descriptor number or fixed index, which the kernel
/// resolves when it issues the entry: at the submit for most, later for an entry still queued
/// in the SQ or linked behind another. Until then the number must keep naming this file, so a
/// handle of it must be alive. A waiting future borrows its caller's `File` for as long as it
/// lives, so the slot clones the file only when the future is dropped before the completion
/// ([`Ring::abandon`]) or when its entry is still queued after its submit
/// ([`Ring::hold_if_queued`], against a future that is forgotten). Cloning on every operation
/// would make submitters on different cores share the file's reference count: one cache line
/// bounced between them twice per operation. Batch entries own their files and keep them here.
///
/// A vectored operation's `iovec`s live beside its buffer list, as a boxed slice: every slot
/// is as large as the largest payload and is moved on every operation, and a separate
/// `Option<Vec>` made a slot 112 bytes.
pub(super) struct Payload {
    bufs: Bufs,
    file: Option<File>,
}

enum Bufs {
    None,
    One(Buf<InFlight>),
    /// The buffers, and the `iovec`s the kernel reads, which point into them.
    Many {
        bufs: Vec<Buf<InFlight>>,
        _iovecs: IoVecs,
    },
}

// Slots are moved on every operation: keep them small (see `Payload`).
static_assertions::const_assert!(size_of::<Slot>() <= 96);

/// The `iovec` array of a vectored operation, pointing into the payload's own buffers.
pub(super) struct IoVecs(pub(super) Box<[libc::iovec]>);

// SAFETY: the pointers in the array point into slots owned by the same `Payload`'s buffers
// (I1), which move between threads with it; the array is only read by the kernel.
unsafe impl Send for IoVecs {}

/// Names one operation: its slab index and the generation that tells reuses of the index apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Key {
    index: u32,
    generation: u32,
}

impl Key {
    pub(super) fn user_data(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    pub(super) fn from_user_data(data: u64) -> Key {
        Key { index: data as u32, generation: (data >> 32) as u32 }
    }
}

impl RingCore {
    pub(super) fn new(uring: IoUring, eventfd: OwnedFd) -> RingCore {
        let (sq, cq) = (uring.params().sq_entries() as usize, uring.params().cq_entries() as usize);
        RingCore {
            fd: uring.as_raw_fd(),
            ring: Mutex::new(Ring {
                can_quiet: uring.params().is_feature_poll_32bits(),
                uring,
                ops: Slots::with_capacity(cq),
                watchers: Vec::new(),
                to_wake: Vec::with_capacity(cq),
                to_drop: Vec::with_capacity(cq),
                reaped: 0,
                settled: 0,
                queued: Queued::new(sq),
                broken: None,
                sleepers: 0,
                thread_waiters: 0,
                tick_pending: false,
                ticked: false,
                tick_timeout: Box::new(io_uring::types::Timespec::new().nsec(TICK_NS)),
            }),
            room: Semaphore::new(cq - 1),
            sq_entries: sq,
            eventfd,
            counters: Counters::default(),
            watched: AtomicBool::new(false),
        }
    }

    pub(super) fn lock(&self) -> Locked<'_> {
        Locked { core: self, guard: Some(self.acquire()) }
    }

    fn acquire(&self) -> MutexGuard<'_, Ring> {
        // No panic can leave `Ring` half-updated in a way later users could observe wrongly:
        // each slot transition is a single assignment, and wakers run outside the lock.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts the file `fd` in fixed-file slot `index` of this ring (-1 empties the slot). Takes no
    /// lock of ours: the kernel orders the update against submissions on the ring itself, and
    /// the caller guarantees that no entry naming `index` is queued or in flight meanwhile (see
    /// `files`), so it may run with any ring locked, this one included.
    pub(super) fn set_file(&self, index: u32, fd: RawFd) -> io::Result<()> {
        let fds = [fd];
        let update = FilesUpdate { offset: index, resv: 0, fds: fds.as_ptr() as u64 };
        let (register, update) = (libc::SYS_io_uring_register, &raw const update);
        // SAFETY: FILES_UPDATE reads one `FilesUpdate` (the kernel's `io_uring_files_update`)
        // and one descriptor from live locals; `self.fd` stays open while `self` exists.
        let done = unsafe { libc::syscall(register, self.fd, REGISTER_FILES_UPDATE, update, 1) };
        match done {
            1 => Ok(()),
            n if n < 0 => Err(io::Error::last_os_error()),
            _ => Err(io::Error::other("io_uring_register(FILES_UPDATE) updated no slot")),
        }
    }

    /// Sleeps inside `io_uring_enter` until a completion arrives or a signal interrupts it (both
    /// `Ok`), at most about one tick after a completion is reaped elsewhere (see the module
    /// docs). The caller counts among the ring's sleepers ([`Locked::enter_sleep`]) from before
    /// this call until it has reaped the ring after it. The completion work of operations this
    /// thread submitted runs inside the wait, as in a raw ring's loop, so their completions end
    /// it directly. Takes no lock: it submits nothing.
    ///
    /// The eventfd is off while anyone sleeps here: every completion ends the sleep anyway, and
    /// the last sleeper out turns it back on and reaps, waking whoever waits through a watcher
    /// or the completion thread. Left on, each completion also woke the reactor's thread, which
    /// then took the ring's lock to reap what the sleeper was about to reap itself: with nothing
    /// else running (the other vCPU idle), 1.16-1.23x the raw ring at QD1 against 1.03-1.05x
    /// with it off (four alternating runs each).
    pub(super) fn sleep(&self) -> io::Result<()> {
        // SAFETY: with no entries to submit and no `EXT_ARG`, the kernel reads no memory of
        // ours; `self.fd` stays open while `self` exists.
        let done =
            unsafe { libc::syscall(libc::SYS_io_uring_enter, self.fd, 0u32, 1u32, ENTER_GETEVENTS, 0usize, 0usize) };
        if done >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) { Ok(()) } else { Err(e) }
    }

    /// Takes `n` permits of ring room if there are that many free now.
    pub(super) fn try_room(&self, n: u32) -> bool {
        self.room.try_acquire_many(n).map(tokio::sync::SemaphorePermit::forget).is_ok()
    }

    /// Takes `n` permits of ring room, waiting while the ring is full. Counts a wait. Each time
    /// it finds no room it calls `reap`, which makes sure the ring is reaped meanwhile (only a
    /// completion frees room; see `wake::reap_for_room`).
    pub(super) async fn room(&self, n: u32, mut reap: impl FnMut()) -> io::Result<()> {
        if self.try_room(n) {
            return Ok(());
        }
        self.counters.ring_waits.fetch_add(1, Relaxed);
        // tokio wakes the waiters that freed permits satisfy as one batch, and if one waker
        // panics it drops the rest of the batch unwoken: hand it a waker that cannot panic.
        let mut acquire = std::pin::pin!(self.room.acquire_many(n));
        let mut shield: Option<(Waker, Waker)> = None;
        let acquired = std::future::poll_fn(|cx| {
            let waker = match &shield {
                Some((theirs, ours)) if theirs.will_wake(cx.waker()) => ours.clone(),
                _ => {
                    let ours = Waker::from(Arc::new(Shield(cx.waker().clone())));
                    shield = Some((cx.waker().clone(), ours.clone()));
                    ours
                }
            };
            let acquired = acquire.as_mut().poll(&mut std::task::Context::from_waker(&waker));
            if acquired.is_pending() {
                reap();
            }
            acquired
        });
        match acquired.await {
            Ok(permit) => {
                permit.forget();
                Ok(())
            }
            // The semaphore is never closed; report it as the ring being busy if it ever is.
            Err(_) => Err(io::Error::from_raw_os_error(libc::EBUSY)),
        }
    }

    /// Gives back `n` permits taken with [`room`](Self::room) for operations never pushed.
    pub(super) fn unroom(&self, n: usize) {
        self.room.add_permits(n);
    }
}

/// Wakes the waker it wraps, catching a panic (see [`RingCore::room`]).
struct Shield(Waker);

impl std::task::Wake for Shield {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        quietly(|| self.0.wake_by_ref());
    }
}

/// `IORING_REGISTER_FILES_UPDATE`.
const REGISTER_FILES_UPDATE: libc::c_uint = 6;

/// `IORING_ENTER_GETEVENTS`.
const ENTER_GETEVENTS: libc::c_uint = 1;

/// `struct io_uring_files_update`.
#[repr(C)]
struct FilesUpdate {
    offset: u32,
    resv: u32,
    /// Address of the descriptors, as a `u64`.
    fds: u64,
}
static_assertions::assert_eq_size!(FilesUpdate, [u64; 2]);

/// The ring's lock guard; wakes queued wakers and returns freed permits after unlocking.
pub(super) struct Locked<'a> {
    core: &'a RingCore,
    guard: Option<MutexGuard<'a, Ring>>,
}

impl Deref for Locked<'_> {
    type Target = Ring;
    #[inline]
    fn deref(&self) -> &Ring {
        self.guard.as_ref().expect("the guard is held until drop")
    }
}

impl DerefMut for Locked<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Ring {
        self.guard.as_mut().expect("the guard is held until drop")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        loop {
            let Some(ring) = self.guard.as_mut() else { return };
            if ring.to_wake.is_empty() && ring.to_drop.is_empty() {
                // Nothing to wake or drop (a submit whose operations completed inside it).
                let (reaped, settled) = (std::mem::take(&mut ring.reaped), std::mem::take(&mut ring.settled));
                self.unlock();
                return self.free_room(reaped, settled);
            }
            // A few wakers and one payload per turn, on the stack: no allocation on the wake
            // path, and little to move (a completion usually wakes one task; payloads to drop
            // belong to abandoned operations, which are rare).
            let mut wakers: [Option<Waker>; 4] = Default::default();
            for slot in wakers.iter_mut() {
                match ring.to_wake.pop() {
                    Some(waker) => *slot = Some(waker),
                    None => break,
                }
            }
            let payload = ring.to_drop.pop();
            let reaped = std::mem::take(&mut ring.reaped);
            let settled = std::mem::take(&mut ring.settled);
            let more = !ring.to_wake.is_empty() || !ring.to_drop.is_empty();
            self.unlock();
            self.free_room(reaped, settled);
            if let Some((payload, counted)) = payload {
                quietly(|| drop(payload));
                if counted {
                    self.core.counters.finish(1);
                }
            }
            for waker in wakers.into_iter().flatten() {
                quietly(|| waker.wake());
            }
            if !more {
                return;
            }
            self.guard = Some(self.core.acquire());
        }
    }
}

impl Locked<'_> {
    fn unlock(&mut self) {
        drop(self.guard.take());
    }

    /// After unlocking: `reaped` completions left the CQ, `settled` of them left flight.
    fn free_room(&self, reaped: usize, settled: usize) {
        if reaped > 0 {
            self.core.counters.finish(settled as u64);
            quietly(|| self.core.room.add_permits(reaped));
        }
    }

    /// Counts the calling thread among the ring's sleepers, from now until its
    /// [`leave_sleep`](Self::leave_sleep): the eventfd goes quiet and a tick is kept pending
    /// (see the module docs). An error means no tick could be armed (a broken ring); the
    /// thread is not counted then and must not sleep here.
    pub(super) fn enter_sleep(&mut self) -> io::Result<()> {
        let counters = &self.core.counters;
        let ring = self.guard.as_mut().expect("the guard is held until drop");
        ring.sleepers += 1;
        ring.quiet();
        let armed = ring.arm_tick(counters);
        if armed.is_err() {
            ring.sleepers -= 1;
            ring.loud(counters);
        }
        armed
    }

    /// Stops counting the calling thread among the sleepers; the last one out turns the eventfd
    /// back on and reaps.
    pub(super) fn leave_sleep(&mut self) {
        let counters = &self.core.counters;
        let ring = self.guard.as_mut().expect("the guard is held until drop");
        ring.sleepers -= 1;
        ring.loud(counters);
    }
}

/// Runs `f`, logging instead of propagating a panic: one task's broken waker must not stop the
/// wake-ups of every other operation.
fn quietly(f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        tracing::error!("a waker panicked while ferrite-io woke it; the other wake-ups go on");
    }
}

impl Ring {
    /// Makes room for `n` entries in the submission queue, flushing it to the kernel if needed.
    #[inline]
    pub(super) fn reserve(&mut self, n: usize, counters: &Counters) -> io::Result<()> {
        if self.sq_room() < n {
            self.submit(counters)?;
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

    /// Queues `entry` with a new slot holding `payload`. The caller has reserved SQ room and
    /// taken one permit of ring room, which the slot now holds, and counts what it pushed
    /// (`Counters::pushed`; a batch counts once for all its entries).
    #[inline]
    pub(super) fn push(
        &mut self,
        entry: squeue::Entry,
        payload: Payload,
    ) -> std::result::Result<Key, (io::Error, Payload)> {
        if let Some(errno) = self.broken {
            return Err((io::Error::from_raw_os_error(errno), payload));
        }
        let key = self.ops.insert(payload);
        let entry = entry.user_data(key.user_data());
        // A batch entry comes with an empty payload: its buffer stays in its batch slot while
        // the submit keeps this lock, and this slot adopts it unless the entry completed (on an
        // unwind, the batch future's drop adopts it; see `UringEngine::submit_batch`).
        // SAFETY: every pointer in `entry` points into the payload just stored in `ops` or into
        // a batch slot's buffer as above, which stays until this entry's completion (I2), in an
        // arena that outlives the ring (I3) and never moves (I4).
        let pushed = unsafe { self.uring.submission().push(&entry) };
        match pushed {
            Ok(()) => {
                self.queued.push(key);
                Ok(key)
            }
            Err(_) => Err((io::Error::from_raw_os_error(libc::EBUSY), self.ops.remove(key))),
        }
    }

    /// Gives the ring a sparse fixed-file table of `size` empty slots.
    pub(super) fn register_files(&mut self, size: u32) -> io::Result<()> {
        self.uring.submitter().register_files_sparse(size)
    }

    /// Submits a tick unless one is pending (see the module docs). It takes the CQ entry kept
    /// out of the cap, so there is never more than one.
    fn arm_tick(&mut self, counters: &Counters) -> io::Result<()> {
        if self.tick_pending {
            return Ok(());
        }
        self.reserve(1, counters)?;
        let tick = io_uring::opcode::Timeout::new(&raw const *self.tick_timeout).build().user_data(TICK);
        // SAFETY: the entry points at `*self.tick_timeout`, a box this ring owns for as long as
        // it exists and never replaces, so it stays valid and unmoved until the kernel reads it
        // at the submit (or the ring is gone).
        if unsafe { self.uring.submission().push(&tick) }.is_err() {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        self.queued.push(Key::from_user_data(TICK));
        self.tick_pending = true;
        let submitted = self.submit(counters);
        if submitted.is_err() {
            // The ring is broken and will never submit the tick: nobody may count on it.
            self.tick_pending = false;
        }
        submitted
    }

    /// Queues a cancellation of the operation `user_data` (its completion is ignored).
    fn push_cancel(&mut self, user_data: u64) {
        let cancel = io_uring::opcode::AsyncCancel::new(user_data).build().user_data(CANCEL);
        // SAFETY: a cancel request points at no memory.
        if unsafe { self.uring.submission().push(&cancel) }.is_ok() {
            self.queued.push(Key::from_user_data(CANCEL));
        }
    }

    /// Hands queued entries to the kernel. `EINTR`, `EAGAIN` and `EBUSY` are retried after
    /// reaping; any other error breaks the ring (see [`break_with`](Self::break_with)).
    fn submit(&mut self, counters: &Counters) -> io::Result<()> {
        if let Some(errno) = self.broken {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let mut attempts = 0;
        loop {
            let result = self.uring.submit();
            match result {
                Ok(_) => return Ok(()),
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY))
                        && attempts < 1000 =>
                {
                    attempts += 1;
                    self.reap(counters);
                    std::thread::yield_now();
                }
                Err(e) => {
                    counters.submit_errors.fetch_add(1, Relaxed);
                    tracing::error!(error = %e, "io_uring_enter failed; the ring is broken");
                    self.break_with(e.raw_os_error().unwrap_or(libc::EIO));
                    return Err(e);
                }
            }
        }
    }

    /// A submit failed with an error that retrying will not fix (a broken descriptor, a dead
    /// ring). Nothing it was asked to submit reached the kernel: an `io_uring_enter` that
    /// consumed entries returns their count, not an error. From now on the ring never submits
    /// again, so the entries still queued are never seen by the kernel, and their operations
    /// complete at once with the error: their waiters get it, and their buffers back, instead of
    /// waiting forever. Operations the kernel already has still complete normally; new ones are
    /// refused with the same error.
    pub(super) fn break_with(&mut self, errno: i32) {
        self.broken = Some(errno);
        let left = self.uring.submission().len();
        for age in (0..left).rev() {
            let key = self.queued.last(age);
            self.book().1.complete(key.user_data(), -errno);
        }
    }

    /// Submits what is queued and reaps.
    ///
    /// The eventfd is silenced around the submit: whatever completes while it is silent (inside
    /// the submit, which is where page-cache hits complete, or anywhere else at that moment) is
    /// reaped here before the lock is released, and a signal would only wake a watcher for
    /// nothing. No completion is lost: the kernel publishes the CQ tail, then issues a full
    /// barrier (in `io_cqring_wake`), then reads the flag to decide whether to signal; here the
    /// flag is cleared with a locked read-modify-write, then a full fence, then the CQ is read
    /// again. With a full barrier between the write and the read on both sides, at least one
    /// side sees the other's write: the kernel signals, or the second reap finds the completion.
    pub(super) fn submit_and_reap(&mut self, counters: &Counters) {
        self.quiet();
        // A failure has broken the ring and completed the queued operations with the error.
        let _ = self.submit(counters);
        self.reap(counters);
        self.loud(counters);
    }

    /// Silences the eventfd (see [`submit_and_reap`](Self::submit_and_reap)).
    fn quiet(&mut self) {
        if self.can_quiet {
            self.uring.completion().disable_eventfd();
        }
    }

    /// Turns the eventfd back on, unless a thread sleeps in the ring (it reaps instead, and the
    /// last one out calls this), then reaps what completed while it was off.
    fn loud(&mut self, counters: &Counters) {
        if self.can_quiet && self.sleepers == 0 {
            self.uring.completion().enable_eventfd();
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            self.reap(counters);
        }
    }

    /// Whether entries wait in the submission queue (a partial or failed submit left them).
    pub(super) fn sq_pending(&mut self) -> bool {
        !self.uring.submission().is_empty()
    }

    /// Submits entries still queued (a transient failure can leave some), then reaps: a waiting
    /// future never depends on some other operation being submitted after it.
    pub(super) fn progress(&mut self, counters: &Counters) {
        if self.sq_pending() {
            self.submit_and_reap(counters);
        } else {
            self.reap(counters);
        }
    }

    /// Moves every completion into its slot and queues the waiting future's waker; frees
    /// ignored slots.
    pub(super) fn reap(&mut self, counters: &Counters) {
        loop {
            self.reap_cq();
            if std::mem::take(&mut self.ticked) {
                self.tick_pending = false;
                if self.sleepers > 0 {
                    // A failure has broken the ring; its sleepers' operations failed with it.
                    let _ = self.arm_tick(counters);
                }
            }
            // Completions that did not fit the CQ wait in the kernel's overflow list, which only
            // an io_uring_enter(GETEVENTS) flushes. The cap makes this unreachable in normal
            // operation; it is counted, and handled, in case it ever happens.
            if !self.uring.submission().cq_overflow() {
                return;
            }
            counters.overflows.fetch_add(1, Relaxed);
            if self.broken.is_some() {
                return;
            }
            // The io-uring crate adds GETEVENTS to this enter when the overflow flag is set.
            if let Err(e) = self.uring.submit() {
                tracing::error!(error = %e, "io_uring_enter to flush the CQ overflow failed");
                return;
            }
        }
    }

    /// Moves what is in the CQ ring now into the slots (see `reap`), straight from the ring's
    /// memory: the CQ and the bookkeeping are separate fields, borrowed side by side.
    fn reap_cq(&mut self) {
        let (uring, mut book) = self.book();
        for cqe in uring.completion() {
            book.complete(cqe.user_data(), cqe.result());
        }
    }

    /// The ring, and apart from it the bookkeeping a completion updates.
    fn book(&mut self) -> (&mut IoUring, Book<'_>) {
        let Ring { uring, ops, to_wake, to_drop, reaped, settled, thread_waiters, ticked, .. } = self;
        (uring, Book { ops, to_wake, to_drop, reaped, settled, thread_waiters, ticked })
    }

    /// Records whether the waiter of `key`, in flight, relies on the completion thread now.
    pub(super) fn rely_on_thread(&mut self, key: Key, thread: bool) {
        let Some(slot) = self.ops.get_mut(key) else {
            return;
        };
        if matches!(slot.state, State::Done(_)) || slot.thread == thread {
            return;
        }
        slot.thread = thread;
        if thread {
            self.thread_waiters += 1;
        } else {
            self.thread_waiters -= 1;
        }
    }

    /// Hands every operation in flight to the completion thread (their waiters' runtime is
    /// gone, or a future waiting for ring room relies on the thread to reap them). Returns
    /// whether any now relies on the thread.
    pub(super) fn rely_on_thread_for_all(&mut self) -> bool {
        let mut any = false;
        for slot in self.ops.iter_mut() {
            if !matches!(slot.state, State::Done(_)) && !slot.thread {
                slot.thread = true;
                self.thread_waiters += 1;
            }
            any |= slot.thread;
        }
        any
    }

    /// Operations in flight that rely on the completion thread.
    pub(super) fn thread_waiters(&self) -> usize {
        self.thread_waiters
    }

    /// Forgets the waker of `key` while its own future polls, so a completion reaped during
    /// that poll does not wake the future that is about to see it anyway.
    pub(super) fn unwait(&mut self, key: Key) {
        if let Some(slot) = self.ops.get_mut(key) {
            if let State::Waiting(waker) = &mut slot.state {
                *waker = None;
            }
        }
    }

    /// Keeps a handle of `file` in the slot of `key` if its entry is still queued (a transient
    /// submit failure left it there): see [`Payload`].
    pub(super) fn hold_if_queued(&mut self, key: Key, file: &File) {
        let left = self.uring.submission().len();
        if (0..left).any(|age| self.queued.last(age) == key) {
            if let Some(slot) = self.ops.get_mut(key) {
                slot.payload.file.get_or_insert_with(|| file.clone());
            }
        }
    }

    /// Remembers `waker` for `key`, still in flight.
    pub(super) fn wait(&mut self, key: Key, waker: &Waker) {
        if let Some(slot) = self.ops.get_mut(key) {
            if let State::Waiting(stored) = &mut slot.state {
                match stored {
                    Some(w) if w.will_wake(waker) => {}
                    _ => *stored = Some(waker.clone()),
                }
            }
        }
    }

    /// The result and payload of `key` if it completed (the slot is freed).
    #[inline]
    pub(super) fn take_done(&mut self, key: Key) -> Option<(i32, Payload)> {
        let State::Done(result) = self.ops.get(key)?.state else {
            return None;
        };
        Some((result, self.ops.remove(key)))
    }

    /// The result of `key` if it completed (the slot is freed); for an operation pushed with an
    /// empty payload (see [`adopt`](Self::adopt)).
    #[inline]
    pub(super) fn take_result(&mut self, key: Key) -> Option<i32> {
        let State::Done(result) = self.ops.get(key)?.state else {
            return None;
        };
        self.ops.remove_empty(key);
        Some(result)
    }

    /// Hands the slot of `key`, pushed with an empty payload, what its entry points at. Until
    /// this call the submitter holds that memory, under this same lock (see
    /// `UringEngine::submit_batch`). A key no longer live cannot be in flight: the payload is
    /// dropped.
    pub(super) fn adopt(&mut self, key: Key, payload: Payload) {
        if let Some(slot) = self.ops.get_mut(key) {
            slot.payload = payload;
        }
    }

    /// The future of `key` is gone: free the slot now if it completed, else free it at its
    /// completion, keeping a handle of `file` (the file the future borrowed; `None` when the
    /// payload owns one) in it until then. Returns whether the operation is still in flight
    /// (then someone must reap it later).
    pub(super) fn abandon(&mut self, key: Key, file: Option<&File>) -> bool {
        let Some(slot) = self.ops.get_mut(key) else {
            return false;
        };
        if matches!(slot.state, State::Done(_)) {
            let payload = self.ops.remove(key);
            self.to_drop.push((payload, false));
            false
        } else {
            slot.state = State::Ignored;
            if let Some(file) = file {
                slot.payload.file.get_or_insert_with(|| file.clone());
            }
            true
        }
    }

    /// Cancels everything outstanding and reaps until every slot is freed or `deadline` passes;
    /// leaks what is still in flight then (I3). Returns the number leaked.
    pub(super) fn drain(&mut self, deadline: std::time::Instant, counters: &Counters) -> usize {
        let pending: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, slot)| !matches!(slot.state, State::Done(_)))
            .map(|(key, _)| key.user_data())
            .collect();
        if self.broken.is_none() {
            for user_data in pending {
                if self.reserve(1, counters).is_ok() {
                    self.push_cancel(user_data);
                }
            }
        }
        loop {
            self.submit_and_reap(counters);
            self.ops.retain(|slot| !matches!(slot.state, State::Done(_)));
            if self.ops.is_empty() {
                return 0;
            }
            if std::time::Instant::now() >= deadline {
                return self.ops.leak();
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

impl Payload {
    /// Nothing: a sync's (its future borrows the file), or a batch entry's until it is
    /// adopted.
    pub(super) fn none() -> Payload {
        Payload { bufs: Bufs::None, file: None }
    }

    /// Whether it holds nothing.
    #[inline]
    fn is_empty(&self) -> bool {
        matches!(self.bufs, Bufs::None) && self.file.is_none()
    }

    /// One buffer, on a file its future borrows.
    pub(super) fn one(buf: Buf<InFlight>) -> Payload {
        Payload { bufs: Bufs::One(buf), file: None }
    }

    /// One buffer, on a file whose handle the operation owns (a batch entry).
    pub(super) fn owned(file: File, buf: Buf<InFlight>) -> Payload {
        Payload { bufs: Bufs::One(buf), file: Some(file) }
    }

    /// A buffer list and its `iovec`s, on a file its future borrows.
    pub(super) fn many(bufs: Vec<Buf<InFlight>>, iovecs: IoVecs) -> Payload {
        Payload { bufs: Bufs::Many { bufs, _iovecs: iovecs }, file: None }
    }

    #[inline]
    pub(super) fn into_one(self) -> Buf<InFlight> {
        match self.bufs {
            Bufs::One(buf) => buf,
            _ => unreachable!("single-buffer operations carry one buffer"),
        }
    }

    pub(super) fn into_many(self) -> Vec<Buf<InFlight>> {
        match self.bufs {
            Bufs::Many { bufs, .. } => bufs,
            _ => unreachable!("vectored operations carry a buffer list"),
        }
    }
}

/// The operations of a ring by index: a slab of [`Slot`]s whose free entries keep an empty
/// payload, so that taking one writes the few fields that change, not a whole slot, and a
/// batch entry (pushed with an empty payload) never moves one. The slab crate's insert wrote
/// and moved the whole 96-byte slot: about 7% of a batch's instructions.
struct Slots {
    entries: Vec<Slot>,
    /// Indexes of the vacant entries, the last freed on top.
    free: Vec<u32>,
    live: usize,
    /// The last key's generation. Never 0, so that no key's `user_data` is 0.
    generation: u32,
}

impl Slots {
    fn with_capacity(n: usize) -> Slots {
        Slots { entries: Vec::with_capacity(n), free: Vec::with_capacity(n), live: 0, generation: 0 }
    }

    /// A new slot holding `payload`, waiting, and its key.
    #[inline]
    fn insert(&mut self, payload: Payload) -> Key {
        self.generation = self.generation.wrapping_add(1).max(1);
        let generation = self.generation;
        self.live += 1;
        let index = match self.free.pop() {
            Some(index) => {
                let slot = &mut self.entries[index as usize];
                slot.generation = generation;
                slot.state = State::Waiting(None);
                slot.thread = false;
                // A vacant slot's payload is empty, as is a batch entry's: forgetting either
                // drops nothing, and spares a call of the payload's drop glue.
                if payload.is_empty() {
                    std::mem::forget(payload);
                } else {
                    std::mem::forget(std::mem::replace(&mut slot.payload, payload));
                }
                index
            }
            None => {
                self.entries.push(Slot { generation, state: State::Waiting(None), payload, thread: false });
                (self.entries.len() - 1) as u32
            }
        };
        Key { index, generation }
    }

    /// The live slot of `key`.
    #[inline]
    fn get(&self, key: Key) -> Option<&Slot> {
        let slot = self.entries.get(key.index as usize)?;
        (slot.generation == key.generation && !matches!(slot.state, State::Vacant)).then_some(slot)
    }

    #[inline]
    fn get_mut(&mut self, key: Key) -> Option<&mut Slot> {
        let slot = self.entries.get_mut(key.index as usize)?;
        (slot.generation == key.generation && !matches!(slot.state, State::Vacant)).then_some(slot)
    }

    /// Frees the live slot of `key`; its payload.
    #[inline]
    fn remove(&mut self, key: Key) -> Payload {
        let slot = &mut self.entries[key.index as usize];
        debug_assert!(slot.generation == key.generation && !matches!(slot.state, State::Vacant));
        slot.state = State::Vacant;
        self.free.push(key.index);
        self.live -= 1;
        std::mem::replace(&mut slot.payload, Payload::none())
    }

    /// Frees the live slot of `key`, whose payload is empty (a batch entry's, which was never
    /// adopted); one that is not is dropped.
    #[inline]
    fn remove_empty(&mut self, key: Key) {
        let slot = &mut self.entries[key.index as usize];
        if !slot.payload.is_empty() {
            drop(self.remove(key));
            return;
        }
        // The payload stays (empty, as a vacant slot's is): nothing to move or drop.
        slot.state = State::Vacant;
        self.free.push(key.index);
        self.live -= 1;
    }

    fn iter(&self) -> impl Iterator<Item = (Key, &Slot)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, slot)| !matches!(slot.state, State::Vacant))
            .map(|(index, slot)| (Key { index: index as u32, generation: slot.generation }, slot))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.entries.iter_mut().filter(|slot| !matches!(slot.state, State::Vacant))
    }

    /// Frees every live slot `keep` refuses.
    fn retain(&mut self, mut keep: impl FnMut(&Slot) -> bool) {
        for index in 0..self.entries.len() {
            let slot = &self.entries[index];
            if !matches!(slot.state, State::Vacant) && !keep(slot) {
                let key = Key { index: index as u32, generation: slot.generation };
                drop(self.remove(key));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Forgets every live slot without dropping its payload (I3); how many there were.
    fn leak(&mut self) -> usize {
        let leaked = self.live;
        for slot in self.entries.drain(..) {
            std::mem::forget(slot);
        }
        self.free.clear();
        self.live = 0;
        leaked
    }
}

/// The keys of the entries pushed onto a ring's SQ, in push order, in an array at least the
/// SQ's size (a power of two). The SQ is FIFO, so the entries the kernel has not consumed yet
/// are the last `SubmissionQueue::len` pushed; no more than the SQ holds can ever be
/// unconsumed, so older keys may be overwritten. Pushing a key is one store, and nothing needs
/// trimming after a submit.
struct Queued {
    keys: Box<[Key]>,
    /// Keys pushed so far (wrapping): the next one goes to `pushed % keys.len()`.
    pushed: usize,
}

impl Queued {
    /// Room for the keys of an SQ of `sq` entries (the kernel's SQ sizes are powers of two;
    /// rounding up keeps the mask right whatever it reports).
    fn new(sq: usize) -> Queued {
        Queued { keys: vec![Key::from_user_data(0); sq.next_power_of_two()].into_boxed_slice(), pushed: 0 }
    }

    #[inline]
    fn push(&mut self, key: Key) {
        let mask = self.keys.len() - 1;
        self.keys[self.pushed & mask] = key;
        self.pushed = self.pushed.wrapping_add(1);
    }

    /// The key pushed `age` pushes before the last one (0: the last).
    fn last(&self, age: usize) -> Key {
        let mask = self.keys.len() - 1;
        self.keys[self.pushed.wrapping_sub(age + 1) & mask]
    }
}

/// The fields of a [`Ring`] a completion updates, borrowed apart from its `IoUring`.
struct Book<'a> {
    ops: &'a mut Slots,
    to_wake: &'a mut Vec<Waker>,
    to_drop: &'a mut Vec<(Payload, bool)>,
    reaped: &'a mut usize,
    settled: &'a mut usize,
    thread_waiters: &'a mut usize,
    ticked: &'a mut bool,
}

impl Book<'_> {
    /// Records the completion `result` of the operation `user_data`. Inlined into the CQ loop,
    /// its rare cases out of line: called out of line, it spent a fifth of its instructions
    /// saving and restoring registers.
    #[inline(always)]
    fn complete(&mut self, user_data: u64, result: i32) {
        if user_data == CANCEL {
            return;
        }
        if user_data == TICK {
            *self.ticked = true;
            return;
        }
        let key = Key::from_user_data(user_data);
        let Some(slot) = self.ops.get_mut(key) else {
            return unexpected(user_data, "completion for an unknown operation");
        };
        if std::mem::take(&mut slot.thread) {
            *self.thread_waiters -= 1;
        }
        match std::mem::replace(&mut slot.state, State::Done(result)) {
            State::Waiting(Some(waker)) => {
                self.to_wake.push(waker);
                *self.settled += 1;
            }
            State::Waiting(None) => *self.settled += 1,
            // The kernel is done with the memory: the buffers go back to the pool (I2), once the
            // lock is released.
            State::Ignored => self.abandoned(key),
            State::Done(_) => return unexpected(user_data, "second completion"),
            State::Vacant => unreachable!("`Slots::get_mut` returns live slots only"),
        }
        *self.reaped += 1;
    }

    /// An abandoned operation completed: its payload goes (see [`complete`](Self::complete)).
    #[cold]
    fn abandoned(&mut self, key: Key) {
        let payload = self.ops.remove(key);
        self.to_drop.push((payload, true));
    }
}

/// Logs a completion that matches no operation in flight.
#[cold]
fn unexpected(user_data: u64, what: &'static str) {
    tracing::error!(user_data, "{what}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::BufPool;

    /// A submit that fails for good must not strand what it left queued: those operations
    /// complete with the error, their buffers come back, and the ring refuses new work.
    #[test]
    fn a_broken_ring_fails_its_queued_operations() {
        let core = RingCore::new(IoUring::new(4).unwrap(), super::super::new_eventfd().unwrap());
        let pool = BufPool::new(2, 4096).unwrap();
        let file = File::from_std(tempfile::tempfile().unwrap(), false);
        let buf = pool.try_acquire().unwrap().into_in_flight();
        let entry = io_uring::opcode::Read::new(io_uring::types::Fd(file.fd()), buf.as_ptr(), 4096).build();
        let mut ring = core.lock();
        let key = ring.push(entry, Payload::owned(file.clone(), buf)).map_err(|(e, _)| e).unwrap();
        assert!(ring.take_done(key).is_none(), "queued, not submitted");
        ring.break_with(libc::EBADF);
        let (result, payload) = ring.take_done(key).expect("completed by the failure");
        assert_eq!(result, -libc::EBADF);
        drop(payload);
        assert_eq!(pool.available(), 2, "the buffer is back");
        let again = pool.try_acquire().unwrap().into_in_flight();
        let entry = io_uring::opcode::Nop::new().build();
        let refused = ring.push(entry, Payload::one(again));
        assert_eq!(refused.err().map(|(e, _)| e.raw_os_error()), Some(Some(libc::EBADF)));
        assert_eq!(ring.submit(&core.counters).unwrap_err().raw_os_error(), Some(libc::EBADF));
    }

    /// The queued keys wrap around an array of the SQ's size (rounded up to a power of two):
    /// after any number of pushes, the last ones are found by age, newest first.
    #[test]
    fn queued_keys_are_found_by_age_after_wrapping() {
        for sq in [1, 3, 4, 8] {
            let mut queued = Queued::new(sq);
            for n in 0..50u64 {
                queued.push(Key::from_user_data(n));
                for age in 0..sq.min(n as usize + 1) {
                    assert_eq!(queued.last(age), Key::from_user_data(n - age as u64), "sq {sq}, after {n}");
                }
            }
        }
    }

    /// Whoever reaps a tick while a sleeper is registered arms the next one; with nobody
    /// registered, the ticks stop. Without the first half, a sleeper whose tick another thread
    /// reaped just before its sleep began could sleep until some unrelated completion.
    #[test]
    fn a_reaped_tick_is_re_armed_while_anyone_sleeps() {
        let core = RingCore::new(IoUring::new(4).unwrap(), super::super::new_eventfd().unwrap());
        // Stands in for a thread between registering and entering its sleep.
        core.lock().sleepers += 1;
        core.lock().arm_tick(&core.counters).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut reaped = 0;
        while reaped < 3 {
            assert!(std::time::Instant::now() < deadline, "ticks stopped after {reaped}");
            std::thread::sleep(std::time::Duration::from_millis(2));
            let mut ring = core.lock();
            if !ring.uring.completion().is_empty() {
                ring.reap(&core.counters);
                reaped += 1;
                assert!(ring.tick_pending, "a tick was reaped and none re-armed");
            }
        }
        core.lock().sleepers -= 1;
        std::thread::sleep(std::time::Duration::from_millis(2));
        let mut ring = core.lock();
        ring.reap(&core.counters);
        assert!(!ring.tick_pending, "no sleeper, yet a tick was armed");
    }
}
