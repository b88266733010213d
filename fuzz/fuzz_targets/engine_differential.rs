//! The same arbitrary operations (aligned and misaligned offsets and lengths, buffered or
//! `O_DIRECT`) on the io_uring engine and the tokio engine: the same results (lengths, errno),
//! the same bytes read, and the same file at the end. On a machine without io_uring only the
//! tokio engine runs, and the target checks nothing.
//!
//! `cargo +nightly fuzz run engine_differential -- -max_total_time=180`

#![no_main]

use std::path::Path;

use arbitrary::Arbitrary;
use ferrite_io::{IoEngine, OpenOptions};
use ferrite_io_fuzz::{runtime, scratch_file};
use libfuzzer_sys::fuzz_target;

/// The file span the operations touch.
const SPAN: u64 = 64 << 10;

#[derive(Debug, Arbitrary)]
enum Action {
    Write { offset: u16, len: u16, seed: u8, fixed: bool },
    Read { offset: u16, len: u16, fixed: bool },
    WriteAll { offset: u16, len: u16, seed: u8 },
    ReadExact { offset: u16, len: u16 },
    WriteDurable { offset: u16, len: u16, seed: u8 },
    Sync { data: bool },
    SetLen { len: u16 },
}

#[derive(Debug, Arbitrary)]
struct Input {
    direct: bool,
    /// Offsets and lengths rounded to 4096 (so `O_DIRECT` ones mostly succeed).
    aligned: bool,
    actions: Vec<Action>,
}

/// What an action gave: the result (length or errno) and the bytes read.
#[derive(Debug, PartialEq, Eq)]
struct Outcome(Result<usize, Option<i32>>, Vec<u8>);

fn shape(aligned: bool, offset: u16, len: u16) -> (u64, usize) {
    let (offset, len) = (u64::from(offset) % SPAN, usize::from(len) % 16384 + 1);
    if aligned { (offset / 4096 * 4096, len.div_ceil(4096) * 4096) } else { (offset, len) }
}

async fn run<E: IoEngine>(engine: &E, path: &Path, input: &Input) -> Vec<Outcome> {
    let file =
        engine.open(path, &OpenOptions::new().create(true).truncate(true).direct(input.direct)).await.expect("open");
    let errno = |e: ferrite_io::Error| e.raw_os_error();
    let mut outcomes = Vec::new();
    for action in input.actions.iter().take(32) {
        let outcome = match *action {
            Action::Write { offset, len, seed, fixed } => {
                let (offset, len) = shape(input.aligned, offset, len);
                let mut buf = engine.acquire().await;
                buf.set_len(len).expect("len");
                buf.iter_mut().enumerate().for_each(|(i, b)| *b = seed ^ i as u8);
                let done = if fixed {
                    engine.write_fixed_at(&file, buf, offset).await
                } else {
                    engine.write_at(&file, buf.into_free(), offset).await
                };
                Outcome(done.0.map_err(errno), Vec::new())
            }
            Action::WriteAll { offset, len, seed } | Action::WriteDurable { offset, len, seed } => {
                let (offset, len) = shape(input.aligned, offset, len);
                let mut buf = engine.acquire().await;
                buf.set_len(len).expect("len");
                buf.iter_mut().enumerate().for_each(|(i, b)| *b = seed.wrapping_add(i as u8));
                let done = if matches!(action, Action::WriteAll { .. }) {
                    engine.write_all_at(&file, buf, offset).await
                } else {
                    engine.write_durable_at(&file, buf, offset).await
                };
                Outcome(done.0.map(|()| len).map_err(errno), Vec::new())
            }
            Action::Read { offset, len, fixed } => {
                let (offset, len) = shape(input.aligned, offset, len);
                let mut buf = engine.acquire().await;
                buf.set_len(len).expect("len");
                let (result, buf) = if fixed {
                    engine.read_fixed_at(&file, buf, offset).await
                } else {
                    engine.read_at(&file, buf.into_free(), offset).await
                }
                .into_parts();
                let n = *result.as_ref().unwrap_or(&0);
                Outcome(result.map_err(errno), buf[..n.min(buf.len())].to_vec())
            }
            Action::ReadExact { offset, len } => {
                let (offset, len) = shape(input.aligned, offset, len);
                let mut buf = engine.acquire().await;
                buf.set_len(len).expect("len");
                let (result, buf) = engine.read_exact_at(&file, buf, offset).await.into_parts();
                Outcome(result.map(|()| len).map_err(errno), buf.to_vec())
            }
            Action::Sync { data } => {
                let result = if data { engine.sync_data(&file).await } else { engine.sync_all(&file).await };
                Outcome(result.map(|()| 0).map_err(errno), Vec::new())
            }
            Action::SetLen { len } => {
                file.std().set_len(u64::from(len) * 4).expect("set_len");
                Outcome(Ok(0), Vec::new())
            }
        };
        outcomes.push(outcome);
    }
    outcomes
}

fuzz_target!(init: { runtime(); }, |input: Input| {
    #[cfg(all(feature = "io-uring", target_os = "linux"))]
    {
        let (a, b) = (scratch_file(".uring"), scratch_file(".tokio"));
        runtime().block_on(async {
            use ferrite_io::{EngineChoice, IoEngineConfig};
            let config = |engine| IoEngineConfig {
                engine,
                registered_buffers: 4,
                buffer_size: 16384,
                uring_entries: 16,
                ..IoEngineConfig::default()
            };
            let Ok(uring) = ferrite_io::UringEngine::new(&config(EngineChoice::Uring)) else { return };
            let tokio = ferrite_io::TokioEngine::new(&config(EngineChoice::Tokio)).expect("tokio engine");
            let on_uring = run(&uring, &a, &input).await;
            let on_tokio = run(&tokio, &b, &input).await;
            assert_eq!(on_uring, on_tokio, "the engines differ on {input:?}");
            assert!(
                std::fs::read(&a).expect("read") == std::fs::read(&b).expect("read"),
                "the files differ on {input:?}"
            );
        });
        let _ = (std::fs::remove_file(&a), std::fs::remove_file(&b));
    }
    #[cfg(not(all(feature = "io-uring", target_os = "linux")))]
    let _ = (input, runtime, scratch_file, run::<ferrite_io::TokioEngine>);
});
