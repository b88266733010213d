//! Per-engine statistics: [`EngineStats`], a snapshot of counters that the engines bump on their
//! own paths.
//!
//! The counters are relaxed atomics grouped in `Counters`, one group per io_uring ring (each
//! ring is used mostly by the threads of one CPU, so the cache line stays local) and one for the
//! tokio engine. A snapshot sums the groups; it is cheap and never stops the engine.

use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

use serde::Serialize;

use super::Rw;

/// What an engine has done since it was created. Counters only grow, except `in_flight`.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::{IoEngine, IoEngineConfig, OpenOptions};
/// # let dir = tempfile::tempdir().unwrap();
/// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
/// let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
/// engine.write_all_at(&file, engine.acquire().await, 0).await.0?;
/// let stats = engine.stats();
/// assert_eq!((stats.writes, stats.bytes_written), (1, 65536));
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Read operations finished (a vectored read or a batch entry counts once).
    pub reads: u64,
    /// Write operations finished.
    pub writes: u64,
    /// `fsync`/`fdatasync` operations finished, including the sync of `write_durable_at`.
    pub syncs: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Operations handed to an io_uring ring (those the fast path finished are not).
    pub submitted: u64,
    /// io_uring operations whose completion was reaped inside their own submit.
    pub inline_completions: u64,
    /// io_uring operations completed later (reaped by a poll, a reactor watcher or the engine's
    /// completion thread).
    pub later_completions: u64,
    /// Reads and writes served by the `RWF_NOWAIT` fast path without a ring or thread trip.
    pub fast_path_hits: u64,
    /// Fast-path attempts the kernel refused (would block, or unsupported) that went the slow way.
    pub fast_path_refusals: u64,
    /// Operations in flight now (io_uring: in the ring; tokio: on the blocking pool).
    pub in_flight: u64,
    /// The most operations in flight at once on one ring (or on the blocking pool).
    pub in_flight_high_water: u64,
    /// `acquire` calls that found every pool buffer out and had to wait.
    pub buffer_waits: u64,
    /// Submissions that waited for ring room (operations in flight are capped at the CQ size).
    pub ring_waits: u64,
    /// Times the kernel reported a CQ overflow (the cap makes this 0 unless something is wrong).
    pub cq_overflows: u64,
    /// `io_uring_enter` calls that failed with a non-transient error.
    pub submit_errors: u64,
    /// Rings behind the engine (0 for the tokio engine).
    pub rings: u64,
    /// Files registered in the rings' fixed-file tables now: open files that have had an
    /// operation on this engine's rings (not those the fast path alone served, nor those that
    /// found the table full); 0 for the tokio engine.
    pub registered_files: u64,
    /// Whether the io_uring engine's completion thread runs (started for waiters without a
    /// reactor; waiters inside a tokio runtime with an I/O driver never need it).
    pub completion_thread: bool,
    /// Times the completion thread woke for a ring and reaped it. It watches a ring only while
    /// an operation there relies on it, so waiters on a reactor do not add to this.
    pub completion_thread_reaps: u64,
    /// Why `auto` fell back to the tokio engine, when it did.
    pub fallback_reason: Option<String>,
}

/// Counts of a batch's operations, added to its ring's [`Counters`] once per submitted chunk
/// and once per poll of the wait: not a locked add per operation and counter.
#[derive(Debug, Default)]
#[cfg_attr(not(uring), allow(dead_code))]
pub(crate) struct Tally {
    reads: u64,
    bytes_read: u64,
    writes: u64,
    bytes_written: u64,
    pub(crate) inline: u64,
    pub(crate) later: u64,
}

impl Tally {
    /// A read or write finished, moving `bytes`.
    #[cfg_attr(not(uring), allow(dead_code))]
    #[inline]
    pub(crate) fn done(&mut self, rw: Rw, bytes: usize) {
        let (ops, total) = match rw {
            Rw::Read => (&mut self.reads, &mut self.bytes_read),
            Rw::Write => (&mut self.writes, &mut self.bytes_written),
        };
        *ops += 1;
        *total += bytes as u64;
    }
}

/// One group of counters, padded to its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    submitted: AtomicU64,
    pub(crate) inline: AtomicU64,
    pub(crate) later: AtomicU64,
    fast_hits: AtomicU64,
    fast_refusals: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) high_water: AtomicU64,
    pub(crate) ring_waits: AtomicU64,
    pub(crate) overflows: AtomicU64,
    pub(crate) submit_errors: AtomicU64,
}

impl Counters {
    /// A read or write finished, moving `bytes`.
    #[inline]
    pub(crate) fn done(&self, rw: Rw, bytes: usize) {
        let (ops, total) = match rw {
            Rw::Read => (&self.reads, &self.bytes_read),
            Rw::Write => (&self.writes, &self.bytes_written),
        };
        ops.fetch_add(1, Relaxed);
        total.fetch_add(bytes as u64, Relaxed);
    }

    /// A sync finished.
    pub(crate) fn synced(&self) {
        self.syncs.fetch_add(1, Relaxed);
    }

    /// The fast path served an operation (`true`) or refused it (`false`).
    #[inline]
    pub(crate) fn fast_path(&self, hit: bool) {
        let counter = if hit { &self.fast_hits } else { &self.fast_refusals };
        counter.fetch_add(1, Relaxed);
    }

    /// `n` operations went in flight; keeps the high-water mark.
    pub(crate) fn start(&self, n: u64) {
        let now = self.in_flight.fetch_add(n, Relaxed) + n;
        // A read first: the mark rarely moves, and a read costs no locked instruction.
        if now > self.high_water.load(Relaxed) {
            self.high_water.fetch_max(now, Relaxed);
        }
    }

    /// `n` operations were pushed to a ring (and went in flight).
    #[cfg_attr(not(uring), allow(dead_code))]
    pub(crate) fn pushed(&self, n: u64) {
        self.submitted.fetch_add(n, Relaxed);
        self.start(n);
    }

    /// Adds what a batch tallied.
    #[cfg_attr(not(uring), allow(dead_code))]
    pub(crate) fn add(&self, tally: &Tally) {
        for (counter, n) in [
            (&self.reads, tally.reads),
            (&self.bytes_read, tally.bytes_read),
            (&self.writes, tally.writes),
            (&self.bytes_written, tally.bytes_written),
            (&self.inline, tally.inline),
            (&self.later, tally.later),
        ] {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }

    /// `n` operations left flight. Release, paired with the snapshot's acquire: whoever sees
    /// the count drop sees what the operation did before, such as giving its buffers back.
    pub(crate) fn finish(&self, n: u64) {
        self.in_flight.fetch_sub(n, Release);
    }

    /// Adds this group into `stats`.
    pub(crate) fn add_to(&self, stats: &mut EngineStats) {
        stats.reads += self.reads.load(Relaxed);
        stats.writes += self.writes.load(Relaxed);
        stats.syncs += self.syncs.load(Relaxed);
        stats.bytes_read += self.bytes_read.load(Relaxed);
        stats.bytes_written += self.bytes_written.load(Relaxed);
        stats.submitted += self.submitted.load(Relaxed);
        stats.inline_completions += self.inline.load(Relaxed);
        stats.later_completions += self.later.load(Relaxed);
        stats.fast_path_hits += self.fast_hits.load(Relaxed);
        stats.fast_path_refusals += self.fast_refusals.load(Relaxed);
        stats.in_flight += self.in_flight.load(Acquire);
        stats.in_flight_high_water = stats.in_flight_high_water.max(self.high_water.load(Relaxed));
        stats.ring_waits += self.ring_waits.load(Relaxed);
        stats.cq_overflows += self.overflows.load(Relaxed);
        stats.submit_errors += self.submit_errors.load(Relaxed);
    }
}
