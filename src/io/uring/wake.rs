//! How a completion that arrives after its submit reaches the waiting future, on any runtime and
//! any thread, for the whole life of the engine.
//!
//! # Design
//!
//! Every ring signals its eventfd for completions that arrive outside a submit. Who watches it:
//!
//! - **The waiter's own runtime.** A future that goes pending inside a tokio runtime with an I/O
//!   driver makes sure its ring has a [`Watcher`] registered with *that* runtime's reactor (one
//!   per ring and runtime, created on first use). The watcher is itself a [`Waker`]: the reactor
//!   calls it when the eventfd fires, and it reaps the ring right there, on the reactor's thread,
//!   and wakes the futures whose operations completed. So a completion costs one wake-up of the
//!   waiting task and nothing else: no reaper task, no thread of ours, no hop through another
//!   CPU. A runtime that is dropped takes its watchers with it (their registration reports the
//!   shutdown and they retire); other runtimes are unaffected.
//! - **The engine's completion thread** for everything else: a future polled outside tokio, in a
//!   runtime built without `enable_io`, by `Handle::block_on` of a runtime that has shut down,
//!   or on a current-thread runtime outside its tasks (whose reactor runs only while someone is
//!   inside its `Runtime::block_on`, which the future cannot know). The thread belongs to the
//!   engine, starts on first need, blocks in `poll(2)` on the eventfds of the rings where an
//!   operation relies on it (see [`Thread`]) and stops when the engine is dropped.
//! - **The waiting thread itself**, under [`block_on`]: the thread sleeps inside
//!   `io_uring_enter` on the ring its operation went to, where the kernel runs the operation's
//!   completion work and ends the sleep, as a raw ring's loop waits. No reactor, no other
//!   thread, no wake-up of anyone else.
//!
//! No operation depends on the runtime that created the engine, or on any task staying alive:
//! the first design (one reaper task on the creating runtime) stalled every later operation
//! when that runtime was dropped or idle, and when a waker panicked inside it. Wakers are called
//! outside the ring lock, each behind `catch_unwind` (see `ring::Locked`).
//!
//! Why not always the thread: it would cost a second wake-up per completion (the thread, then
//! the task), which is most of the gap to a raw ring at queue depth 1. Why not the reactor
//! always: a runtime without an I/O driver has none, and tokio panics when asked to register
//! with it; that panic is caught (silently, see [`quietly`]) and the runtime remembered as one
//! without a reactor. In a build with `panic = "abort"` nothing can be caught, so every waiter
//! uses the completion thread there.

use std::cell::Cell;
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError, Weak};
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;

use super::Shared;
use super::ring::{Key, Locked};

/// Watches one ring's eventfd through one runtime's reactor.
pub(super) struct Watcher {
    runtime: tokio::runtime::Id,
    shared: Weak<Shared>,
    ring: usize,
    /// The registration; `None` when the runtime has no usable reactor (then waiters use the
    /// completion thread) or once it is gone.
    fd: Mutex<Option<AsyncFd<OwnedFd>>>,
    /// Whether the reactor holds this watcher as the eventfd's waker now.
    armed: AtomicBool,
    /// Set once `fd` is `None` for good: read on every wait without taking `fd`'s lock.
    gone: AtomicBool,
}

/// How a pending future on `ring` gets woken, chosen for the runtime polling it.
pub(super) enum Path {
    Reactor(Arc<Watcher>),
    Thread,
    /// The thread's [`block_on`] waits in this ring and reaps it when it wakes.
    Here,
}

/// A waiting future's place among the operations its thread's [`block_on`] waits for in its
/// ring (`Driving::waiting`), named by that `block_on`'s epoch. Given back with [`release`].
pub(super) struct Claim(u64);

/// The path for a future on ring `index` (locked, and reaped since the last look) that waits
/// for its own operations now, holding `claim` if it waited before: the thread itself if it
/// runs [`block_on`] of this engine and waits in no other ring, else [`path`]. The thread then
/// counts among the ring's sleepers until it has reaped the ring after its next sleep, or its
/// last claim is released. (A dropped future's operations take [`path`]: `block_on` may
/// return before they complete.)
pub(super) fn wait_path(
    shared: &Arc<Shared>,
    index: usize,
    ring: &mut Locked<'_>,
    claim: &mut Option<Claim>,
    keys: impl IntoIterator<Item = Key>,
) -> Path {
    let engine = Arc::as_ptr(shared) as usize;
    let here = DRIVING.with(|driving| {
        let mut now = driving.get();
        if now.engine != engine {
            return false;
        }
        if claim.as_ref().is_none_or(|c| c.0 != now.epoch) {
            // New, or a claim of a `block_on` that has returned (the future outlived it).
            if now.ring.is_some_and(|r| r != index) {
                return false;
            }
            now.ring = Some(index);
            now.waiting += 1;
            *claim = Some(Claim(now.epoch));
        }
        // A ring that cannot arm its tick (a broken one) is not slept in: `block_on` finds
        // the thread unregistered and parks instead.
        if !now.registered && ring.enter_sleep().is_ok() {
            now.registered = true;
        }
        now.slept = false;
        driving.set(now);
        true
    });
    if here {
        for key in keys {
            ring.rely_on_thread(key, false);
        }
        Path::Here
    } else {
        path(shared, index, ring, keys)
    }
}

/// Gives back `claim` of a future on ring `index` (locked) that finished or is dropped. With the
/// last claim of its `block_on` the thread stops counting among the ring's sleepers.
pub(super) fn release(ring: &mut Locked<'_>, claim: &mut Option<Claim>) {
    let Some(Claim(epoch)) = claim.take() else { return };
    DRIVING.with(|driving| {
        let mut now = driving.get();
        if now.epoch != epoch || now.waiting == 0 {
            return;
        }
        now.waiting -= 1;
        if now.waiting == 0 {
            if now.registered {
                ring.leave_sleep();
            }
            now = Driving { ring: None, registered: false, slept: false, ..now };
        }
        driving.set(now);
    });
}

/// The path for the operations `keys` of ring `index` (locked), whose future is polled or
/// dropped now; records which of them rely on the completion thread.
pub(super) fn path(
    shared: &Arc<Shared>,
    index: usize,
    ring: &mut Locked<'_>,
    keys: impl IntoIterator<Item = Key>,
) -> Path {
    let path = choose(shared, index, ring);
    let thread = matches!(path, Path::Thread);
    for key in keys {
        ring.rely_on_thread(key, thread);
    }
    path
}

/// Makes sure ring `index` is reaped while a future waits there for room, which only
/// completions free: a batch's first entries have no future waiting on them while the batch
/// waits for room for the rest, and the futures of the others may wait on a runtime that is not
/// running now. The waiting future's path reaps them: its runtime's watcher, or the completion
/// thread, which then relies on every operation in flight there (it keeps watching the ring
/// until they complete: the room future is polled again only once it has its permits).
pub(super) fn reap_for_room(shared: &Arc<Shared>, index: usize) {
    let mut ring = shared.rings[index].lock();
    let path = choose(shared, index, &mut ring);
    if matches!(path, Path::Thread) {
        ring.rely_on_thread_for_all();
    }
    drop(ring);
    arm(shared, index, path);
}

/// [`path`]'s choice.
fn choose(shared: &Arc<Shared>, index: usize, ring: &mut Locked<'_>) -> Path {
    // This thread runs the engine's `block_on`, which blocks it: a reactor it could reach may
    // be driven by nothing else (a current-thread runtime whose task called `block_on`).
    if DRIVING.with(Cell::get).engine == Arc::as_ptr(shared) as usize {
        return Path::Thread;
    }
    let Ok(handle) = Handle::try_current() else {
        return Path::Thread;
    };
    if unsure_driven(&handle) {
        return Path::Thread;
    }
    let id = handle.id();
    let watcher = match ring.watchers.iter().find(|w| w.runtime == id) {
        Some(watcher) => watcher.clone(),
        None => {
            ring.watchers.retain(|w| !w.retired());
            let fd = shared.rings[index].eventfd.try_clone().ok().and_then(register);
            let reactor = fd.is_some();
            if !reactor {
                tracing::debug!(runtime = %id, "no usable reactor here; completions come through the engine's thread");
            }
            let watcher = Arc::new(Watcher {
                runtime: id,
                shared: Arc::downgrade(shared),
                ring: index,
                gone: AtomicBool::new(!reactor),
                fd: Mutex::new(fd),
                armed: AtomicBool::new(false),
            });
            ring.watchers.push(watcher.clone());
            watcher
        }
    };
    if watcher.retired() { Path::Thread } else { Path::Reactor(watcher) }
}

/// Whether nothing guarantees that `handle`'s reactor runs while the polling future waits: a
/// current-thread runtime outside one of its tasks. Its reactor runs only inside
/// `Runtime::block_on`, and a future polled by `Handle::block_on` from another thread (or by
/// another executor under `Runtime::enter`) cannot tell whether anyone is in there; tokio says
/// `Handle::block_on` drives no I/O on such a runtime. A task of that runtime runs only while
/// its `block_on` does, so the reactor runs for it.
fn unsure_driven(handle: &Handle) -> bool {
    handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread && tokio::task::try_id().is_none()
}

/// Makes sure whoever `path` names will wake the future waiting on ring `index` (called after
/// the ring's lock is released: arming a watcher reaps).
pub(super) fn arm(shared: &Arc<Shared>, index: usize, path: Path) {
    match path {
        Path::Reactor(watcher) => watcher.arm(),
        Path::Thread => shared.thread.watch(shared, index),
        Path::Here => {}
    }
}

/// Registers the eventfd with the current runtime's reactor, if it has one.
fn register(fd: OwnedFd) -> Option<AsyncFd<OwnedFd>> {
    if cfg!(not(panic = "unwind")) {
        return None;
    }
    // SAFETY: `OwnedFd` owns the descriptor, so it stays open and refers to the same eventfd for
    // the whole life of the `AsyncFd`, which takes ownership of it.
    let attempt = || unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
    quietly(attempt)?.ok()
}

impl Watcher {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<AsyncFd<OwnedFd>>> {
        self.fd.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this runtime has no reactor (any more).
    fn retired(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Drops the registration, under its lock.
    fn forget(&self, fd: &mut Option<AsyncFd<OwnedFd>>) {
        *fd = None;
        self.gone.store(true, Ordering::Release);
    }

    /// Makes sure the reactor will call this watcher at the next signal.
    pub(super) fn arm(self: &Arc<Self>) {
        if !self.armed.load(Ordering::Acquire) {
            self.turn();
        }
    }

    /// Reaps while the eventfd is ready, then registers as its waker.
    ///
    /// Readiness is cleared before reaping: a signal after the clear sets it again, and the
    /// next `poll_read_ready` returns it, so no completion slips between reap and re-arm.
    ///
    /// A watcher whose runtime is gone hands its ring to the engine's completion thread if
    /// operations are still in flight there: the futures the runtime dropped on its way out
    /// abandoned theirs, which must still be reaped (their buffers come back then), and no
    /// future is left to choose another path for them.
    fn turn(self: &Arc<Self>) {
        let Some(shared) = self.shared.upgrade() else { return };
        let waker = Waker::from(self.clone());
        loop {
            let ready = {
                let mut fd = self.lock();
                let Some(registration) = fd.as_ref() else {
                    drop(fd);
                    return self.hand_over(&shared);
                };
                // Outside the polling task's cooperative budget: this is the engine's upkeep,
                // not the task's work, and with the budget spent tokio would refuse the poll and
                // wake this watcher at once, from inside this call, under this lock.
                let ready = std::future::poll_fn(|cx| {
                    registration.poll_read_ready(cx).map(|ready| ready.map(|mut guard| guard.clear_ready()))
                });
                match std::pin::pin!(tokio::task::unconstrained(ready)).poll(&mut Context::from_waker(&waker)) {
                    Poll::Pending => {
                        self.armed.store(true, Ordering::Release);
                        return;
                    }
                    Poll::Ready(Ok(())) => true,
                    Poll::Ready(Err(_)) => {
                        // The runtime is shutting down: retire. Its waiters are dropped with
                        // it; a future that outlives it picks its path again when next polled.
                        self.forget(&mut fd);
                        false
                    }
                }
            };
            let core = &shared.rings[self.ring];
            let mut ring = core.lock();
            ring.progress(&core.counters);
            drop(ring);
            if !ready {
                return self.hand_over(&shared);
            }
        }
    }

    /// The runtime is gone: hands this ring's operations in flight to the completion thread
    /// (see [`turn`](Self::turn)).
    fn hand_over(&self, shared: &Arc<Shared>) {
        if shared.rings[self.ring].lock().rely_on_thread_for_all() {
            tracing::debug!(
                ring = self.ring,
                "runtime gone with operations in flight; the completion thread takes over"
            );
            shared.thread.watch(shared, self.ring);
        }
    }

    /// Drops the registration (the engine is going away); the reactor forgets this waker.
    pub(super) fn retire(&self) {
        self.forget(&mut self.lock());
    }
}

impl Wake for Watcher {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.armed.store(false, Ordering::Release);
        self.turn();
    }
}

thread_local! {
    /// Set while [`quietly`] runs its closure on this thread.
    static PROBING: Cell<bool> = const { Cell::new(false) };
    /// What [`block_on`] drives on this thread, if anything.
    static DRIVING: Cell<Driving> = const { Cell::new(Driving::NONE) };
    /// The waker of this thread's [`block_on`], kept between calls (`None` while one runs).
    static PARKED: Cell<Option<(Arc<Parked>, Waker)>> = const { Cell::new(None) };
    /// The next epoch of a [`block_on`] on this thread.
    static EPOCH: Cell<u64> = const { Cell::new(0) };
}

/// Epochs of different threads never meet: each thread takes its own range of 2^32.
static EPOCHS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 32);

/// What the [`block_on`] running on this thread drives.
///
/// Its operations that wait in the ring (holding a [`Claim`]) all wait in one ring, where the
/// thread sleeps while any is in flight; with none, it parks. The thread enters the ring's
/// sleepers when an operation starts waiting there and leaves them when the last one is
/// released, so a sleep that a completion ends costs no lock before it or after it: the
/// operation's own poll reaps, takes its result and leaves, under one lock.
#[derive(Clone, Copy)]
struct Driving {
    /// The engine (its `Shared`'s address), 0 for none.
    engine: usize,
    /// Names this `block_on` among every one of the process.
    epoch: u64,
    /// The ring its waiting operations went to, while `waiting > 0`.
    ring: Option<usize>,
    /// Claims held.
    waiting: usize,
    /// Counted among `ring`'s sleepers.
    registered: bool,
    /// Woke from a sleep in `ring` and has not reaped it since: it must before sleeping again
    /// (the completions left in the CQ would end the next sleep at once).
    slept: bool,
}

impl Driving {
    const NONE: Driving = Driving { engine: 0, epoch: 0, ring: None, waiting: 0, registered: false, slept: false };
}

/// How long [`block_on`] parks when its ring cannot be slept in before it polls again.
const TICK: std::time::Duration = std::time::Duration::from_millis(1);

/// Runs `future` to completion on this thread: see `UringEngine::block_on`.
pub(super) fn block_on<F: Future>(shared: &Arc<Shared>, future: F) -> F::Output {
    /// Leaves the sleepers and puts back what the thread drove before, also when `future`
    /// panics.
    struct Restore<'a> {
        shared: &'a Arc<Shared>,
        outer: Driving,
        parked: Option<(Arc<Parked>, Waker)>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let now = DRIVING.with(|driving| driving.replace(self.outer));
            if let (true, Some(index)) = (now.registered, now.ring) {
                self.shared.rings[index].lock().leave_sleep();
            }
            PARKED.with(|cell| {
                if let Some(parked) = self.parked.take() {
                    // A wake meant for an outer `block_on` may have been taken by this one.
                    if self.outer.engine != 0 {
                        parked.0.woken.store(true, Ordering::Release);
                    }
                    cell.set(Some(parked));
                }
            });
        }
    }
    let mut outer = DRIVING.with(Cell::get);
    if outer.registered {
        // Inside an outer `block_on`'s poll: it leaves its ring's sleepers while this one runs,
        // so that ring's eventfd is not kept quiet meanwhile, and enters them again when it
        // next sleeps.
        outer.leave();
    }
    let parked = PARKED.with(Cell::take).unwrap_or_else(|| {
        let parked = Arc::new(Parked { woken: AtomicBool::new(false), thread: std::thread::current() });
        (parked.clone(), Waker::from(parked))
    });
    parked.0.woken.store(false, Ordering::Relaxed);
    let epoch = EPOCH.with(|next| {
        let mut epoch = next.get();
        if epoch & 0xFFFF_FFFF == 0 {
            epoch = EPOCHS.fetch_add(1 << 32, Ordering::Relaxed);
        }
        next.set(epoch + 1);
        epoch
    });
    let engine = Arc::as_ptr(shared) as usize;
    DRIVING.with(|driving| driving.set(Driving { engine, epoch, ..Driving::NONE }));
    let restore = Restore { shared, outer, parked: Some(parked) };
    let (woken, waker) = match &restore.parked {
        Some((parked, waker)) => (&parked.woken, waker),
        None => unreachable!("set above"),
    };
    let mut cx = Context::from_waker(waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        let now = DRIVING.with(Cell::get);
        if let (true, Some(index)) = (now.slept, now.ring) {
            let core = &shared.rings[index];
            core.lock().progress(&core.counters);
            DRIVING.with(|driving| driving.set(Driving { slept: false, ..now }));
        }
        if woken.swap(false, Ordering::Acquire) {
            continue;
        }
        sleep(shared);
    }
}

/// Waits for a wake-up of the running [`block_on`]: in its ring while any of its operations
/// waits there, else parked.
fn sleep(shared: &Arc<Shared>) {
    let mut now = DRIVING.with(Cell::get);
    let Some(index) = now.ring else {
        return std::thread::park();
    };
    let core = &shared.rings[index];
    if !now.registered {
        now.registered = core.lock().enter_sleep().is_ok();
    }
    // A ring that cannot arm its tick (a broken one), or whose wait fails, is not spun on.
    if !now.registered || core.sleep().is_err() {
        std::thread::park_timeout(TICK);
    }
    now.slept = now.registered;
    DRIVING.with(|driving| driving.set(now));
}

impl Driving {
    /// Leaves the sleepers of its ring, for a `block_on` nested in this one's poll.
    fn leave(&mut self) {
        if let (true, Some(index)) = (self.registered, self.ring) {
            // SAFETY: `engine` is the address of the `Shared` of the `block_on` this state
            // belongs to, which borrows an `Arc` of it for its whole run; the nested `block_on`
            // calling this runs inside that one's poll, on this thread, so it is alive.
            let shared = unsafe { &*(self.engine as *const Shared) };
            shared.rings[index].lock().leave_sleep();
        }
        self.registered = false;
        self.slept = false;
    }
}

/// The waker of [`block_on`]: marks the future woken and unparks its thread.
struct Parked {
    woken: AtomicBool,
    thread: std::thread::Thread,
}

impl Wake for Parked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Runs `f`, catching a panic without printing it. Used for one thing: asking tokio to register
/// with a runtime that may have no I/O driver, where tokio panics instead of returning an error.
/// The process's panic hook is wrapped once so that panics on this thread during `f` are not
/// reported; every other panic goes to the previous hook as before.
fn quietly<T>(f: impl FnOnce() -> T) -> Option<T> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !PROBING.with(Cell::get) {
                previous(info);
            }
        }));
    });
    PROBING.with(|p| p.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    PROBING.with(|p| p.set(false));
    result.ok()
}

/// The engine's completion thread, for waiters without a reactor.
///
/// It polls the eventfds of the rings it *watches*: a ring is watched from the moment an
/// operation there relies on the thread (`Ring::rely_on_thread`) until the thread wakes for it
/// and finds none did. A thread that watched every ring for good once started doubled the
/// wake-ups of every later operation woken through a reactor: on a current-thread runtime its
/// tasks' O_DIRECT reads at depth 1 went from 1.07x to 1.16x the raw ring's latency after one
/// read had waited through the thread (the thread reaped first and woke the task from another
/// thread). A waiter that needs the thread again while its ring is unwatched kicks it.
pub(super) struct Thread {
    /// Written to stop the thread.
    stop: OwnedFd,
    /// Written when a ring becomes watched, so that the thread polls it too.
    kick: OwnedFd,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
    started: AtomicBool,
    /// Times it woke for a ring and reaped it.
    reaps: AtomicU64,
}

impl Thread {
    pub(super) fn new() -> std::io::Result<Thread> {
        Ok(Thread {
            stop: super::new_eventfd()?,
            kick: super::new_eventfd()?,
            handle: Mutex::new(None),
            started: AtomicBool::new(false),
            reaps: AtomicU64::new(0),
        })
    }

    /// Makes sure the thread runs and polls ring `index`, where an operation now relies on it.
    pub(super) fn watch(&self, shared: &Arc<Shared>, index: usize) {
        // Kicked even while it starts: a thread that has just read the watched rings must read
        // them again (the kick eventfd exists before the thread does).
        if !shared.rings[index].watched.swap(true, Ordering::AcqRel) {
            signal(&self.kick);
        }
        if !self.started.load(Ordering::Acquire) {
            self.start(shared);
        }
    }

    /// Starts the thread unless it runs.
    fn start(&self, shared: &Arc<Shared>) {
        let mut handle = self.handle.lock().unwrap_or_else(PoisonError::into_inner);
        if handle.is_some() {
            return;
        }
        let fds: std::io::Result<Vec<OwnedFd>> = [&self.stop, &self.kick]
            .into_iter()
            .chain(shared.rings.iter().map(|ring| &ring.eventfd))
            .map(OwnedFd::try_clone)
            .collect();
        let weak = Arc::downgrade(shared);
        let spawned = fds.and_then(|fds| {
            std::thread::Builder::new().name("ferrite-io-completions".into()).spawn(move || run(weak, fds))
        });
        match spawned {
            Ok(joined) => {
                *handle = Some(joined);
                self.started.store(true, Ordering::Release);
                tracing::debug!("ferrite-io completion thread started");
            }
            // Waiters are still woken by any later poll or submit on the ring; say why not sooner.
            Err(e) => tracing::error!(error = %e, "cannot start the ferrite-io completion thread"),
        }
    }

    /// Times the thread woke for a ring and reaped it.
    pub(super) fn reaps(&self) -> u64 {
        self.reaps.load(Ordering::Relaxed)
    }

    /// Whether the thread was started.
    pub(super) fn running(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Stops the thread and waits for it (it wakes at once on the stop signal).
    pub(super) fn stop(&self) {
        let handle = self.handle.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle {
            signal(&self.stop);
            let _ = handle.join();
        }
    }
}

/// The completion thread: waits for the stop signal, a kick, or the eventfd of any ring it
/// watches, and reaps. `fds` holds the stop and kick eventfds, then one per ring.
fn run(shared: Weak<Shared>, fds: Vec<OwnedFd>) {
    const STOP: usize = 0;
    const KICK: usize = 1;
    let pollfd = |fd: &OwnedFd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // Reused: the watched rings' indices, and the descriptors polled (stop, kick, then theirs).
    let (mut rings, mut polls) = (Vec::with_capacity(fds.len()), Vec::with_capacity(fds.len()));
    loop {
        {
            let Some(shared) = shared.upgrade() else { return };
            rings.clear();
            rings.extend((0..shared.rings.len()).filter(|&i| shared.rings[i].watched.load(Ordering::Acquire)));
        }
        polls.clear();
        polls.extend([pollfd(&fds[STOP]), pollfd(&fds[KICK])]);
        polls.extend(rings.iter().map(|&i| pollfd(&fds[2 + i])));
        // SAFETY: `polls` is a live, exclusively borrowed array of `polls.len()` pollfds, and
        // every descriptor in it is owned by `fds`, which outlives the call.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %std::io::Error::last_os_error(), "completion thread: poll failed");
            return;
        }
        if polls[STOP].revents != 0 {
            return;
        }
        if polls[KICK].revents != 0 {
            drain(&fds[KICK]);
        }
        let Some(shared) = shared.upgrade() else { return };
        for (&index, poll) in rings.iter().zip(&polls[2..]) {
            if poll.revents == 0 {
                continue;
            }
            // Reset the counter first (poll is level-triggered); a signal after this sets it
            // again, so nothing reaped later than this read can be missed.
            drain(&fds[2 + index]);
            let core = &shared.rings[index];
            let mut ring = core.lock();
            // No operation relied on the thread: a reactor's waiters were signalled. Unwatch
            // the ring, under its lock, so that a waiter that relies on the thread after this
            // finds it unwatched and kicks.
            if ring.thread_waiters() == 0 {
                core.watched.store(false, Ordering::Release);
            }
            ring.progress(&core.counters);
            shared.thread.reaps.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads an eventfd's counter back to zero.
fn drain(fd: &OwnedFd) {
    let mut counter = 0u64;
    // SAFETY: reads 8 bytes into `counter`, a live local of 8 bytes; the descriptor is open for
    // the borrow of `fd`. A non-blocking eventfd with a zero counter returns EAGAIN, which is fine.
    let _ = unsafe { libc::read(fd.as_raw_fd(), (&raw mut counter).cast(), 8) };
}

/// Adds one to an eventfd's counter.
fn signal(fd: &OwnedFd) {
    let one = 1u64;
    // SAFETY: writes the 8 bytes of `one`, a live local; the descriptor is open for the borrow.
    let _ = unsafe { libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8) };
}
