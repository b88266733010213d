//! A paged reader with several reads in flight: the first thing a storage engine's buffer
//! manager does with a data file.
//!
//! Writes a 16 MiB file of 4 KiB pages (each page stamped with its number), then reads 4000
//! random pages with up to `DEPTH` reads in flight on one engine, into pool buffers narrowed to
//! one page with `slice`, and checks every page. Run: `cargo run --example paged_reader`.

use std::sync::Arc;
use std::time::Instant;

use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions, Registered};
use tokio::task::JoinSet;

const PAGE: usize = 4096;
const PAGES: u64 = 4096;
const READS: u64 = 4000;
const DEPTH: usize = 16;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // 64 KiB slots, as many as reads in flight.
    let config = IoEngineConfig { registered_buffers: DEPTH as u32, ..IoEngineConfig::default() };
    let engine = ferrite_io::create_engine(config)?;
    println!("engine: {}", engine.selection());

    // Lay the file out: 16 pages per 64 KiB write, each page filled with its number's low byte
    // and starting with the number itself.
    let path = dir.path().join("pages");
    let file = engine.open(&path, &OpenOptions::new().create(true).truncate(true)).await?;
    let per_write = (engine.pool().buffer_size() / PAGE) as u64;
    for first in (0..PAGES).step_by(per_write as usize) {
        let mut chunk = engine.acquire().await;
        for (i, page) in chunk.chunks_mut(PAGE).enumerate() {
            stamp(page, first + i as u64);
        }
        engine.write_all_at(&file, chunk, first * PAGE as u64).await.0?;
    }
    engine.sync_data(&file).await?;

    // Read random pages, DEPTH at a time. Each task owns its buffer for the read and gives it
    // back by dropping it (the pool bounds how many are out).
    let started = Instant::now();
    let file = Arc::new(file);
    let mut reads = JoinSet::new();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..READS {
        if reads.len() == DEPTH {
            reads.join_next().await.expect("a read in flight").expect("read task")?;
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let page = state % PAGES;
        let (engine, file) = (engine.clone(), file.clone());
        reads.spawn(async move {
            let buf: Buf<Registered> = engine.acquire().await.slice(..PAGE);
            let (result, buf) = engine.read_exact_at(&file, buf, page * PAGE as u64).await.into_parts();
            result?;
            check(&buf, page);
            Ok::<(), ferrite_io::Error>(())
        });
    }
    while let Some(read) = reads.join_next().await {
        read.expect("read task")?;
    }
    let elapsed = started.elapsed();
    println!(
        "read {READS} random {PAGE}-byte pages, {DEPTH} in flight: {:.0} pages/s, every page checked",
        READS as f64 / elapsed.as_secs_f64()
    );
    println!("acquires that waited for a buffer: {}", engine.pool().waits());
    Ok(())
}

fn stamp(page: &mut [u8], number: u64) {
    page.fill(number as u8);
    page[..8].copy_from_slice(&number.to_le_bytes());
}

fn check(page: &[u8], number: u64) {
    assert_eq!(page[..8], number.to_le_bytes(), "page {number} holds another page");
    assert!(page[8..].iter().all(|&b| b == number as u8), "page {number} is damaged");
}
