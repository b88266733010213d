//! Power-loss simulation: the page flusher runs on a [`PowerLossEngine`] (every sync policy,
//! partial flushes of open pages, pages completing out of order, resume after recovery), and at
//! every point of its record, with several seeds for the fate of each unsynced write, the file a
//! power loss may leave is rebuilt and recovered. After each crash point:
//!
//! - recovery succeeds with the last acknowledged address (nothing a crash explains is
//!   corruption, and no acknowledged byte is missing),
//! - every acknowledged page reads back with the flushed bytes, and every page that verifies
//!   holds bytes that were flushed (no torn data passes as valid),
//! - bit rot in, or a misdirected copy over, an acknowledged page is `Error::Corrupt`.
//!
//! One fate in three (half of them for the tail page) is recovered through `O_DIRECT`.
//!
//! A fail-at-the-n-th-I/O sweep stops the machine at every I/O of a run instead.
//!
//! `POWERLOSS_SCALE=k` multiplies the number of runs; `POWERLOSS_MIN_POINTS=n` (default 1000)
//! fails the seeded test below `n` crash points. A failure prints the run's seed and the
//! crash point, which replay it: `POWERLOSS_SEED=<seed> cargo test --test powerloss`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferrite_io::hybridlog::page::{self, PAYLOAD_START, PageError};
use ferrite_io::hybridlog::{FlusherConfig, PageFlusher, Recovery, SyncPolicy, read_page, recover};
use ferrite_io::io::fault::powerloss::{Journal, PowerLossEngine};
use ferrite_io::{Engine, EngineChoice, Error, IoEngine, IoEngineConfig, OpenOptions};

const PAGE: usize = 8192;
const P: u64 = PAGE as u64;
/// Pages per generation.
const PAGES: u64 = 5;
/// Fates drawn for the unsynced writes at each crash point.
const SEEDS: u64 = 3;

fn config() -> IoEngineConfig {
    IoEngineConfig { registered_buffers: 32, ..common::config(EngineChoice::Auto) }
}

/// The payload byte `i` of the page at `address` (the same in every generation, so a resumed
/// page continues where it stopped).
fn byte(address: u64, i: usize) -> u8 {
    ((address / P) as usize * 131 + i * 7 + i / 251) as u8 | 1
}

/// What one generation flushes: for each page, the payload lengths of its flushes, the last
/// one closing it unless `open_last`.
struct Plan {
    pages: Vec<(u64, Vec<usize>, bool)>,
}

impl Plan {
    fn new(rng: &mut common::Rng, first: u64, resumed_len: usize, partial: bool) -> Plan {
        let cap = page::capacity(PAGE);
        let mut pages = Vec::new();
        for index in 0..PAGES {
            let address = first + index * P;
            let mut len = if index == 0 { resumed_len } else { 0 };
            let mut flushes = Vec::new();
            if partial {
                for _ in 0..rng.below(3) {
                    len = (len + 1 + rng.below(3000) as usize).min(cap - 1);
                    flushes.push(len);
                }
            }
            let close = !(partial && index + 1 == PAGES && rng.below(2) == 0);
            if close || flushes.is_empty() {
                flushes.push((len + rng.below(cap as u64 - len as u64) as usize).max(len));
            }
            pages.push((address, flushes, !close));
        }
        Plan { pages }
    }
}

type Sim = PowerLossEngine<Engine>;

/// Runs a plan on `flusher`: the pages concurrently, the flushes of one page in order. Records
/// every acknowledgement in the journal; stops a page at its first error.
async fn run(flusher: &Arc<PageFlusher<Sim>>, plan: Plan) {
    let mut tasks = Vec::new();
    for (address, flushes, open) in plan.pages {
        let flusher = flusher.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = flusher.engine().acquire().await.into_free();
            for (n, &len) in flushes.iter().enumerate() {
                for i in 0..len {
                    buf[PAYLOAD_START + i] = byte(address, i);
                }
                let closing = n + 1 == flushes.len() && !open;
                let done = if closing {
                    flusher.flush(buf, address, len).await
                } else {
                    flusher.flush_partial(buf, address, len).await
                };
                let (result, back) = done.into_parts();
                if result.is_err() {
                    return;
                }
                // What this acknowledgement promises: the page up to what was flushed.
                let end = if closing { address + P } else { address + (PAYLOAD_START + len) as u64 };
                flusher.engine().acknowledge(end);
                buf = back.into_free();
            }
        }));
    }
    for task in tasks {
        task.await.expect("a page task panicked");
    }
}

/// What a crash point must satisfy; `Err` describes the violation. `direct`: recover through
/// `O_DIRECT` (an image truncated inside an open page ends inside a sector).
async fn check(
    engine: &Engine,
    path: &std::path::Path,
    image: &[u8],
    acknowledged: u64,
    direct: bool,
) -> Result<Recovery, String> {
    std::fs::write(path, image).map_err(|e| e.to_string())?;
    let file = engine.open(path, &OpenOptions::new().direct(direct)).await.map_err(|e| e.to_string())?;
    let recovery = recover(engine, &file, PAGE, acknowledged).await.map_err(|e| format!("recover: {e}"))?;
    let mut address = 0;
    while address < recovery.scanned_until {
        let (result, buf) = read_page(engine, &file, engine.acquire().await, address).await.into_parts();
        match result {
            Ok(info) => {
                let payload = &buf[info.payload()];
                if let Some(i) = (0..payload.len()).find(|&i| payload[i] != byte(address, i)) {
                    return Err(format!("page {address} verified with a wrong byte at {i}"));
                }
                let durable = address + info.durable_len(PAGE) as u64;
                if address < acknowledged && durable < acknowledged.min(address + P) {
                    return Err(format!("page {address}: acknowledged until {acknowledged}, durable {durable}"));
                }
            }
            Err(Error::Page(PageError::Torn { .. } | PageError::NeverWritten { .. })) if address >= acknowledged => {}
            Err(e) => return Err(format!("page {address}: {e}")),
        }
        address += P;
    }
    Ok(recovery)
}

/// Damage no crash explains, in an acknowledged page: must be `Error::Corrupt`.
async fn check_corruption(
    engine: &Engine,
    path: &std::path::Path,
    image: &[u8],
    acknowledged: u64,
    seed: u64,
) -> Result<(), String> {
    let pages = acknowledged / P;
    if pages == 0 {
        return Ok(());
    }
    let mut rng = common::Rng(seed | 1);
    let victim = rng.below(pages) * P;
    let mut damaged = image.to_vec();
    let what = if pages >= 2 && rng.below(2) == 0 {
        let other = (victim / P + 1 + rng.below(pages - 1)) % pages * P;
        let (from, to) = (other as usize, victim as usize);
        let copy = damaged[from..from + PAGE].to_vec();
        damaged[to..to + PAGE].copy_from_slice(&copy);
        format!("page {other} written over page {victim}")
    } else {
        let at = victim as usize + rng.below(P) as usize;
        damaged[at] ^= 1 << rng.below(8);
        format!("bit rot at {at}")
    };
    std::fs::write(path, &damaged).map_err(|e| e.to_string())?;
    let file = engine.open(path, &OpenOptions::new()).await.map_err(|e| e.to_string())?;
    match recover(engine, &file, PAGE, acknowledged).await {
        Err(Error::Corrupt { .. }) => Ok(()),
        other => Err(format!("{what}: expected Error::Corrupt, got {other:?}")),
    }
}

/// Counts of what the suite did, printed at the end.
#[derive(Default)]
struct Counts {
    runs: AtomicU64,
    crash_points: AtomicU64,
    corruptions: AtomicU64,
}

/// One run: `generations` generations, each flushing a plan and then crashing at every point of
/// its record (with `SEEDS` fates each); the next generation resumes from one of those crashes.
async fn simulate(name: &str, engine_config: &IoEngineConfig, sync: SyncPolicy, seed: u64, counts: &Counts) {
    let dir = common::tempdir();
    let mut rng = common::Rng(seed | 1);
    let mut base: Vec<u8> = Vec::new();
    let (mut start, mut sequence) = (0u64, 1u64);
    for generation in 0..3 {
        let engine = Arc::new(PowerLossEngine::new(owned(name, engine_config)));
        let path = dir.path().join(format!("gen{generation}.log"));
        std::fs::write(&path, &base).unwrap();
        let file = engine.open(&path, &OpenOptions::new()).await.unwrap();
        let config = FlusherConfig { page_size: PAGE, depth: 4, sync, start, first_sequence: sequence };
        let flusher = Arc::new(PageFlusher::new(engine.clone(), file, config));
        let page_start = start - start % P;
        let resumed_len = if start % P == 0 { 0 } else { (start % P) as usize - PAYLOAD_START };
        let plan = Plan::new(&mut rng, page_start, resumed_len, sync != SyncPolicy::None);
        run(&flusher, plan).await;
        let journal = engine.journal();
        drop(flusher);

        let crash_path = dir.path().join("crash.log");
        let mut next = None;
        for crash in 0..=journal.len() {
            // Without syncs nothing is promised; the crash must still be told from corruption.
            let acknowledged = if sync == SyncPolicy::None { 0 } else { journal.acknowledged(crash) };
            for fate in 0..SEEDS {
                let image = journal.crash_image(&base, crash, seed ^ (crash as u64) << 8 ^ fate);
                let replay = format!("{name} {sync:?} seed {seed} generation {generation} crash {crash} fate {fate}");
                let recovery = match check(engine.inner(), &crash_path, &image, acknowledged, fate == 1).await {
                    Ok(recovery) => recovery,
                    Err(e) => panic!("{replay}: {e}"),
                };
                counts.crash_points.fetch_add(1, Ordering::Relaxed);
                if fate == 0 && sync != SyncPolicy::None {
                    if let Err(e) =
                        check_corruption(engine.inner(), &crash_path, &image, acknowledged, seed ^ crash as u64).await
                    {
                        panic!("{replay}: {e}");
                    }
                    counts.corruptions.fetch_add(1, Ordering::Relaxed);
                }
                if rng.below(journal.len() as u64 * SEEDS + 1) == 0 || next.is_none() {
                    next = Some((image, recovery));
                }
            }
        }
        // Resume from one crash: truncate to the durable prefix, go on after it.
        let (image, recovery) = next.expect("at least one crash point");
        base = image[..(recovery.durable_until as usize).min(image.len())].to_vec();
        start = recovery.durable_until;
        sequence = recovery.max_sequence_seen.unwrap_or(0) + 1;
        counts.runs.fetch_add(1, Ordering::Relaxed);
    }
}

fn owned(name: &str, config: &IoEngineConfig) -> Engine {
    common::owned_engines(config).into_iter().find(|(n, _)| *n == name).expect("engine variant").1
}

fn scale() -> u64 {
    std::env::var("POWERLOSS_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1)
}

fn seeds(n: u64) -> Vec<u64> {
    match std::env::var("POWERLOSS_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (1..=n * scale()).map(|i| i * 0x1000_0001).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_crash_points_lose_no_acknowledged_page() {
    let counts = Counts::default();
    let config = config();
    for (name, sync) in [
        ("uring", SyncPolicy::Group),
        ("tokio", SyncPolicy::Group),
        ("uring", SyncPolicy::PerPage),
        ("tokio_nowait", SyncPolicy::PerPage),
        ("tokio", SyncPolicy::None),
    ] {
        if !common::owned_engines(&config).iter().any(|(n, _)| *n == name) {
            continue;
        }
        for seed in seeds(4) {
            simulate(name, &config, sync, seed, &counts).await;
        }
    }
    let (runs, points, corrupt) =
        (counts.runs.into_inner(), counts.crash_points.into_inner(), counts.corruptions.into_inner());
    println!("power-loss simulation: {points} crash points in {runs} generations, {corrupt} corruptions detected");
    // `.ci/run` asks for the 10,000.
    let min = std::env::var("POWERLOSS_MIN_POINTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    assert!(points >= min, "{points} crash points, fewer than {min}");
    assert!(corrupt > 0, "no damaged image was checked");
}

/// The machine stops at the n-th I/O, for every n of a run, under every sync policy (`none`
/// promises nothing, and refuses partial flushes, but its crashes must still not read as
/// corruption).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_io_as_the_last_loses_no_acknowledged_page() {
    let config = config();
    let mut points = 0;
    for sync in [SyncPolicy::Group, SyncPolicy::PerPage, SyncPolicy::None] {
        for name in ["uring", "tokio"] {
            if !common::owned_engines(&config).iter().any(|(n, _)| *n == name) {
                continue;
            }
            let dir = common::tempdir();
            let seed = 77 + sync as u64;
            let mut total = None;
            let mut n = 1;
            while total.is_none_or(|t| n <= t + 1) {
                let engine = Arc::new(PowerLossEngine::new(owned(name, &config)));
                engine.fail_from(n);
                let path = dir.path().join(format!("fail{n}.log"));
                let file = engine.open(&path, &OpenOptions::new().create(true)).await.unwrap();
                let flusher_config = FlusherConfig { page_size: PAGE, depth: 4, sync, ..FlusherConfig::default() };
                let flusher = Arc::new(PageFlusher::new(engine.clone(), file, flusher_config));
                run(&flusher, Plan::new(&mut common::Rng(seed), 0, 0, sync != SyncPolicy::None)).await;
                if engine.ops() < n {
                    total = Some(engine.ops());
                }
                let journal: Journal = engine.journal();
                for fate in 0..SEEDS {
                    let image = journal.crash_image(&[], journal.len(), n << 4 ^ fate);
                    let crash_path = dir.path().join("crash.log");
                    let acknowledged = if sync == SyncPolicy::None { 0 } else { journal.acknowledged(journal.len()) };
                    if let Err(e) = check(engine.inner(), &crash_path, &image, acknowledged, fate == 1).await {
                        panic!("{name} {sync:?} seed {seed}: machine stopped at I/O {n}, fate {fate}: {e}");
                    }
                    points += 1;
                }
                std::fs::remove_file(&path).unwrap();
                n += 1;
            }
        }
    }
    println!("fail-at-the-n-th-I/O sweep: {points} crash points");
}

/// Defect 2: a log's tail page is flushed while it fills, then again. Format 1 rewrote the page
/// over its only durable copy, so a crash during the rewrite left neither version. Now each
/// flush of the page keeps the last acknowledged one readable at every crash point, and a
/// closed page is never written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_the_tail_page_keeps_the_acknowledged_version() {
    let config = config();
    let mut points = 0;
    for sync in [SyncPolicy::Group, SyncPolicy::PerPage] {
        for (name, engine) in common::owned_engines(&config) {
            let dir = common::tempdir();
            let engine = Arc::new(PowerLossEngine::new(engine));
            let file = engine.open(dir.path().join("tail.log"), &OpenOptions::new().create(true)).await.unwrap();
            let flusher_config = FlusherConfig { page_size: PAGE, sync, ..FlusherConfig::default() };
            let flusher = PageFlusher::new(engine.clone(), file, flusher_config);
            let mut buf = engine.acquire().await.into_free();
            for i in 0..6000 {
                buf[PAYLOAD_START + i] = byte(0, i);
            }
            let mut back = Some(buf);
            for (len, open) in [(1000, true), (4000, true), (6000, false)] {
                let page = back.take().expect("the buffer came back");
                let done =
                    if open { flusher.flush_partial(page, 0, len).await } else { flusher.flush(page, 0, len).await };
                let (result, page) = done.into_parts();
                result.unwrap_or_else(|e| panic!("{name} {sync:?}: flush of {len}: {e}"));
                let end = if open { (PAYLOAD_START + len) as u64 } else { P };
                assert_eq!(flusher.flushed_until(), end, "{name} {sync:?}");
                engine.acknowledge(end);
                back = Some(page.into_free());
            }
            let journal = engine.journal();
            let crash_path = dir.path().join("crash.log");
            for crash in 0..=journal.len() {
                for fate in 0..16 {
                    let image = journal.crash_image(&[], crash, fate);
                    if let Err(e) =
                        check(engine.inner(), &crash_path, &image, journal.acknowledged(crash), fate % 2 == 1).await
                    {
                        panic!("{name} {sync:?}: crash {crash} fate {fate}: {e}");
                    }
                    points += 1;
                }
            }
            let again = flusher.flush(back.take().unwrap(), 0, 6000).await;
            assert!(matches!(again.0, Err(Error::Rewrite { address: 0, .. })), "{name}: {:?}", again.0);
        }
    }
    println!("tail-page rewrites: {points} crash points");
}
