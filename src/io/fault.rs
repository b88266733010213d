//! [`FaultyEngine`]: wraps any engine and injects failures and delays, for tests of the code
//! above the engine (the page flusher's poisoning, out-of-order completion, recovery).
//!
//! Faults are real errors of the kinds the kernel returns (`EIO` from `fdatasync`, say); the
//! operations that are not faulted run on the wrapped engine for real. Delays are kept by the
//! crate's own clock, not tokio's timer, so a delayed operation behaves in every runtime state
//! (no time driver, no runtime, a runtime that has shut down) as the wrapped engine does.
//!
//! [`powerloss`] records writes and syncs to build the files a power loss may leave.

pub mod powerloss;

use std::collections::HashMap;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{Batch, BatchResults, BufResult, EngineStats, File, IoEngine, Selection};
use crate::buf::{Buf, BufPool, Completed, Registered, Submittable};
use crate::error::{Backend, Error, Op, Result};

/// An engine that fails or delays chosen operations of the engine it wraps.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::io::fault::FaultyEngine;
/// use ferrite_io::{IoEngine, IoEngineConfig, OpenOptions, TokioEngine};
/// # let dir = tempfile::tempdir().unwrap();
/// let engine = FaultyEngine::new(TokioEngine::new(&IoEngineConfig::default())?);
/// engine.fail_syncs_from(2, libc::EIO); // the second fdatasync and all after it fail
/// let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
/// assert!(engine.sync_data(&file).await.is_ok());
/// assert_eq!(engine.sync_data(&file).await.unwrap_err().raw_os_error(), Some(libc::EIO));
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
pub struct FaultyEngine<E> {
    inner: E,
    faults: Mutex<Faults>,
}

#[derive(Default)]
struct Faults {
    /// Sync calls so far; the first one (1-based) that fails, its errno, and whether only that
    /// one fails (Linux reports a write-back error to one sync, then forgets it).
    syncs: u64,
    failing_syncs: Option<(u64, i32, bool)>,
    /// Every sync waits this long before running.
    sync_delay: Option<Duration>,
    /// Writes at these offsets wait this long before running.
    write_delays: HashMap<u64, Duration>,
    /// Writes at these offsets fail with this errno.
    failing_writes: HashMap<u64, i32>,
}

impl<E: IoEngine> FaultyEngine<E> {
    /// Wraps `inner`; no faults until some are set.
    pub fn new(inner: E) -> Self {
        FaultyEngine { inner, faults: Mutex::new(Faults::default()) }
    }

    /// The wrapped engine.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The `nth` sync (`sync_all`, `sync_data`, or the sync of `write_durable_at`; counting
    /// from 1) and every later one fail with `errno` without reaching the kernel.
    pub fn fail_syncs_from(&self, nth: u64, errno: i32) {
        self.lock().failing_syncs = Some((nth, errno, false));
    }

    /// Only the `nth` sync fails with `errno`; later ones pass, as a write-back error is
    /// reported to one sync and then forgotten by Linux. The fault is decided when the sync is
    /// called, so a sync whose caller gives up during a delay still "consumed" the error.
    pub fn fail_one_sync(&self, nth: u64, errno: i32) {
        self.lock().failing_syncs = Some((nth, errno, true));
    }

    /// Every sync waits `delay` before it starts (to drop futures in the middle of one).
    pub fn delay_syncs(&self, delay: Duration) {
        self.lock().sync_delay = Some(delay);
    }

    /// Writes at `offset` wait `delay` before they start (to complete out of order).
    pub fn delay_writes_at(&self, offset: u64, delay: Duration) {
        self.lock().write_delays.insert(offset, delay);
    }

    /// Writes at `offset` fail with `errno`.
    pub fn fail_writes_at(&self, offset: u64, errno: i32) {
        self.lock().failing_writes.insert(offset, errno);
    }

    /// Writes fail no more (delays stay).
    pub fn clear_write_faults(&self) {
        self.lock().failing_writes.clear();
    }

    /// Sync calls started so far (failed ones included).
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    fn lock(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a sync and says whether it fails.
    fn sync_fault(&self) -> Option<i32> {
        let mut faults = self.lock();
        faults.syncs += 1;
        let count = faults.syncs;
        faults
            .failing_syncs
            .filter(|&(nth, _, once)| if once { count == nth } else { count >= nth })
            .map(|(_, errno, _)| errno)
    }

    /// Waits out a delay set for `offset`; then the errno a write there fails with, if any.
    async fn write_fault(&self, offset: u64) -> Option<i32> {
        let delay = self.lock().write_delays.get(&offset).copied();
        if let Some(delay) = delay {
            crate::buf::clock::sleep(delay).await;
        }
        self.lock().failing_writes.get(&offset).copied()
    }

    fn error(&self, op: Op, file: &File, offset: u64, errno: i32) -> Error {
        let (path, source) = (file.path().map(Into::into), io::Error::from_raw_os_error(errno));
        Error::Io { op, path, offset, backend: self.inner.backend(), source }
    }

    async fn sync(&self, file: &File, op: Op) -> Result<()> {
        let fault = self.sync_fault();
        let delay = self.lock().sync_delay;
        if let Some(delay) = delay {
            crate::buf::clock::sleep(delay).await;
        }
        match (fault, op) {
            (Some(errno), _) => Err(self.error(op, file, 0, errno)),
            (None, Op::SyncAll) => self.inner.sync_all(file).await,
            (None, _) => self.inner.sync_data(file).await,
        }
    }
}

fn failed<S: Submittable>(buf: Buf<S>, error: Error) -> BufResult<(), Buf<Completed>> {
    BufResult(Err(error), buf.into_in_flight().into_failed())
}

impl<E: IoEngine> IoEngine for FaultyEngine<E> {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    fn selection(&self) -> &Selection {
        self.inner.selection()
    }

    fn pool(&self) -> &BufPool {
        self.inner.pool()
    }

    fn direct_io(&self) -> bool {
        self.inner.direct_io()
    }

    fn stats(&self) -> EngineStats {
        self.inner.stats()
    }

    async fn read_at<S: Submittable>(&self, file: &File, buf: Buf<S>, offset: u64) -> BufResult<usize, Buf<Completed>> {
        self.inner.read_at(file, buf, offset).await
    }

    async fn write_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<usize, Buf<Completed>> {
        match self.write_fault(offset).await {
            Some(errno) => failed(buf, self.error(Op::Write, file, offset, errno)).map(|()| 0),
            None => self.inner.write_at(file, buf, offset).await,
        }
    }

    async fn read_fixed_at(&self, file: &File, buf: Buf<Registered>, offset: u64) -> BufResult<usize, Buf<Completed>> {
        self.inner.read_fixed_at(file, buf, offset).await
    }

    async fn write_fixed_at(&self, file: &File, buf: Buf<Registered>, offset: u64) -> BufResult<usize, Buf<Completed>> {
        match self.write_fault(offset).await {
            Some(errno) => failed(buf, self.error(Op::WriteFixed, file, offset, errno)).map(|()| 0),
            None => self.inner.write_fixed_at(file, buf, offset).await,
        }
    }

    async fn read_exact_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<(), Buf<Completed>> {
        self.inner.read_exact_at(file, buf, offset).await
    }

    async fn write_all_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<(), Buf<Completed>> {
        match self.write_fault(offset).await {
            Some(errno) => failed(buf, self.error(Op::Write, file, offset, errno)),
            None => self.inner.write_all_at(file, buf, offset).await,
        }
    }

    /// Write, then this wrapper's own sync, so sync faults apply (not linked on the ring).
    async fn write_durable_at<S: Submittable>(
        &self,
        file: &File,
        buf: Buf<S>,
        offset: u64,
    ) -> BufResult<(), Buf<Completed>> {
        let written = self.write_all_at(file, buf, offset).await;
        match written.0 {
            Ok(()) => BufResult(self.sync(file, Op::SyncData).await, written.1),
            Err(_) => written,
        }
    }

    async fn read_vectored_at<S: Submittable>(
        &self,
        file: &File,
        bufs: Vec<Buf<S>>,
        offset: u64,
    ) -> BufResult<usize, Vec<Buf<Completed>>> {
        self.inner.read_vectored_at(file, bufs, offset).await
    }

    async fn write_vectored_at<S: Submittable>(
        &self,
        file: &File,
        bufs: Vec<Buf<S>>,
        offset: u64,
    ) -> BufResult<usize, Vec<Buf<Completed>>> {
        self.inner.write_vectored_at(file, bufs, offset).await
    }

    async fn sync_all(&self, file: &File) -> Result<()> {
        self.sync(file, Op::SyncAll).await
    }

    async fn sync_data(&self, file: &File) -> Result<()> {
        self.sync(file, Op::SyncData).await
    }

    async fn submit_batch<'b>(&self, batch: &'b mut Batch) -> BatchResults<'b> {
        self.inner.submit_batch(batch).await
    }
}
