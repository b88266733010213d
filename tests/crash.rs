//! Real crashes: a child process (this test binary, re-executed with `FERRITE_CRASH_CHILD` set)
//! runs the page flusher, and writes every acknowledgement to its stdout (a pipe to the parent)
//! before it does anything else. The parent kills it with SIGKILL at a random moment, recovers
//! the log with the last acknowledged address, checks every acknowledged page byte for byte,
//! truncates to the durable prefix and resumes in a new child: several generations, on both
//! engines, buffered and `O_DIRECT`, group and per-page sync.
//!
//! `CRASH_GENERATIONS=n` sets the generations per combination (default 3). A failure prints the
//! combination, the generation and the seed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ferrite_io::hybridlog::page::{self, PAYLOAD_START};
use ferrite_io::hybridlog::{FlusherConfig, PageFlusher, SyncPolicy, read_page, recover};
use ferrite_io::{EngineChoice, IoEngine, IoEngineConfig, OpenOptions};

const PAGE: usize = 8192;
const P: u64 = PAGE as u64;
const CHILD: &str = "FERRITE_CRASH_CHILD";

fn byte(address: u64, i: usize) -> u8 {
    ((address / P) as usize * 131 + i * 7 + i / 251) as u8 | 1
}

fn engine_config(engine: EngineChoice, direct: bool) -> IoEngineConfig {
    IoEngineConfig { registered_buffers: 32, direct_io: direct, ..common::config(engine) }
}

/// The child: flushes pages from `start` until killed (or 2000 pages), four at a time, each
/// page in 0-2 partial flushes and a closing one; prints `ack <end>` for each acknowledgement.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD) else { return };
    let parts: Vec<&str> = spec.split(',').collect();
    let [engine, direct, sync, path, start, sequence, seed] = parts[..] else { panic!("bad {CHILD}: {spec}") };
    let engine: EngineChoice = engine.parse().unwrap();
    let direct = direct == "1";
    let sync: SyncPolicy = sync.parse().unwrap();
    let (start, sequence, seed): (u64, u64, u64) =
        (start.parse().unwrap(), sequence.parse().unwrap(), seed.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let engine = ferrite_io::create_engine(engine_config(engine, direct)).unwrap();
        let file = engine.open(path, &OpenOptions::new().create(true).direct(direct)).await.unwrap();
        let config = FlusherConfig { page_size: PAGE, depth: 4, sync, start, first_sequence: sequence };
        let flusher = Arc::new(PageFlusher::new(engine.clone(), file, config));
        let first = start - start % P;
        let resumed = if start % P == 0 { 0 } else { (start % P) as usize - PAYLOAD_START };
        let mut rng = common::Rng(seed | 1);
        let cap = page::capacity(PAGE);
        for window in 0..500u64 {
            let mut tasks = Vec::new();
            for k in 0..4u64 {
                let address = first + (window * 4 + k) * P;
                let mut len = if address == first { resumed } else { 0 };
                let mut flushes = Vec::new();
                for _ in 0..rng.below(3) {
                    len = (len + 1 + rng.below(2500) as usize).min(cap - 1);
                    flushes.push((len, true));
                }
                flushes.push(((len + rng.below((cap - len) as u64) as usize).max(len), false));
                let flusher = flusher.clone();
                tasks.push(tokio::spawn(async move {
                    let mut buf = flusher.engine().acquire().await.into_free();
                    for (len, open) in flushes {
                        for i in 0..len {
                            buf[PAYLOAD_START + i] = byte(address, i);
                        }
                        let done = if open {
                            flusher.flush_partial(buf, address, len).await
                        } else {
                            flusher.flush(buf, address, len).await
                        };
                        let (result, back) = done.into_parts();
                        result.expect("flush");
                        let end = if open { address + (PAYLOAD_START + len) as u64 } else { address + P };
                        println!("ack {end}");
                        buf = back.into_free();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        }
    });
}

/// How long a child takes to start before it can flush anything: nothing to speak of on
/// Linux; under wine (the Windows suite) a quarter second or so, which the kill must not
/// precede, or no generation acknowledges anything.
const STARTUP: Duration = if cfg!(windows) { Duration::from_millis(400) } else { Duration::ZERO };

/// Runs one child generation, kills it after `delay`; returns the highest acknowledged address
/// and the number of acknowledgements. Panics (with the child's stderr) when the child was not
/// running any more when the kill came: a child that failed on its own crashed nothing.
fn run_child(spec: &str, delay: Duration, stderr: &std::path::Path) -> (u64, u64) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, spec)
        .env("RUST_BACKTRACE", "0") // a failing child exits at once, before the kill
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut acked, mut acks) = (0u64, 0u64);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(end) = line.strip_prefix("ack ").and_then(|v| v.parse::<u64>().ok()) {
                acked = acked.max(end);
                acks += 1;
            }
        }
        (acked, acks)
    });
    std::thread::sleep(delay);
    let ended = child.try_wait().unwrap();
    if ended.is_none() {
        child.kill().unwrap(); // SIGKILL
    }
    let status = child.wait().unwrap();
    if ended.is_some() || !killed(&status) {
        let output = std::fs::read_to_string(stderr).unwrap_or_default();
        panic!("{spec}: the child ended by itself ({status}) before the kill:\n{output}");
    }
    reader.join().unwrap()
}

/// Whether the child died of the kill (a child that exits by itself, even just before the kill
/// lands, keeps its own exit status).
#[cfg(unix)]
fn killed(status: &std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9)
}

#[cfg(not(unix))]
fn killed(_: &std::process::ExitStatus) -> bool {
    true
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_page() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let generations: u64 = std::env::var("CRASH_GENERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = common::tempdir();
    let (mut kills, mut acks, mut checked) = (0, 0, 0u64);
    let mut rng = common::Rng(0x5EED);
    let mut choices = vec![EngineChoice::Tokio];
    if cfg!(all(feature = "io-uring", target_os = "linux")) {
        choices.push(EngineChoice::Uring);
    }
    for engine in choices {
        for direct in [false, true] {
            for sync in [SyncPolicy::Group, SyncPolicy::PerPage] {
                let path = dir.path().join(format!("{engine}-{direct}-{sync:?}.log"));
                let (mut start, mut sequence) = (0u64, 1u64);
                let mut combination_acks = 0;
                for generation in 0..generations {
                    let seed = rng.next();
                    let sync_name = if sync == SyncPolicy::Group { "group" } else { "per-page" };
                    let spec =
                        format!("{engine},{},{sync_name},{},{start},{sequence},{seed}", direct as u8, path.display());
                    let delay = STARTUP + Duration::from_millis(20 + rng.below(150));
                    // What earlier generations made durable stays acknowledged.
                    let (acked, child_acks) = run_child(&spec, delay, &dir.path().join("child.stderr"));
                    let acked = acked.max(start);
                    kills += 1;
                    combination_acks += child_acks;
                    let what = format!("{engine} direct={direct} {sync:?} generation {generation} seed {seed}");
                    let (durable, seen, pages) = runtime.block_on(verify(engine, direct, &path, acked, &what));
                    checked += pages;
                    // Resume: truncate to the durable prefix.
                    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(durable).unwrap();
                    start = durable;
                    sequence = seen + 1;
                }
                // Kills before the first acknowledgement check nothing.
                assert!(combination_acks > 0, "{engine} direct={direct} {sync:?}: no child acknowledged a flush");
                acks += combination_acks;
            }
        }
    }
    println!(
        "real crashes: {kills} SIGKILLs, {acks} acknowledgements received, \
         {checked} acknowledged pages checked byte for byte"
    );
}

/// Recovers the log after a kill; checks every page below `acked`. Returns the durable prefix,
/// the highest sequence seen, and the pages checked.
async fn verify(engine: EngineChoice, direct: bool, path: &std::path::Path, acked: u64, what: &str) -> (u64, u64, u64) {
    let engine = ferrite_io::create_engine(engine_config(engine, direct)).unwrap();
    let file = engine.open(path, &OpenOptions::new().create(true).direct(direct)).await.unwrap();
    let found = tokio::time::timeout(Duration::from_secs(30), recover(&*engine, &file, PAGE, acked))
        .await
        .unwrap_or_else(|_| panic!("{what}: recover hung"))
        .unwrap_or_else(|e| panic!("{what}: recover with {acked} acknowledged: {e}"));
    let mut pages = 0;
    let mut address = 0;
    while address < acked {
        let (info, buf) = read_page(&*engine, &file, engine.acquire().await, address).await.into_parts();
        let info = info.unwrap_or_else(|e| panic!("{what}: acknowledged page {address}: {e}"));
        let payload = &buf[info.payload()];
        assert!(
            (0..payload.len()).all(|i| payload[i] == byte(address, i)),
            "{what}: acknowledged page {address} holds other bytes"
        );
        let durable = address + info.durable_len(PAGE) as u64;
        assert!(durable >= acked.min(address + P), "{what}: page {address} durable to {durable}, acked {acked}");
        pages += 1;
        address += P;
    }
    (found.durable_until, found.max_sequence_seen.unwrap_or(0), pages)
}
