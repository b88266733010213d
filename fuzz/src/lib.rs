//! Support for the fuzz targets: the process-wide runtime and scratch files every target uses
//! ([`runtime`], [`scratch_file`]), and for `buf_lifecycle` the shared model ([`model`], also
//! compiled into the main crate's `tests/lifecycle.rs`) and how fuzz input decodes into its
//! actions ([`Input`]).

pub mod model;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::Duration;

use arbitrary::{Arbitrary, Result, Unstructured};

/// One current-thread runtime for the whole process; each input runs in a `block_on`.
///
/// Its blocking pool starts [`BLOCKING_THREADS`] threads when it is built, which every target
/// does before its first input (`fuzz_target!(init: ...)`), and keeps them for the whole run.
/// With tokio's default, a thread idle for 10 s exits and the next blocking task starts a new
/// one inside some input; that input then ends with more allocations than frees, libFuzzer
/// runs LeakSanitizer, and LeakSanitizer, racing the new thread's start, reported the thread's
/// start closure as leaked (once in about 51,000 inputs of `engine_differential`, and not
/// again from the saved input). The tokio engine's operations in one input need a few threads
/// at once at most.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_keep_alive(Duration::from_secs(365 * 24 * 3600))
            .build()
            .expect("tokio runtime");
        // All of them at once, so that each task gets a thread of its own.
        let started = Arc::new(Barrier::new(BLOCKING_THREADS + 1));
        let tasks: Vec<_> = (0..BLOCKING_THREADS)
            .map(|_| {
                let started = Arc::clone(&started);
                runtime.spawn_blocking(move || {
                    started.wait();
                })
            })
            .collect();
        started.wait();
        runtime.block_on(async {
            for task in tasks {
                task.await.expect("a blocking thread to start");
            }
        });
        runtime
    })
}

/// Blocking-pool threads the fuzz runtime starts up front (see [`runtime`]).
pub const BLOCKING_THREADS: usize = 16;

/// A new path for a data file, `<n><suffix>` in this process's directory under the (gitignored,
/// ext4) `fuzz/target/fuzz-tmp/<pid>`; the target removes the file when its input is done.
pub fn scratch_file(suffix: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("fuzz-tmp")
            .join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).expect("fuzz data dir");
        dir
    });
    dir.join(format!("{}{suffix}", NEXT.fetch_add(1, Ordering::Relaxed)))
}

use model::{Action, Io, MAX_BATCH, MAX_SET_LEN, Setup};

/// Most actions one input runs.
pub const MAX_ACTIONS: usize = 64;

/// The first bytes of an input.
#[derive(Debug, Arbitrary)]
struct Header {
    slots: u8,
    big: bool,
    nowait: bool,
    end_in_flight: bool,
    tokio: bool,
}

/// One fuzz input: which engine, its pool, and the actions.
#[derive(Debug)]
pub struct Input {
    /// Run on the io_uring engine (when this machine has io_uring), else on the tokio engine.
    pub uring: bool,
    /// The pool under test.
    pub setup: Setup,
    /// What to do.
    pub actions: Vec<Action>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let h: Header = u.arbitrary()?;
        let mut actions = Vec::new();
        while !u.is_empty() && actions.len() < MAX_ACTIONS {
            actions.push(action(u)?);
        }
        Ok(Input {
            uring: !h.tokio,
            setup: Setup::new(h.slots % model::MAX_SLOTS + 1, h.big, h.nowait, h.end_in_flight),
            actions,
        })
    }
}

fn io(u: &mut Unstructured<'_>) -> Result<Io> {
    Ok(if u.arbitrary()? { Io::Read } else { Io::Write })
}

fn action(u: &mut Unstructured<'_>) -> Result<Action> {
    Ok(match u.int_in_range(0u8..=15)? {
        0..=2 => Action::Acquire { foreign: u.ratio(1u8, 4)?, wait: u.ratio(1u8, 3)? },
        3 => Action::SetLen { pick: u.arbitrary()?, len: u.int_in_range(0..=MAX_SET_LEN)? },
        4 | 5 => Action::Fill { pick: u.arbitrary()?, tag: u.arbitrary()? },
        6 => Action::Register { pick: u.arbitrary()?, foreign_engine: u.ratio(1u8, 3)? },
        7 => Action::Unregister { pick: u.arbitrary()? },
        8 => Action::Recycle { pick: u.arbitrary()?, register: u.arbitrary()?, foreign_engine: u.ratio(1u8, 3)? },
        9..=11 => Action::Op {
            pick: u.arbitrary()?,
            io: io(u)?,
            fixed: u.arbitrary()?,
            block: u.arbitrary()?,
            abandon: u.ratio(1u8, 4)?,
        },
        12 | 13 => {
            let n = u.int_in_range(0..=MAX_BATCH)?;
            let mut ops = Vec::with_capacity(n);
            for _ in 0..n {
                ops.push((u.arbitrary()?, io(u)?, u.arbitrary()?));
            }
            Action::Batch { ops, abandon: u.ratio(1u8, 4)? }
        }
        _ => Action::Drop { pick: u.arbitrary()? },
    })
}
