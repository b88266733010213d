//! An engine works from any thread and any runtime for its whole life: created on one runtime and
//! used from another after the first is dropped or while it idles, created outside any runtime,
//! used from a runtime without an I/O driver, from no runtime at all, and from `Handle::block_on`
//! of a runtime that has shut down. Every wait here has a watchdog, so a lost wake-up fails the
//! test instead of hanging it.
//!
//! The operations used do not finish inside their submit on io_uring: O_DIRECT reads go to the
//! device and `fdatasync` goes to io-wq, so their completions must be delivered later.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::{Build, FLAVOURS, current_thread, multi_thread, on_a_thread, park_on};
use ferrite_io::hybridlog::{FlusherConfig, PageFlusher, SyncPolicy};
use ferrite_io::io::fault::FaultyEngine;
use ferrite_io::{Engine, EngineChoice, Error, File, IoEngine, IoEngineConfig, OpenOptions, SharedIoEngine};
use tokio::runtime::{Runtime, RuntimeFlavor};

const PAGE: usize = 4096;
const WATCHDOG: Duration = Duration::from_secs(20);

fn config(engine: EngineChoice) -> IoEngineConfig {
    IoEngineConfig { registered_buffers: 16, buffer_size: PAGE, ..common::config(engine) }
}

/// A file of 64 pages, page `i` filled with byte `i`.
fn data_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("data");
    let bytes: Vec<u8> = (0..64u8).flat_map(|i| std::iter::repeat_n(i, PAGE)).collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// O_DIRECT reads of every page, a write and a sync: work that completes after its submit.
async fn workout(engine: &SharedIoEngine, path: &std::path::Path) -> Result<(), Error> {
    let file = engine.open(path, &OpenOptions::new().direct(true)).await?;
    for page in 0..64u64 {
        let (result, buf) = engine.read_fixed_at(&file, engine.acquire().await, page * PAGE as u64).await.into_parts();
        assert_eq!(result?, PAGE);
        assert!(buf.iter().all(|&b| u64::from(b) == page), "page {page}");
    }
    // Page 0 again, as it was: a write that the next workout reads back.
    let mut buf = engine.acquire().await;
    buf.fill(0);
    engine.write_all_at(&file, buf, 0).await.0?;
    engine.sync_data(&file).await?;
    engine.sync_all(&file).await?;
    Ok(())
}

/// Runs `workout` in `rt.block_on` on a thread of its own, watched from this one: a lost
/// wake-up fails the test even when it stalls `rt` itself, which a timer of `rt` could not see.
fn workout_on(rt: &Arc<Runtime>, engine: &SharedIoEngine, path: &std::path::Path, what: &str) {
    let (rt, engine, path) = (rt.clone(), engine.clone(), path.to_owned());
    let done = on_a_thread(what, move || rt.block_on(workout(&engine, &path)).map_err(|e| e.to_string()));
    done.unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// Engines of both kinds, created inside `rt`.
fn engines_on(rt: &tokio::runtime::Runtime) -> Vec<(&'static str, SharedIoEngine)> {
    let _inside = rt.enter();
    common::engines(&config(EngineChoice::Auto))
}

#[test]
fn engine_outlives_the_runtime_that_created_it() {
    let dir = common::tempdir();
    let path = data_file(&dir);
    // The creating runtime of either flavour: a current-thread one has its reactor (and any
    // watcher registered with it) driven only inside its own `block_on`, gone with it here.
    for (created_on, build_first) in FLAVOURS {
        for (used_on, build_second) in FLAVOURS {
            let multi = |rt: &Runtime| rt.handle().runtime_flavor() == RuntimeFlavor::MultiThread;
            let first = Arc::new(build_first());
            let engines = engines_on(&first);
            // Used once on its own runtime, so any state tied to that runtime exists.
            for (name, engine) in &engines {
                workout_on(&first, engine, &path, &format!("{name} on its own {created_on} runtime"));
            }
            let first_multi = multi(&first);
            drop(first);
            let second = Arc::new(build_second());
            // A current-thread runtime's reactor runs only inside its own `Runtime::block_on`,
            // which a waiter cannot count on: there the engine's thread delivers (src/io/uring/wake.rs).
            let reactors = first_multi && multi(&second);
            for (name, engine) in &engines {
                let what = format!("{name} on a {used_on} runtime after its {created_on} runtime was dropped");
                workout_on(&second, engine, &path, &what);
                if reactors {
                    // Both runtimes drive a reactor: completions came through it, not a thread of ours.
                    assert!(!engine.stats().completion_thread, "{what}");
                }
            }
        }
    }
}

#[test]
fn engine_works_while_the_runtime_that_created_it_idles() {
    let dir = common::tempdir();
    let path = data_file(&dir);
    for next in [current_thread as Build, multi_thread] {
        // A current-thread runtime only runs while someone blocks on it: this one never does again.
        let idle = Arc::new(current_thread());
        let engines = engines_on(&idle);
        for (name, engine) in &engines {
            workout_on(&idle, engine, &path, &format!("{name} on its own runtime"));
        }
        let other = Arc::new(next());
        for (name, engine) in &engines {
            workout_on(&other, engine, &path, &format!("{name} while its creator idles"));
        }
        drop(idle);
    }
}

#[test]
fn engine_created_outside_any_runtime_and_shared_by_two() {
    let dir = common::tempdir();
    let path = data_file(&dir);
    #[cfg(all(feature = "io-uring", target_os = "linux"))]
    {
        let engine: SharedIoEngine = ferrite_io::create_engine(config(EngineChoice::Uring)).expect("no runtime needed");
        let (a, b) = (Arc::new(multi_thread()), Arc::new(current_thread()));
        std::thread::scope(|s| {
            s.spawn(|| workout_on(&a, &engine, &path, "uring from runtime A"));
            s.spawn(|| workout_on(&b, &engine, &path, "uring from runtime B"));
        });
    }
    let engine = ferrite_io::create_engine(config(EngineChoice::Tokio)).expect("no runtime needed");
    workout_on(&Arc::new(multi_thread()), &engine, &path, "tokio engine created outside a runtime");
}

#[test]
fn runtime_without_an_io_driver() {
    let dir = common::tempdir();
    let path = data_file(&dir);
    let builders: [Build; 2] = [
        || tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap(),
        || tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap(),
    ];
    for build in builders {
        let rt = Arc::new(build());
        for choice in [EngineChoice::Auto, EngineChoice::Uring, EngineChoice::Tokio] {
            if choice == EngineChoice::Uring && !cfg!(all(feature = "io-uring", target_os = "linux")) {
                continue; // no io_uring in this build: `uring` is refused, typed (src/io/detect.rs)
            }
            // Creating the engine inside such a runtime must not panic, and `auto` keeps io_uring.
            let engine = {
                let _inside = rt.enter();
                ferrite_io::create_engine(config(choice)).unwrap_or_else(|e| panic!("{choice}: {e}"))
            };
            if cfg!(all(feature = "io-uring", target_os = "linux")) && choice != EngineChoice::Tokio {
                assert_eq!(engine.backend(), ferrite_io::Backend::Uring, "{choice}");
            }
            workout_on(&rt, &engine, &path, &format!("{choice} without an I/O driver"));
            if engine.backend() == ferrite_io::Backend::Uring {
                assert!(engine.stats().completion_thread, "{choice}: no reactor, so the engine's thread");
            }
        }
    }
}

#[test]
fn no_runtime_at_all() {
    let dir = common::tempdir();
    let path = data_file(&dir);
    let rt = current_thread();
    for (name, engine) in engines_on(&rt) {
        let file = rt.block_on(engine.open(&path, &OpenOptions::new().direct(true))).unwrap();
        let buf = engine.pool().try_acquire().unwrap();
        let (result, buf) = park_on(engine.read_at(&file, buf, 5 * PAGE as u64)).into_parts();
        if engine.backend() == ferrite_io::Backend::Uring {
            assert_eq!(result.unwrap(), PAGE, "{name}");
            assert!(buf.iter().all(|&b| b == 5), "{name}");
            park_on(engine.sync_data(&file)).unwrap();
        } else {
            // The tokio engine needs a runtime's blocking pool: a typed error, buffer back.
            assert!(matches!(result, Err(Error::NoRuntime(_))), "{name}: {result:?}");
            assert_eq!(buf.len(), PAGE);
        }
        drop(buf);
        common::assert_pool_full(&engine);
    }
}

#[test]
fn block_on_a_runtime_that_has_shut_down() {
    let dir = common::tempdir();
    let path = data_file(&dir);
    // Either flavour: a shut-down current-thread runtime has no workers and no blocking pool
    // either, and its handle's `block_on` never drove its reactor even while it was alive.
    for (flavour, build) in FLAVOURS {
        let rt = Arc::new(build());
        let handle = rt.handle().clone();
        let engines = engines_on(&rt);
        let files: Vec<File> = {
            let (rt, engines, path) = (rt.clone(), engines.clone(), path.clone());
            let direct = OpenOptions::new().direct(true);
            on_a_thread("open", move || {
                engines.iter().map(|(_, e)| rt.block_on(e.open(&path, &direct)).unwrap()).collect()
            })
        };
        drop(rt);
        for ((name, engine), file) in engines.iter().zip(&files) {
            let what = format!("{name}, block_on of a shut-down {flavour} runtime");
            let buf = engine.pool().try_acquire().unwrap();
            let (engine2, file2, handle2) = (engine.clone(), file.clone(), handle.clone());
            let (result, first, len) = on_a_thread(&what, move || {
                let done = handle2.block_on(engine2.read_at(&file2, buf, 3 * PAGE as u64)).into_parts();
                (done.0.map_err(|e| e.to_string()), done.1.first().copied(), done.1.len())
            });
            if engine.backend() == ferrite_io::Backend::Uring {
                assert_eq!((result, first), (Ok(PAGE), Some(3)), "{what}");
            } else {
                let e = result.unwrap_err();
                assert!(e.contains("cancelled"), "{what}: {e}");
                assert_eq!(len, PAGE, "{what}: the buffer comes back");
            }
            let deadline = Instant::now() + WATCHDOG;
            while engine.pool().available() != engine.pool().capacity() {
                assert!(Instant::now() < deadline, "{what}: buffer lost");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

#[test]
fn engine_used_from_plain_threads_and_runtimes_at_once() {
    let dir = common::tempdir();
    let path = data_file(&dir);
    let rt = multi_thread();
    for (name, engine) in engines_on(&rt) {
        std::thread::scope(|s| {
            for i in 0..3 {
                let (engine, path, name) = (&engine, &path, name);
                s.spawn(move || {
                    let rt = Arc::new(if i % 2 == 0 { current_thread() } else { multi_thread() });
                    workout_on(&rt, engine, path, &format!("{name} from thread {i}"));
                });
            }
        });
    }
}

// The page flusher, the pool and the file calls under the same runtime states: each either works
// or returns a typed error, and nothing waits for ever.

type Flusher = PageFlusher<FaultyEngine<Engine>>;

fn flush_config(sync: SyncPolicy) -> FlusherConfig {
    FlusherConfig { page_size: PAGE, depth: 4, sync, ..FlusherConfig::default() }
}

/// A flusher of each engine variant and sync policy, over a new file, made on `rt`.
fn flushers_on(rt: &tokio::runtime::Runtime, dir: &tempfile::TempDir) -> Vec<(String, Arc<Flusher>)> {
    let _inside = rt.enter();
    let mut all = Vec::new();
    for sync in [SyncPolicy::Group, SyncPolicy::PerPage] {
        for (name, engine) in common::owned_engines(&config(EngineChoice::Auto)) {
            let engine = Arc::new(FaultyEngine::new(engine));
            let path = dir.path().join(format!("{name}-{sync:?}.log"));
            let file = rt.block_on(engine.open(path, &OpenOptions::new().create(true))).unwrap();
            all.push((format!("{name} {sync:?}"), Arc::new(PageFlusher::new(engine, file, flush_config(sync)))));
        }
    }
    all
}

/// Flushes page `index` (a pool buffer taken without waiting) and returns the outcome and the
/// length of the buffer that came back.
async fn flush_page(flusher: &Flusher, index: u64) -> (Result<(), Error>, usize) {
    let buf = flusher.engine().pool().try_acquire().expect("a free buffer");
    let (result, back) = flusher.flush(buf, index * PAGE as u64, 10).await.into_parts();
    (result, back.len())
}

/// Waits until every buffer of the flusher's pool is back (some return when the kernel is done).
fn wait_pool_full(what: &str, flusher: &Flusher) {
    let pool = flusher.engine().pool();
    let deadline = Instant::now() + WATCHDOG;
    while pool.available() != pool.capacity() {
        assert!(Instant::now() < deadline, "{what}: buffer lost: {pool:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_flush_under_block_on_of_a_shut_down_runtime_works_or_fails_typed_and_releases_its_page() {
    let dir = common::tempdir();
    let rt = multi_thread();
    let handle = rt.handle().clone();
    let flushers = flushers_on(&rt, &dir);
    for (name, flusher) in &flushers {
        assert_eq!(rt.block_on(flush_page(flusher, 0)).0.map_err(|e| e.to_string()), Ok(()), "{name}");
    }
    drop(rt);
    for (name, flusher) in &flushers {
        let (flusher2, handle2) = (flusher.clone(), handle.clone());
        let (result, len) = on_a_thread(name, move || handle2.block_on(flush_page(&flusher2, 1)));
        assert_eq!(len, PAGE, "{name}: the page comes back");
        assert_eq!(flusher.poisoned().map(|e| e.to_string()), None, "{name}");
        if flusher.engine().backend() == ferrite_io::Backend::Uring {
            // The flush needs no task: io_uring completes it without the runtime.
            assert_eq!(result.map_err(|e| e.to_string()), Ok(()), "{name}");
        } else {
            // The tokio engine needs the runtime's blocking pool.
            assert!(matches!(result, Err(Error::Cancelled { .. })), "{name}: {result:?}");
            // The page is not left claimed: it flushes on a live runtime.
            let (flusher2, next) = (flusher.clone(), current_thread());
            let (result, _) = on_a_thread(name, move || next.block_on(flush_page(&flusher2, 1)));
            assert_eq!(result.map_err(|e| e.to_string()), Ok(()), "{name}");
        }
        assert_eq!(flusher.flushed_until(), 2 * PAGE as u64, "{name}");
        wait_pool_full(name, flusher);
    }
}

#[test]
fn a_runtime_shut_down_under_a_dropped_flush_poisons_the_flusher_instead_of_hanging() {
    let dir = common::tempdir();
    for stall in ["write", "group sync"] {
        let rt = multi_thread();
        let flushers: Vec<_> = flushers_on(&rt, &dir)
            .into_iter()
            .filter(|(name, _)| stall == "write" || name.ends_with("Group"))
            .collect();
        for (name, flusher) in &flushers {
            // The flush's work waits out a long delay; its caller gives up, so the work goes on
            // in a task of the runtime, which is then dropped under it.
            match stall {
                "write" => flusher.engine().delay_writes_at(0, Duration::from_secs(60)),
                _ => flusher.engine().delay_syncs(Duration::from_secs(60)),
            }
            let gave_up =
                rt.block_on(async { tokio::time::timeout(Duration::from_millis(100), flush_page(flusher, 0)).await });
            assert!(gave_up.is_err(), "{name}: the flush is in its delay");
        }
        drop(rt);
        for (name, flusher) in &flushers {
            let what = format!("{name}, runtime gone during the {stall}");
            // Every later flush knows it, at once, from any runtime: nothing waits for the page's
            // claim or for a sync that no task will finish.
            let flusher2 = flusher.clone();
            let (result, len) = on_a_thread(&what, move || current_thread().block_on(flush_page(&flusher2, 1)));
            assert!(matches!(result, Err(Error::Poisoned { .. })), "{what}: {result:?}");
            assert_eq!(len, PAGE, "{what}");
            wait_pool_full(&what, flusher);
        }
    }
}

#[test]
fn a_flush_outside_any_runtime_is_refused_with_its_page() {
    let dir = common::tempdir();
    let rt = current_thread();
    for (name, flusher) in flushers_on(&rt, &dir) {
        let (result, len) = park_on(flush_page(&flusher, 0));
        assert!(matches!(result, Err(Error::NoRuntime(_))), "{name}: {result:?}");
        assert_eq!(len, PAGE, "{name}");
        wait_pool_full(&name, &flusher);
    }
}

#[test]
fn the_flusher_works_without_a_time_or_an_io_driver() {
    let dir = common::tempdir();
    let builders: [(&str, Build); 3] = [
        ("no time", || tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap()),
        ("no io", || tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()),
        ("neither", || tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap()),
    ];
    for (what, build) in builders {
        let rt = build();
        let sub = dir.path().join(what);
        std::fs::create_dir(&sub).unwrap();
        let sub = tempfile::tempdir_in(sub).unwrap();
        for (name, flusher) in flushers_on(&rt, &sub) {
            let what = format!("{name}, {what}");
            let flusher2 = flusher.clone();
            let rt2 = build();
            let done = on_a_thread(&what, move || {
                rt2.block_on(async {
                    let (first, second) = tokio::join!(flush_page(&flusher2, 0), flush_page(&flusher2, 1));
                    (first.0.map_err(|e| e.to_string()), second.0.map_err(|e| e.to_string()))
                })
            });
            assert_eq!(done, (Ok(()), Ok(())), "{what}");
            assert_eq!(flusher.flushed_until(), 2 * PAGE as u64, "{what}");
            let read = rt.block_on(ferrite_io::hybridlog::read_page(
                flusher.engine().as_ref(),
                flusher.file(),
                flusher.engine().pool().try_acquire().unwrap(),
                PAGE as u64,
            ));
            assert!(read.0.is_ok(), "{what}: {:?}", read.0);
            drop(read);
            wait_pool_full(&what, &flusher);
        }
    }
}

#[test]
fn file_calls_outside_any_runtime_are_refused_typed() {
    let dir = common::tempdir();
    let path = data_file(&dir);
    let open = park_on(File::open(&path, &OpenOptions::new()));
    assert!(matches!(open, Err(Error::NoRuntime(_))), "{open:?}");
    let file = current_thread().block_on(File::open(&path, &OpenOptions::new())).unwrap();
    // It used to panic here: `spawn_blocking` outside a runtime.
    let reserved = park_on(file.preallocate(1 << 20));
    assert!(matches!(reserved, Err(Error::NoRuntime(_))), "{reserved:?}");
    // Under `Handle::block_on` of a runtime that has shut down: an error, never a hang.
    let rt = multi_thread();
    let handle = rt.handle().clone();
    drop(rt);
    let (path2, file2, handle2) = (path.clone(), file.clone(), handle.clone());
    let open = on_a_thread("open", move || handle2.block_on(File::open(&path2, &OpenOptions::new())).map(drop));
    assert!(matches!(open, Err(Error::Open { .. })), "{open:?}");
    let reserved = on_a_thread("preallocate", move || handle.block_on(file2.preallocate(1 << 20)));
    assert!(matches!(reserved, Err(Error::File { op: ferrite_io::Op::Allocate, .. })), "{reserved:?}");
}

/// Every way a caller can poll: `None` is no runtime at all (a bare executor on this thread).
fn runtime_states() -> Vec<(&'static str, Option<tokio::runtime::Handle>, Option<tokio::runtime::Runtime>)> {
    let mut states = Vec::new();
    let builders: [(&str, Build); 4] = [
        ("current-thread without timers", || {
            tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap()
        }),
        ("multi-thread without drivers", || {
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap()
        }),
        ("current-thread", current_thread),
        ("multi-thread", multi_thread),
    ];
    for (what, build) in builders {
        let rt = build();
        states.push((what, Some(rt.handle().clone()), Some(rt)));
    }
    let gone = multi_thread();
    states.push(("block_on of a shut-down runtime", Some(gone.handle().clone()), None));
    states.push(("no runtime", None, None));
    states
}

#[test]
fn the_pool_waits_and_times_out_in_every_runtime_state() {
    for (what, handle, runtime) in runtime_states() {
        let pool = ferrite_io::BufPool::new(1, PAGE).unwrap();
        let held = pool.try_acquire().unwrap();
        let pool2 = pool.clone();
        let wait = async move {
            let buf = pool2.acquire().await; // comes back while this waits
            // Held again: the next wait times out.
            let started = Instant::now();
            let none = pool2.acquire_timeout(Duration::from_millis(20)).await.is_none();
            drop(buf);
            none && started.elapsed() >= Duration::from_millis(20)
        };
        let got = on_a_thread(what, move || {
            let giver = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                drop(held);
            });
            let got = match &handle {
                Some(handle) => handle.block_on(wait),
                None => park_on(wait),
            };
            giver.join().unwrap();
            got
        });
        assert!(got, "{what}: acquired, then timed out after 20 ms");
        assert_eq!(pool.available(), 1, "{what}");
        drop(runtime);
    }
}

#[test]
fn fault_delays_work_in_every_runtime_state() {
    let dir = common::tempdir();
    let path = data_file(&dir);
    for (what, handle, runtime) in runtime_states() {
        // The fault answers without reaching the wrapped engine, so this needs nothing of it.
        let engine = FaultyEngine::new(ferrite_io::TokioEngine::new(&config(EngineChoice::Tokio)).unwrap());
        engine.delay_syncs(Duration::from_millis(20));
        engine.fail_syncs_from(1, libc::EIO);
        let file = File::from_std(std::fs::File::open(&path).unwrap(), false);
        let sync = async move {
            let started = Instant::now();
            let failed = engine.sync_data(&file).await.err().and_then(|e| e.raw_os_error());
            (failed, started.elapsed() >= Duration::from_millis(20))
        };
        let done = on_a_thread(what, move || match &handle {
            Some(handle) => handle.block_on(sync),
            None => park_on(sync),
        });
        assert_eq!(done, (Some(libc::EIO), true), "{what}: (the fault, after the delay)");
        drop(runtime);
    }
}

#[test]
fn reading_and_recovering_a_log_in_every_runtime_state() {
    let dir = common::tempdir();
    let rt = multi_thread();
    // A log of 8 pages on each engine, flushed (group commit) on a live runtime.
    let flushers: Vec<_> = flushers_on(&rt, &dir).into_iter().filter(|(name, _)| name.ends_with("Group")).collect();
    for (name, flusher) in &flushers {
        rt.block_on(async {
            for page in 0..8 {
                assert_eq!(flush_page(flusher, page).await.0.map_err(|e| e.to_string()), Ok(()), "{name}");
            }
        });
    }
    drop(rt);
    for (what, handle, runtime) in runtime_states() {
        for (name, flusher) in &flushers {
            let what = format!("{name}, {what}");
            let works = flusher.engine().backend() == ferrite_io::Backend::Uring || runtime.is_some();
            let (flusher2, handle2) = (flusher.clone(), handle.clone());
            let (recovered, read) = on_a_thread(&what, move || {
                let work = async {
                    let (engine, file) = (flusher2.engine().as_ref(), flusher2.file());
                    let recovered = ferrite_io::hybridlog::recover(engine, file, PAGE, 8 * PAGE as u64).await;
                    let buf = engine.pool().try_acquire().unwrap();
                    let (read, buf) =
                        ferrite_io::hybridlog::read_page(engine, file, buf, 5 * PAGE as u64).await.into_parts();
                    drop(buf);
                    // A scan dropped after its first poll gives its buffers back.
                    let mut scan = Box::pin(ferrite_io::hybridlog::recover(engine, file, PAGE, 8 * PAGE as u64));
                    std::future::poll_fn(|cx| Poll::Ready(scan.as_mut().poll(cx).is_ready())).await;
                    drop(scan);
                    (recovered.map(|r| (r.durable_until, r.pages)), read.map(|info| info.payload().len()))
                };
                match &handle2 {
                    Some(handle) => handle.block_on(work),
                    None => park_on(work),
                }
            });
            // Without a live runtime the tokio engine may still serve a cached read inline (the
            // RWF_NOWAIT fast path); what it cannot do is a typed error, never a hang or panic.
            let typed = |e: &Error| matches!(e, Error::NoRuntime(_) | Error::Cancelled { .. });
            match recovered {
                Ok(found) => assert_eq!(found, (8 * PAGE as u64, 8), "{what}"),
                Err(e) => assert!(!works && typed(&e), "{what}: {e}"),
            }
            match read {
                Ok(len) => assert_eq!(len, 10, "{what}"),
                Err(e) => assert!(!works && typed(&e), "{what}: {e}"),
            }
            wait_pool_full(&what, flusher);
        }
        drop(runtime);
    }
}

#[test]
fn runtimes_shut_down_at_random_moments_of_a_flush_leave_nothing_waiting() {
    let mut rng = common::Rng(0x5eed);
    for round in 0..20 {
        let dir = common::tempdir();
        let rt = multi_thread();
        let handle = rt.handle().clone();
        let flushers = flushers_on(&rt, &dir);
        // Four pages per flusher: the even ones awaited by a thread of its own through the
        // runtime's handle, the odd ones by tasks of the runtime (dropped with it).
        let (mut waiters, mut began) = (Vec::new(), Vec::new());
        for (name, flusher) in &flushers {
            for page in 0..4 {
                let (tx, rx) = std::sync::mpsc::channel();
                let (flusher2, handle2) = (flusher.clone(), handle.clone());
                if page % 2 == 1 {
                    // Dropped before its first poll, a task would never flush its page, and the
                    // pages after it would rightly wait for it: each says when its flush began.
                    handle.spawn(async move {
                        let mut flush = std::pin::pin!(flush_page(&flusher2, page));
                        let pending =
                            std::future::poll_fn(|cx| Poll::Ready(flush.as_mut().poll(cx).is_pending())).await;
                        let _ = tx.send(Ok(()));
                        if pending {
                            let _ = flush.await; // its outcome is checked on the next runtime
                        }
                    });
                    began.push(rx);
                    continue;
                }
                std::thread::spawn(move || {
                    let _ = tx.send(handle2.block_on(flush_page(&flusher2, page)).0.map_err(|e| e.to_string()));
                });
                waiters.push((format!("round {round}, {name}, page {page}"), rx));
            }
        }
        for rx in began {
            let _ = rx.recv_timeout(WATCHDOG).expect("a flush task begins");
        }
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        drop(rt);
        for (what, rx) in waiters {
            let outcome = rx.recv_timeout(WATCHDOG).unwrap_or_else(|_| panic!("{what}: never completed"));
            if let Err(e) = outcome {
                let known = ["cancelled", "poisoned", "not acknowledged", "refused"];
                assert!(known.iter().any(|k| e.contains(k)), "{what}: {e}");
            }
        }
        // Every page resolves again on a live runtime: acknowledged, refused as a rewrite, a gap,
        // or poisoned; none waits for a claim or a sync that no task will ever finish.
        for (name, flusher) in &flushers {
            let flusher2 = flusher.clone();
            on_a_thread(&format!("round {round}, {name}, after"), move || {
                current_thread().block_on(async {
                    for page in 0..4 {
                        let _ = flush_page(&flusher2, page).await;
                    }
                })
            });
            // Operations orphaned on a ring watched by the dropped runtime's reactor come back
            // too, without another operation on that ring.
            wait_pool_full(&format!("round {round}, {name}"), flusher);
        }
    }
}

#[test]
fn a_flush_under_a_shut_down_runtime_that_fails_resolves_the_pages_after_it_with_a_gap() {
    let dir = common::tempdir();
    let live = multi_thread();
    for (name, flusher) in flushers_on(&live, &dir) {
        // Page 1 is written and waits for page 0, which a caller flushes through a dead runtime.
        let waiter = live.spawn({
            let flusher = flusher.clone();
            async move { flush_page(&flusher, 1).await.0 }
        });
        std::thread::sleep(Duration::from_millis(50));
        let dead = multi_thread().handle().clone();
        let flusher2 = flusher.clone();
        let (page0, _) = on_a_thread(&name, move || dead.block_on(flush_page(&flusher2, 0)));
        let page1 = on_a_thread(&name, move || park_on(waiter).expect("the task ends"));
        if flusher.engine().backend() == ferrite_io::Backend::Uring {
            assert_eq!(page0.map_err(|e| e.to_string()), Ok(()), "{name}");
            assert_eq!(page1.map_err(|e| e.to_string()), Ok(()), "{name}");
        } else {
            assert!(matches!(page0, Err(Error::Cancelled { .. })), "{name}: {page0:?}");
            let gap = matches!(page1, Err(Error::Gap { address, blocked_by: 0 }) if address == PAGE as u64);
            assert!(gap, "{name}: {page1:?}");
            // Flushing page 0 again acknowledges both.
            assert_eq!(live.block_on(flush_page(&flusher, 0)).0.map_err(|e| e.to_string()), Ok(()), "{name}");
        }
        assert_eq!(flusher.flushed_until(), 2 * PAGE as u64, "{name}");
        wait_pool_full(&name, &flusher);
    }
}

#[test]
fn a_flush_needs_no_task_of_its_runtime_to_run() {
    let dir = common::tempdir();
    // A bootstrap runtime that nobody blocks on: its handle enters it, but its tasks never run.
    let idle = current_thread();
    for (name, flusher) in flushers_on(&idle, &dir) {
        let (flusher2, handle) = (flusher.clone(), idle.handle().clone());
        let done = on_a_thread(&name, move || {
            handle.block_on(async {
                let (first, second) = tokio::join!(flush_page(&flusher2, 0), flush_page(&flusher2, 1));
                (first.0.map_err(|e| e.to_string()), second.0.map_err(|e| e.to_string()))
            })
        });
        assert_eq!(done, (Ok(()), Ok(())), "{name}");
        assert_eq!(flusher.flushed_until(), 2 * PAGE as u64, "{name}");
        wait_pool_full(&name, &flusher);
    }
}

/// `Handle::block_on` of a current-thread runtime that nobody drives: its reactor never runs, so
/// an operation that waited there through it would never be woken. The engine cannot tell
/// whether anyone is inside that runtime's `Runtime::block_on`, so it takes the completion
/// thread for such waits (src/io/uring/wake.rs), on both flavours of use: the runtime idle from
/// the start, and idle after it ran the same work itself.
#[test]
fn handle_block_on_of_an_idle_current_thread_runtime() {
    let dir = common::tempdir();
    let path = data_file(&dir);
    let idle = Arc::new(current_thread());
    for (name, engine) in engines_on(&idle) {
        for round in ["never driven", "after running the work itself"] {
            if round == "after running the work itself" {
                workout_on(&idle, &engine, &path, &format!("{name} inside Runtime::block_on"));
            }
            let (engine2, path2, handle) = (engine.clone(), path.clone(), idle.handle().clone());
            let done = on_a_thread(&format!("{name}, {round}"), move || {
                handle.block_on(workout(&engine2, &path2)).map_err(|e| e.to_string())
            });
            done.unwrap_or_else(|e| panic!("{name}, {round}: {e}"));
        }
        common::assert_pool_full(&engine);
    }
}

/// Other tokio resources polled earlier in the same poll can spend the task's cooperative
/// budget; an operation that then goes pending still arms its ring's watcher, and tokio's
/// answer to a spent budget (wake the waker at once, where it cannot defer the wake) must not
/// run the watcher inside its own registration. It did, under the watcher's lock: a deadlock
/// in `Runtime::block_on` on a thread that is not a worker (found in the crash test's parent).
#[cfg(target_os = "linux")]
#[test]
fn a_spent_cooperative_budget_does_not_stall_the_watcher() {
    use std::io::Write;
    on_a_thread("an operation after the budget is spent", || {
        let rt = multi_thread();
        for (name, engine) in engines_on(&rt) {
            rt.block_on(async {
                let (reader, mut writer) = common::pipe();
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                for i in 0..1000 {
                    tx.send(i).unwrap();
                }
                let mut read = std::pin::pin!(engine.read_at(&reader, ferrite_io::Buf::from(vec![0; 4]), 0));
                std::future::poll_fn(|cx| {
                    // Receive until tokio refuses: the budget is spent.
                    while let Poll::Ready(Some(_)) = rx.poll_recv(cx) {}
                    assert!(read.as_mut().poll(cx).is_pending(), "{name}: nothing to read yet");
                    Poll::Ready(())
                })
                .await;
                writer.write_all(b"data").unwrap();
                let (n, _) = read.await.into_parts();
                assert_eq!(n.unwrap(), 4, "{name}");
            });
        }
    });
}

/// The completion thread serves a ring only while an operation there relies on it: once the
/// waiters are tasks woken through their runtime's reactor, it stops waking for their
/// completions (it woke, reaped first and woke the task from another thread, for every later
/// completion, which cost a current-thread runtime's tasks about 9% of an O_DIRECT read).
#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[test]
fn the_completion_thread_lets_go_of_a_ring_the_reactor_serves() {
    use std::io::Write;
    let config = IoEngineConfig { rings: 1, ..config(EngineChoice::Uring) };
    let runtime = current_thread();
    let engine: SharedIoEngine = Arc::new(Engine::Uring(ferrite_io::UringEngine::new(&config).unwrap()));
    // Reads of a pipe written 2 ms later: each completes after its submit. (O_DIRECT reads of
    // a file just written completed inside the submit on some days here, leaving nothing to
    // wait for.)
    let reads = |engine: SharedIoEngine| async move {
        for i in 0..64u8 {
            let (reader, mut writer) = common::pipe();
            let write = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(2));
                writer.write_all(&[i; 4]).unwrap();
            });
            let (n, buf) = engine.read_at(&reader, ferrite_io::Buf::from(vec![0; 4]), 0).await.into_parts();
            assert_eq!(n.unwrap(), 4);
            assert_eq!(&buf[..], &[i; 4]);
            write.join().unwrap();
        }
    };
    // The body of `Runtime::block_on` on a current-thread runtime waits through the thread...
    runtime.block_on(reads(engine.clone()));
    let before = engine.stats();
    assert!(before.completion_thread && before.completion_thread_reaps > 0, "{before:?}");
    // ...its tasks through the reactor: the thread wakes at most once more, finds that nothing
    // relies on it and lets the ring go.
    runtime.block_on(async { tokio::spawn(reads(engine.clone())).await.unwrap() });
    let after = engine.stats();
    assert!(after.later_completions >= before.later_completions + 32, "reads completed inline: {after:?}");
    assert!(
        after.completion_thread_reaps <= before.completion_thread_reaps + 1,
        "the thread kept reaping for the reactor's waiters: {} reaps before, {} after",
        before.completion_thread_reaps,
        after.completion_thread_reaps
    );
}
