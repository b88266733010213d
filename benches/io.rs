//! Criterion benches: every row of the performance table on every backend, side by side in one
//! run. The workloads are the ones `ferrite-io bench` runs (one source file, included here).
//!
//! ```sh
//! cargo bench --bench io                 # everything (about 3 minutes)
//! cargo bench --bench io -- direct_      # only the O_DIRECT rows
//! ```
//!
//! Files (256 MiB each) go to `target/tmp/ferrite-bench` on the build disk: never tmpfs.
//! Linux only (Criterion is a Linux dev-dependency); elsewhere `ferrite-io bench` runs the rows.

#[cfg(target_os = "linux")]
use std::time::Duration;

#[cfg(target_os = "linux")]
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

// The CLI uses the parts the benches do not (table formatting helpers), and vice versa.
#[allow(dead_code)]
#[path = "../src/bin/ferrite-io/workloads.rs"]
mod workloads;

#[cfg(target_os = "linux")]
use workloads::{Backend, Bench, Row};

#[cfg(target_os = "linux")]
fn io(c: &mut Criterion) {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ferrite-bench");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("bench dir {}: {e}", dir.display());
    }
    let config = ferrite_io::IoEngineConfig::default();
    let mut bench = match runtime.block_on(Bench::new(&dir, &config, &|_| {})) {
        Ok(bench) => bench,
        Err(e) => panic!("bench setup in {}: {e}", dir.display()),
    };
    for row in Row::ALL {
        let mut group = c.benchmark_group(row.name());
        group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
        group.throughput(if row == Row::DirectSeqwrite128k {
            Throughput::Bytes(row.bytes() as u64)
        } else {
            Throughput::Elements(1)
        });
        let backends: Vec<Backend> =
            Backend::ALL.iter().copied().filter(|b| b.supports(row) && bench.runs(*b)).collect();
        for backend in backends {
            group.bench_function(backend.name(), |b| {
                b.iter_custom(|iters| match runtime.block_on(bench.run(row, backend, iters)) {
                    Ok(elapsed) => elapsed,
                    Err(e) => panic!("{row} on {backend}: {e}"),
                })
            });
        }
        group.finish();
    }
}

#[cfg(target_os = "linux")]
criterion_group!(benches, io);
#[cfg(target_os = "linux")]
criterion_main!(benches);

#[cfg(not(target_os = "linux"))]
fn main() {}
