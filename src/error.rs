//! Typed errors. Every I/O failure names the operation, the file offset and the engine that ran it.

use std::fmt;
use std::io;

use crate::io::detect::Unsupported;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The operation an error comes from.
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
            Op::ReadFixed => "read_fixed",
            Op::WriteFixed => "write_fixed",
            Op::ReadVectored => "read_vectored",
            Op::WriteVectored => "write_vectored",
            Op::SyncAll => "fsync",
            Op::SyncData => "fdatasync",
            Op::Stat => "fstat",
            Op::Allocate => "fallocate",
        })
    }
}

/// Which engine ran an operation.
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
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel (or the blocking syscall) returned an error.
    #[error("{op} at offset {offset} on the {backend} engine failed: {source}")]
    Io {
        /// The operation.
        op: Op,
        /// The file offset it started at.
        offset: u64,
        /// The engine.
        backend: Backend,
        /// The OS error.
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
    #[error("{op} at offset {offset}: end of file after {done} of {wanted} bytes")]
    UnexpectedEof {
        /// The operation.
        op: Op,
        /// The file offset the whole request started at.
        offset: u64,
        /// Bytes transferred before end of file.
        done: usize,
        /// Bytes asked for.
        wanted: usize,
    },
    /// `write_all_at` made no progress: the device accepted zero bytes.
    #[error("{op} at offset {offset}: zero bytes written after {done} of {wanted}")]
    WriteZero {
        /// The operation.
        op: Op,
        /// The file offset the whole request started at.
        offset: u64,
        /// Bytes written before the zero-length write.
        done: usize,
        /// Bytes asked for.
        wanted: usize,
    },
    /// The kernel cancelled the operation (`ECANCELED`): an earlier operation of its linked
    /// chain failed, or the engine is shutting down. Never a success.
    #[error("{op} at offset {offset} was cancelled (its linked chain broke or the engine shut down)")]
    Cancelled {
        /// The operation.
        op: Op,
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
    /// The buffer arena could not be mapped.
    #[error("mapping the buffer arena failed: {0}")]
    Map(#[source] io::Error),
    /// An engine was created outside a tokio runtime.
    #[error("{0} needs a tokio runtime: call it from inside #[tokio::main] or Runtime::block_on")]
    NoRuntime(&'static str),
}

impl Error {
    /// The OS error code, when the error came from the kernel.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::Open { source, .. } => source.raw_os_error(),
            Error::Cancelled { .. } => Some(libc::ECANCELED),
            _ => None,
        }
    }

    /// Maps a negative errno or an `io::Error` from `op` into a typed error.
    pub(crate) fn os(op: Op, offset: u64, backend: Backend, source: io::Error) -> Error {
        if source.raw_os_error() == Some(libc::ECANCELED) {
            Error::Cancelled { op, offset }
        } else {
            Error::Io { op, offset, backend, source }
        }
    }
}
