//! [`File`]: an open file shared by operations in flight, and [`OpenOptions`] with `O_DIRECT`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Backend, Error, Op, Result};

/// An open file. Cloning shares the descriptor; every operation in flight holds a clone, so the
/// descriptor stays open (and its number cannot be reused) until the kernel is done with it.
#[derive(Debug, Clone)]
pub struct File {
    inner: Arc<std::fs::File>,
    direct: bool,
}

/// How to open a [`File`]: read and write by default.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    write: bool,
    create: bool,
    truncate: bool,
    /// `None`: the engine's `direct_io` default (buffered for [`File::open`]).
    direct: Option<bool>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { write: true, create: false, truncate: false, direct: None }
    }
}

impl OpenOptions {
    /// Read and write, no create, no truncate; direct I/O as the engine's config says.
    pub fn new() -> Self {
        OpenOptions::default()
    }

    /// Open for writing too (default `true`); `false` opens read-only.
    #[must_use]
    pub fn write(mut self, write: bool) -> Self {
        self.write = write;
        self
    }

    /// Create the file if it does not exist.
    #[must_use]
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Truncate the file to zero length.
    #[must_use]
    pub fn truncate(mut self, truncate: bool) -> Self {
        self.truncate = truncate;
        self
    }

    /// Open with `O_DIRECT` (Linux): I/O bypasses the page cache. Buffers, offsets and lengths
    /// must then be multiples of the device's logical block size; pool buffers always are
    /// aligned to 4096. Not on tmpfs, which rejects it.
    ///
    /// Left unset, a file opened through an engine follows the engine's `io.direct_io` config
    /// key, and [`File::open`] opens it buffered.
    #[must_use]
    pub fn direct(mut self, direct: bool) -> Self {
        self.direct = Some(direct);
        self
    }

    /// Direct I/O as set, or `default` when it was left unset.
    pub(crate) fn direct_default(mut self, default: bool) -> Self {
        self.direct.get_or_insert(default);
        self
    }
}

impl File {
    /// Opens `path` on tokio's blocking pool.
    ///
    /// # Errors
    ///
    /// [`Error::Open`] with the path and the OS error (e.g. `NotFound`, or `EINVAL` for
    /// `O_DIRECT` on a filesystem without it); [`Error::NoRuntime`] outside a tokio runtime.
    pub async fn open(path: impl AsRef<Path>, options: &OpenOptions) -> Result<File> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let options = options.clone();
        let handle = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime("File::open"))?;
        let opening = path.clone();
        let opened = handle.spawn_blocking(move || open_blocking(&opening, &options)).await;
        let opened = opened.unwrap_or_else(|join| Err(std::io::Error::other(join)));
        opened.map_err(|source| Error::Open { path, source })
    }

    /// Wraps an already open file. `direct` says whether it was opened with `O_DIRECT`.
    pub fn from_std(file: std::fs::File, direct: bool) -> File {
        File { inner: Arc::new(file), direct }
    }

    /// Whether the file was opened with `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The standard file, for metadata and `set_len`.
    pub fn std(&self) -> &std::fs::File {
        &self.inner
    }

    /// The file's size in bytes (fstat).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `fstat` fails.
    pub fn size(&self) -> Result<u64> {
        self.inner.metadata().map(|m| m.len()).map_err(|source| Error::Io {
            op: Op::Stat,
            offset: 0,
            backend: Backend::Tokio,
            source,
        })
    }

    /// Reserves disk blocks for the first `len` bytes (`fallocate`, keeping the size unchanged
    /// when `len` is below it), on the blocking pool. Returns `false` when the filesystem (or
    /// the platform) cannot preallocate; that is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] for any other failure (e.g. `ENOSPC`).
    pub async fn preallocate(&self, len: u64) -> Result<bool> {
        let file = self.inner.clone();
        let done = tokio::task::spawn_blocking(move || fallocate(&file, len)).await;
        let result = done.unwrap_or_else(|join| Err(std::io::Error::other(join)));
        match result {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => Ok(false),
            Err(source) => Err(Error::Io { op: Op::Allocate, offset: len, backend: Backend::Tokio, source }),
        }
    }

    #[cfg(uring)]
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.inner.as_raw_fd()
    }
}

fn open_blocking(path: &Path, options: &OpenOptions) -> std::io::Result<File> {
    let mut std_options = std::fs::OpenOptions::new();
    std_options.read(true).write(options.write).create(options.create).truncate(options.truncate);
    let direct = options.direct.unwrap_or(false);
    if direct {
        set_direct(&mut std_options)?;
    }
    let file = std_options.open(path)?;
    Ok(File::from_std(file, direct))
}

#[cfg(target_os = "linux")]
fn set_direct(options: &mut std::fs::OpenOptions) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    options.custom_flags(libc::O_DIRECT);
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_options: &mut std::fs::OpenOptions) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "O_DIRECT is Linux only"))
}

#[cfg(target_os = "linux")]
fn fallocate(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: fallocate(2) takes no pointers; the descriptor is open for the borrow of `file`.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
fn fallocate(_file: &std::fs::File, _len: u64) -> std::io::Result<()> {
    Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP))
}
