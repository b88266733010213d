//! [`PageFlusher`]: takes page buffers by value, writes them at their log address, and hands
//! each back once it is durable.
//!
//! Durability rules, each with its reason:
//!
//! - A page is acknowledged only after its write completed in full *and* a sync that started
//!   after that completion succeeded. With [`SyncPolicy::Group`] one `fdatasync` covers every
//!   page whose write completed before it started (group commit); [`SyncPolicy::PerPage`] links
//!   each write to its own `fdatasync` (one submission on io_uring); [`SyncPolicy::None`]
//!   acknowledges on write completion (for logs made durable by other means).
//! - [`PageFlusher::flushed_until`] advances only over a contiguous prefix of acknowledged pages;
//!   pages may complete in any order.
//! - A failed sync poisons the flusher: Linux may have marked the dirty pages clean after the
//!   write-back error, so retrying the sync could "succeed" without the data. Every waiter at or
//!   before the failure, and every later flush, fails with [`Error::Poisoned`].
//! - A failed write fails that page only (its buffer comes back); the caller may flush it again.
//! - Dropping a `flush` future never loses a sync result: a group sync, and a per-page write
//!   with its linked sync, run in a task of their own, which records the outcome (and returns
//!   the buffer to the pool) even when nobody waits for it any more. A sync whose error nobody recorded could otherwise have taken
//!   the write-back error from the file (Linux reports it once), and the next sync would pass.
//! - Concurrent per-page syncs share the file's error state too: a page whose own sync passed is
//!   acknowledged only after every sync that overlapped it has reported, and none failed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, Semaphore};

use super::page;
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
    /// The address `flushed_until` starts at: 0 for a new log, [`Recovery::durable_until`]
    /// for a reopened one. Pages above it that survived the crash (see [`Recovery::holes`])
    /// were never acknowledged: truncate the file to `durable_until` (or overwrite them) before
    /// resuming, or a later recovery would count them as log.
    ///
    /// [`Recovery::durable_until`]: super::Recovery::durable_until
    /// [`Recovery::holes`]: super::Recovery::holes
    pub start: u64,
    /// The sequence number of the first page flushed: 1 for a new log,
    /// `Recovery::max_sequence_seen + 1` for a reopened one, so no two writes of a page share a
    /// sequence (torn-write detection relies on it).
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
/// use ferrite_io::hybridlog::{FlusherConfig, PageFlusher};
/// use ferrite_io::{IoEngine, IoEngineConfig, OpenOptions};
/// # let dir = tempfile::tempdir().unwrap();
/// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
/// let file = engine.open(dir.path().join("log"), &OpenOptions::new().create(true)).await?;
/// let flusher = PageFlusher::new(engine.clone(), file, FlusherConfig::default());
///
/// let mut page = engine.acquire().await; // 64 KiB, the default page size
/// page[32..37].copy_from_slice(b"hello"); // payload starts after the 32-byte header
/// let done = flusher.flush(page, 0, 5).await; // the buffer comes back once durable
/// done.0?;
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
    /// Woken when a sync finishes or a per-page sync ticket closes.
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// Everything below is acknowledged.
    flushed_until: u64,
    /// Acknowledged pages at or above `flushed_until`.
    ahead: BTreeSet<u64>,
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

    /// The address below which every page is acknowledged durable.
    pub fn flushed_until(&self) -> u64 {
        self.core.lock().flushed_until
    }

    /// The failed sync that poisoned the flusher, if one did.
    pub fn poisoned(&self) -> Option<Error> {
        self.core.poison_error()
    }

    /// Seals `page` as the page at `address` (its first `payload_len` bytes after the 32-byte
    /// header are the payload), writes it, and gives it back once durable under the sync policy.
    /// Waits while `depth` pages are in flight. Must run on a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Unaligned`] for an address or buffer length that is not the page size,
    /// [`Error::Page`] when the payload does not fit, the write's I/O error (the page is not
    /// acknowledged; flushing it again is safe), [`Error::Poisoned`] once a sync failed, and
    /// [`Error::NoRuntime`] outside a tokio runtime.
    pub async fn flush<S: Submittable>(
        &self,
        mut page: Buf<S>,
        address: u64,
        payload_len: usize,
    ) -> BufResult<(), Buf<Completed>> {
        let size = self.core.config.page_size;
        if page.len() != size && page.set_len(size).is_err() {
            let e = Error::Unaligned { what: "page buffer length", value: page.len() as u64, page_size: size };
            return refuse(page, e);
        }
        if address % size as u64 != 0 {
            return refuse(page, Error::Unaligned { what: "log address", value: address, page_size: size });
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return refuse(page, Error::NoRuntime("PageFlusher::flush"));
        };
        let sequence = {
            let mut state = self.core.lock();
            state.sequence += 1;
            state.sequence
        };
        if let Err(e) = page::seal(&mut page, address, sequence, payload_len) {
            return refuse(page, e.into());
        }
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            unreachable!("the flusher never closes its semaphore");
        };
        // Checked after the wait for a slot, so nothing queued behind a failed sync syncs again.
        if let Some(e) = self.core.poison_error() {
            return refuse(page, e);
        }
        if self.core.config.sync != SyncPolicy::PerPage {
            // The write runs here (a write abandoned with this future is simply not
            // acknowledged); a group sync runs in a task of its own (see `group_sync`).
            let done = self.core.write(page, address, &runtime).await;
            drop(slot);
            return done;
        }
        // A per-page write and its linked sync run to the end even if this future is dropped.
        let core = self.core.clone();
        let task = runtime.clone().spawn(async move {
            let done = core.write(page, address, &runtime).await;
            drop(slot);
            done
        });
        match task.await {
            Ok(done) => done,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            // The runtime is shutting down and cancelled the task; so is this future's task.
            Err(_) => std::future::pending().await,
        }
    }
}

impl<E: IoEngine> Core<E> {
    /// Writes one sealed page and makes it durable under the policy; acknowledges it on success.
    async fn write<S: Submittable>(
        self: &Arc<Self>,
        page: Buf<S>,
        address: u64,
        runtime: &tokio::runtime::Handle,
    ) -> BufResult<(), Buf<Completed>> {
        let (result, page) = match self.config.sync {
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
                (result, page)
            }
            SyncPolicy::Group => {
                let (result, page) = self.engine.write_all_at(&self.file, page, address).await.into_parts();
                let result = match result {
                    Ok(()) => self.group_sync(address, runtime).await,
                    Err(e) => Err(e),
                };
                (result, page)
            }
            SyncPolicy::None => {
                let (result, page) = self.engine.write_all_at(&self.file, page, address).await.into_parts();
                (result.and_then(|()| self.check_poison()), page)
            }
        };
        if result.is_ok() {
            self.acknowledge(address);
        }
        BufResult(result, page)
    }

    /// Waits for a sync that starts after now (this page's write has completed), starting it if
    /// no sync is running; one sync covers every page that waits for it. The sync runs in a task
    /// of its own, so its result is recorded even if every waiter is dropped.
    async fn group_sync(self: &Arc<Self>, address: u64, runtime: &tokio::runtime::Handle) -> Result<()> {
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
            if let Some(generation) = generation {
                let core = self.clone();
                runtime.spawn(async move {
                    let result = core.engine.sync_data(&core.file).await;
                    core.finish_sync(generation, address, result);
                });
            }
            changed.await;
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

    /// Records `address` as durable and advances `flushed_until` over the contiguous prefix.
    fn acknowledge(&self, address: u64) {
        let size = self.config.page_size as u64;
        let mut state = self.lock();
        if address < state.flushed_until {
            return; // a page rewritten below the prefix: already counted
        }
        state.ahead.insert(address);
        loop {
            let next = state.flushed_until;
            if !state.ahead.remove(&next) {
                break;
            }
            state.flushed_until = next + size;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn poisoned(address: u64, cause: &str) -> Error {
    Error::Poisoned { address, cause: cause.to_owned() }
}

/// Gives `page` back with `error`, without any I/O.
fn refuse<S: Submittable>(page: Buf<S>, error: Error) -> BufResult<(), Buf<Completed>> {
    BufResult(Err(error), page.into_in_flight().into_failed())
}
