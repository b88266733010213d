//! Shared test harness: every behaviour runs against both engines, on files in an ext4 temp dir.
#![allow(dead_code)]

use std::path::PathBuf;

use ferrite_io::{Engine, EngineChoice, IoEngine, IoEngineConfig, SharedIoEngine, TokioEngine};

/// A config with small buffers so tests stay fast.
pub fn config(engine: EngineChoice) -> IoEngineConfig {
    IoEngineConfig { engine, uring_entries: 64, registered_buffers: 16, buffer_size: 8192, ..IoEngineConfig::default() }
}

/// Every engine variant, io_uring first: each engine with the `RWF_NOWAIT` fast path off (every
/// operation through the ring or the blocking pool) and on. io_uring must work on the test
/// machines; a build without the `io-uring` feature (or off Linux) has only the tokio engine.
pub fn engines(config: &IoEngineConfig) -> Vec<(&'static str, SharedIoEngine)> {
    owned_engines(config).into_iter().map(|(name, engine)| (name, std::sync::Arc::new(engine))).collect()
}

/// As [`engines`], as owned values (to wrap, e.g. in a `FaultyEngine`). Needs a tokio runtime.
pub fn owned_engines(config: &IoEngineConfig) -> Vec<(&'static str, Engine)> {
    let plain = IoEngineConfig { nowait_fast_path: false, ..config.clone() };
    let fast = IoEngineConfig { nowait_fast_path: true, ..config.clone() };
    let mut all = Vec::new();
    #[cfg(all(feature = "io-uring", target_os = "linux"))]
    for (name, config) in [("uring", &plain), ("uring_nowait", &fast)] {
        let uring = ferrite_io::UringEngine::new(&config.clone().with_engine(EngineChoice::Uring))
            .expect("io_uring must work on the test machines");
        all.push((name, Engine::Uring(uring)));
    }
    for (name, config) in [("tokio", &plain), ("tokio_nowait", &fast)] {
        all.push((name, Engine::Tokio(TokioEngine::new(config).expect("tokio engine"))));
    }
    all
}

/// A temp dir on the same disk as the build (ext4 here, so O_DIRECT works; never tmpfs).
pub fn tempdir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("target tmp dir");
    tempfile::tempdir_in(base).expect("tempdir")
}

/// Pool accounting: every buffer is back.
pub fn assert_pool_full(engine: &SharedIoEngine) {
    let pool = engine.pool();
    assert_eq!(pool.available(), pool.capacity(), "{pool:?}: a buffer did not come back");
}

/// xorshift64*: deterministic and dependency-free.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The read and write ends of a new pipe, the read end as a `File`: a read of it waits in the
/// kernel until something is written, as long as a test needs. (Linux: `pipe2`; macOS has none.)
#[cfg(target_os = "linux")]
pub fn pipe() -> (ferrite_io::File, std::fs::File) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, a live array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2");
    // SAFETY: pipe2 just opened this descriptor, and nothing else owns it.
    let reader = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as for the read end.
    let writer = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    (ferrite_io::File::from_std(std::fs::File::from(reader), false), std::fs::File::from(writer))
}
