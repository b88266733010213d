//! [`PageFlusher`]: takes page buffers by value, writes them at their log address, and hands
//! each back once it is durable.
//!
//! Durability rules (the reasons are in `DESIGN.md`):
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
    engine: Arc<E>,
    file: File,
    config: FlusherConfig,
    slots: Semaphore,
    state: Mutex<State>,
    synced: Notify,
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
            engine,
            file,
            slots: Semaphore::new(config.depth.max(1)),
            config,
            state: Mutex::new(state),
            synced: Notify::new(),
        }
    }

    /// The engine pages are written through.
    pub fn engine(&self) -> &Arc<E> {
        &self.engine
    }

    /// The log file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The address below which every page is acknowledged durable.
    pub fn flushed_until(&self) -> u64 {
        self.lock().flushed_until
    }

    /// The failed sync that poisoned the flusher, if one did.
    pub fn poisoned(&self) -> Option<Error> {
        self.lock().poisoned.as_ref().map(|(address, cause)| poisoned(*address, cause))
    }

    /// Seals `page` as the page at `address` (its first `payload_len` bytes after the 32-byte
    /// header are the payload), writes it, and gives it back once durable under the sync policy.
    /// Waits while `depth` pages are in flight.
    ///
    /// # Errors
    ///
    /// [`Error::Unaligned`] for an address or buffer length that is not the page size,
    /// [`Error::Page`] when the payload does not fit, the write's I/O error (the page is not
    /// acknowledged; flushing it again is safe), and [`Error::Poisoned`] once a sync failed.
    pub async fn flush<S: Submittable>(
        &self,
        mut page: Buf<S>,
        address: u64,
        payload_len: usize,
    ) -> BufResult<(), Buf<Completed>> {
        let size = self.config.page_size;
        if page.len() != size && page.set_len(size).is_err() {
            let e = Error::Unaligned { what: "page buffer length", value: page.len() as u64, page_size: size };
            return refuse(page, e);
        }
        if address % size as u64 != 0 {
            return refuse(page, Error::Unaligned { what: "log address", value: address, page_size: size });
        }
        let sequence = {
            let mut state = self.lock();
            if let Some((at, cause)) = &state.poisoned {
                let e = poisoned(*at, cause);
                drop(state);
                return refuse(page, e);
            }
            state.sequence += 1;
            state.sequence
        };
        if let Err(e) = page::seal(&mut page, address, sequence, payload_len) {
            return refuse(page, e.into());
        }
        let Ok(_slot) = self.slots.acquire().await else {
            unreachable!("the flusher never closes its semaphore");
        };
        let written = match self.config.sync {
            SyncPolicy::PerPage => self.engine.write_durable_at(&self.file, page, address).await,
            SyncPolicy::Group | SyncPolicy::None => self.engine.write_all_at(&self.file, page, address).await,
        };
        let (result, page) = written.into_parts();
        let result = match (result, self.config.sync) {
            (Err(Error::Io { op: Op::SyncData, source, .. }), _) => Err(self.poison(address, source.to_string())),
            (Err(Error::Cancelled { op: Op::SyncData, .. }), _) => Err(self.poison(address, "sync cancelled".into())),
            (Err(e), _) => Err(e),
            (Ok(()), SyncPolicy::Group) => self.group_sync(address).await,
            (Ok(()), _) => self.check_poison(),
        };
        if result.is_ok() {
            self.acknowledge(address);
        }
        BufResult(result, page)
    }

    /// Waits for a sync that starts after now (this page's write has completed), running it if
    /// no sync is running; one sync covers every page that waits for it.
    async fn group_sync(&self, address: u64) -> Result<()> {
        let wanted = self.lock().next_sync;
        loop {
            let notified = self.synced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
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
            let Some(generation) = generation else {
                notified.await;
                continue;
            };
            // If this future is dropped during the sync, the guard hands the job to the next
            // waiter (its generation is never marked synced, so nobody is acknowledged by it).
            let running = SyncRunning(self);
            let result = self.engine.sync_data(&self.file).await;
            std::mem::forget(running);
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
            self.synced.notify_waiters();
        }
    }

    fn poison(&self, address: u64, cause: String) -> Error {
        tracing::error!(address, %cause, "fdatasync failed; the page flusher is poisoned");
        let mut state = self.lock();
        let (at, cause) = state.poisoned.get_or_insert((address, cause));
        let e = poisoned(*at, cause);
        drop(state);
        self.synced.notify_waiters();
        e
    }

    fn check_poison(&self) -> Result<()> {
        match &self.lock().poisoned {
            Some((at, cause)) => Err(poisoned(*at, cause)),
            None => Ok(()),
        }
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

/// Marks the group sync as not running when the future running it is dropped mid-sync.
struct SyncRunning<'a, E: IoEngine>(&'a PageFlusher<E>);

impl<E: IoEngine> Drop for SyncRunning<'_, E> {
    fn drop(&mut self) {
        self.0.lock().syncing = false;
        self.0.synced.notify_waiters();
    }
}

fn poisoned(address: u64, cause: &str) -> Error {
    Error::Poisoned { address, cause: cause.to_owned() }
}

/// Gives `page` back with `error`, without any I/O.
fn refuse<S: Submittable>(page: Buf<S>, error: Error) -> BufResult<(), Buf<Completed>> {
    BufResult(Err(error), page.into_in_flight().into_failed())
}
