//! Drop-safe cancellation: thousands of operations whose futures are dropped at random points.
//! A buffer must come back to the pool only after the kernel (or the blocking thread) is done
//! with it, so a buffer handed out again is never written into by an abandoned read.

mod common;

use common::Rng;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use ferrite_io::{Batch, EngineChoice, IoEngine, IoEngineConfig, OpenOptions};

const FILE_SIZE: u64 = 16 << 20;
const OLD: u8 = 0xA5;
const NEW: u8 = 0x5A;

/// Polls `future` up to `polls` times with a no-op waker, then drops it wherever it is.
fn poll_then_drop<F: Future>(future: F, polls: u64) -> bool {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..polls {
        if future.as_mut().poll(&mut cx).is_ready() {
            return true;
        }
    }
    false
}

/// Hands out every free buffer again, stamped, and checks the stamps a moment later: an
/// abandoned read that still landed in one of them would have overwritten it with `OLD`.
async fn stamp_and_check_free_buffers(engine: &ferrite_io::SharedIoEngine, rng: &mut Rng, name: &str) {
    let mut held = Vec::new();
    while let Some(mut buf) = engine.pool().try_acquire() {
        buf.fill(NEW);
        held.push(buf);
    }
    tokio::task::yield_now().await;
    if rng.below(8) == 0 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    for buf in &held {
        assert!(buf.iter().all(|&b| b == NEW), "{name}: a reused buffer was written into");
    }
}

/// Every buffer comes back once the engine has drained, and every ring slot is freed.
async fn assert_everything_comes_back(engine: &ferrite_io::SharedIoEngine, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.pool().available() != engine.pool().capacity() {
        assert!(Instant::now() < deadline, "{name}: buffers never came back: {:?}", engine.pool());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    #[cfg(all(feature = "io-uring", target_os = "linux"))]
    if let ferrite_io::Engine::Uring(uring) = &**engine {
        assert_eq!(uring.in_flight(), 0, "{name}: every slot is freed at its completion");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_futures_never_free_memory_the_kernel_writes() {
    let dir = common::tempdir();
    let path = dir.path().join("old");
    std::fs::write(&path, vec![OLD; FILE_SIZE as usize]).unwrap();
    let config = IoEngineConfig { registered_buffers: 64, buffer_size: 4096, ..common::config(EngineChoice::Auto) };
    // Futures dropped after submission on an io_uring engine: the kernel still owned their buffers.
    let mut ring_drops = 0u64;
    for (name, engine) in common::engines(&config) {
        // O_DIRECT reads go to the device, so they are still in flight when their future drops.
        let file = engine.open(&path, &OpenOptions::new().direct(true)).await.unwrap();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut dropped, mut finished, mut in_flight) = (0, 0, 0);
        // `.ci/run` raises the rounds for the AddressSanitizer run.
        let rounds = std::env::var("FERRITE_CANCEL_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(500);
        for _round in 0..rounds {
            for _ in 0..8 {
                let mut buf = engine.acquire().await;
                buf.fill(0);
                let offset = rng.below(FILE_SIZE / 4096) * 4096;
                let polls = rng.below(3); // 0: never submitted, 1: submitted, 2: maybe reaped
                if rng.below(4) == 0 {
                    let mut page = engine.acquire().await;
                    page.fill(OLD);
                    if poll_then_drop(engine.write_at(&file, page, offset), polls) {
                        finished += 1;
                    } else {
                        dropped += 1;
                        in_flight += u64::from(polls > 0);
                    }
                }
                if poll_then_drop(engine.read_fixed_at(&file, buf, offset), polls) {
                    finished += 1;
                } else {
                    dropped += 1;
                    in_flight += u64::from(polls > 0);
                }
            }
            stamp_and_check_free_buffers(&engine, &mut rng, name).await;
        }
        assert!(dropped > 2000, "{name}: only {dropped} futures were dropped in flight");
        assert_everything_comes_back(&engine, name).await;
        if name.starts_with("uring") {
            ring_drops += in_flight;
        }
        eprintln!("{name}: {dropped} dropped ({in_flight} after submission), {finished} finished");
    }
    eprintln!("dropped after submission on the ring: {ring_drops}");
    // `.ci/run` asks for the 100,000 under AddressSanitizer.
    if let Some(min) = std::env::var("FERRITE_CANCEL_MIN_RING_DROPS").ok().and_then(|m| m.parse::<u64>().ok()) {
        assert!(ring_drops >= min, "only {ring_drops} futures dropped in flight on the ring, fewer than {min}");
    }
}

/// The same for batches: a `submit_batch` future dropped before its submit, after it, or after
/// a later poll, with its reads on the device. While a submit runs, each entry's buffer stays in
/// its batch slot and the ring adopts only those still in flight; a drop at any point must
/// leave every buffer the kernel may still write into with the ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_batch_futures_never_free_memory_the_kernel_writes() {
    let dir = common::tempdir();
    let path = dir.path().join("old");
    std::fs::write(&path, vec![OLD; FILE_SIZE as usize]).unwrap();
    let config = IoEngineConfig { registered_buffers: 64, buffer_size: 4096, ..common::config(EngineChoice::Auto) };
    for (name, engine) in common::engines(&config) {
        let file = engine.open(&path, &OpenOptions::new().direct(true)).await.unwrap();
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let (mut dropped, mut in_flight, mut finished) = (0u64, 0u64, 0u64);
        // `.ci/run` raises the rounds for the AddressSanitizer run.
        let rounds = std::env::var("FERRITE_CANCEL_BATCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(300);
        for _round in 0..rounds {
            let mut batch = Batch::new();
            for _ in 0..1 + rng.below(8) {
                let mut buf = engine.acquire().await;
                buf.fill(0);
                batch.read_at(&file, buf, rng.below(FILE_SIZE / 4096) * 4096);
            }
            let polls = rng.below(3); // 0: never submitted, 1: submitted, 2: maybe reaped
            if poll_then_drop(engine.submit_batch(&mut batch), polls) {
                finished += 1;
            } else {
                dropped += 1;
                in_flight += u64::from(polls > 0);
            }
            // A batch never submitted still holds its buffers: they go back now.
            drop(batch);
            stamp_and_check_free_buffers(&engine, &mut rng, name).await;
        }
        // On the ring the kernel still holds the reads of most batches dropped after a poll;
        // the tokio engine's blocking task often finishes first (under wine, most of the time).
        if name.starts_with("uring") {
            assert!(in_flight > rounds / 5, "{name}: only {in_flight} batches were dropped in flight");
        }
        assert_everything_comes_back(&engine, name).await;
        eprintln!("{name}: {dropped} batches dropped ({in_flight} after submission), {finished} finished");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_engine_drains_in_flight_ops() {
    let dir = common::tempdir();
    let path = dir.path().join("drain");
    std::fs::write(&path, vec![OLD; 4 << 20]).unwrap();
    for (name, engine) in common::engines(&common::config(EngineChoice::Auto)) {
        let pool = engine.pool().clone();
        let file = engine.open(&path, &OpenOptions::new().direct(true)).await.unwrap();
        for i in 0..pool.capacity() as u64 {
            let buf = engine.acquire().await;
            poll_then_drop(engine.read_fixed_at(&file, buf, i * 8192), 1);
        }
        drop(engine);
        // The io_uring engine waits for every completion in Drop; the tokio engine's blocking
        // tasks finish on their own. Either way every buffer returns.
        let deadline = Instant::now() + Duration::from_secs(20);
        while pool.available() != pool.capacity() {
            assert!(Instant::now() < deadline, "{name}: {pool:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// `len` zeroed bytes of caller memory at a 4096-aligned address, as `O_DIRECT` needs: a
/// `BytesMut` advanced to the boundary (the allocation stays the `BytesMut`'s own).
fn aligned(len: usize) -> bytes::BytesMut {
    let mut bytes = bytes::BytesMut::zeroed(len + 4096);
    let skip = bytes.as_ptr().align_offset(4096);
    bytes::Buf::advance(&mut bytes, skip);
    bytes.truncate(len);
    bytes
}

/// As `dropped_futures_never_free_memory_the_kernel_writes`, for caller memory: a `Buf` made
/// from a `BytesMut` whose read future is dropped in flight keeps its memory alive until the
/// read completes. Memory freed early would be handed out again by the allocator (same size,
/// same thread) and the abandoned read would overwrite the stamp there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_futures_never_free_caller_memory_the_kernel_writes() {
    let dir = common::tempdir();
    let path = dir.path().join("old");
    std::fs::write(&path, vec![OLD; FILE_SIZE as usize]).unwrap();
    for (name, engine) in common::engines(&common::config(EngineChoice::Auto)) {
        let file = engine.open(&path, &OpenOptions::new().direct(true)).await.unwrap();
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut dropped = 0;
        for _round in 0..300 {
            for _ in 0..8 {
                let buf = ferrite_io::Buf::from(aligned(4096));
                let offset = rng.below(FILE_SIZE / 4096) * 4096;
                if !poll_then_drop(engine.read_at(&file, buf, offset), 1 + rng.below(2)) {
                    dropped += 1;
                }
            }
            let mut held = Vec::new();
            for _ in 0..16 {
                let mut bytes = bytes::BytesMut::zeroed(8192);
                bytes.fill(NEW);
                held.push(bytes);
            }
            tokio::task::yield_now().await;
            if rng.below(8) == 0 {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            for bytes in &held {
                assert!(bytes.iter().all(|&b| b == NEW), "{name}: freed caller memory was written into");
            }
        }
        // Under wine the blocking pool is slower to pick work up: fewer drops land in flight.
        let enough = if cfg!(windows) { 100 } else { 1000 };
        assert!(dropped > enough, "{name}: only {dropped} futures were dropped in flight");
        // The engine lets go of every abandoned buffer once its read completes.
        #[cfg(all(feature = "io-uring", target_os = "linux"))]
        if let ferrite_io::Engine::Uring(uring) = &*engine {
            let deadline = Instant::now() + Duration::from_secs(20);
            while uring.in_flight() != 0 {
                assert!(Instant::now() < deadline, "{name}: {} operations never completed", uring.in_flight());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        eprintln!("{name}: {dropped} dropped");
    }
}

/// `in_flight()` reads 0 only once the buffers of abandoned operations are back in the pool:
/// a caller that waits for it (a shutdown, a test) then finds the pool full. The completions
/// are reaped on another thread while this one looks, again and again.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_reaches_zero_only_with_every_abandoned_buffer_back() {
    let dir = common::tempdir();
    let path = dir.path().join("look");
    std::fs::write(&path, vec![OLD; 4 << 20]).unwrap();
    let config =
        IoEngineConfig { engine: EngineChoice::Uring, nowait_fast_path: false, ..common::config(EngineChoice::Uring) };
    let engine = ferrite_io::UringEngine::new(&config).unwrap();
    let file = engine.open(&path, &OpenOptions::new().direct(true)).await.unwrap();
    let pool = engine.pool().clone();
    let (mut looks, mut rng) = (0u64, Rng(7));
    for round in 0..2000 {
        for _ in 0..4 {
            let buf = engine.acquire().await;
            poll_then_drop(engine.read_fixed_at(&file, buf, rng.below(1024) * 4096), 1);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let in_flight = engine.in_flight();
            let available = pool.available();
            looks += 1;
            if in_flight == 0 {
                assert_eq!(available, pool.capacity(), "round {round}: in_flight() read 0 with a buffer missing");
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: {in_flight} never completed");
            std::hint::spin_loop();
        }
    }
    eprintln!("{looks} looks at in_flight()");
}
