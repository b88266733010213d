//! [`File`]: an open file shared by operations in flight, and [`OpenOptions`] with `O_DIRECT`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Op, Result};

/// An open file. Cloning shares the descriptor; every operation in flight holds a clone, so the
/// descriptor stays open (and its number cannot be reused) until the kernel is done with it.
/// A file opened by path keeps the path, which its errors name.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use ferrite_io::{File, OpenOptions};
/// # let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("data");
/// let file = File::open(&path, &OpenOptions::new().create(true)).await?;
/// assert_eq!(file.path(), Some(path.as_path()));
/// assert_eq!(file.size()?, 0);
/// assert!(!file.is_direct());
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct File {
    inner: Arc<Inner>,
    direct: bool,
}

#[derive(Debug)]
struct Inner {
    std: std::fs::File,
    path: Option<PathBuf>,
}

/// How to open a [`File`]: read and write by default.
///
/// ```
/// use ferrite_io::OpenOptions;
/// let log = OpenOptions::new().create(true).truncate(true); // a fresh file
/// let pages = OpenOptions::new().direct(true); // existing file, bypassing the page cache
/// let snapshot = OpenOptions::new().write(false); // read-only
/// # let _ = (log, pages, snapshot);
/// ```
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
    ///
    /// ```
    /// let options = ferrite_io::OpenOptions::new();
    /// # let _ = options;
    /// ```
    pub fn new() -> Self {
        OpenOptions::default()
    }

    /// Open for writing too (default `true`); `false` opens read-only.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use ferrite_io::{File, OpenOptions};
    /// # std::fs::write(dir.path().join("f"), b"x").unwrap();
    /// let file = File::open(dir.path().join("f"), &OpenOptions::new().write(false)).await?;
    /// assert_eq!(file.size()?, 1);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    #[must_use]
    pub fn write(mut self, write: bool) -> Self {
        self.write = write;
        self
    }

    /// Create the file if it does not exist.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use ferrite_io::{File, OpenOptions};
    /// let path = dir.path().join("new");
    /// assert!(File::open(&path, &OpenOptions::new()).await.is_err()); // NotFound
    /// let file = File::open(&path, &OpenOptions::new().create(true)).await?;
    /// # drop(file);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    #[must_use]
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Truncate the file to zero length.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use ferrite_io::{File, OpenOptions};
    /// let path = dir.path().join("old");
    /// std::fs::write(&path, b"stale").unwrap();
    /// let file = File::open(&path, &OpenOptions::new().truncate(true)).await?;
    /// assert_eq!(file.size()?, 0);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    #[must_use]
    pub fn truncate(mut self, truncate: bool) -> Self {
        self.truncate = truncate;
        self
    }

    /// Open with `O_DIRECT` (Linux): I/O bypasses the page cache. Buffer addresses, offsets and
    /// lengths must then be multiples of the file's direct-I/O alignment (the device's logical
    /// block size, often 512 or 4096; `statx` reports it). Pool buffers are aligned to 4096;
    /// caller memory (a `Buf` from a `Vec`) usually is not, and the kernel refuses it with
    /// `EINVAL`. Filesystems differ: a filesystem without `O_DIRECT` fails the open with
    /// `EINVAL`; tmpfs used to be one, but recent kernels accept it there (6.18 does), where it
    /// bypasses nothing, since tmpfs *is* the page cache: measure device I/O on a real disk.
    ///
    /// Left unset, a file opened through an engine follows the engine's `io.direct_io` config
    /// key, and [`File::open`] opens it buffered.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use ferrite_io::{File, OpenOptions};
    /// # std::fs::write(dir.path().join("pages"), vec![0; 8192]).unwrap();
    /// match File::open(dir.path().join("pages"), &OpenOptions::new().direct(true)).await {
    ///     Ok(file) => assert!(file.is_direct()),
    ///     Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL)), // no O_DIRECT on this filesystem
    /// }
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
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
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use ferrite_io::{Error, File, OpenOptions};
    /// let missing = dir.path().join("missing");
    /// let error = File::open(&missing, &OpenOptions::new()).await.unwrap_err();
    /// assert!(matches!(&error, Error::Open { path, .. } if *path == missing));
    /// assert_eq!(error.raw_os_error(), Some(libc::ENOENT));
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    pub async fn open(path: impl AsRef<Path>, options: &OpenOptions) -> Result<File> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let (options, direct) = (options.clone(), options.direct.unwrap_or(false));
        let handle = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime("File::open"))?;
        let opening = path.clone();
        let opened = handle.spawn_blocking(move || open_blocking(&opening, &options)).await;
        match opened.unwrap_or_else(|join| Err(std::io::Error::other(join))) {
            Ok(std) => Ok(File { inner: Arc::new(Inner { std, path: Some(path) }), direct }),
            Err(source) => Err(Error::Open { path, source }),
        }
    }

    /// Wraps an already open file. `direct` says whether it was opened with `O_DIRECT`. The
    /// file has no [`path`](Self::path) (its errors say so).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let std = std::fs::File::create(dir.path().join("f")).unwrap();
    /// let file = ferrite_io::File::from_std(std, false);
    /// assert_eq!(file.path(), None);
    /// ```
    pub fn from_std(file: std::fs::File, direct: bool) -> File {
        File { inner: Arc::new(Inner { std: file, path: None }), direct }
    }

    /// The path the file was opened with; `None` for [`from_std`](Self::from_std).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use ferrite_io::{File, OpenOptions};
    /// let path = dir.path().join("f");
    /// let file = File::open(&path, &OpenOptions::new().create(true)).await?;
    /// assert_eq!(file.path(), Some(path.as_path()));
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Whether the file was opened with `O_DIRECT`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use ferrite_io::{File, OpenOptions};
    /// let file = File::open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// assert!(!file.is_direct());
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The standard file, for metadata and `set_len`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use ferrite_io::{File, OpenOptions};
    /// let file = File::open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// file.std().set_len(4096).unwrap(); // a std call on the same descriptor
    /// assert_eq!(file.size()?, 4096);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    pub fn std(&self) -> &std::fs::File {
        &self.inner.std
    }

    /// The file's size in bytes (fstat).
    ///
    /// # Errors
    ///
    /// [`Error::File`] when `fstat` fails.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use ferrite_io::{File, OpenOptions};
    /// let file = File::open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// assert_eq!(file.size()?, 0);
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    pub fn size(&self) -> Result<u64> {
        self.std().metadata().map(|m| m.len()).map_err(|source| self.error(Op::Stat, None, source))
    }

    fn error(&self, op: Op, len: Option<u64>, source: std::io::Error) -> Error {
        Error::File { op, path: self.inner.path.clone(), len, source }
    }

    /// Reserves disk blocks for the first `len` bytes (`fallocate`, keeping the size unchanged
    /// when `len` is below it), on the blocking pool. Returns `false` when the filesystem (or
    /// the platform) cannot preallocate; that is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::File`] with the length for any other failure (e.g. `ENOSPC`).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let file = ferrite_io::File::open(dir.path().join("log"), &ferrite_io::OpenOptions::new().create(true)).await?;
    /// let reserved = file.preallocate(1 << 20).await?;
    /// assert_eq!(file.size()?, if reserved { 1 << 20 } else { 0 });
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    pub async fn preallocate(&self, len: u64) -> Result<bool> {
        let file = self.inner.clone();
        let done = tokio::task::spawn_blocking(move || fallocate(&file.std, len)).await;
        let result = done.unwrap_or_else(|join| Err(std::io::Error::other(join)));
        match result {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => Ok(false),
            Err(source) => Err(self.error(Op::Allocate, Some(len), source)),
        }
    }

    #[cfg(uring)]
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.inner.std.as_raw_fd()
    }
}

fn open_blocking(path: &Path, options: &OpenOptions) -> std::io::Result<std::fs::File> {
    let mut std_options = std::fs::OpenOptions::new();
    std_options.read(true).write(options.write).create(options.create).truncate(options.truncate);
    let direct = options.direct.unwrap_or(false);
    if direct {
        set_direct(&mut std_options)?;
    }
    std_options.open(path)
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
