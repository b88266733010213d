//! `ferrite-io flush`: the HybridLog workload. Fills pages with records, flushes them through the
//! chosen engine with the page flusher (`depth` pages in flight), then cold-reads random pages
//! back and verifies header, checksum and every record.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrite_io::hybridlog::{FlusherConfig, PageFlusher, SyncPolicy, page};
use ferrite_io::{EngineChoice, IoEngine, IoEngineConfig, OpenOptions, SharedIoEngine};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// Bytes of one record: an 8-byte key, a 4-byte length, and the value.
const RECORD: usize = 128;

/// What `flush` was asked to do.
pub struct Options {
    pub engine: EngineChoice,
    pub direct: bool,
    pub page_size: usize,
    pub pages: u64,
    pub sync: SyncPolicy,
    pub depth: usize,
    pub reads: u64,
    pub dir: PathBuf,
    pub json: bool,
    pub keep: bool,
}

/// Pseudo-random bytes the record values are cut from (so filling a page costs a copy, not a
/// random-number generator per byte, and the flush, not the workload, is what gets measured).
fn noise() -> &'static [u8; 8192] {
    static NOISE: std::sync::OnceLock<[u8; 8192]> = std::sync::OnceLock::new();
    NOISE.get_or_init(|| {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        std::array::from_fn(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(options: Options) -> ferrite_io::Result<()> {
    let Options { engine: choice, direct, page_size, pages, sync, depth, reads, dir, json, keep } = options;
    let config = IoEngineConfig {
        engine: choice,
        buffer_size: page_size,
        registered_buffers: (depth as u32 * 2 + 1).clamp(4, 1024),
        direct_io: direct,
        ..IoEngineConfig::default()
    };
    let engine = ferrite_io::create_engine(config)?;
    std::fs::create_dir_all(&dir).map_err(|source| ferrite_io::Error::Open { path: dir.clone(), source })?;
    let path = dir.join(format!("ferrite-io-flush-{}.log", std::process::id()));
    let file = engine.open(&path, &OpenOptions::new().create(true).truncate(true).direct(direct)).await?;
    let preallocated = file.preallocate(pages * page_size as u64).await?;
    let flusher = Arc::new(PageFlusher::new(
        engine.clone(),
        file.clone(),
        FlusherConfig { page_size, depth, sync, ..FlusherConfig::default() },
    ));
    let progress = if json { ProgressBar::hidden() } else { ProgressBar::new(pages) };
    progress.set_style(
        ProgressStyle::with_template("{spinner} flush [{bar:40}] {pos}/{len} pages {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    // Writers take page numbers from a shared counter. There are twice as many as the flusher's
    // depth, so a filled page is always waiting when a write completes and the device queue
    // stays at `depth`.
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..depth * 2 {
        let (flusher, next, progress) = (flusher.clone(), next.clone(), progress.clone());
        writers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= pages {
                    return Ok::<_, ferrite_io::Error>(latencies);
                }
                let address = index * page_size as u64;
                let mut buf = flusher.engine().acquire().await;
                let len =
                    fill_records(&mut buf[size_of::<page::PageHeader>()..page_size - page::OVERHEAD + 32], address);
                let began = Instant::now();
                flusher.flush(buf, address, len).await.0?;
                latencies.push(began.elapsed());
                progress.inc(1);
                // Let the writer this completion woke (its page is filled) submit before this
                // one spends CPU filling the next page.
                tokio::task::yield_now().await;
            }
        });
    }
    let mut latencies = Vec::new();
    while let Some(joined) = writers.join_next().await {
        let writer = joined.map_err(|e| ferrite_io::Error::Io {
            op: ferrite_io::Op::Write,
            offset: 0,
            backend: engine.backend(),
            source: std::io::Error::other(e),
        })?;
        latencies.extend(writer?);
    }
    let elapsed = start.elapsed();
    progress.finish_and_clear();
    latencies.sort();
    let flushed = flusher.flushed_until();

    let (verified, read_latencies) = cold_reads(&engine, &file, page_size, pages, reads).await?;
    if !keep {
        let _ = std::fs::remove_file(&path);
    }

    let bytes = pages * page_size as u64;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let report = json!({
        "engine": engine.backend().to_string(),
        "selection": engine.selection().to_string(),
        "direct": direct,
        "page_size": page_size,
        "pages": pages,
        "depth": depth,
        "sync": format!("{sync:?}"),
        "preallocated": preallocated,
        "flushed_until": flushed,
        "seconds": secs,
        "pages_per_sec": pages as f64 / secs,
        "mb_per_sec": bytes as f64 / secs / 1e6,
        "durable_p50_us": percentile(&latencies, 0.5).as_secs_f64() * 1e6,
        "durable_p99_us": percentile(&latencies, 0.99).as_secs_f64() * 1e6,
        "cold_reads_verified": verified,
        "cold_read_p50_us": percentile(&read_latencies, 0.5).as_secs_f64() * 1e6,
    });
    if json {
        println!("{report}");
        return Ok(());
    }
    println!("engine:        {}", engine.selection());
    println!(
        "flushed:       {pages} pages x {} KiB = {} MiB{} with sync {sync:?}, depth {depth}; flushed_until = {flushed}",
        page_size / 1024,
        bytes >> 20,
        if direct { " (O_DIRECT)" } else { "" },
    );
    println!(
        "throughput:    {:.0} pages/s, {:.1} MB/s in {:.2} s",
        pages as f64 / secs,
        bytes as f64 / secs / 1e6,
        secs
    );
    println!(
        "time to durable: p50 {:.1} us, p99 {:.1} us (from the flush call: waiting for a free slot, write, sync)",
        percentile(&latencies, 0.5).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "cold reads:    {verified} random pages read back and verified (header, CRC32C, every record), p50 {:.1} us",
        percentile(&read_latencies, 0.5).as_secs_f64() * 1e6
    );
    Ok(())
}

/// Reads `reads` random pages back and checks each page and its records.
async fn cold_reads(
    engine: &SharedIoEngine,
    file: &ferrite_io::File,
    page_size: usize,
    pages: u64,
    reads: u64,
) -> ferrite_io::Result<(u64, Vec<Duration>)> {
    let mut latencies = Vec::with_capacity(reads as usize);
    let mut expected = vec![0u8; page_size];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut buf = engine.acquire().await;
    for _ in 0..reads.min(pages.max(1) * 4) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let address = (x % pages.max(1)) * page_size as u64;
        let began = Instant::now();
        let (result, back) = ferrite_io::hybridlog::read_page(&**engine, file, buf, address).await.into_parts();
        latencies.push(began.elapsed());
        let info = result?;
        let len = fill_records(&mut expected[..page_size - page::OVERHEAD], address);
        if info.header.payload_len as usize != len || back[info.payload()] != expected[..len] {
            return Err(ferrite_io::Error::Io {
                op: ferrite_io::Op::Read,
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
    }
    latencies.sort();
    Ok((latencies.len() as u64, latencies))
}
