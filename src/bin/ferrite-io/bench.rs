//! `ferrite-io bench`: the main rows of the performance table on the io_uring engine, the tokio
//! engine and the raw baselines, in one process, interleaved, with medians and ratios.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::workloads::{Backend, Bench, Row};

/// How long one measurement (one backend, one round) should take.
const SAMPLE: Duration = Duration::from_millis(60);

/// Time per operation of every backend on one row, one sample per round.
struct Measured {
    row: Row,
    samples: BTreeMap<&'static str, Vec<f64>>,
    medians: BTreeMap<&'static str, f64>,
}

pub async fn run(dir: &Path, rounds: usize, only: Option<&str>, json: bool) -> ferrite_io::Result<()> {
    let rows: Vec<Row> = Row::ALL.into_iter().filter(|r| only.is_none_or(|o| r.name().contains(o))).collect();
    eprintln!("preparing 3 files of up to 256 MiB in {} (ext4 here; not tmpfs)...", dir.display());
    let mut bench = Bench::new(dir).await?;
    let total = rows.iter().map(|r| Backend::ALL.iter().filter(|b| b.supports(*r)).count() * rounds).sum::<usize>();
    let progress = ProgressBar::new(total as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut measured = Vec::new();
    for row in rows {
        let iters = calibrate(&mut bench, row).await?;
        let mut samples: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        for round in 0..rounds {
            // Rotate the order each round so no backend always runs first (or right after a
            // write-heavy neighbour).
            let backends: Vec<Backend> = Backend::ALL.iter().copied().filter(|b| b.supports(row)).collect();
            for i in 0..backends.len() {
                let backend = backends[(i + round) % backends.len()];
                progress.set_message(format!("{row} / {backend}"));
                let elapsed = bench.run(row, backend, iters).await?;
                samples.entry(backend.name()).or_default().push(elapsed.as_secs_f64() * 1e6 / iters as f64);
                progress.inc(1);
            }
        }
        let medians = samples.iter().map(|(name, v)| (*name, median(&mut v.clone()))).collect();
        measured.push(Measured { row, samples, medians });
    }
    progress.finish_and_clear();
    if json {
        println!("{}", to_json(&measured, rounds));
    } else {
        print_table(&measured, rounds);
    }
    Ok(())
}

/// Iterations that make one measurement last about [`SAMPLE`], from a short pilot on `pread`.
async fn calibrate(bench: &mut Bench, row: Row) -> ferrite_io::Result<u64> {
    let pilot = 16;
    let elapsed = bench.run(row, Backend::Pread, pilot).await?;
    let per_op = elapsed.as_secs_f64() / pilot as f64;
    let iters = (SAMPLE.as_secs_f64() / per_op.max(1e-7)) as u64;
    Ok(iters.clamp(64, 50_000))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// A latency in microseconds, or for rate rows the rate the latency implies.
fn cell(row: Row, us: f64) -> String {
    match row {
        Row::DirectSeqwrite128k => format!("{:.0} MB/s", row.bytes() as f64 / us),
        r if r.is_rate() => format!("{:.1}k IOPS", 1e3 / us),
        _ => format!("{us:.2} us"),
    }
}

/// `ours / baseline` as a time ratio (lower is better): the median over rounds of the ratio
/// within each round, so drift of the machine between rounds cancels out. Rate rows print the
/// same number, which there means "baseline throughput / ours".
fn paired_ratio(m: &Measured, ours: &str, baseline: &str) -> Option<f64> {
    let (ours, baseline) = (m.samples.get(ours)?, m.samples.get(baseline)?);
    let mut ratios: Vec<f64> = ours.iter().zip(baseline).map(|(a, b)| a / b).collect();
    (!ratios.is_empty()).then(|| median(&mut ratios))
}

fn ratio(m: &Measured, ours: &str, baseline: &str) -> String {
    paired_ratio(m, ours, baseline).map_or("-".to_owned(), |r| format!("{r:.2}x"))
}

const RATIOS: [(&str, &str, &str); 5] = [
    ("fixed/raw", "uring_fixed", "raw_ring"),
    ("fixed/pread", "uring_fixed", "pread"),
    ("fixed/nowait", "uring_fixed", "nowait"),
    ("tokio/tokio_fs", "tokio_engine", "tokio_fs"),
    ("tokio/spawn_blk", "tokio_engine", "spawn_blocking"),
];

fn print_table(measured: &[Measured], rounds: usize) {
    let backends: Vec<&str> = Backend::ALL.iter().map(|b| b.name()).collect();
    println!(
        "ferrite-io bench: medians of {rounds} interleaved rounds; kernel {}, {} CPUs",
        ferrite_io::io::detect::kernel_release(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut header = format!("{:<26}", "row");
    for b in &backends {
        header += &format!(" {b:>15}");
    }
    for (label, _, _) in RATIOS {
        header += &format!(" {label:>15}");
    }
    println!("{header}");
    for m in measured {
        let mut line = format!("{:<26}", m.row.name());
        for b in &backends {
            let text = m.medians.get(b).map_or("-".to_owned(), |us| cell(m.row, *us));
            line += &format!(" {text:>15}");
        }
        for (_, ours, base) in RATIOS {
            line += &format!(" {:>15}", ratio(m, ours, base));
        }
        println!("{line}");
    }
    println!(
        "ratios are time per operation, ours / baseline, the median of the per-round ratios: below 1.00x is faster"
    );
}

fn to_json(measured: &[Measured], rounds: usize) -> serde_json::Value {
    let rows: Vec<_> = measured
        .iter()
        .map(|m| {
            let ratios: serde_json::Map<String, serde_json::Value> = RATIOS
                .iter()
                .filter_map(|(label, ours, base)| Some(((*label).to_owned(), json!(paired_ratio(m, ours, base)?))))
                .collect();
            json!({
                "row": m.row.name(),
                "bytes_per_op": m.row.bytes(),
                "us_per_op": m.medians,
                "ratios": ratios,
            })
        })
        .collect();
    json!({
        "kernel": ferrite_io::io::detect::kernel_release(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "rounds": rounds,
        "rows": rows,
    })
}
