//! Owned buffers whose lifecycle is a type: [`Buf<S>`](Buf) with the states [`Free`],
//! [`Registered`], [`InFlight`] and [`Completed`], carved from a [`BufPool`] or made from the
//! caller's own memory (`Vec<u8>`, `Box<[u8]>`, `bytes::BytesMut`).
//!
//! ```text
//!  BufPool::acquire         engine.write_at(&file, buf, off)          completion (CQE)
//!  Buf::from(vec)
//!  ---------------> Free ---------------------------------> InFlight ---------------> Completed
//!                    |  ^        (the buffer moves into the          (engine owns      |  bytes +
//!  try_into_registered  into_free  engine; the caller holds           the memory)      |  result
//!   (pool slots only)|  |        only a future)                                        |
//!                    v  |                                                              |
//!                 Registered --- read_fixed_at / write_fixed_at ---------^             |
//!                    ^                                                                  |
//!                    +------- into_free() / try_into_registered() ---------------------+
//!                             drop: a slot returns to its pool, caller memory is freed
//!                             into_bytes(): a `Bytes` that returns the slot when dropped
//! ```
//!
//! # Types
//!
//! Compiler errors about misuse name these: `Buf<InFlight>` has no byte access
//! (`Deref`/`DerefMut` are missing); `Buf<Completed>` does not implement [`Submittable`] (recycle
//! it with `into_free` or `try_into_registered` first); fixed-buffer operations take only
//! `Buf<Registered>`, and only a pool slot can become `Registered` (a `Buf` made from a `Vec`
//! does plain operations only). The markers are sealed and cannot be constructed outside this
//! crate.
//!
//! # Views
//!
//! A buffer's *view* is the range of its memory the next operation covers:
//! [`slice`](Buf::slice) selects `a..b`, [`set_len`](Buf::set_len) moves the end,
//! [`unslice`](Buf::unslice) selects everything again. `Deref` shows the view. A view is the
//! buffer itself, narrowed: it owns the memory, so it can neither outlive nor alias it.
//!
//! # Layout
//!
//! Every `Buf<S>` is three words: where the memory is (an `Arc` to the pool and a `u32` slot
//! index, or a `Box` of caller memory) and the view (`u32` start and `u32` length). The markers
//! are zero-sized, so a transition is a move of those three words and nothing else.
//! `static_assertions` checks this below. Caller memory is therefore limited to `u32::MAX` bytes
//! per buffer (Linux moves at most 2 GiB per read or write anyway).
//!
//! # Invariants
//!
//! The `// SAFETY:` comments in this crate cite these by number.
//!
//! - **I1, one handle per memory.** A slot index is either in the pool's free list or owned by
//!   exactly one `Buf`, and caller memory is owned by exactly one `Buf`. Only
//!   `BufPool::try_acquire` and the `From` conversions create a handle, and only `Buf`'s `Drop`
//!   (or a consuming conversion out, `into_bytes`, `into_vec`) gives the memory back;
//!   transitions move the handle without dropping it.
//! - **I2, the kernel touches only in-flight memory.** An engine gives a buffer's address to the
//!   kernel (or to a blocking thread) only while it owns the `Buf<InFlight>`, and turns it into
//!   `Completed` only after the completion arrived. A future dropped before then leaves the
//!   `Buf<InFlight>` with the engine until the completion arrives.
//! - **I3, the memory outlives every handle and every operation.** Each slot `Buf` holds an
//!   `Arc` to its pool, and a caller-memory `Buf` owns its memory; in-flight buffers are held by
//!   the engine, and an engine drains (or, past its deadline, leaks) every outstanding operation
//!   before it lets them go.
//! - **I4, memory never moves.** The arena is mapped once and never remapped; slot `i` is at
//!   `base + i * slot_size` until the last handle is gone. Caller memory is never grown or
//!   split while a `Buf` owns it, so its bytes stay where they were handed over.
//! - **I5, every byte is initialized.** The arena is an anonymous mapping, zero-filled by the
//!   kernel, and caller memory counts only its initialized length (`Vec::len`, not its
//!   capacity), so any range of a buffer is a valid `[u8]`.

pub(crate) mod clock;
mod owned;
mod pool;
mod state;

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Bound, Deref, DerefMut, Range, RangeBounds};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use owned::Owned;
pub use pool::BufPool;
pub(crate) use pool::PoolInner;
pub use state::{BufState, Completed, Free, InFlight, Readable, Registered, Submittable};

use crate::error::{Error, Result};

/// An owned buffer in state `S`: a slot of a [`BufPool`], or memory the caller handed over
/// (`Vec<u8>`, `Box<[u8]>`, `bytes::BytesMut`, through `From`).
///
/// The buffer's *view* (`len()` bytes from [`range()`](Self::range)`.start`) is what the next
/// operation covers: writes send the view, reads ask for up to `len()` bytes into it. A fresh
/// buffer's view is all of it. After an operation the `Buf<Completed>`'s length is the number of
/// bytes the operation transferred; after an error it is the length that was submitted (and
/// `read_exact_at`'s end-of-file error leaves the bytes that did arrive).
///
/// ```
/// use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
/// let file = engine.open(dir.path().join("log"), &OpenOptions::new().create(true)).await?;
///
/// // A record the caller already holds goes out without a copy...
/// let record = Buf::from(b"a 23-byte record, no pad".to_vec());
/// let (written, record) = engine.write_at(&file, record, 0).await.into_result().map_err(|(e, _)| e)?;
/// assert_eq!(written, 24);
/// assert_eq!(record.into_vec(), b"a 23-byte record, no pad"); // ...and comes back without one.
///
/// // A pool slot can read into part of itself.
/// let page = engine.pool().acquire().await.slice(100..124);
/// let (read, page) = engine.read_at(&file, page, 0).await.into_result().map_err(|(e, _)| e)?;
/// assert_eq!((read, page.range()), (24, 100..124));
/// assert_eq!(&page[..], b"a 23-byte record, no pad");
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
#[must_use = "dropping a buffer returns it to its pool"]
pub struct Buf<S: BufState> {
    mem: Mem,
    start: u32,
    len: u32,
    state: PhantomData<S>,
}

/// Where a buffer's memory lives.
enum Mem {
    /// Slot `index` of a pool's arena.
    Slot { pool: Arc<PoolInner>, index: u32 },
    /// Memory the caller handed over.
    Owned(Box<Owned>),
}

static_assertions::assert_eq_size!(Buf<Free>, [usize; 3]);
static_assertions::assert_eq_size!(Buf<Free>, Buf<Registered>, Buf<InFlight>, Buf<Completed>);
static_assertions::assert_eq_size!(Free, Registered, InFlight, Completed, ());
static_assertions::assert_not_impl_any!(Buf<InFlight>: Deref, DerefMut, AsRef<[u8]>, Clone, Copy);
static_assertions::assert_not_impl_any!(Buf<Completed>: DerefMut, Clone, Submittable);
static_assertions::assert_not_impl_any!(Buf<Free>: Clone, Copy);
static_assertions::assert_not_impl_any!(Buf<Registered>: From<Vec<u8>>, From<BytesMut>, From<Box<[u8]>>);
static_assertions::assert_impl_all!(Buf<Free>: Send, Sync, Deref, DerefMut, From<Vec<u8>>, From<BytesMut>);
static_assertions::assert_impl_all!(Buf<InFlight>: Send, Sync);
static_assertions::assert_not_impl_any!(Free: Default, Clone);

impl<S: BufState> Buf<S> {
    /// Wraps slot `index`, which the caller has just taken from the free list (I1).
    pub(crate) fn new(pool: Arc<PoolInner>, index: u32) -> Buf<S> {
        let len = pool.slot_size() as u32;
        Buf { mem: Mem::Slot { pool, index }, start: 0, len, state: PhantomData }
    }

    /// Moves this handle into state `T`. Transitions in `state.rs` and the engines are the only
    /// callers; no memory is released or duplicated.
    ///
    /// Every operation moves its buffer through several states. This and the other small
    /// accessors and casts are `#[inline]`: an operation's future is generic over the buffer's
    /// state, so it is compiled in the caller's crate, where a function of this crate that is
    /// not inline stays an out-of-line call (together about 3% of a cached 4 KiB read).
    #[inline]
    pub(crate) fn cast<T: BufState>(self) -> Buf<T> {
        let (mem, start, len) = self.into_raw_parts();
        Buf { mem, start, len, state: PhantomData }
    }

    /// Takes the handle apart without running `Drop`: the caller now owns the memory (I1).
    #[inline]
    fn into_raw_parts(self) -> (Mem, u32, u32) {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so moving `mem` out of it keeps exactly
        // one owner of the pool reference and slot, or of the caller memory (I1).
        let mem = unsafe { std::ptr::read(&this.mem) };
        (mem, this.start, this.len)
    }

    /// The slot's index in its pool, which is also its io_uring fixed-buffer index;
    /// `u32::MAX` for caller memory, which has no slot.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let pool = ferrite_io::BufPool::new(2, 4096)?;
    /// assert_eq!(pool.acquire().await.index(), 0);
    /// assert_eq!(ferrite_io::Buf::from(vec![0; 10]).index(), u32::MAX);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    #[inline]
    pub fn index(&self) -> u32 {
        match &self.mem {
            Mem::Slot { index, .. } => *index,
            Mem::Owned(_) => u32::MAX,
        }
    }

    /// The length of the view in bytes: what the next operation moves.
    ///
    /// ```
    /// let buf = ferrite_io::Buf::from(vec![0; 10]);
    /// assert_eq!(buf.len(), 10);
    /// assert_eq!(buf.slice(2..5).len(), 3);
    /// ```
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the view is empty.
    ///
    /// ```
    /// assert!(ferrite_io::Buf::from(Vec::new()).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The view as a range of the whole memory (`0..capacity()` when not sliced).
    ///
    /// ```
    /// let buf = ferrite_io::Buf::from(vec![0; 10]).slice(2..);
    /// assert_eq!(buf.range(), 2..10);
    /// ```
    pub fn range(&self) -> Range<usize> {
        let start = self.start as usize;
        start..start + self.len()
    }

    /// The size of the whole memory in bytes: the slot size, or the length of the caller's
    /// `Vec`/`Box<[u8]>`/`BytesMut` when it was handed over.
    ///
    /// ```
    /// let buf = ferrite_io::Buf::from(vec![0; 10]).slice(2..5);
    /// assert_eq!(buf.capacity(), 10);
    /// ```
    #[inline]
    pub fn capacity(&self) -> usize {
        match &self.mem {
            Mem::Slot { pool, .. } => pool.slot_size(),
            Mem::Owned(owned) => owned.len(),
        }
    }

    /// The id of the pool this buffer belongs to; 0 for caller memory (pool ids start at 1).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let pool = ferrite_io::BufPool::new(1, 4096)?;
    /// assert_eq!(pool.acquire().await.pool_id(), pool.id());
    /// assert_eq!(ferrite_io::Buf::from(vec![0; 10]).pool_id(), 0);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    #[inline]
    pub fn pool_id(&self) -> u64 {
        match &self.mem {
            Mem::Slot { pool, .. } => pool.id(),
            Mem::Owned(_) => 0,
        }
    }

    #[inline]
    pub(crate) fn set_len_unchecked(&mut self, len: usize) {
        debug_assert!(self.start as usize + len <= self.capacity());
        self.len = len as u32;
    }

    /// Start of the whole memory.
    #[inline]
    fn base(&self) -> *mut u8 {
        match &self.mem {
            Mem::Slot { pool, index } => pool.slot_ptr(*index),
            Mem::Owned(owned) => owned.ptr(),
        }
    }

    /// Start of the view: the bytes an operation covers. Only the pool and the engines use
    /// this pointer (I2).
    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        // In bounds: `start <= capacity` always holds (slice, set_len and completions keep it).
        self.base().wrapping_add(self.start as usize)
    }
}

impl<S: Readable> Buf<S> {
    /// Narrows the view to `range` of the whole memory (not of the current view), so the next
    /// operation reads into or writes from exactly those bytes. The bytes outside stay as they
    /// are; [`unslice`](Self::unslice) selects everything again.
    ///
    /// # Panics
    ///
    /// When `range` is decreasing or ends past [`capacity`](Self::capacity), as slicing a `[u8]`
    /// would.
    ///
    /// ```
    /// let mut buf = ferrite_io::Buf::from(vec![0u8; 8]);
    /// buf.copy_from_slice(b"abcdefgh");
    /// let view = buf.slice(2..5);
    /// assert_eq!(&view[..], b"cde");
    /// assert_eq!(&view.unslice()[..], b"abcdefgh");
    /// ```
    pub fn slice(mut self, range: impl RangeBounds<usize>) -> Self {
        let capacity = self.capacity();
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.checked_add(1).expect("slice start overflows"),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1).expect("slice end overflows"),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => capacity,
        };
        assert!(start <= end && end <= capacity, "slice {start}..{end} out of range for a buffer of {capacity} bytes");
        // Both fit in u32: capacity does (a slot is at most 1 GiB, caller memory is checked).
        (self.start, self.len) = (start as u32, (end - start) as u32);
        self
    }

    /// Selects the whole memory again: the view becomes `0..capacity()`.
    ///
    /// ```
    /// let buf = ferrite_io::Buf::from(vec![0u8; 8]).slice(..3);
    /// assert_eq!(buf.unslice().len(), 8);
    /// ```
    pub fn unslice(self) -> Self {
        self.slice(..)
    }

    /// The view as `bytes::Bytes`, without copying. A pool slot goes back to its pool when the
    /// last clone of the `Bytes` is dropped; caller memory is freed then.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let pool = ferrite_io::BufPool::new(1, 4096)?;
    /// let mut buf = pool.acquire().await;
    /// buf[..5].copy_from_slice(b"hello");
    /// let bytes = buf.slice(..5).into_bytes();
    /// let shared = bytes.clone();
    /// assert_eq!(&shared[..], b"hello");
    /// assert_eq!(pool.available(), 0);
    /// drop((bytes, shared));
    /// assert_eq!(pool.available(), 1); // the slot is back
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    pub fn into_bytes(self) -> Bytes {
        match self.mem {
            Mem::Slot { .. } => Bytes::from_owner(self),
            Mem::Owned(_) => {
                let range = self.range();
                match self.into_raw_parts().0 {
                    Mem::Owned(owned) => owned.into_bytes(range),
                    Mem::Slot { .. } => unreachable!("matched as caller memory above"),
                }
            }
        }
    }

    /// The view as a `Vec<u8>`. Caller memory whose view starts at 0 comes back without a copy
    /// (the `Vec` or `Box<[u8]>` that was handed over, truncated to the view); anything else is
    /// copied, and a pool slot goes back to its pool.
    ///
    /// ```
    /// let buf = ferrite_io::Buf::from(vec![1, 2, 3, 4]);
    /// assert_eq!(buf.slice(..2).into_vec(), vec![1, 2]);
    /// ```
    pub fn into_vec(self) -> Vec<u8> {
        match self.mem {
            Mem::Slot { .. } => self.to_vec(),
            Mem::Owned(_) => {
                let range = self.range();
                match self.into_raw_parts().0 {
                    Mem::Owned(owned) => owned.into_vec(range),
                    Mem::Slot { .. } => unreachable!("matched as caller memory above"),
                }
            }
        }
    }
}

impl<S: Submittable> Buf<S> {
    /// Sets the length of the view, keeping its start: how many bytes the next write sends or
    /// the next read asks for. Bytes past the old length keep what they held (a buffer never
    /// holds uninitialized memory).
    ///
    /// # Errors
    ///
    /// [`Error::Length`] when the view would end past [`capacity`](Self::capacity) (the error's
    /// `capacity` is the room after the view's start); the length is unchanged.
    ///
    /// ```
    /// let mut buf = ferrite_io::Buf::from(vec![0; 10]);
    /// buf.set_len(4)?;
    /// assert_eq!(buf.len(), 4);
    /// assert!(buf.set_len(11).is_err());
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Result<()> {
        let room = self.capacity() - self.start as usize;
        if len > room {
            return Err(Error::Length { len, capacity: room });
        }
        self.set_len_unchecked(len);
        Ok(())
    }
}

impl<S: Readable> Deref for Buf<S> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the view is in bounds of memory that never moves (I4), fully initialized (I5),
        // owned by this handle alone (I1) and not in flight, because `S: Readable` excludes
        // `InFlight` (I2); `start + len <= capacity` holds by `slice`/`set_len`/completion.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }
}

impl<S: Submittable> DerefMut for Buf<S> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `Deref`, and `&mut self` makes this the only reference to the memory.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len()) }
    }
}

impl<S: Readable> AsRef<[u8]> for Buf<S> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<BytesMut> for Buf<Free> {
    /// Takes the caller's bytes without copying; the buffer's capacity is `bytes.len()`.
    ///
    /// # Panics
    ///
    /// When `bytes` is longer than `u32::MAX` bytes.
    ///
    /// ```
    /// let buf = ferrite_io::Buf::from(bytes::BytesMut::from(&b"page"[..]));
    /// assert_eq!(&buf[..], b"page");
    /// ```
    fn from(bytes: BytesMut) -> Self {
        let len = u32::try_from(bytes.len()).expect("a Buf holds at most u32::MAX bytes");
        Buf { mem: Mem::Owned(Owned::new(bytes)), start: 0, len, state: PhantomData }
    }
}

impl From<Vec<u8>> for Buf<Free> {
    /// Takes the caller's `Vec` without copying; the buffer's capacity is `vec.len()` (the
    /// initialized part).
    ///
    /// # Panics
    ///
    /// When `vec` is longer than `u32::MAX` bytes.
    ///
    /// ```
    /// let buf = ferrite_io::Buf::from(vec![7u8; 100]);
    /// assert_eq!((buf.len(), buf[0]), (100, 7));
    /// ```
    fn from(vec: Vec<u8>) -> Self {
        Buf::from(BytesMut::from(Bytes::from(vec)))
    }
}

impl From<Box<[u8]>> for Buf<Free> {
    /// Takes the caller's boxed slice without copying.
    ///
    /// # Panics
    ///
    /// When it is longer than `u32::MAX` bytes.
    ///
    /// ```
    /// let buf = ferrite_io::Buf::from(vec![0u8; 512].into_boxed_slice());
    /// assert_eq!(buf.capacity(), 512);
    /// ```
    fn from(boxed: Box<[u8]>) -> Self {
        Buf::from(boxed.into_vec())
    }
}

impl<S: BufState> Drop for Buf<S> {
    fn drop(&mut self) {
        // Engines drop a `Buf<InFlight>` only after its completion (I2), so the memory is idle
        // here. Caller memory is freed when `mem` drops, after this.
        if let Mem::Slot { pool, index } = &self.mem {
            pool.release(*index);
        }
    }
}

impl<S: BufState> fmt::Debug for Buf<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Buf");
        debug.field("state", &S::NAME);
        match &self.mem {
            Mem::Slot { pool, index } => debug.field("pool", &pool.id()).field("index", index),
            Mem::Owned(_) => debug.field("memory", &"caller"),
        };
        debug.field("range", &self.range()).field("capacity", &self.capacity()).finish()
    }
}
