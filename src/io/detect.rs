//! Whether io_uring works here, and if not, why: [`check_uring_support`].
//!
//! The probe does what the engine will do: set up a ring with the configured number of entries,
//! probe the opcodes the engine uses, and register a fixed buffer. Each failure becomes a typed
//! [`Unsupported`] reason; `EPERM` is told apart by reading `kernel.io_uring_disabled`.

use std::fmt;
use std::io;

use crate::config::IoEngineConfig;

/// io_uring works: what the kernel offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringInfo {
    /// `uname -r`.
    pub kernel: String,
    /// Submission queue entries granted.
    pub sq_entries: u32,
    /// Completion queue entries granted.
    pub cq_entries: u32,
    /// The `IORING_FEAT_*` flags the kernel reported, by name.
    pub features: Vec<&'static str>,
    /// The opcodes the engine uses, all supported.
    pub opcodes: Vec<&'static str>,
}

impl fmt::Display for UringInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel {}, {} SQ / {} CQ entries, features [{}], opcodes [{}]",
            self.kernel,
            self.sq_entries,
            self.cq_entries,
            self.features.join(" "),
            self.opcodes.join(" ")
        )
    }
}

/// Why io_uring cannot be used here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unsupported {
    /// Built on Linux without the `io-uring` cargo feature.
    #[error("the io_uring engine is not compiled in (cargo feature `io-uring` off)")]
    NotCompiled,
    /// io_uring is a Linux interface; this platform has none.
    #[error("io_uring exists only on Linux, not on {os}")]
    NotLinux {
        /// The platform (`std::env::consts::OS`), e.g. `macos` or `windows`.
        os: &'static str,
    },
    /// `io_uring_setup` is `ENOSYS`.
    #[error(
        "io_uring_setup: ENOSYS: the kernel has no io_uring (older than 5.1 or CONFIG_IO_URING=n) or a sandbox hides the syscall"
    )]
    NoSyscall,
    /// `EPERM` while `kernel.io_uring_disabled` is 1 or 2.
    #[error("io_uring_setup: EPERM: sysctl kernel.io_uring_disabled = {sysctl} ({})", if *sysctl == 2 { "disabled for all processes" } else { "only for members of kernel.io_uring_group" })]
    Disabled {
        /// The sysctl's value.
        sysctl: u8,
    },
    /// `EPERM` with the sysctl allowing io_uring: a seccomp filter or an LSM refuses it.
    #[error("io_uring_setup: EPERM: refused by a seccomp filter or security module (kernel.io_uring_disabled = {})", sysctl.map_or("absent".to_owned(), |v| v.to_string()))]
    Denied {
        /// The sysctl's value, when the kernel has it.
        sysctl: Option<u8>,
    },
    /// `ENOMEM`: locked memory (`RLIMIT_MEMLOCK`) too small for the ring or the fixed buffers.
    #[error("{stage}: ENOMEM: the locked-memory limit (ulimit -l) is too small for the ring or its fixed buffers")]
    Memlock {
        /// Where it happened.
        stage: &'static str,
    },
    /// `EINVAL` for the ring size.
    #[error("io_uring_setup: EINVAL: {entries} entries is more than the kernel accepts")]
    RingTooLarge {
        /// The requested entries.
        entries: u32,
    },
    /// The kernel lacks an opcode the engine uses.
    #[error("the kernel lacks io_uring opcode {0}")]
    MissingOpcode(&'static str),
    /// Any other failure, with its errno.
    #[error("{stage}: {message} (errno {errno})")]
    Other {
        /// Where it happened.
        stage: &'static str,
        /// The OS error number.
        errno: i32,
        /// The OS error text.
        message: String,
    },
}

/// The answer of [`check_uring_support`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UringSupport {
    /// io_uring works.
    Supported(UringInfo),
    /// It does not, for this reason.
    Unsupported(Unsupported),
}

/// Reads `/proc/sys/kernel/io_uring_disabled` (Linux 6.6+): 0 allows io_uring, 1 allows it only
/// for `kernel.io_uring_group`, 2 forbids it. `None` when the kernel has no such sysctl, and
/// always off Linux (where wine would otherwise show the host's procfs).
///
/// ```
/// let sysctl = ferrite_io::io::detect::io_uring_disabled_sysctl();
/// assert!(matches!(sysctl, None | Some(0..=2)));
/// ```
pub fn io_uring_disabled_sysctl() -> Option<u8> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok()?.trim().parse().ok()
}

/// Maps an error from `stage` of the setup to its reason. `sysctl` is the value of
/// `kernel.io_uring_disabled`; `entries` the requested ring size.
pub fn classify(stage: &'static str, error: &io::Error, sysctl: Option<u8>, entries: u32) -> Unsupported {
    match error.raw_os_error() {
        Some(libc::ENOSYS) => Unsupported::NoSyscall,
        Some(libc::EPERM) => match sysctl {
            Some(v @ (1 | 2)) => Unsupported::Disabled { sysctl: v },
            _ => Unsupported::Denied { sysctl },
        },
        Some(libc::ENOMEM) => Unsupported::Memlock { stage },
        Some(libc::EINVAL) if stage == "io_uring_setup" && entries > crate::config::MAX_URING_ENTRIES => {
            Unsupported::RingTooLarge { entries }
        }
        errno => Unsupported::Other { stage, errno: errno.unwrap_or(0), message: error.to_string() },
    }
}

/// Probes io_uring the way [`UringEngine`](crate::UringEngine) would use it with `config`:
/// ring setup, opcodes, and registration of a pool of `config.registered_buffers` x
/// `config.buffer_size` bytes (so a locked-memory limit the engine's pool exceeds is reported
/// here as it would be there).
///
/// ```
/// match ferrite_io::check_uring_support(&ferrite_io::IoEngineConfig::default()) {
///     ferrite_io::UringSupport::Supported(info) => println!("io_uring: {info}"),
///     ferrite_io::UringSupport::Unsupported(why) => println!("no io_uring: {why}"),
/// }
/// ```
pub fn check_uring_support(config: &IoEngineConfig) -> UringSupport {
    match probe(config) {
        Ok(info) => UringSupport::Supported(info),
        Err(why) => UringSupport::Unsupported(why),
    }
}

#[cfg(uring)]
fn probe(config: &IoEngineConfig) -> Result<UringInfo, Unsupported> {
    let (ring, info) = setup(config.uring_entries)?;
    let pool = crate::buf::BufPool::new(config.registered_buffers, config.buffer_size)
        .map_err(|e| Unsupported::Other { stage: "mmap", errno: 0, message: e.to_string() })?;
    let iovecs = pool.iovecs();
    // SAFETY: the iovecs point into `pool`'s arena, which outlives `ring` (dropped at the end of
    // this function, before `pool`, as locals drop in reverse order) (I3); no operation uses it.
    unsafe { ring.submitter().register_buffers(&iovecs) }
        .map_err(|e| classify("io_uring_register(BUFFERS)", &e, io_uring_disabled_sysctl(), config.uring_entries))?;
    drop(ring);
    Ok(info)
}

#[cfg(not(uring))]
fn probe(_config: &IoEngineConfig) -> Result<UringInfo, Unsupported> {
    Err(Unsupported::not_compiled())
}

#[cfg(not(uring))]
impl Unsupported {
    /// Why a build without the io_uring engine has none: the platform, or the cargo feature.
    pub(crate) fn not_compiled() -> Unsupported {
        if cfg!(target_os = "linux") {
            Unsupported::NotCompiled
        } else {
            Unsupported::NotLinux { os: std::env::consts::OS }
        }
    }
}

/// The opcodes the engine submits.
#[cfg(uring)]
const REQUIRED: [(u8, &str); 8] = {
    use io_uring::opcode;
    [
        (opcode::Read::CODE, "READ"),
        (opcode::Write::CODE, "WRITE"),
        (opcode::ReadFixed::CODE, "READ_FIXED"),
        (opcode::WriteFixed::CODE, "WRITE_FIXED"),
        (opcode::Readv::CODE, "READV"),
        (opcode::Writev::CODE, "WRITEV"),
        (opcode::Fsync::CODE, "FSYNC"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ]
};

/// Sets up a ring of `entries` and checks the opcodes; the engine and the probe share this.
#[cfg(uring)]
pub(crate) fn setup(entries: u32) -> Result<(io_uring::IoUring, UringInfo), Unsupported> {
    let ring = io_uring::IoUring::new(entries)
        .map_err(|e| classify("io_uring_setup", &e, io_uring_disabled_sysctl(), entries))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| classify("io_uring_register(PROBE)", &e, io_uring_disabled_sysctl(), entries))?;
    if let Some((_, name)) = REQUIRED.iter().find(|(code, _)| !probe.is_supported(*code)) {
        return Err(Unsupported::MissingOpcode(name));
    }
    let params = ring.params();
    let features = [
        (params.is_feature_nodrop(), "NODROP"),
        (params.is_feature_submit_stable(), "SUBMIT_STABLE"),
        (params.is_feature_fast_poll(), "FAST_POLL"),
        (params.is_feature_ext_arg(), "EXT_ARG"),
        (params.is_feature_native_workers(), "NATIVE_WORKERS"),
        (params.is_feature_linked_file(), "LINKED_FILE"),
    ];
    let info = UringInfo {
        kernel: kernel_release(),
        sq_entries: params.sq_entries(),
        cq_entries: params.cq_entries(),
        features: features.iter().filter(|(on, _)| *on).map(|(_, name)| *name).collect(),
        opcodes: REQUIRED.iter().map(|(_, name)| *name).collect(),
    };
    Ok((ring, info))
}

/// On Linux the kernel's release (`uname -r`, from procfs); elsewhere the platform's name
/// (`macos`, `windows`): there is no Linux kernel to name, even when wine shows the host's.
///
/// ```
/// let kernel = ferrite_io::io::detect::kernel_release();
/// assert!(!kernel.is_empty());
/// ```
pub fn kernel_release() -> String {
    if !cfg!(target_os = "linux") {
        return std::env::consts::OS.to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(n: i32) -> io::Error {
        io::Error::from_raw_os_error(n)
    }

    #[test]
    fn errnos_map_to_reasons() {
        let s = "io_uring_setup";
        assert_eq!(classify(s, &errno(libc::ENOSYS), Some(0), 256), Unsupported::NoSyscall);
        assert_eq!(classify(s, &errno(libc::EPERM), Some(2), 256), Unsupported::Disabled { sysctl: 2 });
        assert_eq!(classify(s, &errno(libc::EPERM), Some(1), 256), Unsupported::Disabled { sysctl: 1 });
        assert_eq!(classify(s, &errno(libc::EPERM), Some(0), 256), Unsupported::Denied { sysctl: Some(0) });
        assert_eq!(classify(s, &errno(libc::EPERM), None, 256), Unsupported::Denied { sysctl: None });
        assert_eq!(classify(s, &errno(libc::ENOMEM), None, 256), Unsupported::Memlock { stage: s });
        assert_eq!(classify(s, &errno(libc::EINVAL), None, 65536), Unsupported::RingTooLarge { entries: 65536 });
        assert!(matches!(classify(s, &errno(libc::EINVAL), None, 256), Unsupported::Other { errno: libc::EINVAL, .. }));
    }

    #[test]
    fn reasons_say_what_to_do() {
        assert!(Unsupported::Disabled { sysctl: 2 }.to_string().contains("kernel.io_uring_disabled = 2"));
        assert!(Unsupported::Denied { sysctl: Some(0) }.to_string().contains("seccomp"));
        assert!(Unsupported::Memlock { stage: "x" }.to_string().contains("ulimit -l"));
    }

    #[cfg(uring)]
    #[test]
    fn this_machine_has_io_uring() {
        match check_uring_support(&IoEngineConfig::default()) {
            UringSupport::Supported(info) => {
                assert_eq!(info.sq_entries, 256);
                assert!(info.opcodes.contains(&"WRITE_FIXED"));
            }
            UringSupport::Unsupported(why) => {
                panic!("io_uring should work on the test machines: {why}")
            }
        }
    }

    /// Off Linux, `uring` is refused with the platform named and `auto` falls back to tokio.
    #[cfg(not(target_os = "linux"))]
    #[test]
    fn off_linux_io_uring_is_typed_as_missing() {
        use crate::{EngineChoice, Error, IoEngine, create_engine};
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _entered = runtime.enter();
        let config = |engine| IoEngineConfig { engine, ..IoEngineConfig::default() };
        let refused = create_engine(config(EngineChoice::Uring)).unwrap_err();
        let os = std::env::consts::OS;
        assert!(matches!(refused, Error::Unavailable(Unsupported::NotLinux { os: o }) if o == os), "{refused}");
        let engine = create_engine(config(EngineChoice::Auto)).unwrap();
        assert_eq!(engine.backend(), crate::Backend::Tokio);
        assert_eq!(
            check_uring_support(&config(EngineChoice::Auto)),
            UringSupport::Unsupported(Unsupported::NotLinux { os })
        );
    }

    /// Off Linux there is no Linux kernel and no io_uring sysctl to report, even under wine,
    /// whose `Z:` drive shows the host's `/proc`.
    #[cfg(not(target_os = "linux"))]
    #[test]
    fn off_linux_no_linux_facts_are_reported() {
        assert_eq!(kernel_release(), std::env::consts::OS);
        assert_eq!(io_uring_disabled_sysctl(), None);
    }

    /// Off Linux there is no `RWF_NOWAIT`: with `nowait_fast_path` on, a buffered write and
    /// read take the blocking pool and count neither a fast-path hit nor a refusal.
    #[cfg(not(target_os = "linux"))]
    #[test]
    fn off_linux_the_fast_path_is_off() {
        use crate::{IoEngine, OpenOptions, create_engine};
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let config = IoEngineConfig { nowait_fast_path: true, ..IoEngineConfig::default() };
            let engine = create_engine(config).unwrap();
            let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
            let file = engine.open(dir.path().join("f"), &OpenOptions::new().create(true)).await.unwrap();
            let (written, buf) = engine.write_at(&file, engine.acquire().await, 0).await.into_parts();
            assert_eq!(written.unwrap(), buf.len());
            let (read, back) = engine.read_at(&file, buf.into_free(), 0).await.into_parts();
            assert_eq!(read.unwrap(), back.len());
            let stats = engine.stats();
            assert_eq!((stats.fast_path_hits, stats.fast_path_refusals), (0, 0), "{stats:?}");
        });
    }

    #[cfg(uring)]
    #[test]
    fn an_oversized_ring_is_named() {
        let config = IoEngineConfig { uring_entries: 65536, ..IoEngineConfig::default() };
        assert_eq!(
            check_uring_support(&config),
            UringSupport::Unsupported(Unsupported::RingTooLarge { entries: 65536 })
        );
    }
}
