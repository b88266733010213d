//! Engine selection against REAL io_uring failures, not mocks.
//!
//! A parent test re-executes this test binary (`std::env::current_exe()`) to run exactly one
//! test of the [`child_noop_unless_spawned`] module in a fresh process, with
//! `FERRITE_SECCOMP=eperm|enosys|kill` in its environment. That child installs a seccomp BPF
//! filter which makes `io_uring_setup` fail with `EPERM` or `ENOSYS`, or kills the whole process
//! with `SIGSYS`, then exercises [`check_uring_support`] / [`create_engine`] and prints
//! `@child KEY=value` lines. The parent asserts on the child's exit status and on those lines.
//!
//! The filter is only ever installed in a child process: a child test does nothing unless
//! `FERRITE_SECCOMP` is set *and* `FERRITE_SECCOMP_PARENT` names its parent process id, which
//! only [`run_child`] arranges. In a normal `cargo test` / `cargo nextest run` the child tests
//! return immediately and pass trivially.
//!
//! Linux with the `io-uring` feature only (the probes are meaningless without io_uring), and
//! only on x86_64 and aarch64, the two architectures whose `AUDIT_ARCH_*` value is spelled out
//! below.
#![cfg(all(target_os = "linux", feature = "io-uring", any(target_arch = "x86_64", target_arch = "aarch64")))]

use std::fmt;
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use ferrite_io::io::detect::io_uring_disabled_sysctl;
use ferrite_io::{
    Backend, EngineChoice, Error, IoEngine, IoEngineConfig, OpenOptions, Reason, SharedIoEngine, Unsupported,
    UringSupport, check_uring_support, create_engine,
};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

/// Which filter the child installs: `eperm`, `enosys` or `kill`.
const FILTER_ENV: &str = "FERRITE_SECCOMP";
/// The pid of the parent test process that spawned the child; the child refuses to install a
/// filter unless its parent's pid matches, so a stray `FERRITE_SECCOMP` in the environment of a
/// normal test run can never filter the test process itself.
const PARENT_ENV: &str = "FERRITE_SECCOMP_PARENT";
/// Prefix of the lines a child reports to its parent (libtest may print `test x ... ` in front
/// of the first one, so the parent searches for it anywhere in a line).
const MARK: &str = "@child ";

// ------------------------------------------------------------------------------------------
// The seccomp filter (child side).
// ------------------------------------------------------------------------------------------

/// `AUDIT_ARCH_X86_64` = `EM_X86_64` (62) | `__AUDIT_ARCH_64BIT` | `__AUDIT_ARCH_LE`.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
/// `AUDIT_ARCH_AARCH64` = `EM_AARCH64` (183) | `__AUDIT_ARCH_64BIT` | `__AUDIT_ARCH_LE`.
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    /// `io_uring_setup` returns `EPERM`.
    Eperm,
    /// `io_uring_setup` returns `ENOSYS`.
    Enosys,
    /// `io_uring_setup` kills the process with `SIGSYS`.
    Kill,
    /// `io_uring_setup`, `preadv2` and `pwritev2` return `ENOSYS`: a kernel before 4.6, or a
    /// seccomp profile that knows neither io_uring nor the `RWF_*` calls.
    OldKernel,
    /// Only `preadv2` and `pwritev2` return `ENOSYS`; io_uring works.
    NoRwf,
    /// `io_uring_enter` returns `EPERM`, installed by the child itself once its engine exists:
    /// a ring whose submits start failing for good.
    EnterEperm,
}

impl Filter {
    fn parse(s: &str) -> Filter {
        match s {
            "eperm" => Filter::Eperm,
            "enosys" => Filter::Enosys,
            "kill" => Filter::Kill,
            "old-kernel" => Filter::OldKernel,
            "no-rwf" => Filter::NoRwf,
            "enter-eperm" => Filter::EnterEperm,
            other => panic!("{FILTER_ENV}={other}: expected eperm, enosys, kill, old-kernel, no-rwf or enter-eperm"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Filter::Eperm => "eperm",
            Filter::Enosys => "enosys",
            Filter::Kill => "kill",
            Filter::OldKernel => "old-kernel",
            Filter::NoRwf => "no-rwf",
            Filter::EnterEperm => "enter-eperm",
        }
    }

    /// The syscalls the filter acts on.
    fn syscalls(self) -> &'static [libc::c_long] {
        match self {
            Filter::Eperm | Filter::Enosys | Filter::Kill => &[libc::SYS_io_uring_setup],
            Filter::OldKernel => &[libc::SYS_io_uring_setup, libc::SYS_preadv2, libc::SYS_pwritev2],
            Filter::NoRwf => &[libc::SYS_preadv2, libc::SYS_pwritev2],
            Filter::EnterEperm => &[libc::SYS_io_uring_enter],
        }
    }

    /// The seccomp return value for the filtered syscalls.
    fn action(self) -> u32 {
        let errno = |e: i32| libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA);
        match self {
            Filter::Eperm | Filter::EnterEperm => errno(libc::EPERM),
            Filter::Enosys | Filter::OldKernel | Filter::NoRwf => errno(libc::ENOSYS),
            Filter::Kill => libc::SECCOMP_RET_KILL_PROCESS,
        }
    }
}

fn bpf_stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
}

fn bpf_jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt, jf, k }
}

/// Installs the filter on the calling thread; threads it spawns afterwards (the tokio runtime's
/// workers and blocking pool, built after this) inherit it.
fn install_seccomp(filter: Filter) {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let arch_offset = std::mem::offset_of!(libc::seccomp_data, arch) as u32;
    let nr_offset = std::mem::offset_of!(libc::seccomp_data, nr) as u32;
    let mut program = vec![
        // A foreign-architecture syscall's number means something else: kill, as is customary.
        bpf_stmt(BPF_LD | BPF_W | BPF_ABS, arch_offset),
        bpf_jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 1, 0),
        bpf_stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_KILL_PROCESS),
        bpf_stmt(BPF_LD | BPF_W | BPF_ABS, nr_offset),
    ];
    // The filter's syscalls get its action; everything else is allowed.
    for &nr in filter.syscalls() {
        program.push(bpf_jump(BPF_JMP | BPF_JEQ | BPF_K, nr as u32, 0, 1));
        program.push(bpf_stmt(BPF_RET | BPF_K, filter.action()));
    }
    program.push(bpf_stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW));
    let fprog = libc::sock_fprog { len: program.len() as libc::c_ushort, filter: program.as_mut_ptr() };

    // A SIGSYS death must not leave a core file behind.
    let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `setrlimit` only reads the `rlimit` it is given, a live local.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    assert_eq!(rc, 0, "setrlimit(RLIMIT_CORE): {}", std::io::Error::last_os_error());

    let one: libc::c_ulong = 1;
    let zero: libc::c_ulong = 0;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) };
    assert_eq!(rc, 0, "PR_SET_NO_NEW_PRIVS: {}", std::io::Error::last_os_error());

    let mode = libc::c_ulong::from(libc::SECCOMP_MODE_FILTER);
    // SAFETY: `fprog` points at `program`, a live local array of `fprog.len` well-formed BPF
    // instructions; the kernel copies the program during the call and keeps no pointer to it.
    let rc = unsafe { libc::prctl(libc::PR_SET_SECCOMP, mode, &fprog as *const libc::sock_fprog) };
    assert_eq!(rc, 0, "PR_SET_SECCOMP: {}", std::io::Error::last_os_error());
}

/// In a child spawned by [`run_child`]: installs the requested filter, reports it, and returns
/// it. Everywhere else (a normal test run): `None`, and the child test returns at once.
fn enter_child() -> Option<Filter> {
    let filter = std::env::var(FILTER_ENV).ok()?;
    let parent: u32 = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{FILTER_ENV} is set but {PARENT_ENV} is not a pid"));
    assert_eq!(
        std::os::unix::process::parent_id(),
        parent,
        "{FILTER_ENV} is set but this process was not spawned by the test that asked for it; \
         refusing to install a seccomp filter here"
    );
    let filter = Filter::parse(&filter);
    if filter != Filter::EnterEperm {
        install_seccomp(filter);
    }
    report("FILTER", filter.name());
    Some(filter)
}

/// One `@child KEY=value` line on stdout, flushed (the child may be killed right after).
fn report(key: &str, value: impl fmt::Display) {
    let mut out = std::io::stdout().lock();
    // A leading newline keeps the line apart from libtest's `test name ... ` prefix.
    writeln!(out, "\n{MARK}{key}={value}").expect("stdout");
    out.flush().expect("stdout");
}

// ------------------------------------------------------------------------------------------
// Shared helpers.
// ------------------------------------------------------------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

fn tempdir() -> tempfile::TempDir {
    let base = env!("CARGO_TARGET_TMPDIR");
    std::fs::create_dir_all(base).expect("CARGO_TARGET_TMPDIR");
    tempfile::tempdir_in(base).expect("tempdir")
}

/// Writes a full pool buffer with a pattern at a non-zero offset, makes it durable with both
/// `fsync` and `fdatasync`, reads it back into a zeroed buffer and compares.
async fn round_trip(engine: &SharedIoEngine, dir: &Path) {
    let path = dir.join("round-trip");
    let file = engine.open(&path, &OpenOptions::new().create(true)).await.expect("open");
    let pattern = |i: usize| (i % 251) as u8;
    let offset = 4096;

    let mut page = engine.acquire().await;
    for (i, byte) in page.iter_mut().enumerate() {
        *byte = pattern(i);
    }
    let len = page.len();
    let written = engine.write_all_at(&file, page, offset).await;
    written.0.expect("write_all_at");
    engine.sync_all(&file).await.expect("sync_all");
    engine.sync_data(&file).await.expect("sync_data");
    assert_eq!(std::fs::metadata(&path).expect("metadata").len(), offset + len as u64);

    let mut page = written.1.into_free();
    page.fill(0);
    let read = engine.read_exact_at(&file, page, offset).await;
    read.0.expect("read_exact_at");
    assert_eq!(read.1.len(), len);
    assert!(
        read.1.iter().enumerate().all(|(i, &b)| b == pattern(i)),
        "the bytes read back differ from the bytes written"
    );
    drop(read.1);
    let pool = engine.pool();
    assert_eq!(pool.available(), pool.capacity(), "a buffer did not come back");
}

// ------------------------------------------------------------------------------------------
// Capturing tracing events.
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct CapturedEvent {
    level: Level,
    /// `name=value` for every field, `message` included, values formatted with `Debug`
    /// (a `%display` field formats as its `Display`).
    fields: Vec<(String, String)>,
}

impl CapturedEvent {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for CapturedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.level)?;
        for (name, value) in &self.fields {
            write!(f, " {name}={value}")?;
        }
        Ok(())
    }
}

/// A layer that records every event it sees.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<CapturedEvent>>>);

impl Capture {
    fn events(&self) -> Vec<CapturedEvent> {
        self.0.lock().expect("capture lock").clone()
    }
}

struct FieldsVisitor(Vec<(String, String)>);

impl Visit for FieldsVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut visitor = FieldsVisitor(Vec::new());
        event.record(&mut visitor);
        self.0
            .lock()
            .expect("capture lock")
            .push(CapturedEvent { level: *event.metadata().level(), fields: visitor.0 });
    }
}

/// Runs `f` and returns the events emitted meanwhile, on any thread of the process.
///
/// Child processes only: the first call installs a process-wide (global) subscriber, so an
/// event from a runtime worker or a blocking-pool thread would be counted too, not just those
/// on the calling thread as with `tracing::subscriber::with_default`.
fn capturing<T>(f: impl FnOnce() -> T) -> (T, Vec<CapturedEvent>) {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    let capture = CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(capture.clone()))
            .expect("a child test process has no other global subscriber");
        capture
    });
    let start = capture.events().len();
    let value = f();
    let events = capture.events().split_off(start);
    (value, events)
}

// ------------------------------------------------------------------------------------------
// The child tests. They do nothing (and pass) unless spawned by a parent test below.
// ------------------------------------------------------------------------------------------

/// Child halves of the seccomp tests. Each returns immediately, passing trivially, unless
/// [`run_child`] spawned it with `FERRITE_SECCOMP` set; only then does it install the filter.
mod child_noop_unless_spawned {
    use super::*;

    /// Probes io_uring under the filter, then asks for `engine = "uring"`.
    #[test]
    fn probe() {
        let Some(_filter) = enter_child() else {
            return;
        };
        report("PROBING", "check_uring_support");
        match check_uring_support(&IoEngineConfig::default()) {
            UringSupport::Supported(info) => report("CHECK", format_args!("Supported({info})")),
            UringSupport::Unsupported(why) => {
                report("CHECK", format_args!("{why:?}"));
                report("CHECK_MESSAGE", why);
            }
        }
        let rt = runtime();
        let (result, events) = rt.block_on(async {
            capturing(|| create_engine(IoEngineConfig::default().with_engine(EngineChoice::Uring)))
        });
        match result {
            Ok(engine) => report("URING", format_args!("Ok({})", engine.selection())),
            Err(e) => report("URING", format_args!("Err({e:?})")),
        }
        let warns = events.iter().filter(|e| e.level == Level::WARN).count();
        report("URING_WARNS", warns);
        report("DONE", "probe");
    }

    /// `engine = "auto"` under the filter: the fallback, its warning, and a round trip on it.
    #[test]
    fn auto() {
        let Some(_filter) = enter_child() else {
            return;
        };
        let rt = runtime();
        let dir = tempdir();
        rt.block_on(async {
            let (result, events) = capturing(|| create_engine(IoEngineConfig::default()));
            let engine = result.expect("auto must fall back to tokio, not fail");
            let selection = engine.selection();
            report("BACKEND", format_args!("{:?}", engine.backend()));
            report("SELECTION_BACKEND", format_args!("{:?}", selection.backend));
            report("REQUESTED", format_args!("{:?}", selection.requested));
            report("REASON", format_args!("{:?}", selection.reason));
            if let Reason::FellBack(why) = &selection.reason {
                report("REASON_MESSAGE", why);
            }
            let warns: Vec<_> = events.iter().filter(|e| e.level == Level::WARN).collect();
            report("WARNS", warns.len());
            for warn in &warns {
                report("WARN", warn);
                report("WARN_REASON", warn.field("reason").unwrap_or("<none>"));
                report("WARN_MESSAGE", warn.field("message").unwrap_or("<none>"));
            }
            round_trip(&engine, dir.path()).await;
            report("ROUNDTRIP", "ok");
        });
        report("DONE", "auto");
    }

    /// Under a filter that refuses `preadv2`/`pwritev2` (`ENOSYS`): `engine = "auto"` (the
    /// tokio engine when io_uring is refused too), a round trip and cached reads, whose fast
    /// path must turn itself off instead of failing the reads.
    #[test]
    fn without_rwf() {
        let Some(_filter) = enter_child() else {
            return;
        };
        let rt = runtime();
        let dir = tempdir();
        rt.block_on(async {
            let engine = create_engine(IoEngineConfig::default()).expect("an engine");
            report("BACKEND", format_args!("{:?}", engine.backend()));
            round_trip(&engine, dir.path()).await;
            let file = engine.open(dir.path().join("round-trip"), &OpenOptions::new()).await.expect("open");
            let mut page = engine.acquire().await.into_free();
            for _ in 0..3 {
                let read = engine.read_at(&file, page, 4096).await;
                assert_eq!(read.0.expect("a cached read with the fast path refused"), read.1.len());
                page = read.1.into_free();
            }
            let stats = engine.stats();
            report("FAST_HITS", stats.fast_path_hits);
            report("FAST_REFUSALS", stats.fast_path_refusals);
            report("ROUNDTRIP", "ok");
        });
        drop(rt);
        report("DONE", "without_rwf");
    }

    /// `engine = "tokio"` under the filter, with a write/sync/read round trip.
    #[test]
    fn tokio_engine() {
        let Some(_filter) = enter_child() else {
            return;
        };
        let rt = runtime();
        let dir = tempdir();
        rt.block_on(async {
            let engine =
                create_engine(IoEngineConfig::default().with_engine(EngineChoice::Tokio)).expect("the tokio engine");
            report("BACKEND", format_args!("{:?}", engine.backend()));
            report("REASON", format_args!("{:?}", engine.selection().reason));
            round_trip(&engine, dir.path()).await;
            report("ROUNDTRIP", "ok");
        });
        drop(rt);
        report("DONE", "tokio_engine");
    }

    /// An io_uring engine whose `io_uring_enter` starts failing with `EPERM` after it was set
    /// up: the operation whose submit fails gets the error (not a hang), later ones are refused
    /// with it, and every buffer comes back. One thread does everything, so the filter (which
    /// binds the thread that installs it) covers every submit.
    #[test]
    fn broken_ring() {
        let Some(filter) = enter_child() else {
            return;
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        let dir = tempdir();
        let config = IoEngineConfig { rings: 1, nowait_fast_path: false, ..IoEngineConfig::default() };
        let engine = rt.block_on(async {
            let engine = create_engine(config.with_engine(EngineChoice::Uring)).expect("the io_uring engine");
            round_trip(&engine, dir.path()).await;
            engine
        });
        install_seccomp(filter);
        let bounded = |what: &'static str, op: std::pin::Pin<Box<dyn std::future::Future<Output = String> + '_>>| {
            let outcome = rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(10), op).await });
            report(what, outcome.unwrap_or_else(|_| "HUNG".to_owned()));
        };
        let file = rt.block_on(engine.open(dir.path().join("round-trip"), &OpenOptions::new())).expect("open");
        let errno = |r: Result<(), Error>| match r {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("{:?}", e.raw_os_error()),
        };
        bounded("SYNC", Box::pin(async { errno(engine.sync_all(&file).await) }));
        bounded(
            "WRITE",
            Box::pin(async {
                let page = engine.acquire().await;
                errno(engine.write_all_at(&file, page, 0).await.0)
            }),
        );
        bounded(
            "READ",
            Box::pin(async {
                let page = engine.acquire().await;
                errno(engine.read_exact_at(&file, page, 0).await.0.map(drop))
            }),
        );
        let pool = engine.pool();
        report("BUFFERS_BACK", pool.available() == pool.capacity());
        report("SUBMIT_ERRORS", engine.stats().submit_errors);
        report("DONE", "broken_ring");
    }
}

// ------------------------------------------------------------------------------------------
// The parent side.
// ------------------------------------------------------------------------------------------

/// A finished child: how it ended and what it said.
struct ChildRun {
    test: String,
    filter: Filter,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl ChildRun {
    /// Every value reported under `key`, in order.
    fn values(&self, key: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter_map(|line| line.find(MARK).map(|at| &line[at + MARK.len()..]))
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .collect()
    }

    /// The single value reported under `key`.
    fn value(&self, key: &str) -> &str {
        match self.values(key).as_slice() {
            [v] => v,
            other => panic!("expected one {key}= line, got {other:?}\n{self}"),
        }
    }

    /// The child ran its test to the end and exited 0, under the filter asked for.
    fn assert_completed(&self) {
        assert!(self.status.success(), "child failed\n{self}");
        assert_eq!(self.value("FILTER"), self.filter.name(), "{self}");
        assert_eq!(self.values("DONE").len(), 1, "child did not finish\n{self}");
    }
}

impl fmt::Display for ChildRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "child `{}` with {FILTER_ENV}={}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.test,
            self.filter.name(),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

/// Re-executes this test binary to run exactly the child test `test` (a name under
/// `child_noop_unless_spawned::`) with `filter` installed.
fn run_child(test: &str, filter: Filter) -> ChildRun {
    let test = format!("child_noop_unless_spawned::{test}");
    let exe = std::env::current_exe().expect("current_exe");
    let output = Command::new(exe)
        .args(["--exact", &test, "--nocapture", "--test-threads=1"])
        .env(FILTER_ENV, filter.name())
        .env(PARENT_ENV, std::process::id().to_string())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("spawning the child test process");
    ChildRun {
        test,
        filter,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// What `EPERM` from `io_uring_setup` must be classified as on this host: `Denied` unless the
/// `kernel.io_uring_disabled` sysctl is 1 or 2 (then the sysctl is the documented culprit).
fn expected_eperm_reason() -> Unsupported {
    match io_uring_disabled_sysctl() {
        Some(v @ (1 | 2)) => Unsupported::Disabled { sysctl: v },
        sysctl => Unsupported::Denied { sysctl },
    }
}

/// A submit that fails for good completes what it left queued with its error: without that,
/// the sync below would wait forever for an entry nothing will ever submit.
#[test]
fn a_ring_whose_submits_fail_for_good_fails_its_operations_instead_of_hanging() {
    let child = run_child("broken_ring", Filter::EnterEperm);
    child.assert_completed();
    let eperm = format!("{:?}", Some(libc::EPERM));
    for op in ["SYNC", "WRITE", "READ"] {
        assert_eq!(child.value(op), eperm, "{op}\n{child}");
    }
    assert_eq!(child.value("BUFFERS_BACK"), "true", "{child}");
    assert_eq!(child.value("SUBMIT_ERRORS"), "1", "the first failure breaks the ring; later ones are refused\n{child}");
}

/// Test 1. `EPERM` from a real seccomp filter: the probe says `Denied` (the sysctl allows
/// io_uring, so something else refused it) and `engine = "uring"` fails with that reason.
#[test]
fn eperm_from_seccomp_is_denied() {
    let expected = expected_eperm_reason();
    assert!(
        matches!(expected, Unsupported::Denied { .. }),
        "this host has kernel.io_uring_disabled = {:?}; EPERM is then `Disabled` by design",
        io_uring_disabled_sysctl()
    );
    let child = run_child("probe", Filter::Eperm);
    child.assert_completed();
    assert_eq!(child.value("CHECK"), format!("{expected:?}"), "{child}");
    assert!(child.value("CHECK_MESSAGE").contains("seccomp"), "the message should point at seccomp\n{child}");
    assert_eq!(child.value("URING"), format!("Err({:?})", Error::Unavailable(expected)), "{child}");
    assert_eq!(child.value("URING_WARNS"), "0", "{child}");
}

/// Test 2. `ENOSYS` from a real seccomp filter: `NoSyscall`, from the probe and from
/// `engine = "uring"`.
#[test]
fn enosys_from_seccomp_is_no_syscall() {
    let child = run_child("probe", Filter::Enosys);
    child.assert_completed();
    assert_eq!(child.value("CHECK"), format!("{:?}", Unsupported::NoSyscall), "{child}");
    assert_eq!(child.value("URING"), format!("Err({:?})", Error::Unavailable(Unsupported::NoSyscall)), "{child}");
    assert_eq!(child.value("URING_WARNS"), "0", "{child}");
}

/// Checks an `auto` child: tokio engine, `FellBack(expected)`, exactly one WARN naming the
/// reason, and a working round trip.
fn assert_fell_back(child: &ChildRun, expected: &Unsupported) {
    child.assert_completed();
    assert_eq!(child.value("BACKEND"), format!("{:?}", Backend::Tokio), "{child}");
    assert_eq!(child.value("SELECTION_BACKEND"), format!("{:?}", Backend::Tokio), "{child}");
    assert_eq!(child.value("REQUESTED"), format!("{:?}", EngineChoice::Auto), "{child}");
    assert_eq!(child.value("REASON"), format!("{:?}", Reason::FellBack(expected.clone())), "{child}");
    assert_eq!(child.value("WARNS"), "1", "exactly one WARN event\n{child}");
    assert_eq!(
        child.value("WARN_REASON"),
        expected.to_string(),
        "the warning's `reason` field names the reason\n{child}"
    );
    assert!(child.value("WARN_MESSAGE").contains("falling back"), "{child}");
    assert_eq!(child.value("ROUNDTRIP"), "ok", "{child}");
}

/// Test 3. `engine = "auto"` with `EPERM`: falls back to the tokio engine with
/// `Reason::FellBack(Denied)`, emits exactly one WARN event whose `reason` field is the reason's
/// message, and the fallback engine really reads and writes.
#[test]
fn auto_falls_back_to_tokio_on_eperm_with_one_warning() {
    let child = run_child("auto", Filter::Eperm);
    assert_fell_back(&child, &expected_eperm_reason());
}

/// Test 3, with `ENOSYS`: the same fallback, reason `NoSyscall`.
#[test]
fn auto_falls_back_to_tokio_on_enosys_with_one_warning() {
    let child = run_child("auto", Filter::Enosys);
    assert_fell_back(&child, &Unsupported::NoSyscall);
}

/// Test 4a. The KILL filter works: a child that probes io_uring under it dies by `SIGSYS`
/// right at the probe. Without this, test 4b could pass vacuously.
#[test]
fn kill_filter_kills_a_child_that_probes_io_uring() {
    let child = run_child("probe", Filter::Kill);
    assert_eq!(child.status.signal(), Some(libc::SIGSYS), "the child should have been killed by SIGSYS\n{child}");
    assert_eq!(child.value("FILTER"), "kill", "{child}");
    assert_eq!(child.value("PROBING"), "check_uring_support", "{child}");
    assert!(child.values("CHECK").is_empty(), "the probe returned instead of dying\n{child}");
}

/// Test 4b. `engine = "tokio"` never calls `io_uring_setup`: under the KILL filter (which 4a
/// shows is lethal) the child builds the engine, does a write/sync/read round trip and exits 0.
#[test]
fn tokio_engine_never_touches_io_uring() {
    let child = run_child("tokio_engine", Filter::Kill);
    child.assert_completed();
    assert_eq!(child.status.signal(), None, "{child}");
    assert_eq!(child.value("BACKEND"), format!("{:?}", Backend::Tokio), "{child}");
    assert_eq!(child.value("REASON"), format!("{:?}", Reason::Requested(EngineChoice::Tokio)), "{child}");
    assert_eq!(child.value("ROUNDTRIP"), "ok", "{child}");
}

/// Test 4c. `preadv2` and `pwritev2` refused with `ENOSYS`, as by a kernel before 4.6 (with
/// io_uring refused too) or a seccomp profile without them: on either engine the fast path
/// turns itself off at the first refusal (once per direction) and every read and write goes
/// the normal way, instead of failing with `ENOSYS`.
#[test]
fn enosys_from_rwf_calls_turns_the_fast_path_off() {
    for (filter, backend) in [(Filter::OldKernel, Backend::Tokio), (Filter::NoRwf, Backend::Uring)] {
        let child = run_child("without_rwf", filter);
        child.assert_completed();
        assert_eq!(child.value("BACKEND"), format!("{backend:?}"), "{child}");
        assert_eq!(child.value("ROUNDTRIP"), "ok", "{child}");
        assert_eq!(child.value("FAST_HITS"), "0", "{child}");
        assert_eq!(child.value("FAST_REFUSALS"), "2", "one refusal per direction\n{child}");
    }
}

/// Test 5a. No filter, in this process: `engine = "uring"` gives the io_uring engine, chosen
/// because it was requested, and it works.
#[test]
fn uring_requested_here_is_uring() {
    let rt = runtime();
    let dir = tempdir();
    rt.block_on(async {
        let engine = create_engine(IoEngineConfig::default().with_engine(EngineChoice::Uring))
            .expect("io_uring must work on the test machines");
        assert_eq!(engine.backend(), Backend::Uring);
        let selection = engine.selection();
        assert_eq!(selection.backend, Backend::Uring);
        assert_eq!(selection.requested, EngineChoice::Uring);
        assert!(matches!(selection.reason, Reason::Requested(EngineChoice::Uring)), "{selection}");
        round_trip(&engine, dir.path()).await;
    });
}

/// Test 5b. No filter, in this process: `engine = "auto"` probes, succeeds, and records what
/// the kernel offers, including a non-empty kernel release.
#[test]
fn auto_here_is_probed_uring() {
    let rt = runtime();
    rt.block_on(async {
        let engine = create_engine(IoEngineConfig::default()).expect("auto engine");
        assert_eq!(engine.backend(), Backend::Uring);
        let selection = engine.selection();
        assert_eq!(selection.requested, EngineChoice::Auto);
        let Reason::Probed(info) = &selection.reason else {
            panic!("expected Reason::Probed, got {selection}");
        };
        assert!(!info.kernel.is_empty(), "{info}");
        assert_ne!(info.kernel, "unknown", "{info}");
        assert_eq!(info.sq_entries, 256, "{info}");
        assert!(info.opcodes.contains(&"WRITE_FIXED"), "{info}");
    });
}
