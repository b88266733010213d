//! The inline fast path both engines try first: `preadv2`/`pwritev2` with `RWF_NOWAIT` on the
//! calling thread. Data in the page cache moves at the cost of one plain syscall; anything that
//! would block (a page-cache miss, a filesystem that cannot write without blocking) is refused
//! at once by the kernel and goes the normal way (the ring, or the blocking pool).
//!
//! Measured here (`ferrite-io bench`, the `nowait` column): a cached 4 KiB read through the ring
//! costs 1.5-1.6x `pread`; `preadv2(RWF_NOWAIT)` costs 1.05-1.10x `pread` (its iovec path), the
//! floor for any read that must not block. ext4 refuses `RWF_NOWAIT` for buffered writes
//! (`EOPNOTSUPP`), which the engines remember per engine so they stop asking. Batches on the
//! ring skip this path: one submit for the whole batch costs less than a syscall per operation.
//! So do `O_DIRECT` files (their reads always wait for the device) and streams (a pipe or a
//! socket has no offset to read at: `ESPIPE`).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use super::stats::Counters;
use super::tokio_io::check_offset;
use super::{File, Rw};
use crate::buf::{Buf, InFlight};

/// Per-engine switch for the fast path, per direction; a direction the filesystem refuses is
/// switched off for the engine's lifetime.
#[derive(Debug)]
pub(crate) struct FastPath {
    reads: AtomicBool,
    writes: AtomicBool,
}

impl FastPath {
    /// Off Linux there is no `RWF_NOWAIT`: the fast path starts off (no attempt, no refusal).
    pub(crate) fn new(enabled: bool) -> FastPath {
        let enabled = enabled && cfg!(target_os = "linux");
        FastPath { reads: AtomicBool::new(enabled), writes: AtomicBool::new(enabled) }
    }

    /// Tries `buf[start..]` at `offset` inline when the fast path is on for `rw`; counts the
    /// attempt's outcome in `counters`.
    #[inline(always)]
    pub(crate) fn attempt(
        &self,
        rw: Rw,
        file: &File,
        buf: &mut Buf<InFlight>,
        start: usize,
        offset: u64,
        counters: &Counters,
    ) -> Nowait {
        let switch = match rw {
            Rw::Read => &self.reads,
            Rw::Write => &self.writes,
        };
        // A stream (pipe, socket) has no offset for `preadv2` to read at: `ESPIPE`.
        if file.is_direct() || file.is_stream() || !switch.load(Ordering::Relaxed) {
            return Nowait::WouldBlock;
        }
        if let Err(e) = check_offset(offset) {
            return Nowait::Failed(e);
        }
        let outcome = try_rw(rw, file, buf, start, offset);
        match outcome {
            Nowait::Done(_) => counters.fast_path(true),
            Nowait::Failed(_) => {}
            Nowait::WouldBlock => counters.fast_path(false),
            Nowait::Unsupported => {
                counters.fast_path(false);
                switch_off(rw, switch);
            }
        }
        outcome
    }
}

/// Turns the fast path off for `rw` for the engine's lifetime: the kernel or the filesystem does
/// not support it. Out of line, so that `attempt`, inlined into every read and write, stays short.
#[cold]
#[inline(never)]
fn switch_off(rw: Rw, switch: &AtomicBool) {
    tracing::debug!(?rw, "RWF_NOWAIT unsupported here; fast path off for this direction");
    switch.store(false, Ordering::Relaxed);
}

/// What the attempt came to.
pub(crate) enum Nowait {
    /// Moved this many bytes (0 at end of file); may be short. Only `preadv2` (Linux) moves any.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Done(usize),
    /// Failed in a way the slow path would fail too (e.g. `EBADF`).
    Failed(io::Error),
    /// Would block: take the slow path.
    WouldBlock,
    /// The file or filesystem does not support `RWF_NOWAIT` for this direction.
    Unsupported,
}

/// Tries `buf[start..]` at `offset` without blocking. Never used on `O_DIRECT` files, whose
/// reads always wait for the device.
///
/// Issued through `rustix`, whose Linux calls (on x86_64 and aarch64) are inline `syscall`
/// instructions, and inlined into the engine's future with `attempt`: the kernel returns
/// straight into the engine's poll. On the 2-vCPU test VM the first `ret` after a syscall is
/// expensive: the same `preadv2` through `rustix` took 1,566-1,681 ns written inline in a loop
/// and 1,741-1,856 ns inside an `#[inline(never)]` function, as much as glibc's `preadv2`
/// (alternating chunks, medians). Any library call pays that return once; the old path
/// (glibc's wrapper inside `attempt` inside the future) paid it plus two more frames. Paired
/// with glibc's `preadv2` (the `nowait` baseline: the syscall behind one function call), a
/// cached read went from 1.08x to 1.04x.
#[cfg(target_os = "linux")]
#[inline(always)]
fn try_rw(rw: Rw, file: &File, buf: &mut Buf<InFlight>, start: usize, offset: u64) -> Nowait {
    use rustix::io::{Errno, ReadWriteFlags};

    // SAFETY: the syscall below runs on this thread while `buf` is borrowed mutably here; no
    // kernel operation holds this slot (I2), because the engine has not submitted it anywhere.
    let bytes = unsafe { buf.bytes_mut() };
    let bytes = &mut bytes[start..];
    let result = match rw {
        Rw::Read => rustix::io::preadv2(file.std(), &mut [io::IoSliceMut::new(bytes)], offset, ReadWriteFlags::NOWAIT),
        Rw::Write => rustix::io::pwritev2(file.std(), &[io::IoSlice::new(bytes)], offset, ReadWriteFlags::NOWAIT),
    };
    match result {
        Ok(n) => Nowait::Done(n),
        Err(Errno::AGAIN | Errno::INTR) => Nowait::WouldBlock,
        // `ENOSYS`: a kernel older than 4.6 or a seccomp profile without these calls (glibc's
        // wrapper reported that as `ENOTSUP`, rustix passes it on).
        Err(Errno::OPNOTSUPP | Errno::NOSYS) => Nowait::Unsupported,
        Err(e) => Nowait::Failed(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn try_rw(_rw: Rw, _file: &File, _buf: &mut Buf<InFlight>, _start: usize, _offset: u64) -> Nowait {
    Nowait::Unsupported
}
