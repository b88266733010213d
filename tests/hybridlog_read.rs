//! The cold-page reader and the recovery scan, on every engine variant: intact pages read back,
//! each kind of damage is named, and recovery tells crash artifacts from corruption.

mod common;

use ferrite_io::PositionalIo;

use ferrite_io::hybridlog::page::{self, PAYLOAD_START, PageError};
use ferrite_io::hybridlog::{Hole, HoleKind, Recovery, read_page, recover};
use ferrite_io::{Buf, Completed, EngineChoice, Error, IoEngine, IoEngineConfig, OpenOptions, SharedIoEngine};

/// Pages per test log: more than the scan's four buffers, so a scan takes several batches.
const N: u64 = 10;

fn config(buffer_size: usize) -> IoEngineConfig {
    IoEngineConfig { buffer_size, ..common::config(EngineChoice::Auto) }
}

/// The payload of the page at `address` written with `sequence`.
fn payload(address: u64, sequence: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (address / 4096 + sequence * 7 + i as u64 % 251) as u8).collect()
}

/// The payload length of the page at `address`: about 3 KiB, so it spans several sectors.
fn payload_len(address: u64) -> usize {
    3000 + (address / 4096) as usize % 200
}

/// The page at `address`, written with `sequence`, as bytes.
fn sealed(page_size: usize, address: u64, sequence: u64) -> Vec<u8> {
    let len = payload_len(address);
    let mut bytes = vec![0u8; page_size];
    bytes[PAYLOAD_START..PAYLOAD_START + len].copy_from_slice(&payload(address, sequence, len));
    page::seal(&mut bytes, address, sequence, len, 0, false).expect("seal");
    bytes
}

/// Writes `bytes` at `address` through the engine, from a pool buffer.
async fn write(engine: &SharedIoEngine, file: &ferrite_io::File, bytes: &[u8], address: u64) {
    let mut buf = engine.acquire().await;
    buf.set_len(bytes.len()).unwrap();
    buf.copy_from_slice(bytes);
    let (result, _) = engine.write_all_at(file, buf, address).await.into_parts();
    result.expect("write");
}

/// Seals and writes the page at `address` with `sequence`.
async fn write_page(engine: &SharedIoEngine, file: &ferrite_io::File, page_size: usize, address: u64, sequence: u64) {
    write(engine, file, &sealed(page_size, address, sequence), address).await;
}

/// A torn first write of the page at `address` (sequence 100): its header sector and its last
/// sectors reached the disk, a sector in the middle of its payload did not (format 1 called
/// this a checksum failure).
fn torn(page_size: usize, address: u64) -> Vec<u8> {
    let mut bytes = sealed(page_size, address, 100);
    bytes[PAYLOAD_START + 1024..PAYLOAD_START + 1536].fill(0);
    bytes
}

async fn open(engine: &SharedIoEngine, dir: &tempfile::TempDir, name: &str, direct: bool) -> ferrite_io::File {
    let options = OpenOptions::new().create(true).direct(direct);
    engine.open(dir.path().join(name), &options).await.expect("open")
}

/// A pool buffer with length `page_size`, for `read_page`.
async fn page_buf(engine: &SharedIoEngine, page_size: usize) -> Buf<ferrite_io::Registered> {
    let mut buf = engine.acquire().await;
    buf.set_len(page_size).unwrap();
    buf
}

/// `read_page`'s page error, checking the buffer came back whole.
async fn page_error(
    engine: &SharedIoEngine,
    file: &ferrite_io::File,
    page_size: usize,
    address: u64,
) -> (PageError, Buf<Completed>) {
    let (result, buf) = read_page(&**engine, file, page_buf(engine, page_size).await, address).await.into_parts();
    assert_eq!(buf.len(), page_size, "the buffer comes back with the page");
    match result {
        Err(Error::Page(e)) => (e, buf),
        other => panic!("expected a page error at {address}, got {other:?}"),
    }
}

fn flip_bit(path: &std::path::Path, offset: u64) {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 0x10;
    file.write_all_at(&byte, offset).unwrap();
}

fn corrupt_at(result: ferrite_io::Result<Recovery>) -> (u64, PageError) {
    match result {
        Err(Error::Corrupt { address, page }) => (address, page),
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_page_round_trip() {
    let dir = common::tempdir();
    for page_size in [8192usize, 16384] {
        for (name, engine) in common::engines(&config(page_size)) {
            let file = open(&engine, &dir, &format!("{name}-{page_size}"), false).await;
            for i in 0..4 {
                write_page(&engine, &file, page_size, i * page_size as u64, 40 - i).await;
            }
            for i in (0..4).rev() {
                let address = i * page_size as u64;
                // Registered and Free buffers both work.
                let (info, buf) = if i % 2 == 0 {
                    read_page(&*engine, &file, page_buf(&engine, page_size).await, address).await.into_parts()
                } else {
                    let free = page_buf(&engine, page_size).await.into_free();
                    read_page(&*engine, &file, free, address).await.into_parts()
                };
                let info = info.unwrap_or_else(|e| panic!("{name}: page {i}: {e}"));
                let h = info.header;
                let len = payload_len(address);
                assert_eq!((h.magic, h.version, h.flags), (page::MAGIC, page::VERSION, 0), "{name}");
                assert_eq!((h.address, h.sequence, h.payload_len as usize), (address, 40 - i, len), "{name}");
                assert_eq!(buf.len(), page_size);
                assert_eq!(&buf[info.payload()], &payload(address, 40 - i, len)[..], "{name} page {i}");
                assert_eq!(buf[..], sealed(page_size, address, 40 - i)[..], "{name} page {i}");
            }
            common::assert_pool_full(&engine);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_page_names_each_failure() {
    const PS: usize = 8192;
    const P: u64 = PS as u64;
    let dir = common::tempdir();
    for (name, engine) in common::engines(&config(PS)) {
        let path = dir.path().join(name);
        let file = open(&engine, &dir, name, false).await;
        // 0: torn (a sector in the middle of its first write missing); 1: never written (a hole in
        // the file); 2: the page for address 5P, written at 2P; 3: one bit flipped; 4: intact.
        write(&engine, &file, &torn(PS, 0), 0).await;
        write(&engine, &file, &sealed(PS, 5 * P, 1), 2 * P).await;
        write_page(&engine, &file, PS, 3 * P, 1).await;
        write_page(&engine, &file, PS, 4 * P, 1).await;
        flip_bit(&path, 3 * P + 1000);

        let (e, _) = page_error(&engine, &file, PS, 0).await;
        assert_eq!(e, PageError::Torn { address: 0 }, "{name}");
        let (e, _) = page_error(&engine, &file, PS, P).await;
        assert_eq!(e, PageError::NeverWritten { address: P }, "{name}");
        let (e, _) = page_error(&engine, &file, PS, 2 * P).await;
        assert_eq!(e, PageError::Misdirected { expected: 2 * P, found: 5 * P }, "{name}");
        let (e, _) = page_error(&engine, &file, PS, 3 * P).await;
        assert!(matches!(e, PageError::Checksum { address, .. } if address == 3 * P), "{name}: {e:?}");
        // Past the end of the file: never written, not UnexpectedEof; the buffer reads as zeros.
        let (e, buf) = page_error(&engine, &file, PS, 9 * P).await;
        assert_eq!(e, PageError::NeverWritten { address: 9 * P }, "{name}");
        assert!(buf.iter().all(|&b| b == 0), "{name}");
        drop(buf);
        // The file ends inside a page whose first sector was written: torn, the rest zeros.
        file.std().set_len(4 * P + 2048).unwrap();
        let (e, buf) = page_error(&engine, &file, PS, 4 * P).await;
        assert_eq!(e, PageError::Torn { address: 4 * P }, "{name}");
        assert_eq!(buf[..2048], sealed(PS, 4 * P, 1)[..2048], "{name}");
        assert!(buf[2048..].iter().all(|&b| b == 0), "{name}");
        drop(buf);
        common::assert_pool_full(&engine);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_page_refuses_misaligned_requests_and_gives_the_buffer_back() {
    let dir = common::tempdir();
    for (name, engine) in common::engines(&config(8192)) {
        let file = open(&engine, &dir, name, false).await;
        write_page(&engine, &file, 8192, 0, 1).await;
        let mut buf = page_buf(&engine, 8192).await;
        buf[..4].copy_from_slice(b"keep");
        let (result, back) = read_page(&*engine, &file, buf, 4096).await.into_parts();
        assert!(
            matches!(result, Err(Error::Unaligned { what: "page address", value: 4096, page_size: 8192 })),
            "{name}: {result:?}"
        );
        assert_eq!((back.len(), &back[..4]), (8192, &b"keep"[..]), "nothing was read");
        for len in [0, 5000] {
            let mut buf = back_to(&engine, len).await;
            buf.set_len(len).unwrap();
            let (result, back) = read_page(&*engine, &file, buf, 0).await.into_parts();
            assert!(
                matches!(result, Err(Error::Unaligned { value, page_size: 4096, .. }) if value == len as u64),
                "{name}: {result:?}"
            );
            assert_eq!(back.len(), len);
        }
        drop(back);
        common::assert_pool_full(&engine);
    }
}

async fn back_to(engine: &SharedIoEngine, len: usize) -> Buf<ferrite_io::Free> {
    let mut buf = engine.pool().acquire().await;
    buf.set_len(len).unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_a_clean_log() {
    let dir = common::tempdir();
    for page_size in [8192usize, 16384] {
        let p = page_size as u64;
        for (name, engine) in common::engines(&config(page_size)) {
            let file = open(&engine, &dir, &format!("{name}-{page_size}"), false).await;
            // Sequences out of address order (a flusher numbers pages as it submits them).
            let sequences = [3, 1, 2, 9, 4, 5, 20, 6, 7, 8];
            for i in 0..N {
                write_page(&engine, &file, page_size, i * p, sequences[i as usize]).await;
            }
            let expected = Recovery {
                durable_until: N * p,
                pages: N,
                last_sequence: Some(20),
                max_sequence_seen: Some(20),
                holes: vec![],
                torn_tail: None,
                end: N * p,
                scanned_until: N * p,
            };
            for acknowledged in [0, p, N * p] {
                let recovery = recover(&*engine, &file, page_size, acknowledged).await;
                assert_eq!(recovery.unwrap(), expected, "{name} acknowledged {acknowledged}");
            }
            // Acknowledged beyond the end of the file: that page was never written.
            let (address, page) = corrupt_at(recover(&*engine, &file, page_size, (N + 1) * p).await);
            assert_eq!((address, page), (N * p, PageError::NeverWritten { address: N * p }), "{name}");
            common::assert_pool_full(&engine);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_an_empty_log() {
    let dir = common::tempdir();
    for (name, engine) in common::engines(&config(8192)) {
        let file = open(&engine, &dir, name, false).await;
        let recovery = recover(&*engine, &file, 8192, 0).await.unwrap();
        assert_eq!(
            recovery,
            Recovery {
                durable_until: 0,
                pages: 0,
                last_sequence: None,
                max_sequence_seen: None,
                holes: vec![],
                torn_tail: None,
                end: 0,
                scanned_until: 0
            },
            "{name}"
        );
        let (address, page) = corrupt_at(recover(&*engine, &file, 8192, 8192).await);
        assert_eq!((address, page), (0, PageError::NeverWritten { address: 0 }), "{name}");
        // Only zeros (preallocated space): nothing intact, nothing torn, no holes.
        file.std().set_len(3 * 8192).unwrap();
        let recovery = recover(&*engine, &file, 8192, 0).await.unwrap();
        assert_eq!((recovery.durable_until, recovery.end, recovery.scanned_until), (0, 0, 3 * 8192), "{name}");
        assert_eq!((recovery.holes.len(), recovery.torn_tail), (0, None), "{name}");
        common::assert_pool_full(&engine);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_reports_a_torn_tail() {
    let dir = common::tempdir();
    for page_size in [8192usize, 16384] {
        let p = page_size as u64;
        for (name, engine) in common::engines(&config(page_size)) {
            let file = open(&engine, &dir, &format!("{name}-{page_size}"), false).await;
            for i in 0..N - 1 {
                write_page(&engine, &file, page_size, i * p, i + 1).await;
            }
            write(&engine, &file, &torn(page_size, (N - 1) * p), (N - 1) * p).await;
            let expected = Recovery {
                durable_until: (N - 1) * p,
                pages: N - 1,
                last_sequence: Some(N - 1),
                max_sequence_seen: Some(100),
                holes: vec![],
                torn_tail: Some((N - 1) * p),
                end: (N - 1) * p,
                scanned_until: N * p,
            };
            assert_eq!(recover(&*engine, &file, page_size, (N - 1) * p).await.unwrap(), expected, "{name}");
            // Never-written pages after the torn one (preallocated space) change nothing.
            file.std().set_len((N + 3) * p).unwrap();
            let recovery = recover(&*engine, &file, page_size, 0).await.unwrap();
            assert_eq!(recovery, Recovery { scanned_until: (N + 3) * p, ..expected }, "{name}");
            // Had the torn page been acknowledged, the log would be corrupt there.
            let (address, page) = corrupt_at(recover(&*engine, &file, page_size, N * p).await);
            assert_eq!((address, page), ((N - 1) * p, PageError::Torn { address: (N - 1) * p }), "{name}");
            common::assert_pool_full(&engine);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_reports_holes_and_checks_acknowledged() {
    const K: u64 = 4;
    let dir = common::tempdir();
    for page_size in [8192usize, 16384] {
        let p = page_size as u64;
        for (name, engine) in common::engines(&config(page_size)) {
            // Page K never written, K+1.. intact.
            let file = open(&engine, &dir, &format!("{name}-{page_size}-hole"), false).await;
            for i in (0..N).filter(|&i| i != K) {
                write_page(&engine, &file, page_size, i * p, i + 1).await;
            }
            let expected = Recovery {
                durable_until: K * p,
                pages: K,
                last_sequence: Some(N),
                max_sequence_seen: Some(N),
                holes: vec![Hole { address: K * p, pages: 1, kind: HoleKind::NeverWritten }],
                torn_tail: None,
                end: N * p,
                scanned_until: N * p,
            };
            for acknowledged in [0, K * p] {
                let recovery = recover(&*engine, &file, page_size, acknowledged).await;
                assert_eq!(recovery.unwrap(), expected, "{name} acknowledged {acknowledged}");
            }
            for acknowledged in [(K + 1) * p, N * p] {
                let (address, page) = corrupt_at(recover(&*engine, &file, page_size, acknowledged).await);
                assert_eq!((address, page), (K * p, PageError::NeverWritten { address: K * p }), "{name}");
            }

            // The same with page K torn (a first write with a sector missing), and a second hole (K+2, never written).
            let file = open(&engine, &dir, &format!("{name}-{page_size}-torn"), false).await;
            for i in (0..N).filter(|&i| i != K && i != K + 2) {
                write_page(&engine, &file, page_size, i * p, i + 1).await;
            }
            write(&engine, &file, &torn(page_size, K * p), K * p).await;
            let recovery = recover(&*engine, &file, page_size, K * p).await.unwrap();
            let holes = vec![
                Hole { address: K * p, pages: 1, kind: HoleKind::Torn },
                Hole { address: (K + 2) * p, pages: 1, kind: HoleKind::NeverWritten },
            ];
            assert_eq!(recovery, Recovery { holes, max_sequence_seen: Some(100), ..expected.clone() }, "{name}");
            assert_eq!(recovery.holes[0].error(), PageError::Torn { address: K * p });
            let (address, page) = corrupt_at(recover(&*engine, &file, page_size, N * p).await);
            assert_eq!((address, page), (K * p, PageError::Torn { address: K * p }), "{name}");
            common::assert_pool_full(&engine);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_reports_every_page_a_flusher_had_in_flight() {
    const PS: usize = 8192;
    const P: u64 = PS as u64;
    let dir = common::tempdir();
    for (name, engine) in common::engines(&config(PS)) {
        let file = open(&engine, &dir, name, false).await;
        // 0..=5 intact (sequences 1..=6; 0 is reserved); 6 torn, 7 never written, 8 torn, 9 never
        // written (all four in flight).
        for i in 0..6 {
            write_page(&engine, &file, PS, i * P, i + 1).await;
        }
        write(&engine, &file, &torn(PS, 6 * P), 6 * P).await;
        let mut header_only = sealed(PS, 8 * P, 9);
        header_only[2048..].fill(0);
        write(&engine, &file, &header_only, 8 * P).await;
        file.std().set_len(10 * P).unwrap();
        let recovery = recover(&*engine, &file, PS, 6 * P).await.unwrap();
        assert_eq!(
            recovery,
            Recovery {
                durable_until: 6 * P,
                pages: 6,
                last_sequence: Some(6),
                max_sequence_seen: Some(100),
                holes: vec![
                    Hole { address: 6 * P, pages: 1, kind: HoleKind::Torn },
                    Hole { address: 7 * P, pages: 1, kind: HoleKind::NeverWritten },
                ],
                torn_tail: Some(8 * P),
                end: 6 * P,
                scanned_until: 10 * P,
            },
            "{name}"
        );
        // A file that ends inside its last page (only the first sector reached the disk).
        file.std().set_len(8 * P + 2048).unwrap();
        let recovery = recover(&*engine, &file, PS, 0).await.unwrap();
        assert_eq!((recovery.torn_tail, recovery.scanned_until), (Some(8 * P), 9 * P), "{name}");
        common::assert_pool_full(&engine);
    }
}

/// Consecutive pages of one kind are one [`Hole`]; the torn tail is the last page of the last
/// torn run, and the rest of that run stays a hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_reports_runs_of_holes() {
    const PS: usize = 8192;
    const P: u64 = PS as u64;
    let dir = common::tempdir();
    for (name, engine) in common::engines(&config(PS)) {
        let file = open(&engine, &dir, name, false).await;
        // 0, 1 intact; 2, 3 torn; 4 never written; 5 intact; 6, 7 torn.
        for i in [0, 1, 5] {
            write_page(&engine, &file, PS, i * P, i + 1).await;
        }
        for i in [2, 3, 6, 7] {
            write(&engine, &file, &torn(PS, i * P), i * P).await;
        }
        let recovery = recover(&*engine, &file, PS, 2 * P).await.unwrap();
        assert_eq!(
            recovery,
            Recovery {
                durable_until: 2 * P,
                pages: 2,
                last_sequence: Some(6),
                max_sequence_seen: Some(100),
                holes: vec![
                    Hole { address: 2 * P, pages: 2, kind: HoleKind::Torn },
                    Hole { address: 4 * P, pages: 1, kind: HoleKind::NeverWritten },
                    Hole { address: 6 * P, pages: 1, kind: HoleKind::Torn },
                ],
                torn_tail: Some(7 * P),
                end: 6 * P,
                scanned_until: 8 * P,
            },
            "{name}"
        );
        let (address, page) = corrupt_at(recover(&*engine, &file, PS, 3 * P).await);
        assert_eq!((address, page), (2 * P, PageError::Torn { address: 2 * P }), "{name}");
        common::assert_pool_full(&engine);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_fails_on_corruption_anywhere() {
    const PS: usize = 16384;
    const P: u64 = PS as u64;
    let dir = common::tempdir();
    for (name, engine) in common::engines(&config(PS)) {
        let log = |kind: &str| format!("{name}-{kind}");
        let write_log = async |file: &ferrite_io::File, skip: Option<u64>| {
            for i in (0..N).filter(|&i| Some(i) != skip) {
                write_page(&engine, file, PS, i * P, i + 1).await;
            }
        };
        // One bit flipped in the middle of the log.
        let file = open(&engine, &dir, &log("flip"), false).await;
        write_log(&file, None).await;
        flip_bit(&dir.path().join(log("flip")), 5 * P + 9000);
        let (address, page) = corrupt_at(recover(&*engine, &file, PS, 0).await);
        assert_eq!(address, 5 * P, "{name}");
        assert!(matches!(page, PageError::Checksum { address, .. } if address == 5 * P), "{name}: {page:?}");
        // Also beyond a hole, where only crash artifacts are allowed.
        let file = open(&engine, &dir, &log("flip-after-hole"), false).await;
        write_log(&file, Some(2)).await;
        flip_bit(&dir.path().join(log("flip-after-hole")), 7 * P + 40);
        let (address, page) = corrupt_at(recover(&*engine, &file, PS, 0).await);
        assert_eq!(address, 7 * P, "{name}: {page:?}");
        // A misdirected page.
        let file = open(&engine, &dir, &log("misdirected"), false).await;
        write_log(&file, None).await;
        write(&engine, &file, &sealed(PS, 2 * P, 77), 6 * P).await;
        let (address, page) = corrupt_at(recover(&*engine, &file, PS, 0).await);
        assert_eq!((address, page), (6 * P, PageError::Misdirected { expected: 6 * P, found: 2 * P }), "{name}");
        // An invalid header: an unknown version (the header's own checksum catches it first).
        let file = open(&engine, &dir, &log("version"), false).await;
        write_log(&file, None).await;
        let mut future = sealed(PS, 3 * P, 3);
        future[4..6].copy_from_slice(&3u16.to_le_bytes());
        write(&engine, &file, &future, 3 * P).await;
        let (address, page) = corrupt_at(recover(&*engine, &file, PS, 0).await);
        assert!(matches!(page, PageError::Invalid { .. } | PageError::Checksum { .. }), "{name}: {page:?}");
        assert_eq!(address, 3 * P, "{name}");
        common::assert_pool_full(&engine);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_and_read_on_o_direct() {
    const PS: usize = 8192;
    const P: u64 = PS as u64;
    let dir = common::tempdir();
    for (name, engine) in common::engines(&config(PS)) {
        let file = open(&engine, &dir, &format!("{name}.direct"), true).await;
        assert!(file.is_direct());
        for i in (0..N - 1).filter(|&i| i != 3) {
            write_page(&engine, &file, PS, i * P, i + 1).await;
        }
        write(&engine, &file, &torn(PS, (N - 1) * P), (N - 1) * P).await;
        engine.sync_data(&file).await.unwrap();
        let recovery = recover(&*engine, &file, PS, 3 * P).await.unwrap();
        assert_eq!(
            recovery,
            Recovery {
                durable_until: 3 * P,
                pages: 3,
                last_sequence: Some(N - 1),
                max_sequence_seen: Some(100),
                holes: vec![Hole { address: 3 * P, pages: 1, kind: HoleKind::NeverWritten }],
                torn_tail: Some((N - 1) * P),
                end: (N - 1) * P,
                scanned_until: N * P,
            },
            "{name}"
        );
        let (address, _) = corrupt_at(recover(&*engine, &file, PS, 4 * P).await);
        assert_eq!(address, 3 * P, "{name}");
        let (info, buf) = read_page(&*engine, &file, page_buf(&engine, PS).await, 2 * P).await.into_parts();
        assert_eq!(info.unwrap().header.sequence, 3, "{name}");
        assert_eq!(buf[..], sealed(PS, 2 * P, 3)[..], "{name}");
        drop(buf);
        let (e, _) = page_error(&engine, &file, PS, (N - 1) * P).await;
        assert_eq!(e, PageError::Torn { address: (N - 1) * P }, "{name}");
        let (e, _) = page_error(&engine, &file, PS, (N + 5) * P).await;
        assert_eq!(e, PageError::NeverWritten { address: (N + 5) * P }, "{name}");

        // The documented resume state: truncated to `durable_until` inside an open tail page, so
        // the file ends inside a sector. The short read there used to be continued at a
        // misaligned offset, which O_DIRECT refuses: recovery failed on the log it had made.
        let file = open(&engine, &dir, &format!("{name}.direct-open"), true).await;
        write_page(&engine, &file, PS, 0, 1).await;
        let mut tail = vec![0u8; PS];
        tail[PAYLOAD_START..PAYLOAD_START + 580].copy_from_slice(&payload(P, 2, 580));
        page::seal(&mut tail, P, 2, 580, 0, true).unwrap();
        write(&engine, &file, &tail, P).await;
        let durable = P + (PAYLOAD_START + 580) as u64;
        file.std().set_len(durable).unwrap();
        let recovery = recover(&*engine, &file, PS, durable).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((recovery.durable_until, recovery.pages, recovery.scanned_until), (durable, 1, 2 * P), "{name}");
        let (info, buf) = read_page(&*engine, &file, page_buf(&engine, PS).await, P).await.into_parts();
        let info = info.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((info.payload_len, info.is_open()), (580, true), "{name}");
        assert_eq!(buf[info.payload()], payload(P, 2, 580)[..], "{name}");
        drop(buf);
        common::assert_pool_full(&engine);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_checks_its_arguments() {
    let dir = common::tempdir();
    for (name, engine) in common::engines(&config(8192)) {
        let file = open(&engine, &dir, name, false).await;
        write_page(&engine, &file, 8192, 0, 1).await;
        for page_size in [0, 5000] {
            let result = recover(&*engine, &file, page_size, 0).await;
            assert!(
                matches!(result, Err(Error::Unaligned { value, page_size: 4096, .. }) if value == page_size as u64),
                "{name}: {result:?}"
            );
        }
        // Pages larger than the pool's buffers.
        let result = recover(&*engine, &file, 16384, 0).await;
        assert!(matches!(result, Err(Error::Length { len: 16384, capacity: 8192 })), "{name}: {result:?}");
        // Pages smaller than the pool's buffers are accepted; reading an 8 KiB-page log as 4 KiB
        // pages is a wrong page size, not a crash: the header names the size it was written with.
        let result = recover(&*engine, &file, 4096, 0).await;
        assert!(
            matches!(result, Err(Error::Corrupt { address: 0, page: PageError::Invalid { .. } })),
            "{name}: {result:?}"
        );
        common::assert_pool_full(&engine);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_makes_do_with_one_free_buffer() {
    const PS: usize = 8192;
    const P: u64 = PS as u64;
    let dir = common::tempdir();
    for (name, engine) in common::engines(&config(PS)) {
        let file = open(&engine, &dir, name, false).await;
        for i in 0..N {
            write_page(&engine, &file, PS, i * P, i + 1).await;
        }
        // Everyone else holds all buffers but one: the scan runs one page at a time.
        let mut held = Vec::new();
        while engine.pool().available() > 1 {
            held.push(engine.pool().try_acquire().unwrap());
        }
        let recovery = recover(&*engine, &file, PS, N * P).await.unwrap();
        assert_eq!((recovery.durable_until, recovery.pages), (N * P, N), "{name}");
        assert_eq!(engine.pool().available(), 1, "{name}: the scan's buffer came back");
        drop(held);
        common::assert_pool_full(&engine);
    }
}

/// Defect 4: `recover` read every page of a sparse log inline (page-cache hits and holes
/// complete inside the submit) and never gave the runtime back. Now it skips unwritten ranges
/// (`SEEK_DATA`) and spends tokio's cooperative budget, on a current-thread runtime too.
/// Linux: `SEEK_DATA` is how holes are skipped; elsewhere recovery reads them.
#[cfg(target_os = "linux")]
#[test]
fn recover_skips_holes_yields_and_can_be_cancelled() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};
    const PS: usize = 8192;
    const P: u64 = PS as u64;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = common::tempdir();
        for (name, engine) in common::engines(&config(PS)) {
            // A 1 GiB sparse log: four pages at the front, one at the end.
            let file = open(&engine, &dir, &format!("{name}-sparse"), false).await;
            for i in 0..4 {
                write_page(&engine, &file, PS, i * P, i + 1).await;
            }
            let last = (1u64 << 30) - P;
            write_page(&engine, &file, PS, last, 9).await;
            let began = Instant::now();
            let found = tokio::time::timeout(Duration::from_secs(2), recover(&*engine, &file, PS, 4 * P)).await;
            let elapsed = began.elapsed();
            let found = found.unwrap_or_else(|_| panic!("{name}: recover of a sparse log timed out")).unwrap();
            assert_eq!((found.durable_until, found.end), (4 * P, last + P), "{name}");
            let gap = Hole { address: 4 * P, pages: last / P - 4, kind: HoleKind::NeverWritten };
            assert_eq!(found.holes, [gap], "{name}: the skipped pages are one run");
            assert!(elapsed < Duration::from_millis(1500), "{name}: {elapsed:?} for a sparse log");

            // A 1 TiB sparse log (134 million pages of 8 KiB): one hole, in well under a second.
            // Listing a hole per page took seconds and 2 GiB for the list alone.
            let file = open(&engine, &dir, &format!("{name}-terabyte"), false).await;
            write_page(&engine, &file, PS, 0, 1).await;
            let last = (1u64 << 40) - P;
            write_page(&engine, &file, PS, last, 2).await;
            let began = Instant::now();
            let found = tokio::time::timeout(Duration::from_secs(2), recover(&*engine, &file, PS, P)).await;
            let elapsed = began.elapsed();
            let found = found.unwrap_or_else(|_| panic!("{name}: recover of a 1 TiB sparse log timed out")).unwrap();
            let gap = Hole { address: P, pages: last / P - 1, kind: HoleKind::NeverWritten };
            assert_eq!((found.durable_until, found.end, &found.holes[..]), (P, last + P, &[gap][..]), "{name}");
            assert!(elapsed < Duration::from_millis(500), "{name}: {elapsed:?} for a 1 TiB sparse log");
            file.std().set_len(0).unwrap();

            // 4 MiB of written pages: the scan reads them all, and lets other tasks run meanwhile.
            let path = dir.path().join(format!("{name}-dense"));
            let bytes: Vec<u8> = (0..512u64).flat_map(|i| sealed(PS, i * P, i + 1)).collect();
            std::fs::write(&path, &bytes).unwrap();
            let file = engine.open(&path, &OpenOptions::new()).await.unwrap();
            let ticks = Arc::new(AtomicU64::new(0));
            let ticker = tokio::spawn({
                let ticks = ticks.clone();
                async move {
                    loop {
                        ticks.fetch_add(1, Ordering::Relaxed);
                        tokio::task::yield_now().await;
                    }
                }
            });
            let found = recover(&*engine, &file, PS, 512 * P).await.unwrap();
            let during = ticks.load(Ordering::Relaxed);
            ticker.abort();
            assert_eq!(found.pages, 512, "{name}");
            assert!(during > 0, "{name}: no other task ran during the scan");
            // And a timeout cancels it promptly.
            let began = Instant::now();
            let cut = tokio::time::timeout(Duration::from_millis(5), recover(&*engine, &file, PS, 0)).await;
            assert!(cut.is_err() || began.elapsed() < Duration::from_millis(100), "{name}: {:?}", began.elapsed());
            assert!(
                began.elapsed() < Duration::from_millis(500),
                "{name}: the timeout fired after {:?}",
                began.elapsed()
            );
            // The cancelled scan's reads come back to the pool as they complete.
            let deadline = Instant::now() + Duration::from_secs(10);
            while engine.pool().available() != engine.pool().capacity() {
                assert!(Instant::now() < deadline, "{name}: buffers never came back: {:?}", engine.pool());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
}
