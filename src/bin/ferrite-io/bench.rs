//! `ferrite-io bench`: the rows of the performance table on the io_uring engine, the tokio
//! engine and the raw baselines, in one process, interleaved, with medians, ratios, and a chart
//! of the ratios with their spread over rounds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ferrite_io::IoEngineConfig;
use serde::Serialize;

use crate::Failure;
use crate::chart;
use crate::output::{EngineSource, Progress, micros, table};
use crate::scratch::{Output, Scratch};
use crate::workloads::{Backend, Bench, FILES, Row, allocations};

/// How long one measurement (one backend, one round) should take.
const SAMPLE: Duration = Duration::from_millis(60);
/// Version of the `--json` report; raised when a field changes meaning or goes away.
const REPORT_VERSION: u32 = 8;
/// Rotations of the paired queue-depth-1 comparison: three reads each (engine, raw ring, raw
/// ring on tokio), about 0.7 s on a disk.
#[cfg(uring)]
const PAIRS: usize = 2000;

/// What `bench` was asked to do, checked (`rows` is not empty).
pub struct Options {
    pub config: IoEngineConfig,
    pub source: EngineSource,
    pub rows: Vec<Row>,
    pub rounds: usize,
    pub json: bool,
    /// Where the chart goes, claimed before the run.
    pub chart: Output,
    pub dir: PathBuf,
    pub keep: bool,
}

/// The ratios of the table and the chart: a label, our backend, the baseline.
const RATIOS: [(&str, &str, &str); 5] = [
    ("fixed/raw", "uring_fixed", "raw_ring"),
    ("fixed/pread", "uring_fixed", "pread"),
    ("fixed/nowait", "uring_fixed", "nowait"),
    ("tokio/tokio_fs", "tokio_engine", "tokio_fs"),
    ("tokio/spawn_blk", "tokio_engine", "spawn_blocking"),
];

/// Time per operation of every backend on one row, one sample per round.
struct Measured {
    row: Row,
    samples: BTreeMap<&'static str, Vec<f64>>,
    /// Heap allocations per operation (the whole process, during each timed run).
    allocs: BTreeMap<&'static str, Vec<f64>>,
}

/// The median and the extremes of some samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no samples.
    fn of(mut samples: Vec<f64>) -> Option<Spread> {
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let median = match n {
            0 => return None,
            n if n % 2 == 1 => samples[n / 2],
            n => (samples[n / 2 - 1] + samples[n / 2]) / 2.0,
        };
        Some(Spread { median, min: samples[0], max: samples[n - 1] })
    }
}

impl Measured {
    fn median(&self, backend: &str) -> Option<f64> {
        Spread::of(self.samples.get(backend)?.clone()).map(|s| s.median)
    }

    /// `ours / baseline` as a time ratio (lower is better), one per round, so drift of the
    /// machine between rounds cancels out. Rate rows give the same number, which there means
    /// "baseline throughput / ours".
    fn ratio(&self, ours: &str, baseline: &str) -> Option<Spread> {
        let (ours, baseline) = (self.samples.get(ours)?, self.samples.get(baseline)?);
        Spread::of(ours.iter().zip(baseline).map(|(a, b)| a / b).collect())
    }
}

/// The `--json` report.
#[derive(Serialize)]
struct Report {
    version: u32,
    kernel: String,
    cpus: usize,
    rounds: usize,
    engine_requested: String,
    engine_requested_by: String,
    rows: Vec<RowReport>,
    scaling: Vec<ScalingReport>,
    /// O_DIRECT queue depth 1, engine and raw ring alternating per operation (absent when the
    /// row did not run or io_uring is not in use).
    qd1_paired: Option<PairedReport>,
    /// Cached 4 KiB reads, engine (fixed buffer) and `nowait` alternating in chunks (absent when
    /// the row did not run or io_uring is not in use).
    cached_paired: Option<CachedPairedReport>,
    /// Batches of 8 cached reads, engine (fixed buffers) and raw ring alternating in chunks
    /// (absent when the row did not run or io_uring is not in use). New in version 6.
    batch_paired: Option<BatchPairedReport>,
    /// The same, every batch inside the file's first 1 MiB (`HOT_SPAN`), whose pages stay in the
    /// CPU's caches: the kernel's share of a batch is smallest there, and the engine's own cost
    /// shows the most. New in version 8.
    batch_paired_hot: Option<BatchPairedReport>,
    /// The io_uring engine's counters at the end of the run (absent when it did not run).
    uring_stats: Option<ferrite_io::EngineStats>,
    /// The counters of the io_uring engine without the fast path that the CPU-bound scaling
    /// rows use (absent when io_uring did not run). New in version 4.
    uring_ring_only_stats: Option<ferrite_io::EngineStats>,
    tokio_stats: ferrite_io::EngineStats,
}

#[derive(Serialize)]
struct RowReport {
    row: &'static str,
    bytes_per_op: usize,
    /// Median microseconds per operation of every backend that ran.
    us_per_op: BTreeMap<&'static str, f64>,
    /// Per-round ratios, by label of [`RATIOS`].
    ratios: BTreeMap<&'static str, Spread>,
    /// Median heap allocations per operation of every backend that ran (whole process).
    allocations_per_op: BTreeMap<&'static str, f64>,
}

/// Throughput with two submitters over throughput with one, per backend, for one workload.
#[derive(Serialize)]
struct ScalingReport {
    workload: &'static str,
    gain: BTreeMap<&'static str, Spread>,
}

/// The paired queue-depth-1 comparison: median and mean latency of each side, in microseconds.
#[derive(Serialize)]
struct PairedReport {
    /// Rotations: each is one read per side (two sides before version 5, three in 5 and 6,
    /// four since).
    pairs: usize,
    uring_fixed_p50_us: f64,
    raw_ring_p50_us: f64,
    uring_fixed_mean_us: f64,
    raw_ring_mean_us: f64,
    /// `uring_fixed_p50_us / raw_ring_p50_us`.
    ratio_p50: f64,
    /// `uring_fixed_mean_us / raw_ring_mean_us`.
    ratio_mean: f64,
    /// The raw ring waited for through the runtime's reactor (`raw::OnTokio`). New in version 5.
    raw_ring_tokio_p50_us: f64,
    raw_ring_tokio_mean_us: f64,
    /// `raw_ring_tokio_p50_us / raw_ring_p50_us`: what waiting on tokio costs by itself, the
    /// floor under `ratio_p50`. New in version 5.
    tokio_floor_p50: f64,
    /// `uring_fixed_p50_us / raw_ring_tokio_p50_us`: the engine's own cost above that floor.
    /// New in version 5.
    ratio_to_floor_p50: f64,
    /// The engine driven by `UringEngine::block_on`, waiting inside `io_uring_enter` as the raw
    /// ring does. New in version 7.
    block_on_p50_us: f64,
    block_on_mean_us: f64,
    /// `block_on_p50_us / raw_ring_p50_us`. New in version 7.
    block_on_ratio_p50: f64,
}

/// Cached 4 KiB reads, engine and `nowait` alternating chunk by chunk (see
/// `Bench::paired_cached`). New in version 4.
#[derive(Serialize)]
struct CachedPairedReport {
    chunks: usize,
    reads_per_chunk: usize,
    /// Medians over chunks of the time per read.
    uring_fixed_p50_us: f64,
    nowait_p50_us: f64,
    /// The median over pairs of the ratio within a pair, ours / nowait.
    ratio_p50: f64,
}

impl CachedPairedReport {
    #[cfg(uring)]
    fn of(paired: crate::workloads::PairedCached) -> Option<CachedPairedReport> {
        let ratios = paired.uring_fixed.iter().zip(&paired.nowait).map(|(a, b)| a / b).collect();
        Some(CachedPairedReport {
            chunks: paired.uring_fixed.len(),
            reads_per_chunk: crate::workloads::CHUNK,
            uring_fixed_p50_us: Spread::of(paired.uring_fixed)?.median,
            nowait_p50_us: Spread::of(paired.nowait)?.median,
            ratio_p50: Spread::of(ratios)?.median,
        })
    }
}

/// Batches of 8 cached 4 KiB reads, engine and raw ring alternating chunk by chunk (see
/// `Bench::paired_batch`). New in version 6.
#[derive(Serialize)]
struct BatchPairedReport {
    chunks: usize,
    batches_per_chunk: usize,
    /// Medians over chunks of the time per batch.
    uring_fixed_p50_us: f64,
    raw_ring_p50_us: f64,
    /// The median over pairs of the ratio within a pair, ours / raw ring.
    ratio_p50: f64,
}

impl BatchPairedReport {
    #[cfg(uring)]
    fn of(paired: crate::workloads::PairedBatch) -> Option<BatchPairedReport> {
        let ratios = paired.uring_fixed.iter().zip(&paired.raw_ring).map(|(a, b)| a / b).collect();
        Some(BatchPairedReport {
            chunks: paired.uring_fixed.len(),
            batches_per_chunk: crate::workloads::BATCH_CHUNK,
            uring_fixed_p50_us: Spread::of(paired.uring_fixed)?.median,
            raw_ring_p50_us: Spread::of(paired.raw_ring)?.median,
            ratio_p50: Spread::of(ratios)?.median,
        })
    }
}

impl PairedReport {
    #[cfg(uring)]
    fn of(paired: crate::workloads::Paired) -> Option<PairedReport> {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let (ours_mean, raw_mean) = (mean(&paired.uring_fixed), mean(&paired.raw_ring));
        let floor_mean = mean(&paired.raw_ring_tokio);
        let block_on_mean = mean(&paired.block_on);
        let pairs = paired.uring_fixed.len();
        let ours = Spread::of(paired.uring_fixed)?.median;
        let raw = Spread::of(paired.raw_ring)?.median;
        let floor = Spread::of(paired.raw_ring_tokio)?.median;
        let block_on = Spread::of(paired.block_on)?.median;
        Some(PairedReport {
            pairs,
            uring_fixed_p50_us: ours,
            raw_ring_p50_us: raw,
            uring_fixed_mean_us: ours_mean,
            raw_ring_mean_us: raw_mean,
            ratio_p50: ours / raw,
            ratio_mean: ours_mean / raw_mean,
            raw_ring_tokio_p50_us: floor,
            raw_ring_tokio_mean_us: floor_mean,
            tokio_floor_p50: floor / raw,
            ratio_to_floor_p50: ours / floor,
            block_on_p50_us: block_on,
            block_on_mean_us: block_on_mean,
            block_on_ratio_p50: block_on / raw,
        })
    }
}

/// The scaling pairs: a label, the row with one submitter, the row with two.
const SCALING: [(&str, Row, Row); 2] = [
    ("cached reads through the ring (CPU-bound)", Row::ScaleCached(1), Row::ScaleCached(2)),
    ("O_DIRECT reads, 32 in flight", Row::ScaleDirect(1), Row::ScaleDirect(2)),
];

/// Backends whose scaling is reported.
const SCALED: [&str; 4] = ["uring", "uring_fixed", "raw_ring", "pread"];

/// Per-round throughput gains of `backend` from the row `one` to the row `two`.
fn scaling(measured: &[Measured], one: Row, two: Row, backend: &str) -> Option<Spread> {
    let one = measured.iter().find(|m| m.row == one)?.samples.get(backend)?;
    let two = measured.iter().find(|m| m.row == two)?.samples.get(backend)?;
    Spread::of(one.iter().zip(two).map(|(a, b)| a / b).collect())
}

pub async fn run(options: Options) -> Result<(), Failure> {
    let Options { config, source, rows, rounds, json, chart, dir, keep } = options;
    let mut scratch = Scratch::new(&dir, keep)?;
    for (name, _) in FILES {
        scratch.file(name);
    }
    let mib = FILES.iter().map(|(_, size)| size >> 20).sum();
    let phase = Progress::start(format!("lay out files in {}", dir.display()), mib, "MiB");
    let bench = Bench::new(&dir, &config, &|bytes| phase.inc(bytes >> 20)).await;
    let mut bench = bench.map_err(|e| Failure::Run(format!("bench files in {}: {e}", dir.display())))?;
    phase.finish();
    let backends: Vec<Backend> = Backend::ALL.iter().copied().filter(|b| bench.runs(*b)).collect();
    let runs = |row: Row| backends.iter().copied().filter(move |b| b.supports(row));
    let total = rows.iter().map(|&row| runs(row).count() * rounds).sum::<usize>();
    let phase = Progress::start("measure", total as u64, "runs");
    // Rows are interleaved within each round, as backends are within a row: the machine's drift
    // over the run then spreads over every row alike, and the two rows of a scaling pair are
    // measured seconds apart, not a whole row's rounds apart.
    let mut measured = Vec::with_capacity(rows.len());
    let mut iters = Vec::with_capacity(rows.len());
    for &row in &rows {
        iters.push(calibrate(&mut bench, row).await?);
        measured.push(Measured { row, samples: BTreeMap::new(), allocs: BTreeMap::new() });
    }
    for round in 0..rounds {
        for (m, &iters) in measured.iter_mut().zip(&iters) {
            let row_backends: Vec<Backend> = runs(m.row).collect();
            // Rotate the order each round so no backend always runs first (or right after a
            // write-heavy neighbour).
            for i in 0..row_backends.len() {
                let backend = row_backends[(i + round) % row_backends.len()];
                phase.message(format!("{} / {backend}", m.row));
                let before = allocations();
                let elapsed = bench.run(m.row, backend, iters).await?;
                let allocated = allocations() - before;
                bench.settle(m.row)?;
                m.samples.entry(backend.name()).or_default().push(elapsed.as_secs_f64() * 1e6 / iters as f64);
                m.allocs.entry(backend.name()).or_default().push(allocated as f64 / iters as f64);
                phase.inc(1);
            }
        }
    }
    phase.finish();
    let paired = qd1_paired(&mut bench, &rows).await?;
    let cached = cached_paired(&mut bench, &rows).await?;
    let [batch, batch_hot] = batch_paired(&mut bench, &rows).await?;
    let title = format!(
        "ferrite-io bench: ours / baseline, median and range of {rounds} rounds; kernel {}",
        ferrite_io::io::detect::kernel_release()
    );
    draw(chart.path(), &title, &measured)?;
    eprintln!("chart: {}", chart.path().display());
    chart.keep();
    if json {
        let report = report(
            &measured,
            rounds,
            &config,
            &source,
            &bench,
            PairedReports { qd1: paired, cached, batch, batch_hot },
        );
        let text = serde_json::to_string_pretty(&report).map_err(|e| Failure::Run(format!("JSON report: {e}")))?;
        println!("{text}");
    } else {
        print_table(&measured, &backends, rounds, &config, &source);
        print_extras(&measured, &bench, &PairedReports { qd1: paired, cached, batch, batch_hot });
    }
    Ok(())
}

/// Chunk pairs of the cached-read comparison (`Bench::paired_cached`): 2 x 400,000 reads, about
/// 1.5 s.
#[cfg(uring)]
const CACHED_CHUNKS: usize = 200;

/// The cached-read comparison in chunks, when the cached row is among `rows` and the io_uring
/// engine runs.
async fn cached_paired(bench: &mut Bench, rows: &[Row]) -> Result<Option<CachedPairedReport>, Failure> {
    #[cfg(uring)]
    if rows.contains(&Row::CachedRead4k) && bench.runs(Backend::UringFixed) {
        let phase = Progress::start("cached reads, engine and nowait alternating", 1, "runs");
        let paired = bench.paired_cached(CACHED_CHUNKS).await?;
        phase.inc(1);
        phase.finish();
        return Ok(CachedPairedReport::of(paired));
    }
    let _ = (bench, rows);
    Ok(None)
}

/// Chunk pairs of the batch comparison (`Bench::paired_batch`): 2 x 25,000 batches, about 0.5 s.
#[cfg(uring)]
const BATCH_CHUNKS: usize = 100;

/// The batch comparisons in chunks, anywhere in the file and inside its hot first 1 MiB, when
/// the batch row is among `rows` and the io_uring engine runs.
async fn batch_paired(bench: &mut Bench, rows: &[Row]) -> Result<[Option<BatchPairedReport>; 2], Failure> {
    #[cfg(uring)]
    if rows.contains(&Row::Batch8) && bench.runs(Backend::UringFixed) {
        let phase = Progress::start("batches of 8, engine and raw ring alternating", 2, "runs");
        let mut reports = [None, None];
        for (report, hot) in reports.iter_mut().zip([false, true]) {
            *report = BatchPairedReport::of(bench.paired_batch(BATCH_CHUNKS, hot).await?);
            phase.inc(1);
        }
        phase.finish();
        return Ok(reports);
    }
    let _ = (bench, rows);
    Ok([None, None])
}

/// The paired comparisons that ran.
struct PairedReports {
    qd1: Option<PairedReport>,
    cached: Option<CachedPairedReport>,
    batch: Option<BatchPairedReport>,
    batch_hot: Option<BatchPairedReport>,
}

/// The paired queue-depth-1 comparison, when the O_DIRECT QD1 row is among `rows` and the
/// io_uring engine runs.
async fn qd1_paired(bench: &mut Bench, rows: &[Row]) -> Result<Option<PairedReport>, Failure> {
    #[cfg(uring)]
    if rows.contains(&Row::DirectRandread(1)) && bench.runs(Backend::UringFixed) {
        let phase = Progress::start("O_DIRECT QD1, engine, raw ring and block_on rotating", 1, "runs");
        let paired = bench.paired_qd1(PAIRS).await?;
        phase.inc(1);
        phase.finish();
        return Ok(PairedReport::of(paired));
    }
    let _ = (bench, rows);
    Ok(None)
}

/// Iterations that make one measurement last about [`SAMPLE`] (five times that for the scaling
/// rows, whose threads must start, and finish, together: a few milliseconds of skew between two
/// submitters would otherwise show as lost scaling), from a short pilot on `pread`.
async fn calibrate(bench: &mut Bench, row: Row) -> ferrite_io::Result<u64> {
    let pilot = 16;
    let elapsed = bench.run(row, Backend::Pread, pilot).await?;
    let per_op = elapsed.as_secs_f64() / pilot as f64;
    let (sample, most) = match row.submitters() {
        1 if !SCALING.iter().any(|(_, one, _)| *one == row) => (SAMPLE.as_secs_f64(), 50_000),
        _ => (5.0 * SAMPLE.as_secs_f64(), 250_000),
    };
    let iters = (sample / per_op.max(1e-7)) as u64;
    Ok(iters.clamp(64, most))
}

/// A latency, or for rate rows the rate the latency implies.
fn cell(row: Row, us: f64) -> String {
    match row {
        Row::DirectSeqwrite128k => format!("{:.0} MB/s", row.bytes() as f64 / us),
        r if r.is_rate() => format!("{:.1}k IOPS", 1e3 / us),
        _ => micros(us),
    }
}

fn print_table(
    measured: &[Measured],
    backends: &[Backend],
    rounds: usize,
    config: &IoEngineConfig,
    source: &EngineSource,
) {
    println!(
        "ferrite-io bench: medians of {rounds} interleaved rounds; kernel {}, {} CPUs; engine {} from {source}",
        ferrite_io::io::detect::kernel_release(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        config.engine,
    );
    let mut header = vec!["row".to_owned()];
    header.extend(backends.iter().map(|b| b.name().to_owned()));
    header.extend(RATIOS.iter().map(|(label, _, _)| (*label).to_owned()));
    let mut lines = vec![header];
    for m in measured {
        let mut line = vec![m.row.name().to_owned()];
        line.extend(backends.iter().map(|b| m.median(b.name()).map_or("-".to_owned(), |us| cell(m.row, us))));
        line.extend(
            RATIOS
                .iter()
                .map(|(_, ours, base)| m.ratio(ours, base).map_or("-".to_owned(), |r| format!("{:.2}x", r.median))),
        );
        lines.push(line);
    }
    print!("{}", table(&lines));
    println!(
        "ratios are time per operation, ours / baseline, the median of the per-round ratios: below 1.00x is faster"
    );
}

/// Allocations per operation, scaling with a second submitter, and the engines' counters.
fn print_extras(measured: &[Measured], bench: &Bench, paired: &PairedReports) {
    let engines = ["uring", "uring_fixed", "tokio_engine"];
    println!("heap allocations per operation (whole process, median of rounds):");
    for m in measured {
        let cells: Vec<String> = engines
            .iter()
            .filter_map(|b| Some(format!("{b} {:.2}", Spread::of(m.allocs.get(b)?.clone())?.median)))
            .collect();
        if !cells.is_empty() {
            println!("  {:<32} {}", m.row.name(), cells.join(", "));
        }
    }
    for (label, one, two) in SCALING {
        let gains: Vec<String> =
            SCALED.iter().filter_map(|b| Some(format!("{b} {:.2}x", scaling(measured, one, two, b)?.median))).collect();
        if !gains.is_empty() {
            println!("scaling, {label}, 2 submitters vs 1 (throughput): {}", gains.join(", "));
        }
    }
    if let Some(p) = &paired.qd1 {
        println!(
            "O_DIRECT QD1, {} rotations of four sides, one read each: uring_fixed p50 {} (mean {}), raw_ring p50 {} (mean {}): {:.3}x at p50, {:.3}x mean",
            p.pairs,
            micros(p.uring_fixed_p50_us),
            micros(p.uring_fixed_mean_us),
            micros(p.raw_ring_p50_us),
            micros(p.raw_ring_mean_us),
            p.ratio_p50,
            p.ratio_mean
        );
        println!(
            "  the raw ring waited for through tokio's reactor (the floor for any library on tokio): p50 {} (mean {}), {:.3}x the raw ring; uring_fixed {:.3}x that floor",
            micros(p.raw_ring_tokio_p50_us),
            micros(p.raw_ring_tokio_mean_us),
            p.tokio_floor_p50,
            p.ratio_to_floor_p50
        );
        println!(
            "  uring_fixed under UringEngine::block_on (waits in io_uring_enter, as the raw ring): p50 {} (mean {}), {:.3}x the raw ring",
            micros(p.block_on_p50_us),
            micros(p.block_on_mean_us),
            p.block_on_ratio_p50
        );
    }
    if let Some(c) = &paired.cached {
        println!(
            "cached 4 KiB reads, {} chunks of {} alternating: uring_fixed p50 {}, nowait p50 {}: {:.3}x (median of the ratios within a pair)",
            c.chunks,
            c.reads_per_chunk,
            micros(c.uring_fixed_p50_us),
            micros(c.nowait_p50_us),
            c.ratio_p50
        );
    }
    for (b, span) in [(&paired.batch, "anywhere in the file"), (&paired.batch_hot, "within its first 1 MiB")] {
        let Some(b) = b else { continue };
        println!(
            "batches of 8 cached reads {span}, {} chunks of {} alternating: uring_fixed p50 {} per batch, raw_ring p50 {}: {:.3}x (median of the ratios within a pair)",
            b.chunks,
            b.batches_per_chunk,
            micros(b.uring_fixed_p50_us),
            micros(b.raw_ring_p50_us),
            b.ratio_p50
        );
    }
    if let Some(stats) = bench.uring_stats() {
        println!("io_uring engine counters: {}", crate::output::stats_line(&stats));
    }
    if let Some(stats) = bench.ring_only_stats().filter(|stats| stats.submitted > 0) {
        println!("io_uring engine without the fast path (scaling rows): {}", crate::output::stats_line(&stats));
    }
}

fn report(
    measured: &[Measured],
    rounds: usize,
    config: &IoEngineConfig,
    source: &EngineSource,
    bench: &Bench,
    paired: PairedReports,
) -> Report {
    let rows = measured
        .iter()
        .map(|m| RowReport {
            row: m.row.name(),
            bytes_per_op: m.row.bytes(),
            us_per_op: m.samples.keys().filter_map(|&b| Some((b, m.median(b)?))).collect(),
            ratios: RATIOS.iter().filter_map(|&(label, ours, base)| Some((label, m.ratio(ours, base)?))).collect(),
            allocations_per_op: m
                .allocs
                .iter()
                .filter_map(|(&b, v)| Some((b, Spread::of(v.clone())?.median)))
                .collect(),
        })
        .collect();
    let scaling = SCALING
        .iter()
        .map(|&(workload, one, two)| ScalingReport {
            workload,
            gain: SCALED.iter().filter_map(|&b| Some((b, scaling(measured, one, two, b)?))).collect(),
        })
        .collect();
    Report {
        version: REPORT_VERSION,
        kernel: ferrite_io::io::detect::kernel_release(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        rounds,
        engine_requested: config.engine.to_string(),
        engine_requested_by: source.to_string(),
        rows,
        scaling,
        qd1_paired: paired.qd1,
        cached_paired: paired.cached,
        batch_paired: paired.batch,
        batch_paired_hot: paired.batch_hot,
        uring_stats: bench.uring_stats(),
        uring_ring_only_stats: bench.ring_only_stats(),
        tokio_stats: bench.tokio_stats(),
    }
}

fn draw(path: &std::path::Path, title: &str, measured: &[Measured]) -> Result<(), Failure> {
    let rows: Vec<&str> = measured.iter().map(|m| m.row.name()).collect();
    let series: Vec<chart::Series> = RATIOS
        .iter()
        .map(|&(label, ours, base)| chart::Series {
            label,
            spreads: measured.iter().map(|m| m.ratio(ours, base)).collect(),
        })
        .collect();
    chart::draw(path, title, &rows, &series).map_err(|e| Failure::Run(format!("chart {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_give_median_and_range() {
        assert_eq!(Spread::of(vec![]), None);
        assert_eq!(Spread::of(vec![3.0, 1.0, 2.0]), Some(Spread { median: 2.0, min: 1.0, max: 3.0 }));
        assert_eq!(Spread::of(vec![4.0, 1.0, 2.0, 3.0]), Some(Spread { median: 2.5, min: 1.0, max: 4.0 }));
    }
}
