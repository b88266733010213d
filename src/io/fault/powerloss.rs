//! [`PowerLossEngine`]: wraps any engine, records every write and sync it passes on, and builds
//! the file a power loss at any point of that record may leave on disk ([`Journal::crash_image`]).
//!
//! The disk model (the README's Reliability section states it): a write covered by a completed sync (one that
//! started after the write completed, and succeeded) is on disk. Every other write that was
//! submitted before the crash is kept whole, dropped, or torn into any subset of its 512-byte
//! sectors, chosen by a seed; writes apply in submission order, so each sector ends up holding
//! the synced bytes or those of any later write of it. It can also stop the machine at the
//! `n`-th I/O ([`PowerLossEngine::fail_from`]): that operation and all later ones fail with `EIO`
//! and are not recorded.
//!
//! All writes of the engine are recorded as writes to one file: use one file per engine.
//! Batches run their operations one after the other.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::buf::{Buf, BufPool, Completed, Free, Registered, Submittable};
use crate::error::{Backend, Error, Op, Result};
use crate::io::{Batch, BatchResults, BufResult, EngineStats, File, IoEngine, Rw, Selection, Stage};

/// The sector a power loss tears writes at.
pub const SECTOR: usize = 512;

/// One step of the record.
#[derive(Debug, Clone)]
pub enum Event {
    /// A write was submitted with these bytes.
    Write {
        /// Its number, to match [`Event::WriteDone`].
        id: usize,
        /// File offset.
        offset: u64,
        /// The bytes.
        data: Arc<[u8]>,
    },
    /// The write `id` completed in full.
    WriteDone {
        /// The write.
        id: usize,
    },
    /// A sync started: it covers every write done before this event.
    SyncStart {
        /// Its number, to match [`Event::SyncDone`].
        id: usize,
    },
    /// The sync `id` returned.
    SyncDone {
        /// The sync.
        id: usize,
        /// Whether it succeeded.
        ok: bool,
    },
    /// The code above acknowledged everything below `until` (recorded by the caller with
    /// [`PowerLossEngine::acknowledge`]).
    Ack {
        /// The acknowledged address.
        until: u64,
    },
}

#[derive(Default)]
struct Log {
    events: Vec<Event>,
    next_id: usize,
    ops: u64,
    fail_from: Option<u64>,
}

/// An engine that records writes and syncs to build crash images (see the module docs).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::io::fault::powerloss::PowerLossEngine;
/// use ferrite_io::{IoEngine, IoEngineConfig, OpenOptions, TokioEngine};
/// # let dir = tempfile::tempdir().unwrap();
/// let engine = PowerLossEngine::new(TokioEngine::new(&IoEngineConfig::default())?);
/// let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
/// let mut buf = engine.acquire().await;
/// buf.set_len(4096)?;
/// buf.fill(7);
/// engine.write_all_at(&file, buf, 0).await.0?;
/// engine.sync_data(&file).await?;
/// let journal = engine.journal();
/// // Crash before the sync returned: the write may be anything; after: it is on disk.
/// assert_eq!(journal.crash_image(&[], journal.len(), 1), vec![7u8; 4096]);
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
pub struct PowerLossEngine<E> {
    inner: E,
    log: Mutex<Log>,
}

impl<E: IoEngine> PowerLossEngine<E> {
    /// Wraps `inner`, recording from now on.
    pub fn new(inner: E) -> Self {
        PowerLossEngine { inner, log: Mutex::new(Log::default()) }
    }

    /// The wrapped engine.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The machine stops at the `nth` I/O (write or sync, counting from 1): it and every later
    /// one fail with `EIO` without reaching the kernel or the record.
    pub fn fail_from(&self, nth: u64) {
        self.lock().fail_from = Some(nth);
    }

    /// Writes and syncs started so far (failed ones included).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Records that everything below `until` was acknowledged (call it when the flusher says so).
    pub fn acknowledge(&self, until: u64) {
        self.lock().events.push(Event::Ack { until });
    }

    /// The record so far.
    pub fn journal(&self) -> Journal {
        Journal { events: self.lock().events.clone() }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an I/O; `None` when the machine has stopped, else the id it is recorded under.
    fn start(&self, event: impl FnOnce(usize) -> Event) -> Option<usize> {
        let mut log = self.lock();
        log.ops += 1;
        if log.fail_from.is_some_and(|nth| log.ops >= nth) {
            return None;
        }
        let id = log.next_id;
        log.next_id += 1;
        log.events.push(event(id));
        Some(id)
    }

    fn dead(&self, op: Op, file: &File, offset: u64) -> Error {
        let (path, source) = (file.path().map(Into::into), io::Error::from_raw_os_error(libc::EIO));
        Error::Io { op, path, offset, backend: self.inner.backend(), source }
    }

    /// Records a write of `bytes` at `offset`; `None` when the machine has stopped.
    fn start_write(&self, offset: u64, bytes: &[u8]) -> Option<usize> {
        let data: Arc<[u8]> = bytes.into();
        self.start(|id| Event::Write { id, offset, data })
    }

    fn finish_write(&self, id: usize, complete: bool) {
        if complete {
            self.lock().events.push(Event::WriteDone { id });
        }
    }

    async fn sync(&self, file: &File, op: Op) -> Result<()> {
        let Some(id) = self.start(|id| Event::SyncStart { id }) else {
            return Err(self.dead(op, file, 0));
        };
        let result = match op {
            Op::SyncAll => self.inner.sync_all(file).await,
            _ => self.inner.sync_data(file).await,
        };
        self.lock().events.push(Event::SyncDone { id, ok: result.is_ok() });
        result
    }
}

fn refused<S: Submittable>(buf: Buf<S>, error: Error) -> BufResult<usize, Buf<Completed>> {
    BufResult(Err(error), buf.into_in_flight().into_failed())
}

impl<E: IoEngine> IoEngine for PowerLossEngine<E> {
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
        let Some(id) = self.start_write(offset, &buf) else { return refused(buf, self.dead(Op::Write, file, offset)) };
        let len = buf.len();
        let done = self.inner.write_at(file, buf, offset).await;
        self.finish_write(id, matches!(done.0, Ok(n) if n == len));
        done
    }

    async fn read_fixed_at(&self, file: &File, buf: Buf<Registered>, offset: u64) -> BufResult<usize, Buf<Completed>> {
        self.inner.read_fixed_at(file, buf, offset).await
    }

    async fn write_fixed_at(&self, file: &File, buf: Buf<Registered>, offset: u64) -> BufResult<usize, Buf<Completed>> {
        let Some(id) = self.start_write(offset, &buf) else {
            return refused(buf, self.dead(Op::WriteFixed, file, offset));
        };
        let len = buf.len();
        let done = self.inner.write_fixed_at(file, buf, offset).await;
        self.finish_write(id, matches!(done.0, Ok(n) if n == len));
        done
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
        let Some(id) = self.start_write(offset, &buf) else {
            return refused(buf, self.dead(Op::Write, file, offset)).map(|_| ());
        };
        let done = self.inner.write_all_at(file, buf, offset).await;
        self.finish_write(id, done.0.is_ok());
        done
    }

    /// Write, then this wrapper's own sync, so both are recorded (not linked on the ring).
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
        let bytes: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let Some(id) = self.start_write(offset, &bytes) else {
            let failed = bufs.into_iter().map(|b| b.into_in_flight().into_failed()).collect();
            return BufResult(Err(self.dead(Op::WriteVectored, file, offset)), failed);
        };
        let done = self.inner.write_vectored_at(file, bufs, offset).await;
        self.finish_write(id, matches!(done.0, Ok(n) if n == bytes.len()));
        done
    }

    async fn sync_all(&self, file: &File) -> Result<()> {
        self.sync(file, Op::SyncAll).await
    }

    async fn sync_data(&self, file: &File) -> Result<()> {
        self.sync(file, Op::SyncData).await
    }

    async fn submit_batch<'b>(&self, batch: &'b mut Batch) -> BatchResults<'b> {
        for slot in batch.slots.iter_mut().filter(|slot| matches!(slot.stage, Stage::Added)) {
            let Some(buf) = slot.buf.take() else { continue };
            // Not submitted yet: the buffer is the caller's again.
            let buf: Buf<Free> = buf.cast();
            let BufResult(result, buf) = match slot.rw {
                Rw::Read => self.read_at(&slot.file, buf, slot.offset).await,
                Rw::Write => self.write_at(&slot.file, buf, slot.offset).await,
            };
            // Back in the slot, as an engine keeps it, until `BatchResults` hands it out.
            slot.buf = Some(buf.cast());
            slot.finish(result);
        }
        BatchResults::new(&mut batch.slots)
    }
}

/// A record of writes, syncs and acknowledgements, to build crash images from.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    /// The events, in the order they happened.
    pub events: Vec<Event>,
}

impl Journal {
    /// Events recorded.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The highest address acknowledged in the first `crash` events.
    pub fn acknowledged(&self, crash: usize) -> u64 {
        let acks = self.events[..crash].iter().filter_map(|e| match e {
            Event::Ack { until } => Some(*until),
            _ => None,
        });
        acks.max().unwrap_or(0)
    }

    /// The file a power loss after the first `crash` events may leave, starting from the file
    /// `base` (its content when recording began), with the fate of every unsynced write drawn
    /// from `seed`: kept, dropped, or torn into a subset of its sectors.
    pub fn crash_image(&self, base: &[u8], crash: usize, seed: u64) -> Vec<u8> {
        let events = &self.events[..crash.min(self.events.len())];
        // The writes done before the start of the last successful sync are durable.
        let mut done_at = std::collections::HashMap::new();
        let mut sync_start = std::collections::HashMap::new();
        let mut durable_before = 0;
        for (at, event) in events.iter().enumerate() {
            match *event {
                Event::WriteDone { id } => {
                    done_at.insert(id, at);
                }
                Event::SyncStart { id } => {
                    sync_start.insert(id, at);
                }
                Event::SyncDone { id, ok: true } => durable_before = durable_before.max(sync_start[&id]),
                _ => {}
            }
        }
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut image = base.to_vec();
        for event in events {
            let Event::Write { id, offset, data } = event else { continue };
            let synced = done_at.get(id).is_some_and(|&at| at < durable_before);
            let sectors = data.len().div_ceil(SECTOR);
            let fate = if synced { 0 } else { rng.below(4) };
            let subset = rng.next();
            let kept = |sector: usize| match fate {
                0 => true,
                1 => false,
                // Torn: a random subset; or keep only the first and last sectors.
                2 => (subset >> (sector % 64)) & 1 == 1,
                _ => sector == 0 || sector + 1 == sectors,
            };
            for sector in (0..sectors).filter(|&s| kept(s)) {
                let bytes = &data[sector * SECTOR..((sector + 1) * SECTOR).min(data.len())];
                let at = *offset as usize + sector * SECTOR;
                if image.len() < at + bytes.len() {
                    image.resize(at + bytes.len(), 0);
                }
                image[at..at + bytes.len()].copy_from_slice(bytes);
            }
        }
        image
    }
}

/// xorshift64*: deterministic, so a seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
