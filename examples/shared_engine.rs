//! Tasks sharing one engine: a `SharedIoEngine` (an `Arc`) cloned into many tokio tasks on the
//! multi-thread runtime, each writing and reading back its own region of one file, with more
//! tasks than pool buffers so the pool's backpressure shows.
//!
//! Run: `cargo run --example shared_engine`.

use std::time::Duration;

use ferrite_io::{IoEngine, IoEngineConfig, OpenOptions, SharedIoEngine};

const TASKS: u64 = 64;
const ROUNDS: u64 = 20;

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // 8 buffers of 16 KiB for 64 tasks: most acquires wait for a buffer to come back.
    let config = IoEngineConfig { registered_buffers: 8, buffer_size: 16 << 10, ..IoEngineConfig::default() };
    let engine: SharedIoEngine = ferrite_io::create_engine(config)?;
    println!("engine: {}", engine.selection());
    let file = engine.open(dir.path().join("shared"), &OpenOptions::new().create(true)).await?;
    let region = engine.pool().buffer_size() as u64;

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (engine, file) = (engine.clone(), file.clone());
        tasks.spawn(async move {
            for round in 0..ROUNDS {
                let offset = task * region;
                // Bounded wait: a task that cannot get a buffer in time says so instead of hanging.
                let Some(mut buf) = engine.pool().acquire_timeout(Duration::from_secs(5)).await else {
                    panic!("task {task}: no buffer within 5 s: {:?}", engine.pool());
                };
                buf.fill((task + round) as u8);
                let (written, buf) = engine.write_all_at(&file, buf, offset).await.into_parts();
                written?;
                let (read, buf) = engine.read_exact_at(&file, buf.into_free(), offset).await.into_parts();
                read?;
                assert!(buf.iter().all(|&b| b == (task + round) as u8), "task {task} read another task's bytes");
            }
            Ok::<(), ferrite_io::Error>(())
        });
    }
    while let Some(task) = tasks.join_next().await {
        task.expect("task")?;
    }
    engine.sync_data(&file).await?;
    let pool = engine.pool();
    println!(
        "{TASKS} tasks x {ROUNDS} write+read rounds on one engine; {} of {} acquires waited for a buffer; \
         all {} buffers back: {}",
        pool.waits(),
        TASKS * ROUNDS,
        pool.capacity(),
        pool.available() == pool.capacity()
    );
    assert_eq!(file.size()?, TASKS * region);
    Ok(())
}
