//! `ferrite-io`: the command line. `probe` prints what the engine detection found and runs a
//! write, sync and read round trip on the chosen engine; `bench` runs the performance table.

mod bench;
mod flush;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use ferrite_io::{EngineChoice, IoEngine, IoEngineConfig, OpenOptions, UringSupport};

#[derive(Parser)]
#[command(name = "ferrite-io", version, about = "io_uring-first owned-buffer I/O for storage engines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect io_uring, choose an engine, and run a write/sync/read round trip on it.
    Probe {
        /// Engine: auto, uring or tokio (overrides the config file).
        #[arg(long)]
        engine: Option<EngineChoice>,
        /// A TOML file with an [io] table.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Directory for the round-trip file (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Open the round-trip file with O_DIRECT.
        #[arg(long)]
        direct: bool,
    },
    /// The HybridLog workload: flush pages of records through the page flusher, then cold-read
    /// random pages and verify them.
    Flush {
        /// Engine: auto, uring or tokio.
        #[arg(long, default_value = "auto")]
        engine: EngineChoice,
        /// Open the log with O_DIRECT.
        #[arg(long)]
        direct: bool,
        /// Page size (bytes, or with K/KiB/M/MiB): a multiple of 4096.
        #[arg(long, default_value = "64KiB", value_parser = parse_size)]
        page_size: u64,
        /// Number of pages (overrides --size).
        #[arg(long)]
        pages: Option<u64>,
        /// Log size to write (bytes, or with K/M/G suffixes).
        #[arg(long, default_value = "256MiB", value_parser = parse_size)]
        size: u64,
        /// per-page (linked write + fdatasync), group (group commit) or none.
        #[arg(long, default_value = "group")]
        sync: ferrite_io::hybridlog::SyncPolicy,
        /// Pages in flight.
        #[arg(long, default_value_t = 8)]
        depth: usize,
        /// Random pages to read back and verify afterwards.
        #[arg(long, default_value_t = 1000)]
        reads: u64,
        /// Directory for the log file (a real disk for --direct; not tmpfs).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Keep the log file.
        #[arg(long)]
        keep: bool,
    },
    /// Measure every row on both engines and the raw baselines, side by side.
    Bench {
        /// Where the 256 MiB bench files go (must be a real disk; tmpfs has no O_DIRECT).
        #[arg(long, default_value = "target/ferrite-bench")]
        dir: PathBuf,
        /// Interleaved rounds per row; the table shows medians.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Only rows whose name contains this (e.g. `direct`).
        #[arg(long)]
        only: Option<String>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Probe { engine, config, dir, direct } => runtime.block_on(probe(engine, config, dir, direct)),
        Command::Bench { dir, rounds, only, json } => {
            runtime.block_on(bench::run(&dir, rounds.max(1), only.as_deref(), json))
        }
        Command::Flush { engine, direct, page_size, pages, size, sync, depth, reads, dir, json, keep } => {
            let page_size = page_size as usize;
            let pages = pages.unwrap_or(size / page_size.max(1) as u64).max(1);
            let options =
                flush::Options { engine, direct, page_size, pages, sync, depth: depth.max(1), reads, dir, json, keep };
            runtime.block_on(flush::run(options))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn probe(
    engine: Option<EngineChoice>,
    config: Option<PathBuf>,
    dir: PathBuf,
    direct: bool,
) -> ferrite_io::Result<()> {
    let mut config = match config {
        Some(path) => IoEngineConfig::from_toml_file(path)?,
        None => IoEngineConfig::default(),
    };
    if let Some(engine) = engine {
        config.engine = engine;
    }
    config.direct_io |= direct;
    println!("ferrite-io {}", env!("CARGO_PKG_VERSION"));
    println!("kernel:           {}", ferrite_io::io::detect::kernel_release());
    let sysctl = ferrite_io::io::detect::io_uring_disabled_sysctl();
    println!("io_uring_disabled: {}", sysctl.map_or("absent".to_owned(), |v| v.to_string()));
    if config.engine == EngineChoice::Tokio {
        println!("io_uring probe:   skipped (engine = \"tokio\")");
    } else {
        match ferrite_io::check_uring_support(&config) {
            UringSupport::Supported(info) => println!("io_uring probe:   supported: {info}"),
            UringSupport::Unsupported(why) => println!("io_uring probe:   unsupported: {why}"),
        }
    }
    let engine = ferrite_io::create_engine(config.clone())?;
    println!("engine:           {}", engine.selection());
    println!("pool:             {} buffers x {} bytes", engine.pool().capacity(), engine.pool().buffer_size());

    let path = dir.join(format!("ferrite-io-probe-{}.dat", std::process::id()));
    let options = OpenOptions::new().create(true).truncate(true).direct(config.direct_io);
    let file = engine.open(&path, &options).await?;
    let outcome = round_trip(&*engine, &file).await;
    let _ = std::fs::remove_file(&path);
    let (write, sync, read) = outcome?;
    println!(
        "round trip:       {} bytes at {}: write {write:?}, fdatasync {sync:?}, read {read:?}, bytes verified{}",
        engine.pool().buffer_size(),
        path.display(),
        if config.direct_io { " (O_DIRECT)" } else { "" }
    );
    Ok(())
}

/// Writes a pattern with a registered buffer, syncs, reads it back into a recycled buffer and
/// compares. Returns the three durations.
async fn round_trip<E: IoEngine>(
    engine: &E,
    file: &ferrite_io::File,
) -> ferrite_io::Result<(std::time::Duration, std::time::Duration, std::time::Duration)> {
    let mut buf = engine.acquire().await;
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let start = Instant::now();
    let (written, buf) = engine.write_all_at(file, buf, 0).await.into_parts();
    written?;
    let write = start.elapsed();
    let start = Instant::now();
    engine.sync_data(file).await?;
    let sync = start.elapsed();
    let mut buf = buf.into_free();
    buf.fill(0);
    let start = Instant::now();
    let (result, buf) = engine.read_exact_at(file, buf, 0).await.into_parts();
    result?;
    let read = start.elapsed();
    if buf.iter().enumerate().any(|(i, &b)| b != (i % 251) as u8) {
        return Err(ferrite_io::Error::Io {
            op: ferrite_io::Op::Read,
            offset: 0,
            backend: engine.backend(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "read back different bytes"),
        });
    }
    Ok((write, sync, read))
}

/// Parses `4096`, `64K`, `64KiB`, `1M`, `1MiB`, `2G`, `2GiB` (binary units).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size like 4096, 64KiB or 1MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit {other:?}: use K, M or G")),
    };
    number.checked_mul(1 << shift).ok_or_else(|| format!("{text:?} is too large"))
}
