//! [`PageFlusher`]: takes page buffers by value, writes them at their log address, and hands
//! each back once it is acknowledged.
//!
//! # What an acknowledgement means
//!
//! `flush` and `flush_partial` resolve `Ok` only when the page's data **and everything before it
//! in the log** is durable: [`PageFlusher::flushed_until`] has reached the end of what was
//! flushed. After any crash, [`recover`](super::recover) with the last `flushed_until` seen finds
//! every acknowledged byte, and the resume procedure (truncate the file to
//! [`Recovery::durable_until`](super::Recovery::durable_until), start a flusher there) keeps it.
//!
//! # Rules, each with its reason
//!
//! - A page is durable once its write completed in full *and* a sync that started after that
//!   completion succeeded. With [`SyncPolicy::Group`] one `fdatasync` covers every page whose
//!   write completed before it started (group commit); [`SyncPolicy::PerPage`] links each write
//!   to its own `fdatasync` (one submission on io_uring); [`SyncPolicy::None`] counts a page as
//!   durable on write completion (for logs made durable by other means: no crash guarantee).
//! - Pages may complete in any order; `flushed_until` advances only over a contiguous prefix,
//!   and a flush waits for it. A page whose earlier neighbour's write failed (or whose flush
//!   was cancelled, below) resolves with [`Error::Gap`] (it is durable, and is acknowledged
//!   once the earlier page is flushed again).
//! - **No overwrite of acknowledged data.** A page is written whole once ([`PageFlusher::flush`]
//!   closes it; flushing it again is [`Error::Rewrite`]). The log's tail page may be flushed
//!   while it fills with [`PageFlusher::flush_partial`]: each partial flush appends payload and
//!   names the previous acknowledged flush in its header (see [`page`]), so a tear of the new
//!   flush leaves the previous one readable. Flushes of one page are serialised: the next is
//!   written only after the previous one is durable, so at most one unsynced write of a page
//!   exists at any time. After a failed write of a page, and when a resumed flusher first
//!   writes the page its `start` is inside, the page is first rewritten as its acknowledged
//!   state (and synced), so no leftover of a write that was never acknowledged stays in it.
//! - A failed sync poisons the flusher: Linux may have marked the dirty pages clean after the
//!   write-back error, so retrying the sync could "succeed" without the data. Every waiter at or
//!   before the failure, and every later flush, fails with [`Error::Poisoned`].
//! - A failed write fails that page only (its buffer comes back); the caller may flush it again.
//! - Dropping a flush future never loses a result: the write and the sync it runs go on in a
//!   task of the runtime the flush was called on, which records the outcome (and returns the
//!   buffer to the pool) even when nobody waits for it any more. A sync whose error nobody
//!   recorded could otherwise have taken the write-back error from the file (Linux reports it
//!   once), and the next sync would pass. Until then the flush future does the work itself, so
//!   a flush needs no task of its own to run: it works wherever its engine does, under
//!   `Handle::block_on` of a current-thread runtime no thread drives, or of one that has shut
//!   down, too. The other side of it: a flush future that is kept but not polled holds up its
//!   own work, and with it the pages that wait for it (the pages after it, and those whose sync
//!   it runs). Poll every flush future you hold (`join!`, `FuturesUnordered`, a task each), or
//!   drop it.
//! - A runtime that shuts down drops its tasks unfinished, so a dropped flush's work may never
//!   record its outcome. Its I/O has begun, and what it did is unknown: a write still in the
//!   kernel could land over a later flush of the page, a sync's error could be lost. Then the
//!   flusher is poisoned as the work is dropped, which also settles the page's claim, so no
//!   later flush waits for it.
//! - Concurrent per-page syncs share the file's error state too: a page whose own sync passed is
//!   durable only after every sync that overlapped it has reported, and none failed.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use tokio::sync::{Notify, Semaphore};

use super::page::{self, PAYLOAD_START};
use crate::buf::{Buf, Completed, Submittable};
use crate::error::{Error, Op, Result};
use crate::io::{BufResult, File, IoEngine};

/// When a flushed page counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Each write is followed by its own `fdatasync` (linked on io_uring).
    PerPage,
    /// Writes that complete close together share one `fdatasync` (group commit).
    Group,
    /// No sync: a page counts as flushed once written (the page cache holds it).
    None,
}

impl std::str::FromStr for SyncPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "per-page" => Ok(SyncPolicy::PerPage),
            "group" => Ok(SyncPolicy::Group),
            "none" => Ok(SyncPolicy::None),
            other => Err(Error::Config {
                key: "sync",
                value: other.to_owned(),
                expected: "one of \"per-page\", \"group\", \"none\"",
            }),
        }
    }
}

/// How a [`PageFlusher`] works.
#[derive(Debug, Clone)]
pub struct FlusherConfig {
    /// Bytes per page: a multiple of 4096 that fits the engine's pool buffers.
    pub page_size: usize,
    /// Pages in flight at once; further flushes wait.
    pub depth: usize,
    /// When a page counts as durable.
    pub sync: SyncPolicy,
    /// The address `flushed_until` starts at: 0 for a new log, [`Recovery::durable_until`] for
    /// a reopened one (inside a page when the log's tail page was open). Truncate the file to it
    /// first: what lies after it was never acknowledged, and a later recovery must not count it.
    ///
    /// [`Recovery::durable_until`]: super::Recovery::durable_until
    pub start: u64,
    /// The sequence number of the first flush: 1 for a new log,
    /// `Recovery::max_sequence_seen + 1` for a reopened one (sequences only inform; they are
    /// not needed to tell a tear from corruption).
    pub first_sequence: u64,
}

impl Default for FlusherConfig {
    fn default() -> Self {
        FlusherConfig { page_size: 64 * 1024, depth: 8, sync: SyncPolicy::Group, start: 0, first_sequence: 1 }
    }
}

/// Writes pages of a HybridLog and reports how far the log is durable.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::hybridlog::{FlusherConfig, PageFlusher, page::PAYLOAD_START};
/// use ferrite_io::{IoEngine, IoEngineConfig, OpenOptions};
/// # let dir = tempfile::tempdir().unwrap();
/// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
/// let file = engine.open(dir.path().join("log"), &OpenOptions::new().create(true)).await?;
/// let flusher = PageFlusher::new(engine.clone(), file, FlusherConfig::default());
///
/// // The tail page, flushed while it fills, then closed.
/// let mut page = engine.acquire().await; // 64 KiB, the default page size
/// page[PAYLOAD_START..PAYLOAD_START + 5].copy_from_slice(b"hello");
/// let (done, mut page) = flusher.flush_partial(page.into_free(), 0, 5).await.into_parts();
/// done?;
/// assert_eq!(flusher.flushed_until(), 512 + 5); // inside the open page
/// let mut page = page.into_free();
/// page[PAYLOAD_START + 5..PAYLOAD_START + 11].copy_from_slice(b" world");
/// flusher.flush(page, 0, 11).await.0?;
/// assert_eq!(flusher.flushed_until(), 65536);
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
pub struct PageFlusher<E> {
    core: Arc<Core<E>>,
    slots: Arc<Semaphore>,
}

/// What the per-page tasks share with the flusher.
struct Core<E> {
    engine: Arc<E>,
    file: File,
    config: FlusherConfig,
    state: Mutex<State>,
    /// Woken when a sync finishes, a per-page sync ticket closes, or a page changes state.
    changed: Notify,
}

/// A page at or after the one holding `flushed_until` that has been flushed.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// The payload length of the last durable flush, and whether it closed the page.
    durable: Option<(usize, bool)>,
    /// A flush of the page is between its claim and its outcome.
    busy: bool,
    /// A flush that closes the page was claimed (and did not fail).
    closing: bool,
    /// The last flush failed its write: what is on disk may not be the durable state.
    failed: bool,
}

#[derive(Default)]
struct State {
    /// Everything below is acknowledged.
    flushed_until: u64,
    /// Flushed pages at or after the page holding `flushed_until`.
    pages: BTreeMap<u64, Entry>,
    /// Sequence number of the last page sealed.
    sequence: u64,
    /// Whether a group sync is running, and the generation the next one will have.
    syncing: bool,
    next_sync: u64,
    /// Highest generation whose sync succeeded (generations start at 1).
    synced: u64,
    /// Per-page syncs: the next ticket, and the tickets whose sync has not reported yet.
    next_ticket: u64,
    open: BTreeSet<u64>,
    /// The first failed sync: the address of a page it covered, and the error.
    poisoned: Option<(u64, String)>,
}

/// A claimed flush: what to write.
struct Claim {
    sequence: u64,
    prev_len: usize,
    /// The page must first be rewritten as its durable state (see the module docs).
    repair: bool,
}

impl<E: IoEngine> PageFlusher<E> {
    /// A flusher writing to `file` through `engine` (a [`SharedIoEngine`](crate::SharedIoEngine)
    /// or an `Arc` of any engine, such as a fault injector).
    pub fn new(engine: Arc<E>, file: File, config: FlusherConfig) -> Self {
        let sequence = config.first_sequence.saturating_sub(1);
        let state = State { flushed_until: config.start, next_sync: 1, sequence, ..State::default() };
        PageFlusher {
            slots: Arc::new(Semaphore::new(config.depth.max(1))),
            core: Arc::new(Core { engine, file, config, state: Mutex::new(state), changed: Notify::new() }),
        }
    }

    /// The engine pages are written through.
    pub fn engine(&self) -> &Arc<E> {
        &self.core.engine
    }

    /// The log file.
    pub fn file(&self) -> &File {
        &self.core.file
    }

    /// The address below which every byte of the log is acknowledged durable. Inside a page
    /// while that page is open (flushed by [`flush_partial`](Self::flush_partial) only).
    pub fn flushed_until(&self) -> u64 {
        self.core.lock().flushed_until
    }

    /// The failed sync that poisoned the flusher, if one did.
    pub fn poisoned(&self) -> Option<Error> {
        self.core.poison_error()
    }

    /// Seals `page` as the page at `address` (its first `payload_len` bytes from
    /// [`PAYLOAD_START`] are the payload), writes it, and gives it back once it is acknowledged:
    /// durable under the sync policy, and `flushed_until` past it. This closes the page: it
    /// cannot be flushed again. Waits while `depth` pages are in flight. Must be called inside a
    /// tokio runtime, where a dropped flush's work goes on (see the module docs); the runtime
    /// need not run its tasks for the flush itself, nor be alive.
    ///
    /// # Errors
    ///
    /// [`Error::Unaligned`] for an address or buffer length that is not the page size,
    /// [`Error::Page`] when the payload does not fit, [`Error::Rewrite`] for a page already
    /// closed (or an open page's acknowledged payload shortened), the write's I/O error (the page
    /// is not acknowledged; flushing it again is safe; under `Handle::block_on` of a runtime that
    /// has shut down, the tokio engine's [`Error::Cancelled`]), [`Error::Gap`] when an earlier
    /// page's write failed, [`Error::Poisoned`] once a sync failed (or a runtime shutting down
    /// dropped a flush's work with its I/O in flight), and [`Error::NoRuntime`] outside a tokio
    /// runtime. None of these waits for ever.
    ///
    /// ```
    /// use ferrite_io::hybridlog::{FlusherConfig, PageFlusher};
    /// use ferrite_io::{Backend, Error, IoEngine, IoEngineConfig, OpenOptions};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let runtime = tokio::runtime::Runtime::new().unwrap();
    /// let handle = runtime.handle().clone();
    /// let engine = runtime.block_on(async { ferrite_io::create_engine(IoEngineConfig::default()) })?;
    /// let file = runtime.block_on(engine.open(dir.path().join("log"), &OpenOptions::new().create(true)))?;
    /// let flusher = PageFlusher::new(engine.clone(), file, FlusherConfig::default());
    /// drop(runtime);
    /// // The runtime is gone: io_uring still flushes; the tokio engine, which needs the
    /// // runtime's blocking pool, fails typed, with the page back.
    /// let page = engine.pool().try_acquire().unwrap();
    /// let (done, page) = handle.block_on(flusher.flush(page, 0, 0)).into_parts();
    /// match engine.backend() {
    ///     Backend::Uring => assert_eq!(flusher.flushed_until(), 65536),
    ///     Backend::Tokio => assert!(matches!(done, Err(Error::Cancelled { .. })), "{done:?}"),
    /// }
    /// assert_eq!(page.len(), 65536);
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    pub async fn flush<S: Submittable>(
        &self,
        page: Buf<S>,
        address: u64,
        payload_len: usize,
    ) -> BufResult<(), Buf<Completed>> {
        self.submit(page, address, payload_len, false).await
    }

    /// Flushes the log's tail page while it is still filling: as [`flush`](Self::flush), but the
    /// page stays open, and the buffer comes back with the bytes past the payload as they were
    /// (`flush` zeroes them). Call it again with the same page as more payload arrives (the
    /// first bytes must stay what they were: a page only grows), and close it with `flush`. Only the
    /// sectors up to the payload's end (rounded up to 4 KiB) are written, and the page's header
    /// names this flush's predecessor, so a tear keeps the last acknowledged flush. Resolves
    /// once `flushed_until` reaches the payload's end (`address + 512 + payload_len`).
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush).
    pub async fn flush_partial<S: Submittable>(
        &self,
        page: Buf<S>,
        address: u64,
        payload_len: usize,
    ) -> BufResult<(), Buf<Completed>> {
        self.submit(page, address, payload_len, true).await
    }

    async fn submit<S: Submittable>(
        &self,
        mut page: Buf<S>,
        address: u64,
        payload_len: usize,
        open: bool,
    ) -> BufResult<(), Buf<Completed>> {
        let size = self.core.config.page_size;
        if page.len() != size && page.set_len(size).is_err() {
            let e = Error::Unaligned { what: "page buffer length", value: page.len() as u64, page_size: size };
            return refuse(page, e);
        }
        if address % size as u64 != 0 {
            return refuse(page, Error::Unaligned { what: "log address", value: address, page_size: size });
        }
        if payload_len > page::capacity(size) {
            let e = page::PageError::Invalid { address, reason: "payload does not fit the page" };
            return refuse(page, e.into());
        }
        if open && self.core.config.sync == SyncPolicy::None {
            // Without syncs, several unsynced flushes of the page could pile up, and a crash
            // could mix them in ways its header cannot describe.
            let e =
                Error::Config { key: "sync", value: "none".into(), expected: "per-page or group for flush_partial" };
            return refuse(page, e);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return refuse(page, Error::NoRuntime("PageFlusher::flush"));
        };
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            unreachable!("the flusher never closes its semaphore");
        };
        let claim = match self.core.claim(address, payload_len, open).await {
            Ok(claim) => claim,
            Err(e) => return refuse(page, e),
        };
        // From the claim on, the outcome is recorded whatever happens to this future: the write
        // runs here, and moves to a task of its own if this future is dropped before it is done.
        let mut flight = Flight { core: self.core.clone(), address, recorded: false };
        let work = Detach::new(runtime, async move {
            let done = flight.core.write(page, address, payload_len, open, claim).await;
            flight.recorded = true;
            drop((flight, slot));
            done
        });
        let BufResult(result, page) = work.await;
        let end = if open { address + (PAYLOAD_START + payload_len) as u64 } else { address + size as u64 };
        let result = match result {
            Ok(()) => self.core.covered(address, end).await,
            Err(e) => Err(e),
        };
        BufResult(result, page)
    }
}

/// Why a flusher is poisoned when the runtime cancels a flush's task after its I/O began.
const ABANDONED: &str = "a flush was cancelled with its I/O in flight (its runtime shut down)";

/// A claimed flush, from its claim until its outcome is recorded. Its work is dropped unfinished
/// only when a runtime that shuts down drops the task it was moved to (see [`Detach`]), or when
/// it panics; by then its I/O has begun, and what it did is unknown: a write still in the kernel
/// could land over a later flush of the page. Dropped so, this poisons the flusher and settles
/// the claim, so the page is never left claimed (every later flush of it would wait for ever).
struct Flight<E: IoEngine> {
    core: Arc<Core<E>>,
    address: u64,
    recorded: bool,
}

impl<E: IoEngine> Drop for Flight<E> {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        let address = self.address;
        tracing::error!(address, "{ABANDONED}; the page flusher is poisoned");
        self.core.lock().poisoned.get_or_insert((address, ABANDONED.into()));
        self.core.record(address, |entry| {
            entry.failed = true;
            entry.closing = false;
        });
    }
}

/// A flush's work: polled by the flush future, and moved to a task of `runtime` when that future
/// is dropped before the work is done, so the outcome is recorded even when nobody waits for it.
struct Detach<F: Future<Output: Send> + Send + 'static> {
    runtime: tokio::runtime::Handle,
    work: Option<Pin<Box<F>>>,
}

impl<F: Future<Output: Send> + Send + 'static> Detach<F> {
    fn new(runtime: tokio::runtime::Handle, work: F) -> Self {
        Detach { runtime, work: Some(Box::pin(work)) }
    }
}

impl<F: Future<Output: Send> + Send + 'static> Future for Detach<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let work = self.work.as_mut().expect("polled after it finished");
        let done = std::task::ready!(work.as_mut().poll(cx));
        self.work = None;
        Poll::Ready(done)
    }
}

impl<F: Future<Output: Send> + Send + 'static> Drop for Detach<F> {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            // A runtime that has shut down drops the task at once, and `Flight` settles the claim.
            drop(self.runtime.spawn(work));
        }
    }
}

/// A group sync, from its start until it has recorded its outcome. Dropped unfinished (a runtime
/// shutting down dropped the work running it), its outcome, and maybe the file's write-back
/// error, is lost: the flusher is poisoned.
struct SyncRun<E> {
    core: Arc<Core<E>>,
    address: u64,
    recorded: bool,
}

impl<E> Drop for SyncRun<E> {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        tracing::error!(address = self.address, "{ABANDONED}; the page flusher is poisoned");
        {
            let mut state = self.core.lock();
            state.syncing = false;
            state.poisoned.get_or_insert((self.address, ABANDONED.into()));
        }
        self.core.changed.notify_waiters();
    }
}

impl<E> Core<E> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<E: IoEngine> Core<E> {
    /// Claims the page at `address` for a flush of `len` payload bytes, waiting while another
    /// flush of it is in progress.
    async fn claim(&self, address: u64, len: usize, open: bool) -> Result<Claim> {
        let size = self.config.page_size as u64;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut guard = self.lock();
                let state = &mut *guard;
                if let Some((at, cause)) = &state.poisoned {
                    return Err(poisoned(*at, cause));
                }
                let flushed_until = state.flushed_until;
                if address + size <= flushed_until {
                    return Err(Error::Rewrite { address, reason: "the page is closed and acknowledged" });
                }
                let entry = state.pages.entry(address).or_default();
                if !entry.busy {
                    if entry.closing {
                        return Err(Error::Rewrite { address, reason: "the page was already flushed whole" });
                    }
                    // A flusher resumed inside this page: its start is the acknowledged state.
                    let resumed = entry.durable.is_none() && address < flushed_until;
                    let prev_len = match entry.durable {
                        Some((len, _)) => len,
                        None if resumed => (flushed_until - address) as usize - PAYLOAD_START,
                        None => 0,
                    };
                    if len < prev_len {
                        return Err(Error::Rewrite { address, reason: "a flush may not shorten an acknowledged page" });
                    }
                    entry.busy = true;
                    entry.closing = !open;
                    let repair = entry.failed || resumed;
                    state.sequence += 1;
                    return Ok(Claim { sequence: state.sequence, prev_len, repair });
                }
            }
            changed.await;
        }
    }

    /// Writes one page (first repairing it if the claim says so) and makes it durable under the
    /// policy; records the outcome.
    async fn write<S: Submittable>(
        self: &Arc<Self>,
        mut page: Buf<S>,
        address: u64,
        len: usize,
        open: bool,
        claim: Claim,
    ) -> BufResult<(), Buf<Completed>> {
        let size = self.config.page_size;
        let mut repaired = Ok(());
        if claim.repair {
            // The acknowledged state, whole: the prefix, zeros after it. The new bytes are kept
            // aside while the buffer holds it.
            let aside = page[PAYLOAD_START + claim.prev_len..PAYLOAD_START + len].to_vec();
            if let Err(e) = page::seal(&mut page, address, claim.sequence, claim.prev_len, claim.prev_len, true) {
                return self.failed(address, page.into_in_flight().into_failed(), e.into());
            }
            let BufResult(result, done) = self.durable(page, address).await;
            let mut back = done.into_free();
            back.set_len_unchecked(size);
            back[PAYLOAD_START + claim.prev_len..PAYLOAD_START + len].copy_from_slice(&aside);
            repaired = result;
            page = back.cast();
        }
        if let Err(e) = repaired {
            return self.failed(address, page.into_in_flight().into_failed(), e);
        }
        // An open page's caller may already have bytes past the payload (records not yet
        // flushed): the page written has zeros there, the buffer gets them back.
        let unflushed = open.then(|| page[PAYLOAD_START + len..].to_vec());
        if let Err(e) = page::seal(&mut page, address, claim.sequence, len, claim.prev_len, open) {
            return self.failed(address, page.into_in_flight().into_failed(), e.into());
        }
        if open {
            // Only the sectors that hold the header and payload, in whole 4 KiB blocks (O_DIRECT).
            page.set_len_unchecked((PAYLOAD_START + len).next_multiple_of(4096).min(size));
        }
        let BufResult(result, page) = self.durable(page, address).await;
        let mut page = page.into_free();
        page.set_len_unchecked(size);
        if let Some(bytes) = unflushed {
            page[PAYLOAD_START + len..].copy_from_slice(&bytes);
        }
        let page: Buf<Completed> = page.cast();
        match result {
            Ok(()) => {
                self.record(address, |entry| {
                    entry.durable = Some((len, !open));
                    entry.failed = false;
                });
                BufResult(Ok(()), page)
            }
            Err(e) => self.failed(address, page, e),
        }
    }

    /// Records a failed flush of the page at `address`.
    fn failed(&self, address: u64, page: Buf<Completed>, error: Error) -> BufResult<(), Buf<Completed>> {
        self.record(address, |entry| {
            entry.failed = true;
            entry.closing = false;
        });
        BufResult(Err(error), page)
    }

    /// Ends the flush of the page at `address` with `update`, advances `flushed_until` over the
    /// contiguous durable prefix, and wakes the waiters.
    fn record(&self, address: u64, update: impl FnOnce(&mut Entry)) {
        let size = self.config.page_size as u64;
        {
            let mut state = self.lock();
            if let Some(entry) = state.pages.get_mut(&address) {
                entry.busy = false;
                update(entry);
            }
            loop {
                let at = state.flushed_until - state.flushed_until % size;
                match state.pages.get(&at).and_then(|entry| entry.durable) {
                    Some((_, true)) => {
                        state.pages.remove(&at);
                        state.flushed_until = at + size;
                    }
                    Some((len, false)) => {
                        let end = at + (PAYLOAD_START + len) as u64;
                        state.flushed_until = state.flushed_until.max(end);
                        break;
                    }
                    None => break,
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Waits until `flushed_until` reaches `end` (the flush of the page at `address` is durable).
    async fn covered(&self, address: u64, end: u64) -> Result<()> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let state = self.lock();
                if state.flushed_until >= end {
                    return Ok(());
                }
                if let Some((at, cause)) = &state.poisoned {
                    return Err(poisoned(*at, cause));
                }
                let failed = state.pages.range(..address).find(|(_, entry)| entry.failed && !entry.busy);
                if let Some((&blocked_by, _)) = failed {
                    return Err(Error::Gap { address, blocked_by });
                }
            }
            changed.await;
        }
    }

    /// Writes `page` at `address` and makes it durable under the policy.
    async fn durable<S: Submittable>(self: &Arc<Self>, page: Buf<S>, address: u64) -> BufResult<(), Buf<Completed>> {
        match self.config.sync {
            SyncPolicy::PerPage => {
                let ticket = self.open_ticket();
                let written = self.engine.write_durable_at(&self.file, page, address).await;
                let (result, page) = written.into_parts();
                let result = match result {
                    Err(Error::Io { op: Op::SyncData, source, .. }) => {
                        self.close_ticket(ticket, Some((address, source.to_string())));
                        Err(self.poison_error().unwrap_or_else(|| poisoned(address, "sync failed")))
                    }
                    Err(Error::Cancelled { op: Op::SyncData, .. }) => {
                        self.close_ticket(ticket, Some((address, "sync cancelled".into())));
                        Err(self.poison_error().unwrap_or_else(|| poisoned(address, "sync cancelled")))
                    }
                    Err(e) => {
                        self.close_ticket(ticket, None);
                        Err(e)
                    }
                    Ok(()) => self.settle(ticket).await,
                };
                BufResult(result, page)
            }
            SyncPolicy::Group => {
                let (result, page) = self.engine.write_all_at(&self.file, page, address).await.into_parts();
                let result = match result {
                    Ok(()) => self.group_sync(address).await,
                    Err(e) => Err(e),
                };
                BufResult(result, page)
            }
            SyncPolicy::None => {
                let (result, page) = self.engine.write_all_at(&self.file, page, address).await.into_parts();
                BufResult(result.and_then(|()| self.check_poison()), page)
            }
        }
    }

    /// Waits for a sync that starts after now (this page's write has completed), running it if
    /// no sync is running; one sync covers every page that waits for it. The sync runs inside
    /// this page's work, which is never dropped unfinished but by a runtime shutting down (see
    /// [`Detach`]); then [`SyncRun`] records the loss.
    async fn group_sync(self: &Arc<Self>, address: u64) -> Result<()> {
        let wanted = self.lock().next_sync;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let generation = {
                let mut state = self.lock();
                if let Some((at, cause)) = &state.poisoned {
                    return Err(poisoned(*at, cause));
                }
                if state.synced >= wanted {
                    return Ok(());
                }
                if state.syncing {
                    None
                } else {
                    state.syncing = true;
                    state.next_sync += 1;
                    Some(state.next_sync - 1)
                }
            };
            match generation {
                Some(generation) => {
                    let mut run = SyncRun { core: self.clone(), address, recorded: false };
                    let result = self.engine.sync_data(&self.file).await;
                    run.recorded = true;
                    self.finish_sync(generation, address, result);
                }
                None => changed.await,
            }
        }
    }

    /// Records the group sync of `generation` (started for the page at `address`).
    fn finish_sync(&self, generation: u64, address: u64, result: Result<()>) {
        {
            let mut state = self.lock();
            state.syncing = false;
            match &result {
                Ok(()) => state.synced = generation,
                Err(e) => {
                    tracing::error!(address, error = %e, "fdatasync failed; the page flusher is poisoned");
                    state.poisoned.get_or_insert((address, e.to_string()));
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// A ticket for a per-page sync about to start.
    fn open_ticket(&self) -> u64 {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.open.insert(ticket);
        ticket
    }

    /// The per-page sync of `ticket` reported; `failure` poisons the flusher.
    fn close_ticket(&self, ticket: u64, failure: Option<(u64, String)>) {
        {
            let mut state = self.lock();
            state.open.remove(&ticket);
            if let Some((address, cause)) = failure {
                tracing::error!(address, %cause, "fdatasync failed; the page flusher is poisoned");
                state.poisoned.get_or_insert((address, cause));
            }
        }
        self.changed.notify_waiters();
    }

    /// This page's own sync passed: wait until every sync that overlapped it (any ticket issued
    /// before now) has reported, then fail if one of them failed.
    async fn settle(&self, ticket: u64) -> Result<()> {
        let cutoff = {
            let state = self.lock();
            state.next_ticket
        };
        self.close_ticket(ticket, None);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let state = self.lock();
                if let Some((at, cause)) = &state.poisoned {
                    return Err(poisoned(*at, cause));
                }
                if state.open.range(..cutoff).next().is_none() {
                    return Ok(());
                }
            }
            changed.await;
        }
    }

    fn poison_error(&self) -> Option<Error> {
        self.lock().poisoned.as_ref().map(|(address, cause)| poisoned(*address, cause))
    }

    fn check_poison(&self) -> Result<()> {
        self.poison_error().map_or(Ok(()), Err)
    }
}

fn poisoned(address: u64, cause: &str) -> Error {
    Error::Poisoned { address, cause: cause.to_owned() }
}

/// Gives `page` back with `error`, without any I/O.
fn refuse<S: Submittable>(page: Buf<S>, error: Error) -> BufResult<(), Buf<Completed>> {
    BufResult(Err(error), page.into_in_flight().into_failed())
}
