//! Owned buffers whose lifecycle is a type: [`Buf<S>`](Buf) with the states [`Free`],
//! [`Registered`], [`InFlight`] and [`Completed`], carved from a [`BufPool`].
//!
//! ```text
//!  BufPool::acquire         engine.write_at(&file, buf, off)          completion (CQE)
//!  ---------------> Free ---------------------------------> InFlight ---------------> Completed
//!                    |  ^        (the buffer moves into the          (engine owns      |  bytes +
//!  try_into_registered  into_free  engine; the caller holds           the slot)        |  result
//!                    v  |        only a future)                                        |
//!                 Registered --- read_fixed_at / write_fixed_at ---------^             |
//!                    ^                                                                  |
//!                    +------- into_free() / try_into_registered() / drop -> pool ------+
//! ```
//!
//! # Types
//!
//! Compiler errors about misuse name these: `Buf<InFlight>` has no byte access
//! (`Deref`/`DerefMut` are missing); `Buf<Completed>` does not implement [`Submittable`] (recycle
//! it with `into_free` or `try_into_registered` first); fixed-buffer operations take only
//! `Buf<Registered>`. The markers are sealed and cannot be constructed outside this crate.
//!
//! # Layout
//!
//! Every `Buf<S>` is two words (an `Arc` to the pool and a `u32` slot index plus a `u32` length);
//! the markers are zero-sized, so a transition is a move of those two words and nothing else.
//! `static_assertions` checks this below.
//!
//! # Invariants
//!
//! The `// SAFETY:` comments in this crate cite these by number.
//!
//! - **I1, one handle per slot.** A slot index is either in the pool's free list or owned by
//!   exactly one `Buf`. Only `BufPool::try_acquire` creates a handle, and only `Buf`'s `Drop`
//!   returns the index; transitions move the handle without dropping it.
//! - **I2, the kernel touches only in-flight slots.** An engine gives a slot's address to the
//!   kernel (or to a blocking thread) only while it owns the `Buf<InFlight>`, and turns it into
//!   `Completed` only after the completion arrived. A future dropped before then leaves the
//!   `Buf<InFlight>` with the engine until the completion arrives.
//! - **I3, the arena outlives every handle and every operation.** Each `Buf` holds an `Arc` to
//!   its pool; in-flight buffers are held by the engine, and an engine drains (or, past its
//!   deadline, leaks) every outstanding operation before it lets them go.
//! - **I4, a slot never moves.** The arena is mapped once and never remapped; slot `i` is at
//!   `base + i * slot_size` until the last handle is gone.
//! - **I5, every byte is initialized.** The arena is an anonymous mapping, zero-filled by the
//!   kernel, so any range of a slot is a valid `[u8]`.

mod pool;
mod state;

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

pub use pool::BufPool;
pub(crate) use pool::PoolInner;
pub use state::{BufState, Completed, Free, InFlight, Readable, Registered, Submittable};

use crate::error::{Error, Result};

/// An owned buffer from a [`BufPool`], in state `S`.
///
/// The buffer's *length* (`len()`) is the I/O length: writes send `len()` bytes, reads ask for up
/// to `len()` bytes. A fresh buffer's length is its capacity. After an operation the
/// `Buf<Completed>`'s length is the number of bytes the operation transferred; after an error it
/// is the length that was submitted (and `read_exact_at`'s end-of-file error leaves the bytes that
/// did arrive).
#[must_use = "dropping a buffer returns it to its pool"]
pub struct Buf<S: BufState> {
    pool: Arc<PoolInner>,
    index: u32,
    len: u32,
    state: PhantomData<S>,
}

static_assertions::assert_eq_size!(Buf<Free>, [usize; 2]);
static_assertions::assert_eq_size!(Buf<Free>, Buf<Registered>, Buf<InFlight>, Buf<Completed>);
static_assertions::assert_eq_size!(Free, Registered, InFlight, Completed, ());
static_assertions::assert_not_impl_any!(Buf<InFlight>: Deref, DerefMut, Clone, Copy);
static_assertions::assert_not_impl_any!(Buf<Completed>: DerefMut, Clone, Submittable);
static_assertions::assert_not_impl_any!(Buf<Free>: Clone, Copy);
static_assertions::assert_impl_all!(Buf<Free>: Send, Sync, Deref, DerefMut);
static_assertions::assert_impl_all!(Buf<InFlight>: Send, Sync);
static_assertions::assert_not_impl_any!(Free: Default, Clone);

impl<S: BufState> Buf<S> {
    /// Wraps slot `index`, which the caller has just taken from the free list (I1).
    pub(crate) fn new(pool: Arc<PoolInner>, index: u32) -> Buf<S> {
        let len = pool.slot_size() as u32;
        Buf { pool, index, len, state: PhantomData }
    }

    /// Moves this handle into state `T`. Transitions in `state.rs` and the engines are the only
    /// callers; no slot is released or duplicated.
    pub(crate) fn cast<T: BufState>(self) -> Buf<T> {
        let this = ManuallyDrop::new(self);
        Buf {
            // SAFETY: `this` is never used or dropped again, so moving the `Arc` out of it keeps
            // exactly one owner of the pool reference and of the slot (I1).
            pool: unsafe { std::ptr::read(&this.pool) },
            index: this.index,
            len: this.len,
            state: PhantomData,
        }
    }

    /// The slot's index in its pool, which is also its io_uring fixed-buffer index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The I/O length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the I/O length is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot's size in bytes.
    pub fn capacity(&self) -> usize {
        self.pool.slot_size()
    }

    /// The id of the pool this buffer belongs to.
    pub fn pool_id(&self) -> u64 {
        self.pool.id()
    }

    pub(crate) fn set_len_unchecked(&mut self, len: usize) {
        debug_assert!(len <= self.capacity());
        self.len = len as u32;
    }

    /// Start of the slot. Only the pool and the engines use this pointer (I2).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.pool.slot_ptr(self.index)
    }
}

impl<S: Submittable> Buf<S> {
    /// Sets the I/O length: how many bytes the next write sends or the next read asks for.
    /// Bytes past the old length keep what they held (the pool never hands out uninitialized
    /// memory).
    ///
    /// # Errors
    ///
    /// [`Error::Length`] when `len` exceeds [`capacity`](Self::capacity); the length is unchanged.
    pub fn set_len(&mut self, len: usize) -> Result<()> {
        if len > self.capacity() {
            return Err(Error::Length { len, capacity: self.capacity() });
        }
        self.set_len_unchecked(len);
        Ok(())
    }
}

impl<S: Readable> Deref for Buf<S> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the slot is in bounds and never moves (I4), fully initialized (I5), owned by
        // this handle alone (I1) and not in flight, because `S: Readable` excludes `InFlight`
        // (I2); `len <= capacity` holds by `set_len`/completion.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }
}

impl<S: Submittable> DerefMut for Buf<S> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `Deref`, and `&mut self` makes this the only reference to the slot.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len()) }
    }
}

impl<S: BufState> Drop for Buf<S> {
    fn drop(&mut self) {
        // Engines drop a `Buf<InFlight>` only after its completion (I2), so the slot is idle here.
        self.pool.release(self.index);
    }
}

impl<S: BufState> fmt::Debug for Buf<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buf")
            .field("state", &S::NAME)
            .field("pool", &self.pool.id())
            .field("index", &self.index)
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}
