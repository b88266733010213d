//! The [`IoEngine`] trait, the owned-buffer operations every engine offers, and
//! [`create_engine`], which picks the engine at run time.
//!
//! Two engines implement the trait: [`UringEngine`] (io_uring, Linux) and [`TokioEngine`]
//! (tokio's blocking pool, everywhere). [`Engine`] is the run-time choice between them and
//! [`SharedIoEngine`] the `Arc` that storage code passes around.
//!
//! Design note: the trait returns `impl Future + Send` instead of boxed futures, so an operation
//! costs no heap allocation and the trait is not object safe. Ferrite's `Arc<dyn IoEngine>`
//! becomes `Arc<Engine>`, an enum that dispatches with a `match`, as compio's fusion driver does.

pub mod detect;
pub mod fault;
mod file;
mod nowait;
pub mod stats;
mod tokio_io;
#[cfg(uring)]
mod uring;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

pub(crate) use file::Refusal;
pub use file::{Alignment, AlignmentSource, File, Misaligned, OpenOptions, PositionalIo};
pub use stats::EngineStats;
pub use tokio_io::TokioEngine;
#[cfg(uring)]
pub use uring::UringEngine;

use crate::buf::{Buf, BufPool, Completed, InFlight, Registered, Submittable};
use crate::config::{EngineChoice, IoEngineConfig};
use crate::error::{Backend, Result};
use detect::{Unsupported, UringInfo};

/// The outcome of an operation together with the buffer(s) it used, which come back on success
/// and on error alike.
///
/// ```
/// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
/// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
/// let done = engine.write_at(&file, Buf::from(vec![0; 8]), 0).await;
/// let (result, buf) = (done.0, done.1); // or into_parts / into_result
/// assert_eq!(result?, 8);
/// let again = buf.into_free(); // the buffer came back; reuse it
/// # drop(again);
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
#[must_use = "the result may be an error, and dropping the buffer returns it to the pool"]
#[derive(Debug)]
pub struct BufResult<T, B>(pub Result<T>, pub B);

impl<T, B> BufResult<T, B> {
    /// The result and the buffer.
    ///
    /// ```
    /// let done = ferrite_io::BufResult(Ok(3), "buffer");
    /// let (result, buf) = done.into_parts();
    /// assert_eq!((result.unwrap(), buf), (3, "buffer"));
    /// ```
    #[inline]
    pub fn into_parts(self) -> (Result<T>, B) {
        (self.0, self.1)
    }

    /// Maps the success value, keeping the buffer.
    ///
    /// ```
    /// let done = ferrite_io::BufResult(Ok(3usize), "buffer").map(|n| n * 2);
    /// assert_eq!(done.0.unwrap(), 6);
    /// ```
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> BufResult<U, B> {
        BufResult(self.0.map(f), self.1)
    }

    /// Maps the buffer, keeping the result.
    ///
    /// ```
    /// let done = ferrite_io::BufResult(Ok(3usize), vec![1u8, 2]).map_buf(|v| v.len());
    /// assert_eq!(done.1, 2);
    /// ```
    pub fn map_buf<C>(self, f: impl FnOnce(B) -> C) -> BufResult<T, C> {
        BufResult(self.0, f(self.1))
    }

    /// `Ok((value, buffer))`, or the error with the buffer.
    ///
    /// # Errors
    ///
    /// The operation's error, paired with the buffer.
    ///
    /// ```
    /// let done = ferrite_io::BufResult(Ok(3usize), "buffer");
    /// let (n, buf) = done.into_result().map_err(|(e, _buf)| e)?;
    /// assert_eq!((n, buf), (3, "buffer"));
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    pub fn into_result(self) -> std::result::Result<(T, B), (crate::Error, B)> {
        match self.0 {
            Ok(v) => Ok((v, self.1)),
            Err(e) => Err((e, self.1)),
        }
    }
}

/// What one operation of a [`Batch`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rw {
    Read,
    Write,
}

impl Rw {
    /// The operation code errors report; both engines name an operation the same way.
    pub(crate) fn op(self, fixed: bool, vectored: bool) -> crate::Op {
        use crate::Op;
        match (self, fixed, vectored) {
            (Rw::Read, _, true) => Op::ReadVectored,
            (Rw::Write, _, true) => Op::WriteVectored,
            (Rw::Read, true, false) => Op::ReadFixed,
            (Rw::Write, true, false) => Op::WriteFixed,
            (Rw::Read, false, false) => Op::Read,
            (Rw::Write, false, false) => Op::Write,
        }
    }
}

/// Whether `buf` may name a fixed-buffer index of `pool`'s engine: it claims registration and
/// comes from that pool (the claim alone is not enough, see `buf::state`).
#[inline]
pub(crate) fn is_fixed<S: Submittable>(buf: &Buf<S>, pool: &BufPool) -> bool {
    S::FIXED && buf.pool_id() == pool.id()
}

/// A fixed-buffer operation's refusal of a buffer registered elsewhere: the buffer comes back.
pub(crate) fn foreign<S: Submittable>(buf: Buf<S>, pool: &BufPool) -> BufResult<usize, Buf<Completed>> {
    let e = crate::Error::ForeignBuffer { buf_pool: buf.pool_id(), engine_pool: pool.id() };
    BufResult(Err(e), buf.into_in_flight().into_failed())
}

/// One operation of a [`Batch`], updated in place as it goes: a reused batch allocates
/// nothing, and an operation that completes inside its submit costs a few stores, where moving
/// the whole slot from state to state (an enum of states) cost about an eighth of a batch's
/// instructions.
pub(crate) struct BatchSlot {
    pub(crate) rw: Rw,
    /// Whether the buffer claims registration (`Buf<Registered>`); an engine checks its pool.
    pub(crate) fixed: bool,
    pub(crate) file: File,
    pub(crate) offset: u64,
    /// The buffer, except while a ring's slot holds it (`Stage::Submitted`). Kept `InFlight`
    /// until [`BatchResults`] hands it out `Completed`.
    pub(crate) buf: Option<Buf<InFlight>>,
    pub(crate) stage: Stage,
}

/// Where a [`BatchSlot`] stands.
pub(crate) enum Stage {
    /// Added, not yet submitted.
    Added,
    /// Its entry is on a ring under this `user_data` while the buffer is still in the slot:
    /// only inside a submit, under the ring's lock, or on an unwind out of it until the batch
    /// future's drop hands the buffer to the ring (see `UringEngine::submit_batch`).
    #[cfg_attr(not(uring), allow(dead_code))]
    Pushed(u64),
    /// In flight on a ring under this `user_data`; the ring's slot holds the buffer.
    #[cfg_attr(not(uring), allow(dead_code))]
    Submitted(u64),
    /// Finished: this many bytes moved.
    Done(usize),
    /// Failed, boxed: only a failure pays for the error's size.
    Failed(Box<crate::Error>),
    /// Nothing to hand out: its result was taken, or a `submit_batch` future forgotten in
    /// flight left it (the ring's slot keeps its buffer, leaked with that future).
    Gone,
}

static_assertions::const_assert!(size_of::<BatchSlot>() <= 80);

impl BatchSlot {
    /// Records how the operation ended.
    #[inline]
    pub(crate) fn finish(&mut self, result: crate::Result<usize>) {
        self.stage = match result {
            Ok(n) => Stage::Done(n),
            Err(e) => Stage::Failed(Box::new(e)),
        };
    }

    /// Drops the slot. Most slots' results were taken, and forgetting their empty buffer field
    /// spares a call of its drop glue per slot.
    #[inline]
    fn discard(self) {
        let BatchSlot { file, buf, stage, .. } = self;
        drop(file);
        if buf.is_none() {
            std::mem::forget(buf);
        } else {
            drop(buf);
        }
        if let Stage::Failed(e) = stage {
            drop(e);
        }
    }

    /// The result of a finished slot, taken out of it (its buffer goes with it); `None` for any
    /// other slot, or one already taken.
    #[inline]
    fn take_result(&mut self) -> Option<BufResult<usize, Buf<Completed>>> {
        match self.stage {
            Stage::Done(n) => Some(BufResult(Ok(n), self.buf.take()?.into_completed(n))),
            Stage::Failed(_) => {
                let buf = self.buf.take()?;
                let Stage::Failed(e) = std::mem::replace(&mut self.stage, Stage::Gone) else { return None };
                Some(BufResult(Err(*e), buf.into_failed()))
            }
            Stage::Added | Stage::Pushed(_) | Stage::Submitted(_) | Stage::Gone => None,
        }
    }
}

/// Reads and writes submitted together: one `io_uring_enter` on the ring, one blocking task on
/// the tokio engine. Results come back in the order the operations were added, but the
/// operations themselves may run in any order and at the same time (the ring runs them
/// concurrently): a batch must not read a range it also writes.
///
/// A batch is reusable: [`submit_batch`](IoEngine::submit_batch) leaves it empty with its
/// capacity, so a batch that is refilled and resubmitted allocates nothing (on io_uring).
///
/// ```
/// # use ferrite_io::{Batch, IoEngine, IoEngineConfig, EngineChoice, OpenOptions};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
/// let file = engine.open(dir.path().join("data"), &OpenOptions::new().create(true)).await?;
/// let mut batch = Batch::with_capacity(8);
/// for page in 0..8u64 {
///     let mut buf = engine.pool().acquire().await;
///     buf.fill(page as u8);
///     batch.write_at(&file, buf, page * 65536);
/// }
/// for result in engine.submit_batch(&mut batch).await {
///     assert_eq!(result.0?, 65536);
/// }
/// assert!(batch.is_empty()); // ready to be filled again
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
#[derive(Default)]
pub struct Batch {
    pub(crate) slots: Vec<BatchSlot>,
}

impl Batch {
    /// An empty batch.
    ///
    /// ```
    /// let batch = ferrite_io::Batch::new();
    /// assert!(batch.is_empty());
    /// ```
    pub fn new() -> Self {
        Batch::default()
    }

    /// An empty batch with room for `n` operations, so adding them does not reallocate.
    ///
    /// ```
    /// let batch = ferrite_io::Batch::with_capacity(8); // 8 operations, no reallocation
    /// assert_eq!(batch.len(), 0);
    /// ```
    pub fn with_capacity(n: usize) -> Self {
        Batch { slots: Vec::with_capacity(n) }
    }

    /// Adds a read of `buf.len()` bytes at `offset`. A `Buf<Registered>` of the engine's pool
    /// is read with READ_FIXED.
    ///
    /// ```
    /// # use ferrite_io::{Batch, Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// let mut batch = Batch::new();
    /// for page in 0..4u64 {
    ///     batch.read_at(&file, engine.acquire().await, page * 65536);
    /// }
    /// for result in engine.submit_batch(&mut batch).await {
    ///     assert_eq!(result.0?, 0); // the file is empty
    /// }
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    pub fn read_at<S: Submittable>(&mut self, file: &File, buf: Buf<S>, offset: u64) {
        self.push(Rw::Read, file, buf, offset);
    }

    /// Adds a write of `buf.len()` bytes at `offset`. A `Buf<Registered>` of the engine's pool
    /// is written with WRITE_FIXED.
    ///
    /// ```
    /// # use ferrite_io::{Batch, Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// let mut batch = Batch::new();
    /// batch.write_at(&file, Buf::from(b"a record".to_vec()), 0);
    /// batch.write_at(&file, engine.acquire().await, 4096);
    /// assert_eq!(batch.len(), 2);
    /// let results: Vec<_> = engine.submit_batch(&mut batch).await.collect();
    /// assert_eq!(results[0].0.as_ref().ok(), Some(&8));
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    pub fn write_at<S: Submittable>(&mut self, file: &File, buf: Buf<S>, offset: u64) {
        self.push(Rw::Write, file, buf, offset);
    }

    /// Number of operations added and not yet submitted.
    ///
    /// ```
    /// assert_eq!(ferrite_io::Batch::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the batch holds no operation.
    ///
    /// ```
    /// assert!(ferrite_io::Batch::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn push<S: Submittable>(&mut self, rw: Rw, file: &File, buf: Buf<S>, offset: u64) {
        let buf = Some(buf.into_in_flight());
        self.slots.push(BatchSlot { rw, fixed: S::FIXED, file: file.clone(), offset, buf, stage: Stage::Added });
    }
}

/// The results of a submitted [`Batch`], one per operation in the order they were added, each
/// with its buffer. Dropping it drops the results not yet taken (their buffers go back to the
/// pool); the batch is empty afterwards either way.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::{create_engine, Batch, IoEngine, IoEngineConfig, OpenOptions};
/// # let dir = tempfile::tempdir().unwrap();
/// let engine = create_engine(IoEngineConfig::default())?;
/// let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
/// let mut batch = Batch::with_capacity(2);
/// for page in 0..2u64 {
///     let mut buf = engine.acquire().await;
///     buf.fill(page as u8);
///     batch.write_at(&file, buf, page * 65536);
/// }
/// let mut written = 0;
/// for result in engine.submit_batch(&mut batch).await {
///     let (n, buf) = result.into_parts();
///     written += n?;
///     drop(buf); // back to the pool
/// }
/// assert_eq!(written, 2 * 65536);
/// assert!(batch.is_empty()); // ready to be filled again
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
///
/// The results are taken out of the batch's slots in place, and the slots are cleared when this
/// is dropped: moving each slot out (as `Vec::drain` does) cost about a tenth of a batch's
/// instructions. A `BatchResults` that is forgotten instead of dropped leaves its results in
/// the batch, and the next submit's results hand them out first.
#[must_use = "each result holds a buffer and may be an error"]
pub struct BatchResults<'b> {
    slots: &'b mut Vec<BatchSlot>,
    /// The next slot to look at.
    next: usize,
}

impl<'b> BatchResults<'b> {
    pub(crate) fn new(slots: &'b mut Vec<BatchSlot>) -> Self {
        BatchResults { slots, next: 0 }
    }
}

impl Iterator for BatchResults<'_> {
    type Item = BufResult<usize, Buf<Completed>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        // After a finished submit every slot is `Done` or `Failed`; no other can be returned.
        while let Some(slot) = self.slots.get_mut(self.next) {
            self.next += 1;
            if let Some(result) = slot.take_result() {
                return Some(result);
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.slots.len() - self.next))
    }
}

impl Drop for BatchResults<'_> {
    fn drop(&mut self) {
        for slot in self.slots.drain(..) {
            slot.discard();
        }
    }
}

/// Why an engine was chosen.
///
/// ```
/// use ferrite_io::{create_engine, EngineChoice, IoEngine, IoEngineConfig, Reason};
/// let config = IoEngineConfig::default().with_engine(EngineChoice::Tokio);
/// let engine = create_engine(config)?;
/// assert!(matches!(engine.selection().reason, Reason::Requested(EngineChoice::Tokio)));
/// assert_eq!(engine.selection().reason.to_string(), "engine = \"tokio\" in the config");
/// # Ok::<(), ferrite_io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub enum Reason {
    /// The configuration asked for this engine by name.
    Requested(EngineChoice),
    /// `auto` probed io_uring and it works.
    Probed(UringInfo),
    /// `auto` probed io_uring and it does not work, for this reason.
    FellBack(Unsupported),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Requested(choice) => write!(f, "engine = \"{choice}\" in the config"),
            Reason::Probed(info) => write!(f, "io_uring probe succeeded ({info})"),
            Reason::FellBack(why) => write!(f, "io_uring unavailable, fell back to tokio: {why}"),
        }
    }
}

/// The engine a [`create_engine`] call chose, and why.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::{Backend, IoEngine, IoEngineConfig, Reason};
/// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
/// let selection = engine.selection();
/// match &selection.reason {
///     Reason::FellBack(why) => eprintln!("no io_uring here: {why}"),
///     Reason::Probed(_) | Reason::Requested(_) => assert_eq!(selection.backend, engine.backend()),
/// }
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Selection {
    /// What the config asked for.
    pub requested: EngineChoice,
    /// The engine that runs.
    pub backend: Backend,
    /// Why.
    pub reason: Reason,
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} engine (requested {}): {}", self.backend, self.requested, self.reason)
    }
}

/// Owned-buffer file I/O. Every operation takes its buffers by value and gives them back in the
/// [`BufResult`], on success and on error; a buffer is `InFlight` (owned by the engine) in
/// between, even when the caller drops the future.
///
/// Offsets are file offsets in bytes. A short read or write is a result (`Ok(n)` with
/// `n < len`), not an error; [`read_exact_at`](Self::read_exact_at) and
/// [`write_all_at`](Self::write_all_at) continue from the remainder.
///
/// Futures are `Send`, and engines are `Send + Sync`: they run on tokio's multi-thread runtime.
///
/// Code written against the trait runs on either engine; [`create_engine`] picks one:
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::{create_engine, IoEngine, IoEngineConfig, OpenOptions};
///
/// /// Copies the first `len` bytes of `from` to `to` through one pool buffer.
/// async fn copy(engine: &impl IoEngine, from: &ferrite_io::File, to: &ferrite_io::File, len: usize)
///     -> ferrite_io::Result<()> {
///     let mut buf = engine.acquire().await;
///     buf.set_len(len)?;
///     let read = engine.read_exact_at(from, buf, 0).await;
///     let buf = read.1;
///     read.0?;
///     engine.write_all_at(to, buf.into_free(), 0).await.0 // same bytes, same length
/// }
///
/// # let dir = tempfile::tempdir().unwrap();
/// let engine = create_engine(IoEngineConfig::default())?;
/// let create = OpenOptions::new().create(true);
/// let (a, b) = (engine.open(dir.path().join("a"), &create).await?, engine.open(dir.path().join("b"), &create).await?);
/// let mut buf = engine.acquire().await;
/// buf.fill(5);
/// engine.write_all_at(&a, buf, 0).await.0?;
/// copy(&*engine, &a, &b, 4096).await?; // `create_engine` gives an `Arc<Engine>`
/// assert_eq!(std::fs::read(dir.path().join("b")).unwrap()[..4096], [5; 4096]);
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
pub trait IoEngine: Send + Sync + 'static {
    /// Which engine this is.
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// assert_eq!(engine.backend(), engine.selection().backend);
    /// println!("running on the {} engine", engine.backend());
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn backend(&self) -> Backend;

    /// Why this engine was chosen.
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// let selection = engine.selection();
    /// println!("{selection}"); // e.g. "io_uring engine (requested auto): io_uring probe succeeded (...)"
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn selection(&self) -> &Selection;

    /// The engine's buffer pool; on io_uring its slots are the fixed-buffer table.
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// let pool = engine.pool();
    /// assert_eq!((pool.capacity(), pool.buffer_size()), (64, 65536)); // the default config
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn pool(&self) -> &BufPool;

    /// Whether files this engine opens use direct I/O unless their [`OpenOptions`] say otherwise
    /// (`io.direct_io` in the config).
    fn direct_io(&self) -> bool;

    /// A snapshot of the engine's counters (cheap: relaxed loads).
    fn stats(&self) -> EngineStats;

    /// A buffer of the engine's pool, registered with this engine (waits while all are out).
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// let page = engine.acquire().await; // Buf<Registered>: fixed operations allowed
    /// assert_eq!(page.len(), engine.pool().buffer_size());
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn acquire(&self) -> impl Future<Output = Buf<Registered>> + Send {
        async move { self.pool().acquire().await.cast() }
    }

    /// Opens a file (on the blocking pool). Direct I/O follows [`OpenOptions::direct`] when it
    /// was set, else the engine's [`direct_io`](Self::direct_io) default.
    ///
    /// # Errors
    ///
    /// [`Error::Open`](crate::Error::Open) with the path and the OS error.
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// let log = engine.open(dir.path().join("log"), &OpenOptions::new().create(true)).await?;
    /// assert_eq!(log.size()?, 0);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn open(&self, path: impl AsRef<Path> + Send, options: &OpenOptions) -> impl Future<Output = Result<File>> + Send {
        let path = path.as_ref().to_path_buf();
        let options = options.clone().direct_default(self.direct_io());
        async move { File::open(path, &options).await }
    }

    /// Reads up to `buf.len()` bytes at `offset`. `Ok(0)` is end of file. A `Buf<Registered>`
    /// of this engine's pool uses READ_FIXED on io_uring.
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// engine.write_at(&file, Buf::from(b"hello".to_vec()), 0).await.0?;
    /// let page = engine.acquire().await; // 64 KiB asked for...
    /// let (n, page) = engine.read_at(&file, page, 0).await.into_result().map_err(|(e, _)| e)?;
    /// assert_eq!((n, &page[..]), (5, &b"hello"[..])); // ...5 arrived: a short read, not an error
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn read_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Buf<Completed>>> + Send;

    /// Writes up to `buf.len()` bytes at `offset`. A `Buf<Registered>` of this engine's pool
    /// uses WRITE_FIXED on io_uring.
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// let record = Buf::from(vec![1u8; 100]); // the caller's own memory
    /// let (n, _record) = engine.write_at(&file, record, 0).await.into_result().map_err(|(e, _)| e)?;
    /// assert_eq!(n, 100);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn write_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Buf<Completed>>> + Send;

    /// Reads with IORING_OP_READ_FIXED: only registered buffers compile.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignBuffer`](crate::Error::ForeignBuffer) when `buf` belongs to another
    /// engine's pool (nothing is submitted).
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// let page = engine.acquire().await;
    /// let (n, _page) = engine.read_fixed_at(&file, page, 0).await.into_result().map_err(|(e, _)| e)?;
    /// assert_eq!(n, 0); // the file is empty: end of file
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn read_fixed_at(
        &self,
        file: &File,
        buf: Buf<Registered>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Buf<Completed>>> + Send;

    /// Writes with IORING_OP_WRITE_FIXED: only registered buffers compile.
    ///
    /// # Errors
    ///
    /// As [`read_fixed_at`](Self::read_fixed_at).
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// let mut page = engine.acquire().await;
    /// page.fill(9);
    /// engine.write_fixed_at(&file, page, 0).await.0?;
    /// assert_eq!(file.size()?, 65536);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn write_fixed_at(
        &self,
        file: &File,
        buf: Buf<Registered>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Buf<Completed>>> + Send;

    /// Reads exactly `buf.len()` bytes, continuing short reads.
    ///
    /// # Errors
    ///
    /// [`Error::UnexpectedEof`](crate::Error::UnexpectedEof) at end of file; the buffer's length
    /// is then the bytes read.
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// engine.write_at(&file, Buf::from(b"0123456789".to_vec()), 0).await.0?;
    /// let (result, four) = engine.read_exact_at(&file, Buf::from(vec![0; 4]), 2).await.into_parts();
    /// result?;
    /// assert_eq!(&four[..], b"2345");
    /// let (result, _) = engine.read_exact_at(&file, Buf::from(vec![0; 4]), 8).await.into_parts();
    /// assert!(matches!(result, Err(ferrite_io::Error::UnexpectedEof { done: 2, wanted: 4, .. })));
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn read_exact_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> impl Future<Output = BufResult<(), Buf<Completed>>> + Send;

    /// Writes all `buf.len()` bytes, continuing short writes.
    ///
    /// # Errors
    ///
    /// [`Error::WriteZero`](crate::Error::WriteZero) when a write makes no progress.
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// engine.write_all_at(&file, Buf::from(vec![3; 4096]), 4096).await.0?;
    /// assert_eq!(file.size()?, 8192);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn write_all_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> impl Future<Output = BufResult<(), Buf<Completed>>> + Send;

    /// Writes all of `buf` at `offset`, then `fdatasync`s. On io_uring the two are one linked
    /// submission (WRITE -> FSYNC(DATASYNC)); a short write breaks the link and is continued.
    /// `Ok(())` means the bytes are durable.
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// let record = Buf::from(b"commit 42\n".to_vec());
    /// engine.write_durable_at(&file, record, 0).await.0?; // on disk when this returns Ok
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn write_durable_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> impl Future<Output = BufResult<(), Buf<Completed>>> + Send;

    /// Reads into several buffers in order (preadv), each up to its length. Each returned
    /// buffer's length is the bytes it received. At most 1024 buffers.
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// engine.write_at(&file, Buf::from(b"headerbody".to_vec()), 0).await.0?;
    /// let parts = vec![Buf::from(vec![0; 6]), Buf::from(vec![0; 4])];
    /// let (n, parts) = engine.read_vectored_at(&file, parts, 0).await.into_result().map_err(|(e, _)| e)?;
    /// assert_eq!((n, &parts[0][..], &parts[1][..]), (10, &b"header"[..], &b"body"[..]));
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn read_vectored_at<S: Submittable>(
        &self,
        file: &File,
        bufs: Vec<Buf<S>>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Vec<Buf<Completed>>>> + Send;

    /// Writes several buffers in order (pwritev). At most 1024 buffers.
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// let parts = vec![Buf::from(b"head".to_vec()), Buf::from(b"tail".to_vec())];
    /// let (n, _parts) = engine.write_vectored_at(&file, parts, 0).await.into_result().map_err(|(e, _)| e)?;
    /// assert_eq!(n, 8);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn write_vectored_at<S: Submittable>(
        &self,
        file: &File,
        bufs: Vec<Buf<S>>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Vec<Buf<Completed>>>> + Send;

    /// `fsync`: data and metadata durable.
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// engine.write_at(&file, Buf::from(vec![1; 10]), 0).await.0?;
    /// engine.sync_all(&file).await?; // data and metadata (size, times) on disk
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn sync_all(&self, file: &File) -> impl Future<Output = Result<()>> + Send;

    /// `fdatasync`: data (and the metadata needed to read it) durable.
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// engine.write_at(&file, Buf::from(vec![1; 10]), 0).await.0?;
    /// engine.sync_data(&file).await?; // data on disk
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn sync_data(&self, file: &File) -> impl Future<Output = Result<()>> + Send;

    /// Runs every operation of `batch` (one submission on io_uring) and returns one result per
    /// operation, in order, each with its buffer. The batch is left empty, ready for reuse. A
    /// future dropped part-way gives every buffer back (at its completion) and empties the batch.
    ///
    /// ```
    /// # use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    /// # let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// let mut batch = ferrite_io::Batch::new();
    /// batch.write_at(&file, Buf::from(vec![1; 10]), 0);
    /// batch.write_at(&file, Buf::from(vec![2; 10]), 10);
    /// let results: Vec<_> = engine.submit_batch(&mut batch).await.collect();
    /// assert!(results.iter().all(|r| matches!(r.0, Ok(10))));
    /// assert!(batch.is_empty()); // ready to be refilled
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    fn submit_batch<'b>(&self, batch: &'b mut Batch) -> impl Future<Output = BatchResults<'b>> + Send;
}

/// The most buffers one vectored operation takes (Linux's `IOV_MAX`); more fail with `EINVAL`.
///
/// ```
/// assert_eq!(ferrite_io::io::MAX_VECTORED, 1024);
/// ```
pub const MAX_VECTORED: usize = 1024;

/// The engine chosen at run time: what [`create_engine`] returns (in an `Arc`). It implements
/// [`IoEngine`] by dispatching to the engine inside.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::{Engine, IoEngineConfig};
/// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
/// match &*engine {
///     #[cfg(all(feature = "io-uring", target_os = "linux"))]
///     Engine::Uring(uring) => println!("io_uring, {} operations in flight", uring.in_flight()),
///     Engine::Tokio(_) => println!("tokio's blocking pool"),
/// }
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
pub enum Engine {
    /// io_uring.
    #[cfg(uring)]
    Uring(UringEngine),
    /// tokio's blocking pool.
    Tokio(TokioEngine),
}

/// What storage code holds: a shared, cheaply cloned handle to the chosen engine.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::{IoEngine, IoEngineConfig, SharedIoEngine};
/// let engine: SharedIoEngine = ferrite_io::create_engine(IoEngineConfig::default())?;
/// let task = tokio::spawn({
///     let engine = engine.clone(); // an Arc clone: the same engine and pool
///     async move { engine.acquire().await.len() }
/// });
/// assert_eq!(task.await.unwrap(), engine.pool().buffer_size());
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
pub type SharedIoEngine = Arc<Engine>;

macro_rules! dispatch {
    ($self:ident, $e:ident => $body:expr) => {
        match $self {
            #[cfg(uring)]
            Engine::Uring($e) => $body,
            Engine::Tokio($e) => $body,
        }
    };
}

/// As `dispatch!`, for the single reads and writes: returns the chosen engine's own future in
/// a [`Dispatch`] instead of awaiting it inside an `async fn` of its own.
macro_rules! dispatch_future {
    ($self:ident, $e:ident => $body:expr) => {
        match $self {
            #[cfg(uring)]
            Engine::Uring($e) => Dispatch::Uring { future: $body },
            #[cfg(uring)]
            Engine::Tokio($e) => Dispatch::Tokio { future: $body },
            #[cfg(not(uring))]
            Engine::Tokio($e) => Dispatch::<std::future::Pending<_>, _>::Tokio { future: $body },
        }
    };
}

pin_project_lite::pin_project! {
    /// The future of a single read or write through an [`Engine`]: the chosen engine's own
    /// future, polled in place. An `async fn` wrapper would be one more state machine that
    /// copies the buffer and the arguments before the engine's future even starts, which
    /// measured about 2% of a page-cache read (20,000-read chunks against `preadv2`).
    #[project = DispatchProj]
    enum Dispatch<U, T> {
        Uring { #[pin] future: U },
        Tokio { #[pin] future: T },
    }
}

impl<U: Future, T: Future<Output = U::Output>> Future for Dispatch<U, T> {
    type Output = U::Output;

    // Always inlined: a fast-path read then issues its syscall in the caller's own poll, and
    // returns to it without an extra frame (see `nowait::try_rw` on returns after a syscall).
    #[inline(always)]
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<U::Output> {
        match self.project() {
            DispatchProj::Uring { future } => future.poll(cx),
            DispatchProj::Tokio { future } => future.poll(cx),
        }
    }
}

impl IoEngine for Engine {
    fn backend(&self) -> Backend {
        dispatch!(self, e => e.backend())
    }
    fn selection(&self) -> &Selection {
        dispatch!(self, e => e.selection())
    }
    fn pool(&self) -> &BufPool {
        dispatch!(self, e => e.pool())
    }
    fn direct_io(&self) -> bool {
        dispatch!(self, e => e.direct_io())
    }
    fn stats(&self) -> EngineStats {
        dispatch!(self, e => e.stats())
    }
    fn read_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Buf<Completed>>> + Send {
        dispatch_future!(self, e => e.read_at(file, buf, offset))
    }
    fn write_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Buf<Completed>>> + Send {
        dispatch_future!(self, e => e.write_at(file, buf, offset))
    }
    fn read_fixed_at(
        &self,
        file: &File,
        buf: Buf<Registered>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Buf<Completed>>> + Send {
        dispatch_future!(self, e => e.read_fixed_at(file, buf, offset))
    }
    fn write_fixed_at(
        &self,
        file: &File,
        buf: Buf<Registered>,
        offset: u64,
    ) -> impl Future<Output = BufResult<usize, Buf<Completed>>> + Send {
        dispatch_future!(self, e => e.write_fixed_at(file, buf, offset))
    }
    async fn read_exact_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<(), Buf<Completed>> {
        dispatch!(self, e => e.read_exact_at(file, buf, offset).await)
    }
    async fn write_all_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<(), Buf<Completed>> {
        dispatch!(self, e => e.write_all_at(file, buf, offset).await)
    }
    async fn write_durable_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<(), Buf<Completed>> {
        dispatch!(self, e => e.write_durable_at(file, buf, offset).await)
    }
    async fn read_vectored_at<S: Submittable>(
        &self,
        file: &File,
        bufs: Vec<Buf<S>>,
        offset: u64,
    ) -> BufResult<usize, Vec<Buf<Completed>>> {
        dispatch!(self, e => e.read_vectored_at(file, bufs, offset).await)
    }
    async fn write_vectored_at<S: Submittable>(
        &self,
        file: &File,
        bufs: Vec<Buf<S>>,
        offset: u64,
    ) -> BufResult<usize, Vec<Buf<Completed>>> {
        dispatch!(self, e => e.write_vectored_at(file, bufs, offset).await)
    }
    async fn sync_all(&self, file: &File) -> Result<()> {
        dispatch!(self, e => e.sync_all(file).await)
    }
    async fn sync_data(&self, file: &File) -> Result<()> {
        dispatch!(self, e => e.sync_data(file).await)
    }
    async fn submit_batch<'b>(&self, batch: &'b mut Batch) -> BatchResults<'b> {
        dispatch!(self, e => e.submit_batch(batch).await)
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine").field("selection", self.selection()).field("pool", self.pool()).finish()
    }
}

/// Builds the engine `config.engine` asks for.
///
/// - `auto`: io_uring when it works here; otherwise the tokio engine, after exactly one
///   `tracing::warn!` naming the reason.
/// - `uring`: io_uring, or [`Error::Unavailable`](crate::Error::Unavailable) with the reason.
/// - `tokio`: the tokio engine; io_uring is never touched.
///
/// The choice and its reason are in [`IoEngine::selection`]. Needs no runtime: the engine can
/// be created anywhere and used from any tokio runtime (with or without its I/O driver) or
/// thread, for its whole life.
///
/// # Errors
///
/// [`Error::Config`](crate::Error::Config) for an invalid config,
/// [`Error::Unavailable`](crate::Error::Unavailable) for `uring` where io_uring does not work,
/// and [`Error::Map`](crate::Error::Map) when the buffer arena cannot be mapped.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::{IoEngine, IoEngineConfig};
/// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
/// println!("{}", engine.selection());
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
pub fn create_engine(config: IoEngineConfig) -> Result<SharedIoEngine> {
    config.validate()?;
    let requested = config.engine;
    let tokio = |reason| -> Result<SharedIoEngine> {
        let selection = Selection { requested, backend: Backend::Tokio, reason };
        tracing::info!(%selection, "ferrite-io engine selected");
        Ok(Arc::new(Engine::Tokio(TokioEngine::with_selection(&config, selection)?)))
    };
    match requested {
        EngineChoice::Tokio => tokio(Reason::Requested(EngineChoice::Tokio)),
        EngineChoice::Uring | EngineChoice::Auto => match new_uring(&config) {
            Ok(engine) => {
                tracing::info!(selection = %engine.selection(), "ferrite-io engine selected");
                Ok(Arc::new(engine))
            }
            Err(crate::Error::Unavailable(why)) if requested == EngineChoice::Auto => {
                tracing::warn!(reason = %why, "io_uring unavailable, falling back to the tokio engine");
                tokio(Reason::FellBack(why))
            }
            Err(e) => Err(e),
        },
    }
}

#[cfg(uring)]
fn new_uring(config: &IoEngineConfig) -> Result<Engine> {
    UringEngine::new(config).map(Engine::Uring)
}

#[cfg(not(uring))]
fn new_uring(_config: &IoEngineConfig) -> Result<Engine> {
    Err(crate::Error::Unavailable(Unsupported::not_compiled()))
}
