//! Typed errors. Every I/O failure names the operation, the file (when it was opened by path),
//! the file offset and the engine that ran it; [`Error`] converts into [`std::io::Error`]
//! keeping the kind and the OS error code.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::io::detect::Unsupported;

/// Result alias for this crate.
///
/// ```
/// fn pool() -> ferrite_io::Result<ferrite_io::BufPool> {
///     ferrite_io::BufPool::new(8, 4096)
/// }
/// # pool().unwrap();
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The operation an error comes from, named after what the caller called.
///
/// `Read` and `Write` are also the reads and writes of `read_exact_at`, `write_all_at`,
/// `write_durable_at` and a [`Batch`](crate::Batch); a `Buf<Registered>` of the engine's pool
/// given to `read_at` (or a batch) reports `ReadFixed`, as it uses the fixed-buffer opcode.
///
/// ```
/// assert_eq!(ferrite_io::Op::SyncData.to_string(), "sync_data (fdatasync)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Opening a file.
    Open,
    /// `read_at` (pread or IORING_OP_READ).
    Read,
    /// `write_at` (pwrite or IORING_OP_WRITE).
    Write,
    /// `read_fixed_at` (IORING_OP_READ_FIXED).
    ReadFixed,
    /// `write_fixed_at` (IORING_OP_WRITE_FIXED).
    WriteFixed,
    /// `read_vectored_at` (preadv or IORING_OP_READV).
    ReadVectored,
    /// `write_vectored_at` (pwritev or IORING_OP_WRITEV).
    WriteVectored,
    /// `sync_all` (fsync).
    SyncAll,
    /// `sync_data` (fdatasync).
    SyncData,
    /// `File::size` (fstat).
    Stat,
    /// `File::preallocate` (fallocate).
    Allocate,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open",
            Op::Read => "read",
            Op::Write => "write",
            Op::ReadFixed => "read with a fixed buffer",
            Op::WriteFixed => "write with a fixed buffer",
            Op::ReadVectored => "read_vectored_at",
            Op::WriteVectored => "write_vectored_at",
            Op::SyncAll => "sync_all (fsync)",
            Op::SyncData => "sync_data (fdatasync)",
            Op::Stat => "File::size (fstat)",
            Op::Allocate => "File::preallocate (fallocate)",
        })
    }
}

/// Which engine ran an operation.
///
/// ```
/// assert_eq!(ferrite_io::Backend::Uring.to_string(), "io_uring");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// [`UringEngine`](crate::UringEngine).
    Uring,
    /// [`TokioEngine`](crate::TokioEngine).
    Tokio,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Uring => "io_uring",
            Backend::Tokio => "tokio",
        })
    }
}

/// Everything that can go wrong in this crate.
///
/// Errors from the kernel name the operation, the file and the offset, and keep the OS error
/// as their `source`; [`raw_os_error`](Error::raw_os_error) gives its code, and
/// `std::io::Error::from` turns any `Error` into an `io::Error` of the matching kind.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::{Buf, Error, IoEngine, IoEngineConfig, Op, OpenOptions};
/// # let dir = tempfile::tempdir().unwrap();
/// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
/// let path = dir.path().join("ro");
/// std::fs::write(&path, b"x").unwrap();
/// let file = engine.open(&path, &OpenOptions::new().write(false)).await?;
/// let (result, _buf) = engine.write_at(&file, Buf::from(vec![0; 4]), 8).await.into_parts();
/// let error = result.unwrap_err();
/// assert!(matches!(&error, Error::Io { op: Op::Write, offset: 8, .. }));
/// assert!(error.to_string().contains(&*path.to_string_lossy())); // names the file
/// let ebadf = if cfg!(windows) { 5 } else { libc::EBADF }; // Windows: ERROR_ACCESS_DENIED
/// assert_eq!(error.raw_os_error(), Some(ebadf));
/// let io: std::io::Error = error.into();
/// assert_eq!(io.raw_os_error(), Some(ebadf));
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel (or the blocking syscall) returned an error.
    #[error("{op} {} on the {backend} engine failed: {source}", place(.op, .path, .offset))]
    Io {
        /// The operation.
        op: Op,
        /// The file, when it was opened by path (not for [`File::from_std`](crate::File::from_std)).
        path: Option<PathBuf>,
        /// The file offset it started at (0 for syncs).
        offset: u64,
        /// The engine.
        backend: Backend,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// [`File::size`](crate::File::size) or [`File::preallocate`](crate::File::preallocate)
    /// failed. These are plain syscalls on the file, run by no engine.
    #[error("{op} of {} failed{}: {source}", PathName(.path.as_deref()), Bytes(*.len))]
    File {
        /// [`Op::Stat`] or [`Op::Allocate`].
        op: Op,
        /// The file, when it was opened by path.
        path: Option<PathBuf>,
        /// For `preallocate`, the length asked for.
        len: Option<u64>,
        /// The OS error (e.g. `ENOSPC`).
        #[source]
        source: io::Error,
    },
    /// A file could not be opened (or created).
    #[error("open {} failed: {source}", path.display())]
    Open {
        /// The path as given.
        path: std::path::PathBuf,
        /// The OS error (e.g. `NotFound`, or `EINVAL` for `O_DIRECT` on a filesystem without it).
        #[source]
        source: io::Error,
    },
    /// `read_exact_at` reached the end of the file first.
    #[error("{op} {}: end of file after {done} of {wanted} bytes", place(.op, .path, .offset))]
    UnexpectedEof {
        /// The operation.
        op: Op,
        /// The file, when it was opened by path.
        path: Option<PathBuf>,
        /// The file offset the whole request started at.
        offset: u64,
        /// Bytes transferred before end of file.
        done: usize,
        /// Bytes asked for.
        wanted: usize,
    },
    /// `write_all_at` made no progress: the device accepted zero bytes.
    #[error("{op} {}: zero bytes written after {done} of {wanted}", place(.op, .path, .offset))]
    WriteZero {
        /// The operation.
        op: Op,
        /// The file, when it was opened by path.
        path: Option<PathBuf>,
        /// The file offset the whole request started at.
        offset: u64,
        /// Bytes written before the zero-length write.
        done: usize,
        /// Bytes asked for.
        wanted: usize,
    },
    /// The kernel cancelled the operation (`ECANCELED`): an earlier operation of its linked
    /// chain failed, or the engine is shutting down. Never a success.
    #[error("{op} {} was cancelled (its linked chain broke or the engine shut down)", place(.op, .path, .offset))]
    Cancelled {
        /// The operation.
        op: Op,
        /// The file, when it was opened by path.
        path: Option<PathBuf>,
        /// The file offset.
        offset: u64,
    },
    /// A buffer was given to an engine it is not registered with.
    #[error("buffer of pool {buf_pool} is not registered with this engine (its pool is {engine_pool})")]
    ForeignBuffer {
        /// The id of the pool the buffer came from.
        buf_pool: u64,
        /// The id of the pool registered with the engine.
        engine_pool: u64,
    },
    /// A requested length does not fit the buffer.
    #[error("length {len} exceeds the buffer capacity {capacity}")]
    Length {
        /// The requested length.
        len: usize,
        /// The buffer capacity.
        capacity: usize,
    },
    /// A configuration value is out of range.
    #[error("invalid config: {key} = {value}; expected {expected}")]
    Config {
        /// The key, as written in the TOML file (e.g. `io.uring_entries`).
        key: &'static str,
        /// The rejected value.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
    /// A configuration file could not be read or parsed.
    #[error("config {path}: {message}")]
    ConfigFile {
        /// The file (or `<string>`).
        path: String,
        /// The parser's message, which names the key and the allowed values.
        message: String,
    },
    /// io_uring was asked for and cannot be used here.
    #[error("io_uring unavailable: {0}")]
    Unavailable(#[from] Unsupported),
    /// A page read back is not the page asked for (never written, torn, misdirected, corrupt).
    #[error(transparent)]
    Page(#[from] crate::hybridlog::page::PageError),
    /// Recovery found a page that no crash can explain (a checksum or address mismatch, or an
    /// acknowledged page that is not intact); the log is corrupt there.
    #[error("log corrupt at {address}: {page}")]
    Corrupt {
        /// The page's address.
        address: u64,
        /// What is wrong with it.
        page: crate::hybridlog::page::PageError,
    },
    /// The flusher saw a sync fail; no later flush can be acknowledged.
    #[error("flusher poisoned by a failed sync (first failure at address {address}): {cause}")]
    Poisoned {
        /// The first page whose sync failed.
        address: u64,
        /// The sync error, as text.
        cause: String,
    },
    /// A flush that would overwrite the only durable copy of acknowledged data: a page that was
    /// flushed whole (it is closed), or a partial flush shorter than the one acknowledged.
    #[error("flush of the page at {address} refused: {reason}")]
    Rewrite {
        /// The page's address.
        address: u64,
        /// Why.
        reason: &'static str,
    },
    /// The page is durable but cannot be acknowledged: the flush of an earlier page failed, and
    /// an acknowledgement promises everything before the page too. Flushing the earlier page
    /// again acknowledges both (this page is not flushed again: it was written whole).
    #[error("page at {address} is written but not acknowledged: the flush of the page at {blocked_by} failed")]
    Gap {
        /// The page whose flush this is.
        address: u64,
        /// The earlier page whose flush failed.
        blocked_by: u64,
    },
    /// A log address that is not a multiple of the page size, or a page of the wrong size.
    #[error("{what}: {value} is not a multiple of the page size {page_size}")]
    Unaligned {
        /// What was checked.
        what: &'static str,
        /// The value.
        value: u64,
        /// The page size.
        page_size: usize,
    },
    /// A direct-I/O operation whose file offset, buffer length or buffer address is not a
    /// multiple of what the file demands ([`File::alignment`](crate::File::alignment)): refused
    /// before anything is submitted, on every engine alike (the kernel would answer `EINVAL`,
    /// which [`raw_os_error`](Self::raw_os_error) reports).
    #[error("{op} {}: direct I/O needs the {what} to be a multiple of {required} ({value} is {} past one)", place(.op, .path, .offset), value % u64::from(*required))]
    DirectUnaligned {
        /// The operation.
        op: Op,
        /// The file, when it was opened by path.
        path: Option<PathBuf>,
        /// The file offset it started at.
        offset: u64,
        /// The rule it broke: memory alignment (address) or offset alignment (offset, length).
        what: crate::io::Misaligned,
        /// The offending length or offset; for an address, its remainder modulo `required` (an
        /// address says nothing across runs, its misalignment does).
        value: u64,
        /// The multiple required.
        required: u32,
    },
    /// The buffer arena could not be mapped.
    #[error("mapping the buffer arena failed: {0}")]
    Map(#[source] io::Error),
    /// An engine was created outside a tokio runtime.
    #[error("{0} needs a tokio runtime: call it from inside #[tokio::main] or Runtime::block_on")]
    NoRuntime(&'static str),
}

impl Error {
    /// The OS error code, when the error came from the kernel.
    ///
    /// ```
    /// let e = ferrite_io::Error::Cancelled { op: ferrite_io::Op::Read, path: None, offset: 0 };
    /// assert_eq!(e.raw_os_error(), Some(libc::ECANCELED));
    /// ```
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::Open { source, .. } | Error::File { source, .. } => source.raw_os_error(),
            Error::Cancelled { .. } => Some(libc::ECANCELED),
            Error::DirectUnaligned { .. } => Some(libc::EINVAL),
            _ => None,
        }
    }

    /// Maps an `io::Error` of `op` on `file` into a typed error (a direct-I/O alignment refusal
    /// into [`Error::DirectUnaligned`]).
    pub(crate) fn os(op: Op, file: &crate::File, offset: u64, backend: Backend, source: io::Error) -> Error {
        Error::os_path(op, file.path(), offset, backend, source)
    }

    /// As [`os`](Self::os), for a file known by its path (if it has one).
    pub(crate) fn os_path(op: Op, path: Option<&Path>, offset: u64, backend: Backend, source: io::Error) -> Error {
        let refused = source.get_ref().and_then(|e| e.downcast_ref::<crate::io::Refusal>());
        let path = path.map(Path::to_path_buf);
        if let Some(&crate::io::Refusal { what, value, required }) = refused {
            Error::DirectUnaligned { op, path, offset, what, value, required }
        } else if source.raw_os_error() == Some(libc::ECANCELED) {
            Error::Cancelled { op, path, offset }
        } else {
            Error::Io { op, path, offset, backend, source }
        }
    }

    /// The `io::ErrorKind` this error converts to.
    fn kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match self {
            Error::Io { source, .. } | Error::File { source, .. } | Error::Open { source, .. } => source.kind(),
            Error::Map(source) => source.kind(),
            Error::UnexpectedEof { .. } => K::UnexpectedEof,
            Error::WriteZero { .. } => K::WriteZero,
            Error::ForeignBuffer { .. } | Error::Length { .. } | Error::Unaligned { .. } => K::InvalidInput,
            Error::DirectUnaligned { .. } => K::InvalidInput,
            Error::Rewrite { .. } => K::InvalidInput,
            Error::Gap { .. } => K::Other,
            Error::Config { .. } | Error::ConfigFile { .. } => K::InvalidInput,
            Error::Unavailable(_) => K::Unsupported,
            Error::Page(_) | Error::Corrupt { .. } => K::InvalidData,
            Error::Cancelled { .. } | Error::Poisoned { .. } | Error::NoRuntime(_) => K::Other,
        }
    }
}

impl From<Error> for io::Error {
    /// An error from the kernel becomes its OS error again (same kind, same
    /// [`raw_os_error`](io::Error::raw_os_error); log the [`Error`] first if you need its file
    /// and offset, which an OS error cannot carry). Any other error is wrapped, with a matching
    /// kind (`UnexpectedEof`, `WriteZero`, `InvalidInput`, `InvalidData`, ...), and can be
    /// recovered with `get_ref()` and `downcast_ref::<ferrite_io::Error>()`.
    ///
    /// ```
    /// let e = ferrite_io::Error::UnexpectedEof { op: ferrite_io::Op::Read, path: None, offset: 0, done: 1, wanted: 2 };
    /// let io = std::io::Error::from(e);
    /// assert_eq!(io.kind(), std::io::ErrorKind::UnexpectedEof);
    /// assert!(io.get_ref().unwrap().downcast_ref::<ferrite_io::Error>().is_some());
    /// ```
    fn from(error: Error) -> io::Error {
        match error {
            Error::Io { source, .. } | Error::File { source, .. } | Error::Open { source, .. } | Error::Map(source)
                if source.raw_os_error().is_some() =>
            {
                source
            }
            Error::Cancelled { .. } => io::Error::from_raw_os_error(libc::ECANCELED),
            other => io::Error::new(other.kind(), other),
        }
    }
}

/// Where an operation ran, for `Error::Io`'s message: `at offset 4096 of /data/log`.
fn place<'a>(op: &Op, path: &'a Option<PathBuf>, offset: &u64) -> Place<'a> {
    Place { op: *op, path: path.as_deref(), offset: *offset }
}

struct Place<'a> {
    op: Op,
    path: Option<&'a Path>,
    offset: u64,
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !matches!(self.op, Op::SyncAll | Op::SyncData | Op::Stat | Op::Open) {
            write!(f, "at offset {} ", self.offset)?;
        }
        write!(f, "of {}", PathName(self.path))
    }
}

/// A file's path, or what to say when it has none.
struct PathName<'a>(Option<&'a Path>);

impl fmt::Display for PathName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "{}", path.display()),
            None => f.write_str("a file opened without a path"),
        }
    }
}

/// `File::preallocate`'s length, for `Error::File`'s message.
struct Bytes(Option<u64>);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(len) => write!(f, " for a length of {len} bytes"),
            None => Ok(()),
        }
    }
}
