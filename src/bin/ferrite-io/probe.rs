//! `ferrite-io probe`: what the engine detection found, the engine chosen and why, and a timed
//! write, fdatasync and read round trip on it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferrite_io::{EngineChoice, IoEngine, IoEngineConfig, OpenOptions, Reason, UringSupport};

use crate::Failure;
use crate::output::{EngineSource, duration, engine_line};
use crate::scratch::Scratch;

pub async fn run(config: IoEngineConfig, source: EngineSource, dir: PathBuf, keep: bool) -> Result<(), Failure> {
    println!("ferrite-io {}", env!("CARGO_PKG_VERSION"));
    println!("kernel:            {}", ferrite_io::io::detect::kernel_release());
    let sysctl = ferrite_io::io::detect::io_uring_disabled_sysctl();
    println!("io_uring_disabled: {}", sysctl.map_or("absent".to_owned(), |v| v.to_string()));
    let support = (config.engine != EngineChoice::Tokio).then(|| ferrite_io::check_uring_support(&config));
    let engine = ferrite_io::create_engine(config.clone());
    let fell_back = engine.as_ref().is_ok_and(|e| matches!(e.selection().reason, Reason::FellBack(_)));
    match support {
        None => println!("io_uring probe:    skipped (tokio from {source})"),
        // The probe registers one small buffer; the engine registers the whole pool, which the
        // locked-memory limit may refuse. Say so rather than "supported" above a fallback.
        Some(UringSupport::Supported(info)) if fell_back || engine.is_err() => {
            println!(
                "io_uring probe:    ring and opcodes supported ({info}), but the engine could not set up: see below"
            )
        }
        Some(UringSupport::Supported(info)) => println!("io_uring probe:    supported: {info}"),
        Some(UringSupport::Unsupported(why)) => println!("io_uring probe:    unsupported: {why}"),
    }
    let engine = engine?;
    println!("engine:            {}", engine_line(engine.selection(), &source));
    println!("pool:              {} buffers x {} bytes", engine.pool().capacity(), engine.pool().buffer_size());

    let mut scratch = Scratch::new(&dir, keep)?;
    let path = scratch.file(&format!("ferrite-io-probe-{}.dat", std::process::id()));
    let options = OpenOptions::new().create(true).truncate(true).direct(config.direct_io);
    let file = engine.open(&path, &options).await?;
    let (write, sync, read) = round_trip(&*engine, &file).await?;
    println!(
        "round trip:        {} bytes{}: write {}, fdatasync {}, read {}, bytes verified",
        engine.pool().buffer_size(),
        if config.direct_io { format!(" ({})", crate::output::DIRECT) } else { String::new() },
        duration(write),
        duration(sync),
        duration(read),
    );
    println!("engine counters:   {}", crate::output::stats_line(&engine.stats()));
    Ok(())
}

/// Writes a pattern with a registered buffer, syncs, reads it back into a recycled buffer and
/// compares. Returns the three durations.
async fn round_trip<E: IoEngine>(
    engine: &E,
    file: &ferrite_io::File,
) -> ferrite_io::Result<(Duration, Duration, Duration)> {
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
            path: file.path().map(Into::into),
            offset: 0,
            backend: engine.backend(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "read back different bytes"),
        });
    }
    Ok((write, sync, read))
}
