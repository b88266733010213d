//! [`File`]: an open file shared by operations in flight; [`OpenOptions`] with each platform's
//! direct I/O; the [`Alignment`] a direct file demands and the check both engines run before
//! submitting; positional I/O ([`PositionalIo`]) and preallocation on every platform.
//!
//! | platform | `direct(true)` means                     | alignment enforced                       |
//! |----------|------------------------------------------|------------------------------------------|
//! | Linux    | `O_DIRECT`                               | `statx(STATX_DIOALIGN)`, else the device's logical block size, else `st_blksize` |
//! | macOS    | `F_NOCACHE` (`fcntl` after open)         | none: the kernel accepts any alignment    |
//! | Windows  | `FILE_FLAG_NO_BUFFERING`                 | the volume's sectors (`FileStorageInfo`, else `GetDiskFreeSpaceW`), else 4096 |

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::buf::{Buf, InFlight};
use crate::error::{Error, Op, Result};

/// An open file. Cloning shares the descriptor. An operation in flight borrows the file, or holds
/// a clone once its future is dropped, so the descriptor stays open (and its number cannot be
/// reused) until the kernel is done with it.
/// A file opened by path keeps the path, which its errors name. A descriptor without positions
/// ([`from_std`](Self::from_std) of a pipe or a socket: `lseek` fails with `ESPIPE`) is read and
/// written as a stream on every engine, as io_uring does: a pipe ignores the offset, a socket
/// refuses any but 0 with `ESPIPE`, a read takes what is there, and an empty `O_NONBLOCK` one
/// is waited for rather than failed with `EAGAIN`.
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
    /// `Some` exactly when the file was opened for direct I/O.
    alignment: Option<Alignment>,
}

#[derive(Debug)]
struct Inner {
    std: std::fs::File,
    path: Option<PathBuf>,
    /// The descriptor has no position (see [`File::is_stream`]).
    stream: bool,
    /// The descriptor is a socket (see [`File::is_socket`]).
    socket: bool,
    /// The file's slot in the fixed-file tables of the first io_uring engine that did I/O on
    /// it, made on that first use. Dropped with the last handle, which outlives every entry
    /// naming the slot until the kernel has issued it (see `uring::ring::Payload`), and the drop
    /// unregisters it.
    #[cfg(uring)]
    fixed: std::sync::OnceLock<super::uring::Fixed>,
}

impl Inner {
    fn new(std: std::fs::File, path: Option<PathBuf>) -> Inner {
        Inner {
            stream: is_stream(&std),
            socket: is_socket(&std),
            std,
            path,
            #[cfg(uring)]
            fixed: std::sync::OnceLock::new(),
        }
    }
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

    /// Open for direct I/O, bypassing the page cache: `O_DIRECT` on Linux, `F_NOCACHE` on macOS,
    /// `FILE_FLAG_NO_BUFFERING` on Windows. Buffer addresses, offsets and lengths must then be
    /// multiples of the file's [`alignment`](File::alignment) (on Linux the device's logical
    /// block size, often 512 or 4096, as `statx` reports it; on Windows the volume's sector
    /// size; on macOS anything goes), or the engines refuse the operation with
    /// [`Error::DirectUnaligned`] before submitting it. Pool buffers are aligned to 4096;
    /// caller memory (a `Buf` from a `Vec`) and views ([`Buf::slice`]) often are not. Filesystems
    /// differ: a Linux filesystem without `O_DIRECT` fails the open with `EINVAL`; tmpfs used to
    /// be one, but recent kernels accept it there (6.18 does), where it bypasses nothing, since
    /// tmpfs *is* the page cache: measure device I/O on a real disk.
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

/// What a direct-I/O file demands: buffer addresses must be multiples of `memory`, file offsets
/// and every buffer length multiples of `offset`.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
/// use ferrite_io::OpenOptions;
/// let file = ferrite_io::File::open(dir.path().join("d"), &OpenOptions::new().create(true).direct(true)).await?;
/// let alignment = file.alignment().expect("a direct file has one");
/// assert!(alignment.offset.is_power_of_two() && alignment.memory.is_power_of_two());
/// println!("{alignment}");
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alignment {
    /// Buffer addresses must be multiples of this.
    pub memory: u32,
    /// File offsets and buffer lengths must be multiples of this.
    pub offset: u32,
    /// Where the numbers come from.
    pub source: AlignmentSource,
}

/// Where an [`Alignment`] comes from.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
/// use ferrite_io::{AlignmentSource, File, OpenOptions};
/// let file = File::open(dir.path().join("d"), &OpenOptions::new().create(true).direct(true)).await?;
/// let source = file.alignment().expect("direct").source;
/// if cfg!(target_os = "linux") {
///     // statx(STATX_DIOALIGN) on kernels since 6.1, else the device, else st_blksize
///     assert!(matches!(source, AlignmentSource::Statx | AlignmentSource::LogicalBlockSize | AlignmentSource::BlockSize));
/// }
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlignmentSource {
    /// Linux `statx` with `STATX_DIOALIGN` (kernel 6.1+, for filesystems that report it).
    Statx,
    /// Linux: the device's logical block size (`queue/logical_block_size` in sysfs, the value
    /// `BLKSSZGET` returns), used for both.
    LogicalBlockSize,
    /// Linux: the filesystem's preferred block size (`st_blksize`), the last resort.
    BlockSize,
    /// Windows: `GetFileInformationByHandleEx(FileStorageInfo)` (Windows 8+): the logical
    /// sector for offsets and lengths, the physical sector (if larger) for buffer addresses.
    StorageInfo,
    /// Windows: the bytes per sector of the file's volume (`GetDiskFreeSpaceW`), for both; what
    /// wine answers, which lacks `FileStorageInfo`.
    VolumeSector,
    /// Windows: 4096 when the system answers neither question; it covers 512-byte and 4 KiB
    /// sectors alike.
    Sector,
    /// macOS: `F_NOCACHE` accepts any alignment (1 and 1).
    Unrestricted,
}

impl fmt::Display for Alignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "memory {}, offset and length {} (from {:?})", self.memory, self.offset, self.source)
    }
}

/// Which rule of the file's [`Alignment`] a direct operation broke.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
/// use ferrite_io::{Error, IoEngine, IoEngineConfig, Misaligned, OpenOptions};
/// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
/// let file = engine.open(dir.path().join("d"), &OpenOptions::new().create(true).direct(true)).await?;
/// let offset = u64::from(file.alignment().expect("direct").offset) + 1;
/// let (result, _buf) = engine.write_at(&file, engine.acquire().await, offset).await.into_parts();
/// assert!(matches!(result, Err(Error::DirectUnaligned { what: Misaligned::Offset, .. })));
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misaligned {
    /// A buffer's address is not a multiple of [`Alignment::memory`].
    Memory,
    /// A buffer's length is not a multiple of [`Alignment::offset`].
    Length,
    /// The file offset is not a multiple of [`Alignment::offset`].
    Offset,
}

impl fmt::Display for Misaligned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Misaligned::Memory => "buffer address",
            Misaligned::Length => "buffer length",
            Misaligned::Offset => "file offset",
        })
    }
}

/// The refusal [`File::check_direct`] returns, carried inside an `io::Error` through the engines'
/// syscall-shaped paths and turned into [`Error::DirectUnaligned`] by `Error::os`.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) what: Misaligned,
    pub(crate) value: u64,
    pub(crate) required: u32,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "direct I/O {} {} is not a multiple of {}", self.what, self.value, self.required)
    }
}

impl std::error::Error for Refusal {}

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
        let opened = handle
            .spawn_blocking(move || {
                let std = open_blocking(&opening, &options)?;
                let alignment = direct.then(|| direct_alignment(&std));
                Ok((std, alignment))
            })
            .await;
        match opened.unwrap_or_else(|join| Err(io::Error::other(join))) {
            Ok((std, alignment)) => Ok(File { inner: Arc::new(Inner::new(std, Some(path))), alignment }),
            Err(source) => Err(Error::Open { path, source }),
        }
    }

    /// Wraps an already open file. `direct` says whether it was opened for direct I/O; its
    /// alignment is then asked of the kernel (a blocking `statx`, on Linux). The file has no
    /// [`path`](Self::path) (its errors say so).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let std = std::fs::File::create(dir.path().join("f")).unwrap();
    /// let file = ferrite_io::File::from_std(std, false);
    /// assert_eq!(file.path(), None);
    /// ```
    pub fn from_std(file: std::fs::File, direct: bool) -> File {
        let alignment = direct.then(|| direct_alignment(&file));
        File { inner: Arc::new(Inner::new(file, None)), alignment }
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

    /// Whether the file was opened for direct I/O.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use ferrite_io::{File, OpenOptions};
    /// let file = File::open(dir.path().join("f"), &OpenOptions::new().create(true)).await?;
    /// assert!(!file.is_direct());
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    #[inline]
    pub fn is_direct(&self) -> bool {
        self.alignment.is_some()
    }

    /// The alignment direct I/O on this file demands; `None` for a buffered file.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    /// use ferrite_io::{File, OpenOptions};
    /// let buffered = File::open(dir.path().join("b"), &OpenOptions::new().create(true)).await?;
    /// assert_eq!(buffered.alignment(), None);
    /// let direct = File::open(dir.path().join("d"), &OpenOptions::new().create(true).direct(true)).await?;
    /// let alignment = direct.alignment().expect("a direct file has one");
    /// assert!(4096 % alignment.offset == 0, "a page-sized buffer at a page offset always fits");
    /// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
    /// ```
    pub fn alignment(&self) -> Option<Alignment> {
        self.alignment
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
    #[inline]
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

    /// Reserves disk blocks for the first `len` bytes, on the blocking pool; the size grows to
    /// `len` when it was below and never shrinks. Returns `false` when the filesystem (or the
    /// platform) cannot reserve blocks; that is not an error.
    ///
    /// - Linux: `fallocate` (mode 0).
    /// - macOS: `fcntl(F_PREALLOCATE)` for the missing bytes, then `ftruncate` to `len`.
    /// - Windows: `SetEndOfFile` (`set_len`) when growing: NTFS allocates the clusters of a
    ///   non-sparse file it extends, so that is the reservation.
    /// - Elsewhere: nothing, `false`.
    ///
    /// # Errors
    ///
    /// [`Error::File`] with the length for any other failure (e.g. `ENOSPC`, or the runtime
    /// having shut down, as [`open`](Self::open) gives [`Error::Open`] then);
    /// [`Error::NoRuntime`] outside a tokio runtime (it runs on tokio's blocking pool, as
    /// [`open`](Self::open)).
    ///
    /// ```
    /// use std::future::Future;
    /// use std::task::{Context, Poll, Waker};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let runtime = tokio::runtime::Runtime::new().unwrap();
    /// let options = ferrite_io::OpenOptions::new().create(true);
    /// let file = runtime.block_on(ferrite_io::File::open(dir.path().join("log"), &options))?;
    /// let reserved = runtime.block_on(file.preallocate(1 << 20))?;
    /// assert_eq!(file.size()?, if reserved { 1 << 20 } else { 0 });
    ///
    /// // Outside a runtime: refused at the first poll, typed.
    /// let mut call = std::pin::pin!(file.preallocate(1 << 21));
    /// let polled = call.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    /// assert!(matches!(polled, Poll::Ready(Err(ferrite_io::Error::NoRuntime(_)))));
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    pub async fn preallocate(&self, len: u64) -> Result<bool> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime("File::preallocate"))?;
        let file = self.inner.clone();
        let done = handle.spawn_blocking(move || preallocate(&file.std, len)).await;
        let result = done.unwrap_or_else(|join| Err(io::Error::other(join)));
        result.map_err(|source| self.error(Op::Allocate, Some(len), source))
    }

    /// Refuses a direct operation at `offset` over the buffers `spans` (address, length) that
    /// breaks the file's [`Alignment`], before anything is submitted: both engines call this, so
    /// they refuse the same operations (a vectored one as a whole when any member is off). A
    /// buffered file passes everything.
    pub(crate) fn check_direct(&self, offset: u64, spans: impl IntoIterator<Item = (usize, usize)>) -> io::Result<()> {
        let Some(alignment) = self.alignment else { return Ok(()) };
        let refuse = |what, value: u64, required: u32| {
            let off = value % u64::from(required) != 0;
            if off {
                Err(io::Error::new(io::ErrorKind::InvalidInput, Refusal { what, value, required }))
            } else {
                Ok(())
            }
        };
        refuse(Misaligned::Offset, offset, alignment.offset)?;
        for (address, len) in spans {
            refuse(Misaligned::Memory, address as u64 % u64::from(alignment.memory), alignment.memory)?;
            refuse(Misaligned::Length, len as u64, alignment.offset)?;
        }
        Ok(())
    }

    /// Whether a direct read that has come to `offset` by a short transfer came to the end of
    /// the file: the kernel returns a count that breaks the alignment only where the file ends
    /// (its size is not a multiple: written buffered, or cut by a crash), and a read continued
    /// there would be refused. Both engines then end the read as at end of file.
    #[inline]
    pub(crate) fn direct_read_ended(&self, offset: u64) -> bool {
        self.alignment.is_some_and(|alignment| offset % u64::from(alignment.offset) != 0)
    }

    /// Whether the descriptor has no file position (a pipe, a socket, a terminal): `pread` on
    /// it fails with `ESPIPE`, while io_uring reads and writes it as a stream and ignores the
    /// offset. The tokio engine does as io_uring does, so the engines agree on such files.
    #[inline]
    pub(crate) fn is_stream(&self) -> bool {
        self.inner.stream
    }

    /// Whether the descriptor is a socket: a stream that, unlike a pipe, refuses any offset but
    /// 0 with `ESPIPE` when io_uring reads or writes it (the socket layer checks the position
    /// io_uring passes). The tokio engine refuses it the same way.
    pub(crate) fn is_socket(&self) -> bool {
        self.inner.socket
    }

    /// [`check_direct`](Self::check_direct) for `buf[start..]` at `offset`.
    #[inline]
    pub(crate) fn check_buf(&self, buf: &Buf<InFlight>, start: usize, offset: u64) -> io::Result<()> {
        if self.alignment.is_none() {
            return Ok(());
        }
        self.check_direct(offset, [(buf.as_ptr() as usize + start, buf.len() - start)])
    }

    /// [`check_direct`](Self::check_direct) for every member of a vectored operation.
    pub(crate) fn check_bufs(&self, bufs: &[Buf<InFlight>], offset: u64) -> io::Result<()> {
        self.check_direct(offset, bufs.iter().map(|buf| (buf.as_ptr() as usize, buf.len())))
    }

    /// Names the open file: equal for every handle of it, for as long as one lives.
    #[cfg(uring)]
    #[inline]
    pub(crate) fn identity(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    #[cfg(uring)]
    #[inline]
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.inner.std.as_raw_fd()
    }

    /// Where the io_uring engine keeps this file's fixed-file registration (see `uring::files`).
    #[cfg(uring)]
    pub(super) fn fixed(&self) -> &std::sync::OnceLock<super::uring::Fixed> {
        &self.inner.fixed
    }
}

/// Positional reads and writes on a standard file, on every platform: `pread`/`pwrite` on unix,
/// `ReadFile`/`WriteFile` with an offset on Windows (which also moves the file cursor; nothing
/// here uses the cursor).
///
/// ```
/// use ferrite_io::PositionalIo;
/// # let dir = tempfile::tempdir().unwrap();
/// let file = std::fs::File::options().read(true).write(true).create(true).open(dir.path().join("p"))?;
/// file.write_all_at(b"hello", 10)?;
/// let mut back = [0u8; 5];
/// file.read_exact_at(&mut back, 10)?;
/// assert_eq!(&back, b"hello");
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait PositionalIo {
    /// Reads up to `buf.len()` bytes at `offset`; `Ok(0)` is end of file.
    ///
    /// # Errors
    ///
    /// The OS error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes up to `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    ///
    /// The OS error.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;

    /// Reads exactly `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` at end of file, or the OS error.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => (buf, offset) = (&mut buf[n..], offset + n as u64),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`.
    ///
    /// # Errors
    ///
    /// `WriteZero` when a write makes no progress, or the OS error.
    fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_at(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => (buf, offset) = (&buf[n..], offset + n as u64),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(unix)]
impl PositionalIo for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::write_at(self, buf, offset)
    }
}

#[cfg(windows)]
impl PositionalIo for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_read(self, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_write(self, buf, offset)
    }
}

/// Whether `lseek` refuses the descriptor with `ESPIPE`: it has no position to read at.
#[cfg(unix)]
fn is_stream(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: lseek takes no pointers and SEEK_CUR by 0 moves nothing; the descriptor is open
    // for the borrow of `file`.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_CUR) };
    rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ESPIPE)
}

#[cfg(unix)]
fn is_socket(file: &std::fs::File) -> bool {
    use std::os::unix::fs::FileTypeExt;
    file.metadata().is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(not(unix))]
fn is_socket(_file: &std::fs::File) -> bool {
    false
}

/// Windows: positional I/O (`seek_read`) is what both engines' callers get.
#[cfg(not(unix))]
fn is_stream(_file: &std::fs::File) -> bool {
    false
}

fn open_blocking(path: &Path, options: &OpenOptions) -> io::Result<std::fs::File> {
    let mut std_options = std::fs::OpenOptions::new();
    std_options.read(true).write(options.write).create(options.create).truncate(options.truncate);
    let direct = options.direct.unwrap_or(false);
    if direct {
        before_open_direct(&mut std_options);
    }
    let file = std_options.open(path)?;
    if direct {
        after_open_direct(&file)?;
    }
    Ok(file)
}

#[cfg(target_os = "linux")]
fn before_open_direct(options: &mut std::fs::OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    options.custom_flags(libc::O_DIRECT);
}

/// `FILE_FLAG_NO_BUFFERING`: no system cache; sector-aligned buffers, offsets and lengths.
#[cfg(windows)]
fn before_open_direct(options: &mut std::fs::OpenOptions) {
    use std::os::windows::fs::OpenOptionsExt;
    const FILE_FLAG_NO_BUFFERING: u32 = 0x2000_0000;
    options.custom_flags(FILE_FLAG_NO_BUFFERING);
}

#[cfg(not(any(target_os = "linux", windows)))]
fn before_open_direct(_options: &mut std::fs::OpenOptions) {}

/// macOS has no open flag: `F_NOCACHE` turns the cache off for the open file.
#[cfg(target_os = "macos")]
fn after_open_direct(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl(F_NOCACHE) takes an integer argument, no pointer; the descriptor is open
    // for the borrow of `file`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_NOCACHE, 1) };
    if rc == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

#[cfg(any(target_os = "linux", windows))]
fn after_open_direct(_file: &std::fs::File) -> io::Result<()> {
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn after_open_direct(_file: &std::fs::File) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "direct I/O is implemented for Linux, macOS and Windows"))
}

/// Linux: what `statx` reports for direct I/O, else the device's logical block size, else
/// `st_blksize`.
#[cfg(target_os = "linux")]
fn direct_alignment(file: &std::fs::File) -> Alignment {
    alignment_of(statx(file).as_ref(), || block_size(file))
}

/// The fallback chain on what `statx` answered (`None`: the call failed, e.g. `ENOSYS` before
/// 4.11): `STATX_DIOALIGN` when the kernel (6.1+) and the filesystem report it with a nonzero
/// offset alignment; else the logical block size of the device `statx` names; else `last`.
#[cfg(target_os = "linux")]
fn alignment_of(stx: Option<&libc::statx>, last: impl FnOnce() -> Alignment) -> Alignment {
    let Some(stx) = stx else { return last() };
    if stx.stx_mask & libc::STATX_DIOALIGN != 0 && stx.stx_dio_offset_align != 0 {
        return Alignment {
            memory: stx.stx_dio_mem_align.max(1),
            offset: stx.stx_dio_offset_align,
            source: AlignmentSource::Statx,
        };
    }
    logical_block_size(stx.stx_dev_major, stx.stx_dev_minor).unwrap_or_else(last)
}

/// `statx` of the open descriptor asking for `STATX_DIOALIGN`; `None` when the call fails.
#[cfg(target_os = "linux")]
fn statx(file: &std::fs::File) -> Option<libc::statx> {
    use std::os::fd::AsRawFd;
    // SAFETY: `statx` is plain integers (and private padding); all zeros is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid NUL-terminated empty string, AT_EMPTY_PATH makes the call
    // describe the open descriptor, and `stx` is a live, writable `statx` for the call.
    let rc =
        unsafe { libc::statx(file.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_DIOALIGN, &mut stx) };
    (rc == 0).then_some(stx)
}

/// The logical block size of the device holding the file (of the whole disk when the file is
/// on a partition), as sysfs shows it: the number `BLKSSZGET` returns, without opening the
/// device node.
#[cfg(target_os = "linux")]
fn logical_block_size(major: u32, minor: u32) -> Option<Alignment> {
    let device = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let read = |dir: &Path| std::fs::read_to_string(dir.join("queue/logical_block_size")).ok()?.trim().parse().ok();
    let size: u32 = read(&device).or_else(|| read(&device.join("..")))?;
    size.is_power_of_two().then_some(Alignment {
        memory: size,
        offset: size,
        source: AlignmentSource::LogicalBlockSize,
    })
}

#[cfg(target_os = "linux")]
fn block_size(file: &std::fs::File) -> Alignment {
    use std::os::unix::fs::MetadataExt;
    let size = file.metadata().map(|m| m.blksize()).unwrap_or(4096);
    let size = u32::try_from(size).ok().filter(|s| s.is_power_of_two()).unwrap_or(4096);
    Alignment { memory: size, offset: size, source: AlignmentSource::BlockSize }
}

/// Windows: the volume's sector sizes as `FileStorageInfo` reports them (Windows 8+), else its
/// bytes per sector (`GetDiskFreeSpaceW` on the volume holding the file), else 4096.
#[cfg(windows)]
fn direct_alignment(file: &std::fs::File) -> Alignment {
    storage_info(file).or_else(|| volume_sector_size(file)).unwrap_or(Alignment {
        memory: 4096,
        offset: 4096,
        source: AlignmentSource::Sector,
    })
}

/// `FileStorageInfo`: offsets and lengths in logical sectors (the volume sector size
/// `FILE_FLAG_NO_BUFFERING` demands), buffers aligned to the physical sector as well.
#[cfg(windows)]
fn storage_info(file: &std::fs::File) -> Option<Alignment> {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Storage::FileSystem::{FILE_STORAGE_INFO, FileStorageInfo, GetFileInformationByHandleEx};
    let mut info = FILE_STORAGE_INFO::default();
    let size = std::mem::size_of::<FILE_STORAGE_INFO>() as u32;
    // SAFETY: the handle is open for the borrow of `file`, and `info` is a live, writable
    // FILE_STORAGE_INFO of `size` bytes, the class the call is asked for.
    let ok =
        unsafe { GetFileInformationByHandleEx(file.as_raw_handle(), FileStorageInfo, (&raw mut info).cast(), size) };
    let logical = info.LogicalBytesPerSector;
    let physical = info.PhysicalBytesPerSectorForPerformance.max(logical);
    sector_alignment(ok != 0, physical, logical, AlignmentSource::StorageInfo)
}

/// The bytes per sector of the volume holding the file: its final path, that path's volume
/// root, then `GetDiskFreeSpaceW` on the root.
#[cfg(windows)]
fn volume_sector_size(file: &std::fs::File) -> Option<Alignment> {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Storage::FileSystem::{GetDiskFreeSpaceW, GetFinalPathNameByHandleW, GetVolumePathNameW};
    const CAPACITY: u32 = 32_768; // the longest path Windows has, in UTF-16 units
    let mut path = vec![0u16; CAPACITY as usize];
    // SAFETY: the handle is open for the borrow of `file`; `path` holds CAPACITY writable units.
    let len = unsafe { GetFinalPathNameByHandleW(file.as_raw_handle(), path.as_mut_ptr(), CAPACITY, 0) };
    if len == 0 || len >= CAPACITY {
        return None; // failed, or the path did not fit (then it is not NUL-terminated)
    }
    let mut root = vec![0u16; CAPACITY as usize];
    // SAFETY: `path` is NUL-terminated (len < CAPACITY); `root` holds CAPACITY writable units.
    let found = unsafe { GetVolumePathNameW(path.as_ptr(), root.as_mut_ptr(), CAPACITY) };
    if found == 0 {
        return None;
    }
    let (mut per_cluster, mut bytes, mut free, mut total) = (0, 0, 0, 0);
    // SAFETY: `root` is the NUL-terminated volume root just written; the four out-pointers are
    // live, writable u32s for the call.
    let ok = unsafe { GetDiskFreeSpaceW(root.as_ptr(), &mut per_cluster, &mut bytes, &mut free, &mut total) };
    sector_alignment(ok != 0, bytes, bytes, AlignmentSource::VolumeSector)
}

/// The alignment when the call succeeded and both sizes are powers of two.
#[cfg(windows)]
fn sector_alignment(ok: bool, memory: u32, offset: u32, source: AlignmentSource) -> Option<Alignment> {
    (ok && memory.is_power_of_two() && offset.is_power_of_two()).then_some(Alignment { memory, offset, source })
}

#[cfg(not(any(target_os = "linux", windows)))]
fn direct_alignment(_file: &std::fs::File) -> Alignment {
    Alignment { memory: 1, offset: 1, source: AlignmentSource::Unrestricted }
}

#[cfg(target_os = "linux")]
fn preallocate(file: &std::fs::File, len: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: fallocate(2) takes no pointers; the descriptor is open for the borrow of `file`.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if matches!(error.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) { Ok(false) } else { Err(error) }
}

#[cfg(target_os = "macos")]
fn preallocate(file: &std::fs::File, len: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let size = file.metadata()?.len();
    if len <= size {
        return Ok(true);
    }
    let missing = libc::off_t::try_from(len - size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    let mut store = libc::fstore_t {
        fst_flags: libc::F_ALLOCATEALL,
        fst_posmode: libc::F_PEOFPOSMODE,
        fst_offset: 0,
        fst_length: missing,
        fst_bytesalloc: 0,
    };
    // SAFETY: `store` is a live, writable `fstore_t` for the call; the descriptor is open for
    // the borrow of `file`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_PREALLOCATE, &mut store) };
    if rc == -1 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ENOTSUP) {
            return Err(error);
        }
    }
    file.set_len(len)?;
    Ok(rc != -1)
}

#[cfg(windows)]
fn preallocate(file: &std::fs::File, len: u64) -> io::Result<bool> {
    if len > file.metadata()?.len() {
        file.set_len(len)?;
    }
    Ok(true)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn preallocate(_file: &std::fs::File, _len: u64) -> io::Result<bool> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(memory: u32, offset: u32) -> File {
        let file = tempfile::tempfile().unwrap();
        let alignment = Some(Alignment { memory, offset, source: AlignmentSource::Statx });
        File { inner: Arc::new(Inner::new(file, None)), alignment }
    }

    fn refusal(result: io::Result<()>) -> Option<(Misaligned, u64, u32)> {
        let error = result.err()?;
        let refusal = error.get_ref()?.downcast_ref::<Refusal>()?;
        Some((refusal.what, refusal.value, refusal.required))
    }

    #[test]
    fn check_direct_names_the_first_broken_rule() {
        let file = direct(512, 4096);
        assert!(file.check_direct(8192, [(4096, 4096), (8192, 0), (1024, 8192)]).is_ok());
        assert_eq!(refusal(file.check_direct(512, [(4096, 4096)])), Some((Misaligned::Offset, 512, 4096)));
        assert_eq!(
            refusal(file.check_direct(0, [(4096, 4096), (4096 + 256, 4096)])),
            Some((Misaligned::Memory, 256, 512))
        );
        assert_eq!(refusal(file.check_direct(0, [(4096, 4096), (8192, 100)])), Some((Misaligned::Length, 100, 4096)));
    }

    #[test]
    fn buffered_files_pass_everything() {
        let file = File::from_std(tempfile::tempfile().unwrap(), false);
        assert!(file.alignment().is_none());
        assert!(file.check_direct(1, [(3, 5)]).is_ok());
    }

    /// The fallback chain on a real file of the build disk, with what `statx` answered there
    /// changed the way an older kernel or another filesystem would answer: without
    /// `STATX_DIOALIGN` (before 6.1, or a filesystem that does not report it), or with a zero
    /// offset alignment, the device's logical block size, which is the kernel's rule for
    /// `O_DIRECT` on a block device (ext4 reports the same number through `statx`); with no
    /// block device behind the file (major 0: tmpfs, overlayfs, btrfs) or no `statx` at all, the
    /// last resort.
    #[cfg(target_os = "linux")]
    #[test]
    fn alignment_falls_back_when_statx_lacks_dioalign() {
        let file = tempfile::tempfile_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let last = || Alignment { memory: 2048, offset: 2048, source: AlignmentSource::BlockSize };
        let stx = statx(&file).expect("statx exists since 4.11");
        assert_eq!(alignment_of(None, last), last());

        let mut without = stx;
        without.stx_mask &= !libc::STATX_DIOALIGN;
        let mut zero = stx;
        zero.stx_dio_offset_align = 0;
        let mut anonymous = without;
        (anonymous.stx_dev_major, anonymous.stx_dev_minor) = (0, 42);
        assert_eq!(alignment_of(Some(&anonymous), last), last(), "no block device: the last resort");

        assert_ne!(stx.stx_dev_major, 0, "the build disk is a block device (ext4), as the test suite needs");
        let reported = alignment_of(Some(&stx), last);
        let fallback = alignment_of(Some(&without), last);
        println!("statx: {reported}; without STATX_DIOALIGN: {fallback}");
        assert_eq!(reported.source, AlignmentSource::Statx, "kernel 6.1+ on ext4 reports STATX_DIOALIGN");
        assert_eq!(fallback.source, AlignmentSource::LogicalBlockSize, "{fallback}");
        assert_eq!(fallback.offset, reported.offset, "the device's logical block size is statx's offset rule");
        assert!(fallback.memory >= reported.memory, "{fallback} is at least as strict as {reported}");
        assert_eq!(alignment_of(Some(&zero), last), fallback, "a zero offset alignment means: not reported");
    }

    /// The fallback chain's middle step reads sysfs; on this machine's disk it must answer.
    #[cfg(target_os = "linux")]
    #[test]
    fn logical_block_size_of_the_build_disk() {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(env!("CARGO_MANIFEST_DIR")).unwrap().dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        if major == 0 {
            return; // an anonymous device (overlayfs, btrfs subvolume): no sysfs entry
        }
        let alignment = logical_block_size(major, minor).expect("sysfs names the block size");
        assert!(alignment.offset >= 512 && alignment.offset.is_power_of_two(), "{alignment}");
    }
}
