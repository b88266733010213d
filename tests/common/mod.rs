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

/// How long a watched test may go without finishing a step before it fails (see [`watched`]).
pub const WATCHDOG: std::time::Duration = std::time::Duration::from_secs(20);

/// A current-thread runtime with every driver.
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("current-thread runtime")
}

/// A multi-thread runtime of two workers with every driver.
pub fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("multi-thread runtime")
}

/// Builds a runtime.
pub type Build = fn() -> tokio::runtime::Runtime;

/// The runtime flavours a test runs its body on, by name.
pub const FLAVOURS: [(&str, Build); 2] = [("current-thread", current_thread), ("multi-thread", multi_thread)];

enum Report {
    Step(String),
    Finished(Box<dyn std::any::Any + Send>),
    Panicked(Box<dyn std::any::Any + Send>),
}

/// What a [`watched`] body tells its watchdog: the step it begins. Cheap to clone into tasks.
#[derive(Clone)]
pub struct Beat(std::sync::mpsc::Sender<Report>);

impl Beat {
    /// Begins the step `what`: the body has [`WATCHDOG`] from now to begin the next one or end.
    pub fn step(&self, what: impl Into<String>) {
        let _ = self.0.send(Report::Step(what.into()));
    }
}

/// Runs `body` on a thread of its own, this thread its watchdog: a step (see [`Beat::step`])
/// that takes longer than [`WATCHDOG`] fails the test here, however stuck the body's runtime
/// is, instead of hanging it (a timer of the runtime under test cannot bound that runtime).
/// A panic of the body is raised again here, after a line naming its step.
pub fn watched<T: Send + 'static>(what: &str, body: impl FnOnce(Beat) -> T + Send + 'static) -> T {
    use std::sync::mpsc::RecvTimeoutError;
    let (tx, rx) = std::sync::mpsc::channel();
    let beat = Beat(tx.clone());
    std::thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            let report = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(beat))) {
                Ok(value) => Report::Finished(Box::new(value)),
                Err(panic) => Report::Panicked(panic),
            };
            let _ = tx.send(report);
        })
        .expect("spawn a watched thread");
    let mut step = None;
    loop {
        match rx.recv_timeout(WATCHDOG) {
            Ok(Report::Step(next)) => step = Some(next),
            Ok(Report::Finished(value)) => return *value.downcast::<T>().expect("the body's own type"),
            Ok(Report::Panicked(panic)) => {
                eprintln!("{what}: panicked during {}", step.as_deref().unwrap_or("its first step"));
                std::panic::resume_unwind(panic)
            }
            Err(RecvTimeoutError::Timeout) => match step {
                Some(step) => panic!("{what}: {step} hung (no progress for {WATCHDOG:?}, watchdog)"),
                None => panic!("{what}: never completed (no progress for {WATCHDOG:?}, watchdog)"),
            },
            Err(RecvTimeoutError::Disconnected) => unreachable!("the watched thread always reports its end"),
        }
    }
}

/// Runs `work` on a thread of its own and waits for it under the watchdog, as one step: a hang
/// fails here (tokio's timeout cannot bound a runtime that is itself the problem).
pub fn on_a_thread<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    watched(what, move |_| work())
}

/// A seccomp filter that makes the given system calls fail with `errno` on the thread that
/// installs it (and on threads that thread spawns afterwards); every other call is allowed.
/// The filter ends with the thread. The system call numbers are the same on every
/// architecture for the io_uring calls this is used for, so the architecture is not checked.
#[cfg(target_os = "linux")]
pub struct SyscallFilter {
    program: Vec<libc::sock_filter>,
}

#[cfg(target_os = "linux")]
impl SyscallFilter {
    /// A filter under which `syscalls` fail with `errno`.
    pub fn refuse(syscalls: &[libc::c_long], errno: i32) -> SyscallFilter {
        use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
        let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
        let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter { code: (BPF_JMP | BPF_JEQ | BPF_K) as u16, jt, jf, k };
        let refused = libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA);
        let mut program = vec![stmt(BPF_LD | BPF_W | BPF_ABS, std::mem::offset_of!(libc::seccomp_data, nr) as u32)];
        for &nr in syscalls {
            program.push(jump(nr as u32, 0, 1));
            program.push(stmt(BPF_RET | BPF_K, refused));
        }
        program.push(stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW));
        SyscallFilter { program }
    }

    /// Installs the filter on the calling thread. Allocates nothing, so it may run between
    /// `fork` and `exec` (`CommandExt::pre_exec`).
    pub fn install(&self) -> std::io::Result<()> {
        let fprog =
            libc::sock_fprog { len: self.program.len() as libc::c_ushort, filter: self.program.as_ptr().cast_mut() };
        let (one, zero): (libc::c_ulong, libc::c_ulong) = (1, 0);
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only and touches no memory of ours.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mode = libc::c_ulong::from(libc::SECCOMP_MODE_FILTER);
        // SAFETY: `fprog` points at `self.program`, `fprog.len` well-formed BPF instructions that
        // live through the call; the kernel copies the program and keeps no pointer to it, nor
        // writes through this one.
        if unsafe { libc::prctl(libc::PR_SET_SECCOMP, mode, &fprog as *const libc::sock_fprog) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Drives a future on this thread with no runtime at all: polls, parks until woken. A wake-up
/// that never comes fails after [`WATCHDOG`] instead of hanging.
pub fn park_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    let deadline = std::time::Instant::now() + WATCHDOG;
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        assert!(std::time::Instant::now() < deadline, "never woken (watchdog)");
        // Woken by `unpark`; the timeout only bounds a lost wake-up, which the assert reports.
        std::thread::park_timeout(WATCHDOG);
    }
}
