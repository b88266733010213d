//! An appender with group commit: many writers append small records to one log; one task
//! gathers whatever is pending into a single write and a single `fdatasync`
//! (`write_durable_at`), then acknowledges every record in the group.
//!
//! The records are the writers' own `Vec<u8>`s: the group is one `Vec` handed to the engine
//! as caller memory (no pool slot, no copy into one). Run: `cargo run --example group_commit`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_io::{Buf, IoEngine, IoEngineConfig, OpenOptions};
use tokio::sync::{mpsc, oneshot};

const WRITERS: usize = 32;
const RECORDS_PER_WRITER: usize = 100;
/// The most bytes one group writes.
const MAX_GROUP: usize = 256 << 10;

/// A record and where to say it is durable (with its log offset), or why it is not (one error
/// shared by the whole group).
type Append = (Vec<u8>, oneshot::Sender<Result<u64, Arc<ferrite_io::Error>>>);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
    println!("engine: {}", engine.selection());
    let path = dir.path().join("log");
    let file = engine.open(&path, &OpenOptions::new().create(true).truncate(true)).await?;

    let (appends, mut pending) = mpsc::channel::<Append>(1024);
    let appender = tokio::spawn({
        let engine = engine.clone();
        async move {
            let (mut tail, mut groups) = (0u64, 0u64);
            while let Some(first) = pending.recv().await {
                // Everything that queued up while the last group was being made durable.
                let mut group = vec![first];
                let mut bytes = group[0].0.len();
                while bytes < MAX_GROUP {
                    match pending.try_recv() {
                        Ok(next) => {
                            bytes += next.0.len();
                            group.push(next);
                        }
                        Err(_) => break,
                    }
                }
                let mut log = Vec::with_capacity(bytes);
                let mut offsets = Vec::with_capacity(group.len());
                for (record, _) in &group {
                    offsets.push(tail + log.len() as u64);
                    log.extend_from_slice(record);
                }
                let (result, _) = engine.write_durable_at(&file, Buf::from(log), tail).await.into_parts();
                let result = result.map_err(Arc::new);
                let ok = result.is_ok();
                // Acknowledge the whole group: durable at its offset, or the group's error.
                for ((_, ack), offset) in group.into_iter().zip(offsets) {
                    let _ = ack.send(result.clone().map(|()| offset));
                }
                if !ok {
                    break; // after a failed sync nothing more can be acknowledged
                }
                tail += bytes as u64;
                groups += 1;
            }
            (tail, groups)
        }
    });

    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let appends = appends.clone();
        writers.spawn(async move {
            let mut slowest = Duration::ZERO;
            for n in 0..RECORDS_PER_WRITER {
                let record = format!("writer {writer:02} record {n:03}: {}\n", "x".repeat(n % 60)).into_bytes();
                let (ack, durable) = oneshot::channel();
                let asked = Instant::now();
                appends.send((record, ack)).await.expect("appender runs");
                durable.await.expect("appender answers")?;
                slowest = slowest.max(asked.elapsed());
            }
            Ok::<Duration, Arc<ferrite_io::Error>>(slowest)
        });
    }
    drop(appends);
    let mut slowest = Duration::ZERO;
    while let Some(writer) = writers.join_next().await {
        slowest = slowest.max(writer.expect("writer task")?);
    }
    let (tail, groups) = appender.await.expect("appender task");
    let records = WRITERS * RECORDS_PER_WRITER;
    println!(
        "{records} records ({tail} bytes) durable in {groups} groups ({:.1} records per fdatasync) in {:.0} ms; \
         slowest acknowledgement {:.1} ms",
        records as f64 / groups as f64,
        started.elapsed().as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3
    );
    let log = std::fs::read(&path)?;
    assert_eq!(log.len() as u64, tail);
    assert_eq!(log.iter().filter(|&&b| b == b'\n').count(), records, "every record is in the log once");
    Ok(())
}
