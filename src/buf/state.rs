//! The four buffer states as sealed, zero-sized markers, and one `impl` block per state holding
//! the transitions that start there.
//!
//! Deliberately *not* typestated: which engine a `Registered` buffer is registered with. Engines
//! are chosen at run time, so that is a runtime check (the pool id) made by
//! [`Buf::<Free>::try_into_registered`]. Because `IoEngine` can be implemented outside this crate
//! (wrappers, fault injectors), `Registered` is a claim, not a proof: every fixed-buffer
//! operation of the engines here checks the pool id again before it names a fixed-buffer index
//! to the kernel, and reports [`Error::ForeignBuffer`](crate::Error::ForeignBuffer) otherwise.
//! Caller memory (a `Buf` made from a `Vec<u8>`, `Box<[u8]>` or `BytesMut`) has pool id 0,
//! which no pool has, so it can never become `Registered`: `Buf<Registered>` stays the only key
//! to fixed operations, and only pool slots hold one.

use super::Buf;
use crate::io::IoEngine;

mod sealed {
    pub trait Sealed {}
}

/// A buffer state. Sealed: the four markers in this module are the only states.
///
/// ```
/// use ferrite_io::{Buf, Free, buf::BufState};
/// fn describe<S: BufState>(buf: &Buf<S>) -> String {
///     format!("{} bytes, {}", buf.len(), S::NAME)
/// }
/// assert_eq!(describe::<Free>(&Buf::from(vec![0; 8])), "8 bytes, Free");
/// ```
pub trait BufState: sealed::Sealed + Send + Sync + 'static {
    /// The state's name, for `Debug` and tracing.
    const NAME: &'static str;
}

/// States whose bytes the caller may read: [`Free`], [`Registered`], [`Completed`].
///
/// ```
/// use ferrite_io::{Buf, buf::Readable};
/// // Any buffer the caller holds can be checked, whatever its state; an in-flight one cannot.
/// fn all_zero<S: Readable>(buf: &Buf<S>) -> bool {
///     buf.iter().all(|&b| b == 0)
/// }
/// assert!(all_zero(&Buf::from(vec![0; 16])));
/// ```
pub trait Readable: BufState {}

/// States an engine accepts for a new operation: [`Free`] and [`Registered`].
///
/// ```
/// use ferrite_io::{Buf, buf::Submittable};
/// // Fill a buffer before submitting it, plain or registered alike.
/// fn stamp<S: Submittable>(buf: &mut Buf<S>, byte: u8) {
///     buf.fill(byte);
/// }
/// let mut buf = Buf::from(vec![0; 4]);
/// stamp(&mut buf, 7);
/// assert_eq!(&buf[..], &[7; 4]);
/// ```
pub trait Submittable: Readable {
    /// Whether the buffer claims to be in an engine's fixed-buffer table.
    #[doc(hidden)]
    const FIXED: bool;
}

/// Owned by the caller, usable for plain (non-fixed) operations on any engine.
///
/// ```
/// use ferrite_io::{Buf, Free};
/// let buf: Buf<Free> = Buf::from(vec![0; 4096]); // caller memory is always Free
/// assert_eq!(buf.pool_id(), 0);
/// ```
#[derive(Debug)]
pub struct Free(());
/// Owned by the caller and in an engine's fixed-buffer table: usable for fixed operations.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::{Buf, IoEngine, Registered};
/// let engine = ferrite_io::create_engine(ferrite_io::IoEngineConfig::default())?;
/// let page: Buf<Registered> = engine.acquire().await; // a slot of the engine's pool
/// assert!(Buf::from(vec![0; 4096]).try_into_registered(&*engine).is_err()); // never a Vec
/// # drop(page);
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
#[derive(Debug)]
pub struct Registered(());
/// Owned by an engine while the kernel may read or write it. No byte access.
///
/// A caller never holds one: an operation takes a `Buf<Free>` or `Buf<Registered>` and gives back
/// a `Buf<Completed>`; in between, only the engine has the buffer, as `Buf<InFlight>`.
///
/// ```compile_fail
/// fn peek(buf: &ferrite_io::Buf<ferrite_io::InFlight>) -> u8 {
///     buf[0] // no Deref: the kernel may be writing these bytes
/// }
/// ```
#[derive(Debug)]
pub struct InFlight(());
/// Handed back by an engine; holds the bytes the operation transferred.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::{Buf, Completed, IoEngine, OpenOptions};
/// # let dir = tempfile::tempdir().unwrap();
/// let engine = ferrite_io::create_engine(ferrite_io::IoEngineConfig::default())?;
/// let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
/// let (written, buf) = engine.write_at(&file, Buf::from(b"abc".to_vec()), 0).await.into_parts();
/// let buf: Buf<Completed> = buf; // readable, not writable, not submittable until recycled
/// assert_eq!((written?, &buf[..]), (3, &b"abc"[..]));
/// let _again = buf.into_free();
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
#[derive(Debug)]
pub struct Completed(());

macro_rules! state {
    ($name:ident, $($bound:ident),*) => {
        impl sealed::Sealed for $name {}
        impl BufState for $name {
            const NAME: &'static str = stringify!($name);
        }
        $(impl $bound for $name {})*
    };
}
state!(Free, Readable);
state!(Registered, Readable);
state!(InFlight,);
state!(Completed, Readable);

impl Submittable for Free {
    const FIXED: bool = false;
}
impl Submittable for Registered {
    const FIXED: bool = true;
}

impl Buf<Free> {
    /// Marks this buffer as registered with `engine`, for fixed-buffer operations.
    ///
    /// # Errors
    ///
    /// Gives the buffer back unchanged when it does not come from `engine`'s pool (the type
    /// system cannot tell pools apart, so this is checked at run time), and always for caller
    /// memory, which is in no fixed-buffer table.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use ferrite_io::{Buf, IoEngine, IoEngineConfig};
    /// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// let slot = engine.pool().acquire().await;
    /// let registered = slot.try_into_registered(&*engine).expect("a slot of the engine's pool");
    /// assert_eq!(registered.buf_index(), 0);
    /// let vec = Buf::from(vec![0; 4096]);
    /// assert!(vec.try_into_registered(&*engine).is_err()); // caller memory: plain ops only
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    #[inline]
    pub fn try_into_registered<E: IoEngine>(self, engine: &E) -> Result<Buf<Registered>, Self> {
        self.register_with(engine)
    }
}

impl Buf<Registered> {
    /// Forgets the registration; the buffer can still do plain operations.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use ferrite_io::{Buf, Free, IoEngine, IoEngineConfig};
    /// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// let free: Buf<Free> = engine.acquire().await.into_free();
    /// # drop(free);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    #[inline]
    pub fn into_free(self) -> Buf<Free> {
        tracing::trace!(index = self.index(), "buf: Registered -> Free");
        self.cast()
    }

    /// The index in the engine's fixed-buffer table (`buf_index` of READ_FIXED/WRITE_FIXED).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use ferrite_io::{IoEngine, IoEngineConfig};
    /// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// let (a, b) = (engine.acquire().await, engine.acquire().await);
    /// assert_eq!((a.buf_index(), b.buf_index()), (0, 1));
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    #[inline]
    pub fn buf_index(&self) -> u16 {
        // Only pool slots become `Registered`, and pools hold at most 16384 slots (checked in
        // `BufPool::new`), so this never truncates.
        self.index() as u16
    }
}

impl<S: Submittable> Buf<S> {
    /// Hands the buffer to an engine. Engine code only.
    #[inline]
    pub(crate) fn into_in_flight(self) -> Buf<InFlight> {
        self.cast()
    }
}

impl Buf<InFlight> {
    /// The engine's completion path: the kernel is done with the slot and `transferred` bytes
    /// moved.
    #[inline]
    pub(crate) fn into_completed(mut self, transferred: usize) -> Buf<Completed> {
        let len = transferred.min(self.len());
        self.set_len_unchecked(len);
        self.cast()
    }

    /// The engine's error path: nothing is known to have moved, and the length stays as it was
    /// submitted, so the buffer can be resubmitted after `into_free`.
    #[inline]
    pub(crate) fn into_failed(self) -> Buf<Completed> {
        self.cast()
    }

    /// The slot's bytes for a blocking thread that performs the operation itself.
    ///
    /// # Safety
    ///
    /// No kernel operation may be using this slot (I2): only an engine that performs the I/O on
    /// this thread (the tokio engine's blocking task) may call it.
    #[inline]
    pub(crate) unsafe fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: bounds, initialization and exclusivity as for `Deref` (I1, I4, I5); the caller
        // guarantees no kernel operation uses the slot.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len()) }
    }
}

impl Buf<Completed> {
    /// Recycles the buffer for another operation, keeping its bytes and its view (after a
    /// short read the view is what arrived: `unslice()` or `set_len` to widen it again).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// let done = engine.write_at(&file, Buf::from(vec![1; 8]), 0).await;
    /// let again = done.1.into_free(); // same bytes, ready for another operation
    /// engine.write_at(&file, again, 8).await.0?;
    /// assert_eq!(file.size()?, 16);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    #[inline]
    pub fn into_free(self) -> Buf<Free> {
        tracing::trace!(index = self.index(), "buf: Completed -> Free");
        self.cast()
    }

    /// Recycles the buffer straight into the registered state, keeping bytes and length.
    ///
    /// # Errors
    ///
    /// Gives the buffer back as `Free` when it does not come from `engine`'s pool.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use ferrite_io::{IoEngine, IoEngineConfig, OpenOptions};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// let done = engine.write_fixed_at(&file, engine.acquire().await, 0).await;
    /// let again = done.1.try_into_registered(&*engine).expect("the engine's own slot");
    /// engine.write_fixed_at(&file, again, 65536).await.0?;
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    #[inline]
    pub fn try_into_registered<E: IoEngine>(self, engine: &E) -> Result<Buf<Registered>, Buf<Free>> {
        // Straight to `Registered`, not through `into_free`: the recycling step of every read
        // loop, so one check and one trace event.
        self.register_with(engine).map_err(|buf| buf.cast())
    }
}

impl<S: BufState> Buf<S> {
    /// `Registered` if the buffer is a slot of `engine`'s pool, else the buffer back as it was.
    #[inline]
    fn register_with<E: IoEngine>(self, engine: &E) -> Result<Buf<Registered>, Self> {
        if engine.pool().id() == self.pool_id() {
            tracing::trace!(index = self.index(), from = S::NAME, "buf: -> Registered");
            Ok(self.cast())
        } else {
            Err(self)
        }
    }
}
