//! The page flusher on every engine variant: out-of-order completion with a gap-free
//! `flushed_until` and acknowledgements that wait for it, group commit, per-page sync,
//! poisoning by a failed fdatasync, failed writes, refused rewrites, partial tail-page flushes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ferrite_io::hybridlog::page::{self, PAYLOAD_START};
use ferrite_io::hybridlog::{FlusherConfig, PageFlusher, SyncPolicy};
use ferrite_io::io::fault::FaultyEngine;
use ferrite_io::{Engine, EngineChoice, Error, IoEngine, IoEngineConfig, OpenOptions};

const PAGE: usize = 8192;

fn config() -> IoEngineConfig {
    IoEngineConfig { registered_buffers: 32, ..common::config(EngineChoice::Auto) }
}

type Flusher = PageFlusher<FaultyEngine<Engine>>;

async fn flusher(dir: &tempfile::TempDir, name: &str, engine: Engine, sync: SyncPolicy) -> Arc<Flusher> {
    let engine = Arc::new(FaultyEngine::new(engine));
    let path = dir.path().join(format!("{name}-{sync:?}.log"));
    let file = engine.open(path, &OpenOptions::new().create(true)).await.unwrap();
    assert!(file.preallocate(64 * PAGE as u64).await.unwrap(), "ext4 supports fallocate");
    Arc::new(PageFlusher::new(
        engine,
        file,
        FlusherConfig { page_size: PAGE, depth: 16, sync, ..FlusherConfig::default() },
    ))
}

/// Flushes page `index` with a payload naming it; checks the buffer came back whole.
async fn flush(flusher: &Flusher, index: u64) -> Result<(), Error> {
    let mut buf = flusher.engine().acquire().await;
    let payload = format!("page {index}");
    buf[PAYLOAD_START..PAYLOAD_START + payload.len()].copy_from_slice(payload.as_bytes());
    let (result, back) = flusher.flush(buf, index * PAGE as u64, payload.len()).await.into_parts();
    assert_eq!(back.len(), PAGE, "the page buffer comes back whole");
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_completion_keeps_flushed_until_gap_free() {
    let dir = common::tempdir();
    for sync in [SyncPolicy::Group, SyncPolicy::PerPage, SyncPolicy::None] {
        for (name, engine) in common::owned_engines(&config()) {
            let flusher = flusher(&dir, name, engine, sync).await;
            // Early pages finish last.
            for (index, delay) in [(0u64, 60u64), (1, 40), (2, 20), (5, 30)] {
                flusher.engine().delay_writes_at(index * PAGE as u64, Duration::from_millis(delay));
            }
            let watcher = tokio::spawn({
                let flusher = flusher.clone();
                async move {
                    let mut seen = vec![flusher.flushed_until()];
                    while *seen.last().unwrap() < 12 * PAGE as u64 {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                        seen.push(flusher.flushed_until());
                    }
                    seen
                }
            });
            let mut tasks = Vec::new();
            for index in 0..12u64 {
                let flusher = flusher.clone();
                tasks.push(tokio::spawn(async move {
                    flush(&flusher, index).await.unwrap();
                    (index, flusher.flushed_until())
                }));
            }
            let mut acks = Vec::new();
            for task in tasks {
                acks.push(task.await.unwrap());
            }
            let seen = tokio::time::timeout(Duration::from_secs(10), watcher).await.unwrap().unwrap();
            assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{name} {sync:?}: flushed_until went back");
            assert!(seen.iter().all(|v| v % PAGE as u64 == 0));
            assert_eq!(flusher.flushed_until(), 12 * PAGE as u64, "{name} {sync:?}");
            // Defect 3: page 3 completed before page 0 (delayed), yet its acknowledgement waited
            // until flushed_until covered it: an acknowledged page never sits after a hole.
            for (index, at_ack) in acks {
                assert!(at_ack >= (index + 1) * PAGE as u64, "{name} {sync:?}: page {index} acked at {at_ack}");
            }
            // Every page is on disk, intact.
            let bytes = std::fs::read(dir.path().join(format!("{name}-{sync:?}.log"))).unwrap();
            for index in 0..12u64 {
                let at = (index * PAGE as u64) as usize;
                let info = page::verify(&bytes[at..at + PAGE], index * PAGE as u64).unwrap();
                let payload = info.payload();
                assert_eq!(&bytes[at + payload.start..at + payload.end], format!("page {index}").as_bytes());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_syncs_and_per_page_does_not() {
    let dir = common::tempdir();
    for (name, engine) in common::owned_engines(&config()) {
        let group = flusher(&dir, name, engine, SyncPolicy::Group).await;
        let flushes: Vec<_> = (0..16u64)
            .map(|i| {
                tokio::spawn({
                    let group = group.clone();
                    async move { flush(&group, i).await }
                })
            })
            .collect();
        for f in flushes {
            f.await.unwrap().unwrap();
        }
        let syncs = group.engine().syncs();
        assert!((1..16).contains(&syncs), "{name}: 16 concurrent pages took {syncs} syncs");
    }
    for (name, engine) in common::owned_engines(&config()) {
        let per_page = flusher(&dir, name, engine, SyncPolicy::PerPage).await;
        for i in 0..4u64 {
            flush(&per_page, i).await.unwrap();
        }
        assert_eq!(per_page.engine().syncs(), 4, "{name}: one sync per page");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fdatasync_poisons_the_flusher() {
    let dir = common::tempdir();
    for (name, engine) in common::owned_engines(&config()) {
        let flusher = flusher(&dir, name, engine, SyncPolicy::Group).await;
        flush(&flusher, 0).await.unwrap();
        assert_eq!(flusher.flushed_until(), PAGE as u64);
        flusher.engine().fail_syncs_from(2, libc::EIO);
        // Every page waiting on the failed sync fails; none is acknowledged.
        let waiting: Vec<_> = (1..6u64)
            .map(|i| {
                tokio::spawn({
                    let flusher = flusher.clone();
                    async move { flush(&flusher, i).await }
                })
            })
            .collect();
        for w in waiting {
            let result = w.await.unwrap();
            assert!(matches!(result, Err(Error::Poisoned { .. })), "{name}: {result:?}");
        }
        assert_eq!(flusher.flushed_until(), PAGE as u64, "{name}: nothing past the failure is acknowledged");
        assert!(flusher.poisoned().is_some());
        // Later flushes fail at once and never sync again (no retry that could "succeed").
        let syncs = flusher.engine().syncs();
        let later = flush(&flusher, 6).await;
        assert!(matches!(later, Err(Error::Poisoned { .. })), "{name}: {later:?}");
        assert_eq!(flusher.engine().syncs(), syncs, "{name}: a poisoned flusher syncs no more");
        assert_eq!(flusher.flushed_until(), PAGE as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_page_sync_failure_poisons_too() {
    let dir = common::tempdir();
    for (name, engine) in common::owned_engines(&config()) {
        let flusher = flusher(&dir, name, engine, SyncPolicy::PerPage).await;
        flusher.engine().fail_syncs_from(1, libc::EIO);
        assert!(matches!(flush(&flusher, 0).await, Err(Error::Poisoned { address: 0, .. })), "{name}");
        assert!(matches!(flush(&flusher, 1).await, Err(Error::Poisoned { address: 0, .. })), "{name}");
        assert_eq!(flusher.flushed_until(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_fails_its_page_only() {
    let dir = common::tempdir();
    for (name, engine) in common::owned_engines(&config()) {
        let flusher = flusher(&dir, name, engine, SyncPolicy::Group).await;
        flusher.engine().fail_writes_at(PAGE as u64, libc::ENOSPC);
        flush(&flusher, 0).await.unwrap();
        let failed = flush(&flusher, 1).await;
        assert!(matches!(&failed, Err(e) if e.raw_os_error() == Some(libc::ENOSPC)), "{name}: {failed:?}");
        // Page 2 is durable but not acknowledged: page 1 before it is not on disk.
        let gap = flush(&flusher, 2).await;
        assert!(
            matches!(gap, Err(Error::Gap { address, blocked_by }) if (address, blocked_by) == (2 * PAGE as u64, PAGE as u64)),
            "{name}: {gap:?}"
        );
        assert!(flusher.poisoned().is_none(), "{name}: a write error does not poison");
        assert_eq!(flusher.flushed_until(), PAGE as u64, "{name}: the gap at page 1 holds the prefix");
        // Page 1 flushed again (first rewritten as its acknowledged state: empty) closes the gap.
        flusher.engine().clear_write_faults();
        flush(&flusher, 1).await.unwrap();
        assert_eq!(flusher.flushed_until(), 3 * PAGE as u64, "{name}: page 2 is acknowledged with it");
        let again = flush(&flusher, 2).await;
        assert!(
            matches!(again, Err(Error::Rewrite { address, .. }) if address == 2 * PAGE as u64),
            "{name}: {again:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_addresses_and_payloads_are_refused_with_the_buffer() {
    let dir = common::tempdir();
    for (name, engine) in common::owned_engines(&config()) {
        let flusher = flusher(&dir, name, engine, SyncPolicy::Group).await;
        let buf = flusher.engine().acquire().await;
        let (result, buf) = flusher.flush(buf, 0, PAGE).await.into_parts();
        assert!(matches!(result, Err(Error::Page(_))), "{name}: {result:?}");
        let buf = buf.into_free();
        let (result, back) = flusher.flush(buf, 100, 0).await.into_parts();
        assert_eq!(back.len(), PAGE);
        assert!(matches!(result, Err(Error::Unaligned { value: 100, .. })), "{name}: {result:?}");
        // Partial flushes need a syncing policy.
        let config = FlusherConfig { page_size: PAGE, sync: SyncPolicy::None, ..FlusherConfig::default() };
        let none = PageFlusher::new(flusher.engine().clone(), flusher.file().clone(), config);
        let (result, _) = none.flush_partial(back.into_free(), 0, 10).await.into_parts();
        assert!(matches!(result, Err(Error::Config { key: "sync", .. })), "{name}: {result:?}");
        assert_eq!(flusher.engine().syncs(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_and_recovery_find_every_acknowledged_page() {
    use ferrite_io::hybridlog::{read_page, recover};
    let dir = common::tempdir();
    for (name, engine) in common::owned_engines(&config()) {
        let first = flusher(&dir, name, engine, SyncPolicy::Group).await;
        let pages: Vec<_> = (0..20u64)
            .map(|i| {
                tokio::spawn({
                    let first = first.clone();
                    async move { flush(&first, i).await }
                })
            })
            .collect();
        for p in pages {
            p.await.unwrap().unwrap();
        }
        let acknowledged = first.flushed_until();
        assert_eq!(acknowledged, 20 * PAGE as u64);
        let path = dir.path().join(format!("{name}-Group.log"));
        let engine = first.engine().clone();
        drop(first);

        // Reopen: every acknowledged page is intact and readable.
        let file = engine.open(&path, &OpenOptions::new()).await.unwrap();
        let found = recover(&*engine, &file, PAGE, acknowledged).await.unwrap();
        assert_eq!((found.durable_until, found.pages), (acknowledged, 20), "{name}: {found:?}");
        for i in 0..20u64 {
            let (info, _) = read_page(&*engine, &file, engine.acquire().await, i * PAGE as u64)
                .await
                .into_result()
                .map_err(|(e, _)| e)
                .unwrap();
            assert_eq!(info.header.address, i * PAGE as u64);
        }
        // Resume after the durable prefix with fresh sequence numbers, then recover again.
        let next = found.max_sequence_seen.unwrap() + 1;
        let config = FlusherConfig {
            page_size: PAGE,
            start: found.durable_until,
            first_sequence: next,
            ..FlusherConfig::default()
        };
        let resumed = PageFlusher::new(engine.clone(), file.clone(), config);
        for i in 20..24u64 {
            flush(&resumed, i).await.unwrap();
        }
        assert_eq!(resumed.flushed_until(), 24 * PAGE as u64);
        let again = recover(&*engine, &file, PAGE, resumed.flushed_until()).await.unwrap();
        assert_eq!(again.pages, 24, "{name}");
        assert!(again.last_sequence.unwrap() >= next + 3, "{name}: sequences continue after reopen");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_dropped_during_its_group_sync_does_not_stall_the_others() {
    let dir = common::tempdir();
    for (name, engine) in common::owned_engines(&config()) {
        let flusher = flusher(&dir, name, engine, SyncPolicy::Group).await;
        // Drop the first flush while it runs the group sync.
        flusher.engine().delay_syncs(Duration::from_millis(200));
        let first = tokio::spawn({
            let flusher = flusher.clone();
            async move { flush(&flusher, 0).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(flusher.engine().syncs(), 1, "{name}: the sync has started and is still waiting");
        first.abort();
        let _ = first.await;
        // Later pages still become durable (a fresh sync runs for them).
        let later = tokio::time::timeout(Duration::from_secs(10), flush(&flusher, 1)).await;
        assert!(matches!(later, Ok(Ok(()))), "{name}: {later:?}");
    }
}

/// Linux reports a write-back error to one fdatasync and then forgets it. A flush whose future
/// is dropped while its sync runs must still record that sync's failure, or the next sync would
/// pass and acknowledge pages whose data was never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_failure_is_recorded_even_when_its_flush_was_dropped() {
    let dir = common::tempdir();
    for sync in [SyncPolicy::Group, SyncPolicy::PerPage] {
        for (name, engine) in common::owned_engines(&config()) {
            let flusher = flusher(&dir, name, engine, sync).await;
            flusher.engine().fail_one_sync(1, libc::EIO);
            flusher.engine().delay_syncs(Duration::from_millis(200));
            let first = tokio::spawn({
                let flusher = flusher.clone();
                async move { flush(&flusher, 0).await }
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            first.abort();
            let _ = first.await;
            let later = tokio::time::timeout(Duration::from_secs(10), flush(&flusher, 1)).await;
            assert!(matches!(later, Ok(Err(Error::Poisoned { .. }))), "{name} {sync:?}: {later:?}");
            assert_eq!(flusher.flushed_until(), 0, "{name} {sync:?}");
        }
    }
}

/// Two per-page syncs overlap; the first reports the write-back error, the second passes. The
/// second page must not be acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_per_page_syncs_share_a_failure() {
    let dir = common::tempdir();
    for (name, engine) in common::owned_engines(&config()) {
        let flusher = flusher(&dir, name, engine, SyncPolicy::PerPage).await;
        flusher.engine().fail_one_sync(1, libc::EIO);
        flusher.engine().delay_syncs(Duration::from_millis(100));
        let pages: Vec<_> = (0..2u64)
            .map(|i| {
                let flusher = flusher.clone();
                tokio::spawn(async move { flush(&flusher, i).await })
            })
            .collect();
        for page in pages {
            let result = page.await.unwrap();
            assert!(matches!(result, Err(Error::Poisoned { .. })), "{name}: {result:?}");
        }
        assert_eq!(flusher.flushed_until(), 0, "{name}");
    }
}
