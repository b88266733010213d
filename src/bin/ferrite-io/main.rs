//! `ferrite-io`: the command line. `probe` prints what the engine detection found and runs a
//! write, sync and read round trip; `flush` runs the HybridLog workload; `bench` measures the
//! performance table and draws its ratios. This file owns the flags, their ranges, the config
//! (file, `FERRITE_IO_ENGINE`, flags) and the exit codes.

mod bench;
mod chart;
mod flush;
mod output;
mod probe;
mod scratch;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use ferrite_io::hybridlog::SyncPolicy;
use ferrite_io::{EngineChoice, IoEngineConfig};

use crate::output::EngineSource;

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    the run failed (I/O, engine, verification); files it created are removed
  2    bad input: a flag, the config file or FERRITE_IO_ENGINE
  130  interrupted (Ctrl-C, SIGINT); files it created are removed
  143  terminated (SIGTERM, e.g. `kill` or `timeout`); files it created are removed";

#[derive(Parser)]
#[command(
    name = "ferrite-io",
    version,
    about = "io_uring-first owned-buffer I/O for storage engines",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What every command takes.
#[derive(Args)]
struct Common {
    /// A TOML file whose only table is [io] (unknown tables and keys are errors).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Engine; overrides FERRITE_IO_ENGINE, which overrides the config file.
    #[arg(long, value_enum)]
    engine: Option<EngineArg>,
    /// Directory for the command's files: created if missing (its parent must exist); a real
    /// disk (not tmpfs) for O_DIRECT.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Keep the files the command created and print their paths (by default they are removed,
    /// whether the command succeeds or fails).
    #[arg(long)]
    keep: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Detect io_uring, choose an engine, and run a write/sync/read round trip on it.
    #[command(after_help = EXIT_CODES)]
    Probe {
        #[command(flatten)]
        common: Common,
        /// Open the round-trip file with O_DIRECT (default: io.direct_io).
        #[arg(long)]
        direct: bool,
    },
    /// The HybridLog workload: flush pages of records through the page flusher, then read
    /// random pages back cold and verify them.
    #[command(after_help = EXIT_CODES)]
    Flush(FlushArgs),
    /// Measure every row on both engines and the raw baselines, side by side, and draw the
    /// ratios with their spread over rounds.
    #[command(after_help = EXIT_CODES)]
    Bench {
        #[command(flatten)]
        common: Common,
        /// Interleaved rounds per row, 1..=1000; the table shows medians.
        #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
        rounds: u64,
        /// Only rows whose name contains this (e.g. `direct`); at least one must match.
        #[arg(long)]
        only: Option<String>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Where the SVG chart of the ratios goes (checked before the run; written only by a run
        /// that succeeds).
        #[arg(long, value_name = "FILE", default_value = "ferrite-io-bench.svg")]
        chart: PathBuf,
    },
}

/// `flush`'s flags.
#[derive(Args)]
struct FlushArgs {
    #[command(flatten)]
    common: Common,
    /// Open the log with O_DIRECT (default: io.direct_io).
    #[arg(long)]
    direct: bool,
    /// Page size: a multiple of 4 KiB in 4KiB..=1GiB (default: io.buffer_size, 64KiB).
    #[arg(long, value_name = "SIZE", value_parser = page_size)]
    page_size: Option<u64>,
    /// Number of pages, 1..=16777216 (instead of --size).
    #[arg(long, value_name = "N", conflicts_with = "size", value_parser = clap::value_parser!(u64).range(1..=MAX_PAGES))]
    pages: Option<u64>,
    /// Log size: a multiple of --page-size in 4KiB..=1TiB [default: 256MiB].
    #[arg(long, value_name = "SIZE", value_parser = log_size)]
    size: Option<u64>,
    /// per-page (linked write + fdatasync), group (group commit) or none.
    #[arg(long, value_enum, default_value = "group")]
    sync: SyncArg,
    /// Pages in flight, 1..=256.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    depth: u64,
    /// Random pages to read back cold and verify afterwards, 0..=10000000.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    reads: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `--engine`: the names of [`EngineChoice`], checked by clap so errors name the flag.
#[derive(Clone, Copy, ValueEnum)]
enum EngineArg {
    Auto,
    Uring,
    Tokio,
}

impl From<EngineArg> for EngineChoice {
    fn from(arg: EngineArg) -> EngineChoice {
        match arg {
            EngineArg::Auto => EngineChoice::Auto,
            EngineArg::Uring => EngineChoice::Uring,
            EngineArg::Tokio => EngineChoice::Tokio,
        }
    }
}

/// `--sync`: the names of [`SyncPolicy`], checked by clap so errors name the flag.
#[derive(Clone, Copy, ValueEnum)]
enum SyncArg {
    PerPage,
    Group,
    None,
}

impl From<SyncArg> for SyncPolicy {
    fn from(arg: SyncArg) -> SyncPolicy {
        match arg {
            SyncArg::PerPage => SyncPolicy::PerPage,
            SyncArg::Group => SyncPolicy::Group,
            SyncArg::None => SyncPolicy::None,
        }
    }
}

const KIB: u64 = 1 << 10;
const GIB: u64 = 1 << 30;
/// Largest `--pages`.
const MAX_PAGES: u64 = 1 << 24;
/// Largest log `flush` writes.
const MAX_LOG: u64 = 1 << 40;
/// Largest buffer pool `flush` maps (page size times buffers).
const MAX_POOL: u64 = 4 * GIB;
/// `flush --size` when neither it nor `--pages` is given.
const DEFAULT_LOG: u64 = 256 << 20;

/// A size such as `4096`, `64K`, `64KiB`, `1.5MiB` or `2G` (binary units, a bare number is bytes).
fn size(text: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .map_err(|e| format!("{e} (a size like 4096, 64KiB or 1MiB)"))
}

/// A size that is a multiple of 4 KiB within `min..=max`.
fn aligned_size(text: &str, min: u64, max: u64, range: &str) -> Result<u64, String> {
    let bytes = size(text)?;
    if bytes < min || bytes > max || bytes % (4 * KIB) != 0 {
        return Err(format!("{bytes} bytes is not a multiple of 4 KiB in {range}"));
    }
    Ok(bytes)
}

fn page_size(text: &str) -> Result<u64, String> {
    aligned_size(text, 4 * KIB, GIB, "4KiB..=1GiB")
}

fn log_size(text: &str) -> Result<u64, String> {
    aligned_size(text, 4 * KIB, MAX_LOG, "4KiB..=1TiB")
}

/// Exits with clap's usage error (exit code 2) for input clap cannot check alone.
fn usage(message: impl std::fmt::Display) -> ! {
    Cli::command().error(ErrorKind::ValueValidation, message).exit()
}

/// The config a command runs with: the file (or the defaults), then `FERRITE_IO_ENGINE`, then
/// `--engine`, and where the engine choice came from. Bad input exits with code 2.
fn resolve(common: &Common) -> (IoEngineConfig, EngineSource) {
    let (mut config, mut source) = match &common.config {
        Some(path) => match IoEngineConfig::from_toml_file(path) {
            Ok(config) => (config, EngineSource::File(path.display().to_string())),
            Err(e) => usage(e),
        },
        None => (IoEngineConfig::default(), EngineSource::Default),
    };
    match EngineChoice::from_env() {
        Ok(Some(engine)) => (config.engine, source) = (engine, EngineSource::Env),
        Ok(None) => {}
        Err(e) => usage(e),
    }
    if let Some(engine) = common.engine {
        (config.engine, source) = (engine.into(), EngineSource::Flag);
    }
    (config, source)
}

/// Why a command failed, and so its exit code.
#[derive(Debug)]
pub enum Failure {
    /// The run failed (exit code 1).
    Run(String),
    /// Ctrl-C (exit code 130).
    Interrupted,
    /// SIGTERM (exit code 143).
    Terminated,
}

impl From<ferrite_io::Error> for Failure {
    fn from(e: ferrite_io::Error) -> Failure {
        Failure::Run(e.to_string())
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Run(message)
    }
}

/// What `flush` runs with, checked across flags.
fn flush_options(args: FlushArgs) -> flush::Options {
    let FlushArgs { common, direct, page_size, pages, size, sync, depth, reads, json } = args;
    let (mut config, source) = resolve(&common);
    let page_size = page_size.unwrap_or(config.buffer_size as u64);
    let pages = match pages {
        Some(pages) => match pages.checked_mul(page_size).filter(|&bytes| bytes <= MAX_LOG) {
            Some(_) => pages,
            None => usage(format!("--pages {pages} of --page-size {page_size} is more than 1 TiB")),
        },
        None => {
            let (bytes, given) = match size {
                Some(bytes) => (bytes, ""),
                None => (DEFAULT_LOG, " (the default)"),
            };
            if bytes < page_size {
                usage(format!("--size {bytes}{given} is smaller than --page-size {page_size}"));
            }
            if bytes % page_size != 0 {
                usage(format!(
                    "--size {bytes}{given} is not a multiple of --page-size {page_size}; give --pages or such a --size"
                ));
            }
            bytes / page_size
        }
    };
    // Twice `depth` writers each hold a page, plus one buffer for the reads.
    let buffers = depth * 2 + 1;
    if buffers.checked_mul(page_size).is_none_or(|bytes| bytes > MAX_POOL) {
        usage(format!("--page-size {page_size} with --depth {depth} needs {buffers} page buffers, more than 4 GiB"));
    }
    config.buffer_size = page_size as usize;
    config.registered_buffers = buffers as u32;
    config.direct_io |= direct;
    flush::Options {
        config,
        source,
        pages,
        sync: sync.into(),
        depth: depth as usize,
        reads,
        dir: common.dir,
        json,
        keep: common.keep,
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(output::stderr_colour())
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
    let result = runtime.block_on(async {
        let command: std::pin::Pin<Box<dyn Future<Output = Result<(), Failure>>>> = match cli.command {
            Command::Probe { common, direct } => {
                let (mut config, source) = resolve(&common);
                config.direct_io |= direct;
                Box::pin(probe::run(config, source, common.dir, common.keep))
            }
            Command::Flush(args) => Box::pin(flush::run(flush_options(args))),
            Command::Bench { common, rounds, only, json, chart } => {
                let (config, source) = resolve(&common);
                let rows =
                    workloads::Row::ALL.into_iter().filter(|r| only.as_deref().is_none_or(|o| r.name().contains(o)));
                let rows: Vec<_> = rows.collect();
                if rows.is_empty() {
                    let names: Vec<_> = workloads::Row::ALL.iter().map(|r| r.name()).collect();
                    usage(format!(
                        "--only {:?} matches no row; the rows are {}",
                        only.unwrap_or_default(),
                        names.join(", ")
                    ));
                }
                let chart = scratch::Output::claim(&chart)
                    .unwrap_or_else(|e| usage(format!("--chart {}: {e}", chart.display())));
                let options = bench::Options {
                    config,
                    source,
                    rows,
                    rounds: rounds as usize,
                    json,
                    chart,
                    dir: common.dir,
                    keep: common.keep,
                };
                Box::pin(bench::run(options))
            }
        };
        // Ctrl-C or SIGTERM drops the command: its files go with its `Scratch`, its engine
        // drains.
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => Err(Failure::Interrupted),
            _ = terminated() => Err(Failure::Terminated),
            result = command => result,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Run(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Interrupted) => {
            eprintln!("interrupted");
            ExitCode::from(130)
        }
        Err(Failure::Terminated) => {
            eprintln!("terminated");
            ExitCode::from(143)
        }
    }
}

/// Resolves when the process gets SIGTERM (unix); never elsewhere, or if the handler cannot be
/// installed (the signal then keeps its default action).
async fn terminated() {
    #[cfg(unix)]
    if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        signal.recv().await;
        return;
    }
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(size("64KiB"), Ok(65536));
        assert_eq!(size("64K"), Ok(65536));
        assert_eq!(size("1.5MiB"), Ok(3 << 19));
        assert!(size("12 parsecs").is_err());
        assert!(page_size("1000").is_err());
        assert!(page_size("2GiB").is_err());
        assert_eq!(log_size("1TiB"), Ok(MAX_LOG));
        assert!(log_size("18446744073709551615").is_err());
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
