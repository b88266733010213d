//! Criterion benches: every row of the performance table on every backend, side by side in one
//! run. The workloads are the ones `ferrite-io bench` runs (one source file, included here).
//!
//! ```sh
//! cargo bench --bench io                 # everything (about 3 minutes)
//! cargo bench --bench io -- direct_      # only the O_DIRECT rows
//! cargo bench --bench io -- ring_setup   # raw rings: SQPOLL, DEFER_TASKRUN, registered files
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
                    // Untimed: the write-back of a write row's dirty pages, before the next sample.
                    Ok(elapsed) => match bench.settle(row) {
                        Ok(()) => elapsed,
                        Err(e) => panic!("{row} on {backend}: {e}"),
                    },
                    Err(e) => panic!("{row} on {backend}: {e}"),
                })
            });
        }
        group.finish();
    }
}

/// The ring setups the engine's design weighed, on raw rings (no engine), so each choice rests
/// on a figure from this machine: at queue depth 1 on O_DIRECT, a plain ring against SQPOLL and
/// SINGLE_ISSUER|DEFER_TASKRUN; on cached reads through the ring, a file descriptor against a
/// registered (fixed) file. Needs the io_uring engine's build (`cfg(uring)`).
#[cfg(uring)]
fn ring_setup(c: &mut Criterion) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;

    use workloads::raw::{Ring, Setup};

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ferrite-bench");
    let data = dir.join(workloads::FILES[0].0);
    let open = |flags| match std::fs::OpenOptions::new().read(true).custom_flags(flags).open(&data) {
        Ok(file) => file,
        Err(e) => panic!("{}: {e} (the `io` benches lay it out)", data.display()),
    };
    let (direct, cached) = (open(libc::O_DIRECT), open(0));
    let pages = workloads::FILES[0].1 / 4096;
    let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
    let mut next = move || rng.u64(0..pages) * 4096;
    let mut group = c.benchmark_group("ring_setup");
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let runs = [
        ("direct_qd1_plain", Setup::Plain, &direct, false),
        ("direct_qd1_sqpoll", Setup::Sqpoll, &direct, false),
        ("direct_qd1_defer_taskrun", Setup::DeferTaskrun, &direct, false),
        ("cached_read_fd", Setup::Plain, &cached, false),
        ("cached_read_fixed_file", Setup::Plain, &cached, true),
    ];
    for (name, setup, file, fixed_file) in runs {
        let mut ring = match Ring::new(1, 4096, setup) {
            Ok(ring) => ring,
            Err(e) => panic!("{name}: ring setup {setup:?}: {e}"),
        };
        let fd = file.as_raw_fd();
        if fixed_file && let Err(e) = ring.register_file(fd) {
            panic!("{name}: register the file: {e}");
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                if let Err(e) = ring.one(fd, next()) {
                    panic!("{name}: {e}");
                }
            })
        });
    }
    group.finish();
}

#[cfg(uring)]
criterion_group!(benches, io, ring_setup);
#[cfg(all(target_os = "linux", not(uring)))]
criterion_group!(benches, io);
#[cfg(target_os = "linux")]
criterion_main!(benches);

#[cfg(not(target_os = "linux"))]
fn main() {}
