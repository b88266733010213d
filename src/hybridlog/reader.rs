//! The cold-page reader ([`read_page`]) and the recovery scan ([`recover`]).
//!
//! [`read_page`] reads one whole page and [`verify`]s it: a page the file does not reach is a
//! page that was never written, not an end-of-file error.
//!
//! [`recover`] reads the whole log after a restart and sorts every page into one of three kinds:
//!
//! - **intact**: the page verifies;
//! - **crash artifacts**: [`PageError::Torn`] and [`PageError::NeverWritten`]. A flusher with
//!   several pages in flight may leave either anywhere it had writes outstanding, so recovery
//!   reports them ([`Recovery::holes`], [`Recovery::torn_tail`]) and does not fail on them,
//!   unless they lie below what the application was told is durable;
//! - **corruption**: [`PageError::Checksum`], [`PageError::Misdirected`] and
//!   [`PageError::Invalid`]. No crash explains them, and recovery fails with
//!   [`Error::Corrupt`].
//!
//! ```text
//!  0                                                                           scanned_until
//!  | intact | intact | intact | hole  | intact | hole  | intact | torn  | never | never |
//!  |<------ pages = 3 ------->|                                 |       |<- trailing -->|
//!                             ^ durable_until                   ^ end   ^ torn_tail
//! ```

use super::page::{MAGIC, PageError, PageHeader, PageInfo, verify};
use crate::buf::{Buf, Completed, Registered, Submittable};
use crate::config::BUFFER_ALIGN;
use crate::error::{Error, Result};
use crate::io::{Batch, BufResult, File, IoEngine};

/// How many pages [`recover`] reads at a time (one [`Batch`]), at most: it takes one buffer from
/// the engine's pool, waiting if it must, and up to this many in all when they are free.
const SCAN_DEPTH: usize = 4;

/// Why a page of a recovered log is missing. Only crash artifacts are holes; anything else
/// fails recovery with [`Error::Corrupt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoleKind {
    /// Only some sectors of the page's first write reached the disk ([`PageError::Torn`]).
    Torn,
    /// All zeros, or past the end of the file ([`PageError::NeverWritten`]).
    NeverWritten,
}

/// A run of consecutive pages that are not intact because a crash interrupted their writes (or
/// the writes never ran), all of the same kind. One entry per run, not per page: a sparse log with
/// a terabyte gap is one `Hole`, not a hundred million.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hole {
    /// The log address of the run's first page.
    pub address: u64,
    /// Pages in the run (at least 1).
    pub pages: u64,
    /// What was found there.
    pub kind: HoleKind,
}

impl Hole {
    /// The [`PageError`] [`verify`] reported for the run's first page.
    pub fn error(&self) -> PageError {
        match self.kind {
            HoleKind::Torn => PageError::Torn { address: self.address },
            HoleKind::NeverWritten => PageError::NeverWritten { address: self.address },
        }
    }

    fn from_error(error: &PageError, pages: u64) -> Option<Hole> {
        match *error {
            PageError::Torn { address } => Some(Hole { address, pages, kind: HoleKind::Torn }),
            PageError::NeverWritten { address } => Some(Hole { address, pages, kind: HoleKind::NeverWritten }),
            PageError::Checksum { .. } | PageError::Misdirected { .. } | PageError::Invalid { .. } => None,
        }
    }
}

/// What [`recover`] found in a log.
///
/// Every page in `[durable_until, scanned_until)` that is not intact is in [`holes`](Self::holes),
/// is the [`torn_tail`](Self::torn_tail), or is a never-written page after both the last intact
/// page and the torn tail (a *trailing* page, e.g. preallocated space). Nothing else is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The end of the log's durable prefix: the address of the first page that is not intact,
    /// or the end of the verified payload of the first open page (one still filling, see
    /// [`PageInfo::is_open`]), or `scanned_until` when every page is intact and closed. Resume
    /// here (truncate the file to it first).
    pub durable_until: u64,
    /// Closed intact pages in that prefix.
    pub pages: u64,
    /// The highest sequence number of any intact page, in the prefix or after it; `None` when no
    /// page is intact. Sequences are not required to grow with the address.
    pub last_sequence: Option<u64>,
    /// The highest sequence number in any intact page or in the header sector of any page that
    /// did not verify (`>= last_sequence`). A reopened flusher numbers its flushes above this
    /// (`first_sequence`), so sequences stay unique per log; they only inform, verification does
    /// not depend on them.
    pub max_sequence_seen: Option<u64>,
    /// Torn and never-written pages at or after `durable_until` that some later page was written
    /// after: those before the last intact page, and those between the last intact page and the
    /// [`torn_tail`](Self::torn_tail). In address order, one entry per run of consecutive pages
    /// of one kind.
    pub holes: Vec<Hole>,
    /// The last page that was written to at all (not never-written), when it is torn: only
    /// never-written pages follow it. At or after `end`.
    pub torn_tail: Option<u64>,
    /// The address after the last intact page (0 when no page is intact).
    pub end: u64,
    /// Where the scan stopped: the file's size, rounded up to a whole page (a file that ends
    /// inside a page is read as if the rest of that page were zeros).
    pub scanned_until: u64,
}

impl Recovery {
    fn empty() -> Recovery {
        Recovery {
            durable_until: 0,
            pages: 0,
            last_sequence: None,
            max_sequence_seen: None,
            holes: Vec::new(),
            torn_tail: None,
            end: 0,
            scanned_until: 0,
        }
    }
}

/// Reads the page at `address` into `buf` and verifies it. The page size is `buf.len()`.
///
/// The whole page is read with [`IoEngine::read_at`] (and read again, continuing, if the kernel
/// cuts the read short inside the file). A page the file does not reach reads as zeros: entirely past the end of the file it is [`PageError::NeverWritten`], and a page the
/// file ends inside of is verified as if the missing bytes were zero (typically
/// [`PageError::Torn`]). The buffer comes back in every case, with its length set to the page
/// size unless the request was refused or the engine failed (then it has the length it was
/// given with).
///
/// # Errors
///
/// - [`Error::Unaligned`] when `buf.len()` is not a non-zero multiple of 4096, or `address` is
///   not a multiple of `buf.len()` (nothing is read);
/// - [`Error::Page`] when the page is not the intact page for `address`: never written, torn,
///   misdirected, failing its checksum, or with an invalid header;
/// - the engine's errors ([`Error::Io`], [`Error::Cancelled`], ...), never
///   [`Error::UnexpectedEof`].
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// use ferrite_io::hybridlog::{page, read_page};
/// use ferrite_io::{Error, IoEngine, IoEngineConfig, OpenOptions};
///
/// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
/// let file = engine.open(dir.path().join("log"), &OpenOptions::new().create(true)).await?;
///
/// // Write the page at address 8192, with 5 payload bytes.
/// let mut buf = engine.acquire().await;
/// buf.set_len(8192)?;
/// buf[page::PAYLOAD_START..page::PAYLOAD_START + 5].copy_from_slice(b"hello");
/// page::seal(&mut buf, 8192, 1, 5, 0, false)?;
/// engine.write_all_at(&file, buf, 8192).await.0?;
///
/// let buf = engine.acquire().await;
/// let mut buf = buf.into_free();
/// buf.set_len(8192)?;
/// let (info, buf) = read_page(&*engine, &file, buf, 8192).await.into_parts();
/// let info = info?;
/// assert_eq!(&buf[info.payload()], b"hello");
///
/// // Page 0 was never written (the file has a hole there).
/// let (result, _buf) = read_page(&*engine, &file, buf.into_free(), 0).await.into_parts();
/// assert!(matches!(result, Err(Error::Page(page::PageError::NeverWritten { address: 0 }))));
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
pub async fn read_page<E: IoEngine, S: Submittable>(
    engine: &E,
    file: &File,
    buf: Buf<S>,
    address: u64,
) -> BufResult<PageInfo, Buf<Completed>> {
    let page_size = buf.len();
    if let Err(e) = check_page_size(page_size, "page buffer length").and_then(|()| check_address(address, page_size)) {
        return BufResult(Err(e), refused(buf));
    }
    let BufResult(result, buf) = engine.read_at(file, buf, address).await;
    match result {
        Ok(n) => complete(engine, file, buf, address, page_size, n).await,
        Err(e) => BufResult(Err(e), buf),
    }
}

/// A read of the page at `address` that gave `n` bytes: verified when it is whole; when it stopped
/// at the end of the file, as if the rest were zeros; when the kernel cut it short inside the
/// file, after reading the whole page again.
///
/// The end of the file is found with `fstat`, not by reading on from `n`: an `O_DIRECT` file that
/// ends inside a sector (a log truncated to `durable_until` inside its open tail page) gives a
/// short read whose continuation would be misaligned, and refused.
async fn complete<E: IoEngine>(
    engine: &E,
    file: &File,
    buf: Buf<Completed>,
    address: u64,
    page_size: usize,
    n: usize,
) -> BufResult<PageInfo, Buf<Completed>> {
    if n == page_size {
        return verified(buf, address);
    }
    match file.size() {
        Ok(size) if address + n as u64 >= size => return verified(zero_extend(buf, page_size), address),
        Ok(_) => {}
        Err(e) => return BufResult(Err(e), buf),
    }
    let mut buf = buf.into_free();
    // `page_size` is the length the buffer was submitted with, so it fits.
    buf.set_len_unchecked(page_size);
    let BufResult(result, buf) = engine.read_exact_at(file, buf, address).await;
    match result {
        Ok(()) => verified(buf, address),
        Err(Error::UnexpectedEof { .. }) => verified(zero_extend(buf, page_size), address),
        Err(e) => BufResult(Err(e), buf),
    }
}

/// Scans the log in `file` from address 0 to the end of the file, one page of `page_size` bytes
/// after the other, and says how much of it survived.
///
/// `acknowledged` is the `flushed_until` address the application last saw (any byte address):
/// every byte below it was reported durable, so it must be intact. Pass 0 when nothing was
/// acknowledged.
///
/// Torn and never-written pages at or after `acknowledged` are crash artifacts (a flusher with
/// several pages in flight can leave holes): they are reported in the [`Recovery`], never
/// dropped, and do not stop the scan. The scan reads a few pages at a time into buffers of
/// `engine.pool()`: it waits for one buffer if none is free and uses up to 4 when they are, and
/// returns them all. Ranges the file system reports as unwritten (`SEEK_DATA`) are not read, and
/// the scan spends tokio's cooperative budget for every page, so it yields to the runtime and a
/// dropped (timed-out) scan stops there.
///
/// # Errors
///
/// - [`Error::Unaligned`] when `page_size` is not a non-zero multiple of 4096;
/// - [`Error::Length`] when the pool's buffers are smaller than `page_size`;
/// - [`Error::Corrupt`] naming the first page (in address order) whose checksum fails, which
///   holds another address's page, or whose header is invalid, wherever it is;
/// - [`Error::Corrupt`] at the page holding `durable_until` when `durable_until < acknowledged`:
///   an acknowledged page is torn, shorter than acknowledged, or was never written (including a
///   file shorter than `acknowledged`);
/// - the engine's and `fstat`'s errors ([`Error::Io`], ...).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// use ferrite_io::hybridlog::{page, recover, Hole, HoleKind};
/// use ferrite_io::{Error, IoEngine, IoEngineConfig, OpenOptions};
///
/// let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
/// let file = engine.open(dir.path().join("log"), &OpenOptions::new().create(true)).await?;
/// // Pages 0, 1 and 3 reach the disk; page 2 was in flight when the machine died.
/// for (address, sequence) in [(0, 1), (8192, 2), (24576, 4)] {
///     let mut buf = engine.acquire().await;
///     buf.set_len(8192)?;
///     page::seal(&mut buf, address, sequence, 0, 0, false)?;
///     engine.write_all_at(&file, buf, address).await.0?;
/// }
///
/// let recovery = recover(&*engine, &file, 8192, 16384).await?;
/// assert_eq!((recovery.durable_until, recovery.pages, recovery.end), (16384, 2, 32768));
/// assert_eq!(recovery.holes, [Hole { address: 16384, pages: 1, kind: HoleKind::NeverWritten }]);
/// assert_eq!(recovery.last_sequence, Some(4));
///
/// // Had page 2 been acknowledged, the log would be corrupt.
/// let lost = recover(&*engine, &file, 8192, 24576).await;
/// assert!(matches!(lost, Err(Error::Corrupt { address: 16384, .. })));
/// # Ok::<(), ferrite_io::Error>(()) }).unwrap();
/// ```
pub async fn recover<E: IoEngine>(engine: &E, file: &File, page_size: usize, acknowledged: u64) -> Result<Recovery> {
    check_page_size(page_size, "page size")?;
    let capacity = engine.pool().buffer_size();
    if capacity < page_size {
        return Err(Error::Length { len: page_size, capacity });
    }
    let step = page_size as u64;
    let size = file.size()?;
    let scanned_until = size.div_ceil(step).saturating_mul(step);

    let mut scan = Scan {
        recovery: Recovery { scanned_until, ..Recovery::empty() },
        step,
        acknowledged,
        prefix_open: true,
        pending: Vec::new(),
    };
    let mut bufs = Vec::with_capacity(SCAN_DEPTH);
    let mut address = 0u64;
    while address < scanned_until {
        // Unwritten ranges read as zeros: skip them without reading.
        match next_data(file, address) {
            None => {
                // Nothing but never-written pages from here: trailing, nothing to report.
                if scan.prefix_open {
                    scan.recovery.durable_until = address;
                    scan.prefix_open = false;
                }
                break;
            }
            Some(data) if data >= address + step => {
                // One run, however long: a terabyte gap costs what a page does.
                let skip_to = (data - data % step).min(scanned_until);
                let pages = (skip_to - address) / step;
                scan.not_intact(address, PageError::NeverWritten { address }, None, pages)?;
                address = skip_to;
                tokio::task::coop::consume_budget().await;
                continue;
            }
            Some(_) => {}
        }
        if bufs.is_empty() {
            bufs.push(engine.acquire().await);
        }
        while bufs.len() < SCAN_DEPTH {
            match engine.pool().try_acquire().map(|b| b.try_into_registered(engine)) {
                Some(Ok(buf)) => bufs.push(buf),
                _ => break,
            }
        }
        let mut batch = Batch::new();
        let mut addresses = Vec::with_capacity(bufs.len());
        while address < scanned_until {
            let Some(mut buf) = bufs.pop() else { break };
            buf.set_len(page_size)?;
            batch.read_at(file, buf, address);
            addresses.push(address);
            address += step;
        }
        for (at, BufResult(result, buf)) in addresses.into_iter().zip(engine.submit_batch(&mut batch).await) {
            let BufResult(result, buf) = match result {
                Ok(n) => complete(engine, file, buf, at, page_size, n).await,
                Err(e) => return Err(e),
            };
            match result {
                Ok(info) => scan.intact(at, &info),
                Err(Error::Page(error)) => scan.not_intact(at, error, torn_sequence(&buf), 1)?,
                Err(e) => return Err(e),
            }
            // Own pool, so this always succeeds; a buffer that did not would go back to the pool.
            if let Ok(buf) = buf.try_into_registered(engine) {
                bufs.push(buf);
            }
            // Reads served from the page cache complete inside their submit: without this, a
            // long scan would never give the runtime back (nor let a timeout cancel it).
            tokio::task::coop::consume_budget().await;
        }
    }
    scan.finish()
}

/// The first offset at or after `from` that may hold data (`SEEK_DATA`), or `None` when none
/// does. Where the file system cannot tell (or off Linux), `from` itself: everything is read.
#[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
fn next_data(file: &File, from: u64) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let Ok(offset) = libc::off_t::try_from(from) else { return Some(from) };
        // SAFETY: `lseek` takes no pointers; the descriptor stays open for the call because
        // `file` borrows it. A bad descriptor or offset is an error return, not UB.
        let found = unsafe { libc::lseek(file.std().as_raw_fd(), offset, libc::SEEK_DATA) };
        if found >= 0 {
            return Some(found as u64);
        }
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
            return None;
        }
    }
    Some(from)
}

/// The scan's running state: pages arrive in address order.
struct Scan {
    recovery: Recovery,
    step: u64,
    acknowledged: u64,
    /// Every page so far is intact and closed: the durable prefix goes on.
    prefix_open: bool,
    /// Runs of torn and never-written pages after the last intact page seen so far.
    pending: Vec<Hole>,
}

impl Scan {
    fn intact(&mut self, address: u64, info: &PageInfo) {
        let step = self.step;
        let r = &mut self.recovery;
        if self.prefix_open {
            if info.is_open() {
                r.durable_until = address + info.durable_len(step as usize) as u64;
                self.prefix_open = false;
            } else {
                r.pages += 1;
                r.durable_until = address + step;
            }
        }
        r.holes.append(&mut self.pending);
        r.end = address + step;
        r.last_sequence = r.last_sequence.max(Some(info.header.sequence));
        r.max_sequence_seen = r.max_sequence_seen.max(r.last_sequence);
    }

    /// `pages` consecutive pages from `address` that `error` (naming the first) describes;
    /// `sequence`: the sequence number in the page's header, if it has one.
    fn not_intact(&mut self, address: u64, error: PageError, sequence: Option<u64>, pages: u64) -> Result<()> {
        let Some(hole) = Hole::from_error(&error, pages) else {
            return Err(Error::Corrupt { address, page: error });
        };
        if address < self.acknowledged {
            // The first page that is not intact ends the prefix: durable_until < acknowledged.
            return Err(Error::Corrupt { address, page: error });
        }
        self.prefix_open = false;
        match self.pending.last_mut() {
            Some(run) if run.kind == hole.kind && run.address + run.pages * self.step == address => {
                run.pages += pages;
            }
            _ => self.pending.push(hole),
        }
        let r = &mut self.recovery;
        r.max_sequence_seen = r.max_sequence_seen.max(sequence);
        Ok(())
    }

    fn finish(mut self) -> Result<Recovery> {
        if self.prefix_open {
            self.recovery.durable_until = self.recovery.scanned_until;
        }
        let r = &mut self.recovery;
        if let Some(last_torn) = self.pending.iter().rposition(|h| h.kind == HoleKind::Torn) {
            // The run's last page is the tail; the pages before it in the run stay holes.
            let run = self.pending[last_torn];
            r.torn_tail = Some(run.address + (run.pages - 1) * self.step);
            self.pending.truncate(last_torn);
            if run.pages > 1 {
                self.pending.push(Hole { pages: run.pages - 1, ..run });
            }
            r.holes.append(&mut self.pending);
        }
        if r.durable_until < self.acknowledged {
            // An open page ends before `acknowledged`, or the file ends before it.
            let address = r.durable_until - r.durable_until % self.step;
            let page = if r.durable_until % self.step == 0 {
                PageError::NeverWritten { address }
            } else {
                PageError::Torn { address }
            };
            return Err(Error::Corrupt { address, page });
        }
        Ok(self.recovery)
    }
}

fn check_page_size(page_size: usize, what: &'static str) -> Result<()> {
    if page_size == 0 || page_size % BUFFER_ALIGN != 0 {
        return Err(Error::Unaligned { what, value: page_size as u64, page_size: BUFFER_ALIGN });
    }
    Ok(())
}

fn check_address(address: u64, page_size: usize) -> Result<()> {
    if address % page_size as u64 != 0 {
        return Err(Error::Unaligned { what: "page address", value: address, page_size });
    }
    Ok(())
}

/// The sequence number in the header of a page that did not verify, when its header has the magic.
fn torn_sequence(page: &[u8]) -> Option<u64> {
    let header: PageHeader = bytemuck::pod_read_unaligned(page.get(..size_of::<PageHeader>())?);
    (header.magic == MAGIC).then_some(header.sequence)
}

fn verified(buf: Buf<Completed>, address: u64) -> BufResult<PageInfo, Buf<Completed>> {
    BufResult(verify(&buf, address).map_err(Error::Page), buf)
}

/// A buffer refused before any I/O, handed back as an engine hands back a failed one: same bytes,
/// same length.
fn refused<S: Submittable>(buf: Buf<S>) -> Buf<Completed> {
    buf.cast()
}

/// After `read_exact_at` stopped at the end of the file: the page with the bytes the file did not
/// reach read as zeros, which is what a file extended over them would hold.
fn zero_extend(buf: Buf<Completed>, page_size: usize) -> Buf<Completed> {
    let done = buf.len();
    let mut buf = buf.into_free();
    // `page_size` is the length the buffer was submitted with, so it fits.
    buf.set_len_unchecked(page_size);
    buf[done..].fill(0);
    buf.cast()
}

#[allow(dead_code)]
fn _assert_send<E: IoEngine>(engine: &E, file: &File, buf: Buf<Registered>) {
    fn send<T: Send>(_: T) {}
    send(read_page(engine, file, buf, 0));
    send(recover(engine, file, 4096, 0));
}
