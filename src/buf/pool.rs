//! [`BufPool`]: one anonymous `memmap2` arena cut into equal, 4096-aligned slots.
//!
//! This file and the ring code are the only places that hold raw pointers into buffer memory.
//! Slot `i` starts at `base + i * slot_size` for the life of the arena ([I4](super#invariants)).

use std::future::Future;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use memmap2::MmapMut;
use tokio::sync::Notify;

use super::{Buf, Free, clock};
use crate::config::{BUFFER_ALIGN, MAX_BUFFER_SIZE, MAX_REGISTERED_BUFFERS};
use crate::error::{Error, Result};

/// A fixed set of equal, 4096-aligned buffers in one memory map: the engine's fixed-buffer table
/// on io_uring, and the memory that needs no alignment check for `O_DIRECT`.
///
/// Cloning is cheap and shares the pool. Every [`Buf`] keeps the arena alive, so the memory is
/// unmapped only after the last buffer (including those an engine holds in flight) is gone.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let pool = ferrite_io::BufPool::new(2, 4096)?;
/// let mut buf = pool.acquire().await;
/// buf.copy_from_slice(&[7; 4096]);
/// assert_eq!(pool.available(), 1);
/// drop(buf); // back to the pool
/// assert_eq!(pool.available(), 2);
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct BufPool {
    inner: Arc<PoolInner>,
}

pub(crate) struct PoolInner {
    id: u64,
    base: NonNull<u8>,
    slot_size: usize,
    slots: u32,
    free: Mutex<Vec<u32>>,
    returned: Notify,
    /// Acquires that had to wait (`BufPool::waits`).
    waits: AtomicU64,
    /// Owns the mapping `base` points into; unmapped when the last `Arc<PoolInner>` drops.
    _arena: MmapMut,
}

// SAFETY: `base` points into `_arena`, which the struct owns and never remaps (I4). The bytes
// behind it are only reached through a `Buf` that owns its slot exclusively (I1), so sharing the
// pool between threads shares no unsynchronised access; `free` is behind a mutex.
unsafe impl Send for PoolInner {}
// SAFETY: as for `Send`: `&PoolInner` exposes no byte access by itself, only through an owning `Buf`.
unsafe impl Sync for PoolInner {}

/// Pool ids start at 1: 0 is the `pool_id` of caller memory, which no pool can match.
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// How long `acquire` waits before it warns.
const LONG_WAIT: Duration = Duration::from_secs(1);

impl BufPool {
    /// Maps `slots * slot_size` bytes of anonymous memory and cuts it into `slots` buffers.
    ///
    /// The memory is zeroed when mapped. A buffer that comes back to the pool keeps its bytes,
    /// so the next `acquire` may see what its last user left there (always initialized, never
    /// uninitialized memory): zero it when that matters.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `slots` is 0 or above 16384, or `slot_size` is not a non-zero
    /// multiple of 4096 of at most 1 GiB; [`Error::Map`] when the map fails.
    ///
    /// ```
    /// let pool = ferrite_io::BufPool::new(16, 65536)?;
    /// assert_eq!((pool.capacity(), pool.buffer_size()), (16, 65536));
    /// assert!(ferrite_io::BufPool::new(16, 1000).is_err()); // not a multiple of 4096
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    pub fn new(slots: u32, slot_size: usize) -> Result<Self> {
        if slots == 0 || slots > MAX_REGISTERED_BUFFERS {
            return Err(Error::Config {
                key: "io.registered_buffers",
                value: slots.to_string(),
                expected: "an integer in 1..=16384",
            });
        }
        if slot_size == 0 || slot_size % BUFFER_ALIGN != 0 || slot_size > MAX_BUFFER_SIZE {
            return Err(Error::Config {
                key: "io.buffer_size",
                value: slot_size.to_string(),
                expected: "a non-zero multiple of 4096 of at most 1073741824",
            });
        }
        let len = slot_size * slots as usize;
        let mut arena = MmapMut::map_anon(len).map_err(Error::Map)?;
        let base = NonNull::from(&mut arena[..]).cast::<u8>();
        debug_assert_eq!(base.as_ptr() as usize % BUFFER_ALIGN, 0, "mmap is page aligned");
        Ok(BufPool {
            inner: Arc::new(PoolInner {
                id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
                base,
                slot_size,
                slots,
                // Pop from the end: slot 0 goes out first.
                free: Mutex::new((0..slots).rev().collect()),
                returned: Notify::new(),
                waits: AtomicU64::new(0),
                _arena: arena,
            }),
        })
    }

    /// A buffer, waiting while all are out (backpressure: the waiter sleeps until one returns).
    ///
    /// A wait that lasts over a second logs one `tracing::warn!` naming the pool, and every
    /// acquire that had to wait counts in [`waits`](Self::waits). Use
    /// [`acquire_timeout`](Self::acquire_timeout) to bound the wait.
    ///
    /// Needs no runtime: it waits the same way in a tokio runtime with or without its time
    /// driver, under another executor, and with none (the warning's deadline is kept by the
    /// crate's own clock thread, not tokio's timer).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let pool = ferrite_io::BufPool::new(1, 4096)?;
    /// let held = pool.acquire().await;
    /// let waiter = tokio::spawn({
    ///     let pool = pool.clone();
    ///     async move { pool.acquire().await.index() }
    /// });
    /// drop(held); // the waiter gets this slot
    /// assert_eq!(waiter.await.unwrap(), 0);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    pub async fn acquire(&self) -> Buf<Free> {
        match self.wait(None).await {
            Some(buf) => buf,
            None => unreachable!("a wait without a deadline ends only with a buffer"),
        }
    }

    /// A buffer, or `None` when none came back within `timeout`.
    ///
    /// Needs no runtime, as [`acquire`](Self::acquire): the deadline is kept by the crate's own
    /// clock thread, so it works without tokio's time driver too. (On a system that refuses to
    /// start that thread, it does not wait: `None` unless a buffer is free at once.)
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = ferrite_io::BufPool::new(1, 4096)?;
    /// // A runtime without timers, and none at all: both wait and time out.
    /// let no_timers = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let held = no_timers.block_on(pool.acquire_timeout(Duration::from_millis(10)));
    /// assert!(held.is_some());
    /// assert!(no_timers.block_on(pool.acquire_timeout(Duration::from_millis(10))).is_none()); // all out
    /// let elsewhere = std::thread::spawn(move || {
    ///     let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    ///     let mut cx = std::task::Context::from_waker(&waker);
    ///     let mut wait = std::pin::pin!(pool.acquire_timeout(Duration::from_millis(10)));
    ///     loop {
    ///         match wait.as_mut().poll(&mut cx) {
    ///             std::task::Poll::Ready(got) => return got.is_none(),
    ///             std::task::Poll::Pending => std::thread::park(),
    ///         }
    ///     }
    /// });
    /// assert!(elsewhere.join().unwrap());
    /// # use std::future::Future;
    /// # struct Unpark(std::thread::Thread);
    /// # impl std::task::Wake for Unpark {
    /// #     fn wake(self: std::sync::Arc<Self>) { self.0.unpark() }
    /// # }
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    pub async fn acquire_timeout(&self, timeout: Duration) -> Option<Buf<Free>> {
        // A timeout past the clock's range (`Duration::MAX`) is no deadline at all.
        self.wait(Instant::now().checked_add(timeout)).await
    }

    /// A buffer, waiting until `deadline` (if any) for one to come back.
    async fn wait(&self, deadline: Option<Instant>) -> Option<Buf<Free>> {
        if let Some(buf) = self.try_acquire() {
            return Some(buf);
        }
        self.inner.waits.fetch_add(1, Ordering::Relaxed);
        let warn_at = Instant::now() + LONG_WAIT;
        // Rung by the clock at either deadline; each wake-up looks at the time.
        let alarms = Arc::new(Notify::new());
        let warning = clock::alarm(warn_at, alarms.clone());
        let mut warned = warning.is_none();
        let _expiry = match deadline.map(|at| clock::alarm(at, alarms.clone())) {
            Some(None) => return self.try_acquire(), // no clock: nothing would end the wait
            expiry => expiry,
        };
        loop {
            let returned = self.inner.returned.notified();
            tokio::pin!(returned);
            // Register before looking, so a buffer returned in between wakes us.
            returned.as_mut().enable();
            if let Some(buf) = self.try_acquire() {
                return Some(buf);
            }
            let now = Instant::now();
            if deadline.is_some_and(|at| now >= at) {
                return None;
            }
            if !warned && now >= warn_at {
                warned = true;
                tracing::warn!(
                    pool = self.inner.id,
                    buffers = self.inner.slots,
                    waited_ms = LONG_WAIT.as_millis() as u64,
                    "BufPool::acquire is waiting: every buffer is out (return buffers sooner, hold fewer, \
                     or make the pool larger)"
                );
            }
            let rung = alarms.notified();
            tokio::pin!(rung);
            std::future::poll_fn(|cx| match (returned.as_mut().poll(cx), rung.as_mut().poll(cx)) {
                (Poll::Pending, Poll::Pending) => Poll::Pending,
                _ => Poll::Ready(()),
            })
            .await;
        }
    }

    /// How many acquires so far found every buffer out and had to wait (including those that
    /// then timed out). A relaxed counter, bumped only on the waiting path.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let pool = ferrite_io::BufPool::new(1, 4096)?;
    /// let _held = pool.acquire().await;
    /// assert_eq!(pool.waits(), 0);
    /// let _ = pool.acquire_timeout(std::time::Duration::from_millis(1)).await;
    /// assert_eq!(pool.waits(), 1);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    pub fn waits(&self) -> u64 {
        self.inner.waits.load(Ordering::Relaxed)
    }

    /// A buffer if one is free now.
    ///
    /// ```
    /// let pool = ferrite_io::BufPool::new(1, 4096)?;
    /// let held = pool.try_acquire().expect("one is free");
    /// assert!(pool.try_acquire().is_none());
    /// # drop(held);
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Option<Buf<Free>> {
        let index = self.inner.lock_free().pop()?;
        Some(Buf::new(self.inner.clone(), index))
    }

    /// Buffers in the pool now.
    ///
    /// ```
    /// let pool = ferrite_io::BufPool::new(3, 4096)?;
    /// let _held = pool.try_acquire();
    /// assert_eq!(pool.available(), 2);
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    pub fn available(&self) -> usize {
        self.inner.lock_free().len()
    }

    /// Buffers the pool holds in all (free plus handed out).
    ///
    /// ```
    /// assert_eq!(ferrite_io::BufPool::new(3, 4096)?.capacity(), 3);
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.inner.slots as usize
    }

    /// Bytes per buffer.
    ///
    /// ```
    /// assert_eq!(ferrite_io::BufPool::new(3, 8192)?.buffer_size(), 8192);
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    pub fn buffer_size(&self) -> usize {
        self.inner.slot_size
    }

    /// This pool's process-unique id (never 0), which engines use to check registration.
    ///
    /// ```
    /// let (a, b) = (ferrite_io::BufPool::new(1, 4096)?, ferrite_io::BufPool::new(1, 4096)?);
    /// assert_ne!(a.id(), b.id());
    /// assert_eq!(a.id(), a.clone().id()); // clones share the pool
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    #[inline]
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// One `iovec` per slot, in slot order, for `io_uring_register_buffers`: slot `i` becomes
    /// fixed buffer `i`.
    #[cfg(uring)]
    pub(crate) fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.inner.slots)
            .map(|i| libc::iovec { iov_base: self.inner.slot_ptr(i).cast(), iov_len: self.inner.slot_size })
            .collect()
    }
}

impl std::fmt::Debug for BufPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufPool")
            .field("id", &self.inner.id)
            .field("capacity", &self.capacity())
            .field("available", &self.available())
            .field("buffer_size", &self.inner.slot_size)
            .field("waits", &self.waits())
            .finish()
    }
}

impl PoolInner {
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    #[inline]
    pub(crate) fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Start of slot `index`. The pointer is valid for `slot_size` bytes while the arena lives.
    #[inline]
    pub(crate) fn slot_ptr(&self, index: u32) -> *mut u8 {
        debug_assert!(index < self.slots);
        // In bounds for every `index < slots`: the arena is `slots * slot_size` bytes. Wrapping
        // arithmetic keeps this a safe computation; only dereferences need `unsafe`.
        self.base.as_ptr().wrapping_add(index as usize * self.slot_size)
    }

    /// Takes slot `index` back. Called only from `Buf`'s `Drop`, once per handle (I1).
    pub(crate) fn release(&self, index: u32) {
        self.lock_free().push(index);
        self.returned.notify_one();
    }

    fn lock_free(&self) -> MutexGuard<'_, Vec<u32>> {
        // The list is a plain Vec that no panic can leave half-updated.
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
