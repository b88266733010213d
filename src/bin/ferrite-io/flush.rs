//! `ferrite-io flush`: the HybridLog workload. Fills pages with records, flushes them through the
//! chosen engine with the page flusher (`depth` pages in flight), then reads random pages back
//! cold (dropped from the page cache first, or O_DIRECT) and verifies header, checksum and
//! every record.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrite_io::hybridlog::{FlusherConfig, PageFlusher, SyncPolicy, page};
use ferrite_io::{IoEngine, IoEngineConfig, OpenOptions, SharedIoEngine};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::Failure;
use crate::output::{EngineSource, Progress, duration, engine_line};
use crate::scratch::Scratch;

/// Bytes of one record: an 8-byte key, a 4-byte length, and the value.
const RECORD: usize = 128;
/// Version of the `--json` report; raised when a field changes meaning or goes away.
const REPORT_VERSION: u32 = 2;

/// What `flush` was asked to do, checked: `config` carries the engine, the page size (as
/// `buffer_size`), the pool size and O_DIRECT.
pub struct Options {
    pub config: IoEngineConfig,
    pub source: EngineSource,
    pub pages: u64,
    pub sync: SyncPolicy,
    pub depth: usize,
    pub reads: u64,
    pub dir: PathBuf,
    pub json: bool,
    pub keep: bool,
}

/// The `--json` report.
#[derive(Serialize)]
struct Report {
    version: u32,
    engine: String,
    engine_requested: String,
    engine_requested_by: String,
    selection: String,
    direct: bool,
    page_size: usize,
    pages: u64,
    depth: usize,
    sync: String,
    preallocated: bool,
    flushed_until: u64,
    seconds: f64,
    pages_per_sec: f64,
    mb_per_sec: f64,
    /// From the flush call to durable: waiting for a free slot, write, sync.
    durable: Latencies,
    cold_reads: ColdReads,
    /// The engine's counters at the end of the run.
    stats: ferrite_io::EngineStats,
}

#[derive(Serialize)]
struct ColdReads {
    verified: u64,
    /// How the reads were kept off the page cache.
    cold_by: &'static str,
    latency: Latencies,
}

/// Percentiles of a histogram, in microseconds.
#[derive(Serialize)]
struct Latencies {
    count: u64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

impl Latencies {
    fn of(h: &Histogram<u64>) -> Latencies {
        let us = |ns: u64| ns as f64 / 1e3;
        Latencies {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }

    fn text(&self) -> String {
        let d = |us: f64| duration(Duration::from_secs_f64(us / 1e6));
        format!("p50 {}, p99 {}, p99.9 {}, max {}", d(self.p50_us), d(self.p99_us), d(self.p999_us), d(self.max_us))
    }
}

/// Latencies in nanoseconds from 1 ns to an hour, three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).unwrap_or_else(|e| unreachable!("constant bounds: {e}"))
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
}

/// Pseudo-random bytes the record values are cut from (so filling a page costs a copy, not a
/// random-number generator per byte, and the flush, not the workload, is what gets measured).
fn noise() -> &'static [u8; 8192] {
    static NOISE: std::sync::OnceLock<[u8; 8192]> = std::sync::OnceLock::new();
    NOISE.get_or_init(|| {
        let mut bytes = [0; 8192];
        fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15).fill(&mut bytes);
        bytes
    })
}

/// Writes the records of the page at `address` into `payload`; returns the bytes used. Record
/// `i` has key `page number * 1e6 + i` and a value that depends on the key.
fn fill_records(payload: &mut [u8], address: u64) -> usize {
    let records = payload.len() / RECORD;
    let value = RECORD - 12;
    for (i, record) in payload.chunks_exact_mut(RECORD).take(records).enumerate() {
        let key = address / 4096 * 1_000_000 + i as u64;
        record[..8].copy_from_slice(&key.to_le_bytes());
        record[8..12].copy_from_slice(&(value as u32).to_le_bytes());
        let from = (key.wrapping_mul(0x9E37_79B9) % (8192 - value as u64)) as usize;
        record[12..].copy_from_slice(&noise()[from..from + value]);
    }
    records * RECORD
}

fn join_error(engine: &SharedIoEngine, e: tokio::task::JoinError) -> ferrite_io::Error {
    ferrite_io::Error::Io {
        op: ferrite_io::Op::Write,
        path: None,
        offset: 0,
        backend: engine.backend(),
        source: std::io::Error::other(e),
    }
}

pub async fn run(options: Options) -> Result<(), Failure> {
    let Options { config, source, pages, sync, depth, reads, dir, json, keep } = options;
    let (page_size, direct) = (config.buffer_size, config.direct_io);
    let bytes = pages * page_size as u64; // checked against 1 TiB by the flags
    let engine = ferrite_io::create_engine(config)?;
    // Declared before the file, so dropped after it: the log is closed, then removed.
    let mut scratch = Scratch::new(&dir, keep)?;
    let path = scratch.file(&format!("ferrite-io-flush-{}.log", std::process::id()));
    let file = engine.open(&path, &OpenOptions::new().create(true).truncate(true).direct(direct)).await?;
    let phase = Progress::start("preallocate", 1, "file");
    let preallocated = file.preallocate(bytes).await?;
    phase.inc(1);
    phase.finish();
    let flusher = Arc::new(PageFlusher::new(
        engine.clone(),
        file.clone(),
        FlusherConfig { page_size, depth, sync, ..FlusherConfig::default() },
    ));

    // Writers take page numbers from a shared counter. There are twice as many as the flusher's
    // depth, so a filled page is always waiting when a write completes and the device queue
    // stays at `depth`.
    let phase = Arc::new(Progress::start("flush", pages, "pages"));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..depth * 2 {
        let (flusher, next, phase) = (flusher.clone(), next.clone(), phase.clone());
        writers.spawn(async move {
            let mut latencies = histogram();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= pages {
                    return Ok::<_, ferrite_io::Error>(latencies);
                }
                let address = index * page_size as u64;
                let mut buf = flusher.engine().acquire().await;
                let len = fill_records(
                    &mut buf[page::PAYLOAD_START..page::PAYLOAD_START + page::capacity(page_size)],
                    address,
                );
                let began = Instant::now();
                flusher.flush(buf, address, len).await.0?;
                record(&mut latencies, began.elapsed());
                phase.inc(1);
                // Let the writer this completion woke (its page is filled) submit before this
                // one spends CPU filling the next page.
                tokio::task::yield_now().await;
            }
        });
    }
    let mut latencies = histogram();
    while let Some(joined) = writers.join_next().await {
        let writer = joined.map_err(|e| join_error(&engine, e))??;
        latencies.add(&writer).unwrap_or_else(|e| unreachable!("same bounds: {e}"));
    }
    let elapsed = start.elapsed();
    if let Some(phase) = Arc::into_inner(phase) {
        phase.finish();
    }
    let flushed = flusher.flushed_until();

    // Clean pages only can be dropped from the cache: with `--sync none` some are still dirty.
    engine.sync_data(&file).await?;
    let cold = ColdRead::new(&path, direct)?;
    let (verified, read_latencies) = cold_reads(&engine, &file, &cold, page_size, pages, reads).await?;

    let secs = elapsed.as_secs_f64().max(1e-9);
    let selection = engine.selection();
    let report = Report {
        version: REPORT_VERSION,
        engine: selection.backend.to_string(),
        engine_requested: selection.requested.to_string(),
        engine_requested_by: source.to_string(),
        selection: engine_line(selection, &source),
        direct,
        page_size,
        pages,
        depth,
        sync: format!("{sync:?}"),
        preallocated,
        flushed_until: flushed,
        seconds: secs,
        pages_per_sec: pages as f64 / secs,
        mb_per_sec: bytes as f64 / secs / 1e6,
        durable: Latencies::of(&latencies),
        cold_reads: ColdReads { verified, cold_by: cold.method(), latency: Latencies::of(&read_latencies) },
        stats: engine.stats(),
    };
    if json {
        let text = serde_json::to_string(&report).map_err(|e| Failure::Run(format!("JSON report: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    println!("engine:          {}", report.selection);
    println!(
        "flushed:         {pages} pages x {} KiB = {} MiB{} with sync {sync:?}, depth {depth}; flushed_until = {flushed}",
        page_size / 1024,
        bytes >> 20,
        if direct { format!(" ({})", crate::output::DIRECT) } else { String::new() },
    );
    println!(
        "throughput:      {:.0} pages/s, {:.1} MB/s in {}",
        report.pages_per_sec,
        report.mb_per_sec,
        duration(elapsed)
    );
    println!("time to durable: {} (from the flush call: waiting for a free slot, write, sync)", report.durable.text());
    println!("engine counters: {}", crate::output::stats_line(&report.stats));
    if verified == 0 {
        println!("cold reads:      none (--reads 0)");
    } else {
        println!(
            "cold reads:      {verified} random pages read back and verified (header, CRC32C, every record), {}; {}",
            report.cold_reads.latency.text(),
            cold.method()
        );
    }
    Ok(())
}

/// How the read-back phase keeps each read off the page cache.
enum ColdRead {
    /// The log is open with O_DIRECT: reads bypass the cache.
    Direct,
    /// The file is dropped from the cache (`posix_fadvise(DONTNEED)`) just before each read:
    /// the whole file, as a large folio may hold the page and its neighbours, and a folio only
    /// partly in the range stays cached.
    Dropped(std::fs::File),
    /// This platform cannot drop a range from the cache: the reads may be cache hits.
    Cached,
}

impl ColdRead {
    fn new(path: &std::path::Path, direct: bool) -> Result<ColdRead, Failure> {
        if direct {
            return Ok(ColdRead::Direct);
        }
        if !cfg!(target_os = "linux") {
            return Ok(ColdRead::Cached);
        }
        let file = std::fs::File::open(path).map_err(|e| Failure::Run(format!("open {}: {e}", path.display())))?;
        Ok(ColdRead::Dropped(file))
    }

    fn method(&self) -> &'static str {
        match self {
            ColdRead::Direct => crate::output::DIRECT,
            ColdRead::Dropped(_) => "file dropped from the page cache before each read (posix_fadvise DONTNEED)",
            ColdRead::Cached => "page cache not dropped on this platform: reads may be cache hits",
        }
    }

    /// Makes the next read go to the disk.
    fn prepare(&self) -> std::io::Result<()> {
        match self {
            ColdRead::Dropped(file) => drop_cached(file),
            ColdRead::Direct | ColdRead::Cached => Ok(()),
        }
    }
}

/// Drops the clean cached pages of `file` from the page cache.
#[cfg(target_os = "linux")]
fn drop_cached(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise takes no pointers; the descriptor is borrowed from `file`, open for
    // the whole call. Offset 0 and length 0 mean the whole file.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::from_raw_os_error(rc)) }
}

#[cfg(not(target_os = "linux"))]
fn drop_cached(_file: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

/// Reads `reads` random pages back, each cold, and checks each page and its records.
async fn cold_reads(
    engine: &SharedIoEngine,
    file: &ferrite_io::File,
    cold: &ColdRead,
    page_size: usize,
    pages: u64,
    reads: u64,
) -> ferrite_io::Result<(u64, Histogram<u64>)> {
    let mut latencies = histogram();
    let mut expected = vec![0u8; page_size];
    let mut rng = fastrand::Rng::with_seed(0x2545_F491_4F6C_DD1D);
    let mut buf = engine.acquire().await;
    let phase = Progress::start("cold reads", reads, "pages");
    for _ in 0..reads {
        let address = rng.u64(0..pages) * page_size as u64;
        cold.prepare().map_err(|source| ferrite_io::Error::Io {
            op: ferrite_io::Op::Read,
            path: file.path().map(Into::into),
            offset: address,
            backend: engine.backend(),
            source,
        })?;
        let began = Instant::now();
        let (result, back) = ferrite_io::hybridlog::read_page(&**engine, file, buf, address).await.into_parts();
        record(&mut latencies, began.elapsed());
        let info = result?;
        let len = fill_records(&mut expected[..page_size - page::OVERHEAD], address);
        if info.header.payload_len as usize != len || back[info.payload()] != expected[..len] {
            return Err(ferrite_io::Error::Io {
                op: ferrite_io::Op::Read,
                path: file.path().map(Into::into),
                offset: address,
                backend: engine.backend(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "records differ from what was flushed"),
            });
        }
        buf = match back.try_into_registered(&**engine) {
            Ok(buf) => buf,
            Err(_) => unreachable!("the buffer came from this engine's pool"),
        };
        buf.set_len(page_size)?;
        phase.inc(1);
    }
    phase.finish();
    Ok((latencies.len(), latencies))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::FileExt;

    use super::*;

    /// Pages of `file` that are in the page cache, by `mincore` on a mapping of it.
    fn resident(file: &std::fs::File, len: usize) -> usize {
        // SAFETY: the test owns the file and nothing writes it while it is mapped.
        let map = unsafe { memmap2::Mmap::map(file) }.unwrap();
        let mut pages = vec![0u8; len.div_ceil(4096)];
        // SAFETY: `map` is a live mapping of `len` bytes and `pages` has one byte per page of it.
        let rc = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, len, pages.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        pages.iter().filter(|&&p| p & 1 == 1).count()
    }

    /// `flush`'s cold reads are cold: before the fix they were page-cache hits.
    #[test]
    fn a_dropped_range_leaves_the_page_cache() {
        // The build disk (ext4), not /tmp: tmpfs pages cannot be dropped.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("log");
        let len = 64 * 4096;
        let file = std::fs::File::create(&path).unwrap();
        file.write_all_at(&vec![7u8; len], 0).unwrap();
        file.sync_all().unwrap();
        let mut reader = std::fs::File::open(&path).unwrap();
        reader.read_to_end(&mut Vec::new()).unwrap();
        assert_eq!(resident(&reader, len), 64, "a file just read is cached");

        let cold = ColdRead::new(&path, false).unwrap();
        cold.prepare().unwrap();
        assert_eq!(resident(&reader, len), 0, "nothing of the file is cached any more");
        reader.read_exact_at(&mut [0u8; 4096], 16 * 4096).unwrap();
        assert!(resident(&reader, len) > 0, "a read caches again");
        cold.prepare().unwrap();
        assert_eq!(resident(&reader, len), 0);
    }
}
