//! Registered files: every file the engine does I/O on gets one index in the fixed-file table of
//! every ring, so its operations carry `IOSQE_FIXED_FILE` and the kernel skips looking the
//! descriptor up and taking a reference to the file for each one (about a tenth of a cached
//! read through the ring: `cargo bench --bench io -- ring_setup`, `cached_read_fd` against
//! `cached_read_fixed_file`).
//!
//! **Lifetime.** The index is taken on the file's first operation on this engine and lives in
//! the [`File`] (`File::fixed`) as a [`Fixed`]. A handle of the file lives while an entry that
//! names the index may still be issued (`ring::Payload`: the waiting future's borrow, or a
//! clone in the slot), so the `Fixed` is dropped only when every such entry has been issued;
//! an issued entry keeps its file through the kernel's own reference until it completes. Its
//! drop empties the index in every ring (the kernel
//! then lets go of the file: closing a registered file is not delayed) and frees it for the next
//! file. A file used by a second engine keeps the first engine's slot and goes to the second by
//! descriptor.
//!
//! **No lock.** Filling and emptying a slot is one `io_uring_register` per ring, which needs no
//! lock of ours (`RingCore::set_file`): a file can be registered while its ring is locked (a
//! batch), and released wherever its last handle goes (a payload freed under a ring lock).
//!
//! **Without it.** A kernel without sparse file tables (before 5.19), a table that is full, or a
//! failed registration: the operation goes by descriptor, as before.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::Shared;
use crate::io::File;

/// Most fixed files per engine (further files go by descriptor). The kernel also caps a table
/// at the process's `RLIMIT_NOFILE`.
const MOST: u64 = 4096;

/// The engine's fixed-file index allocator.
pub(super) struct Table {
    /// Indices every ring's table has; 0 without sparse tables.
    capacity: u32,
    free: Mutex<Vec<u32>>,
    /// Files registered now.
    registered: AtomicU64,
    /// Set when the engine goes away: the rings' tables go with them.
    closing: AtomicBool,
}

/// One file's index, kept in the file ([`File::fixed`]); its drop releases the index.
pub(in crate::io) struct Fixed {
    shared: Weak<Shared>,
    index: Option<u32>,
}

impl std::fmt::Debug for Fixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixed").field("index", &self.index).finish()
    }
}

impl Table {
    /// A table of `capacity` indices; the rings register sparse tables of that size.
    pub(super) fn new(capacity: u32) -> Table {
        Table {
            capacity,
            free: Mutex::new((0..capacity).rev().collect()),
            registered: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        }
    }

    /// The table size to ask the rings for: [`MOST`], or the descriptor limit if lower.
    pub(super) fn size() -> u32 {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one `rlimit` into `limit`, a live local of that type.
        let soft = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
            0 => limit.rlim_cur,
            _ => 0,
        };
        soft.min(MOST) as u32
    }

    /// Files registered now.
    pub(super) fn registered(&self) -> u64 {
        self.registered.load(Relaxed)
    }

    /// The engine is going away: releases no longer touch the rings.
    pub(super) fn close(&self) {
        self.closing.store(true, Relaxed);
    }
}

/// The fixed index `file` has on this engine's rings, registering it on first use; `None`
/// means "by descriptor".
pub(super) fn index(shared: &Arc<Shared>, file: &File) -> Option<u32> {
    if shared.files.capacity == 0 {
        return None;
    }
    let fixed = file.fixed().get_or_init(|| register(shared, file));
    // Another engine's slot: this engine's rings know nothing of it.
    (fixed.shared.as_ptr() == Arc::as_ptr(shared)).then_some(fixed.index).flatten()
}

/// Takes a free index and puts `file` in it on every ring.
fn register(shared: &Arc<Shared>, file: &File) -> Fixed {
    let table = &shared.files;
    let index = table.free.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let index = index.filter(|&index| {
        let done = shared.rings.iter().take_while(|core| core.set_file(index, file.fd()).is_ok()).count();
        if done == shared.rings.len() {
            return true;
        }
        tracing::debug!(index, file = ?file.path(), "cannot register the file in every ring; it goes by descriptor");
        release(shared, index, done);
        false
    });
    if index.is_some() {
        table.registered.fetch_add(1, Relaxed);
    }
    Fixed { shared: Arc::downgrade(shared), index }
}

/// Empties `index` in the first `rings` rings and frees it.
fn release(shared: &Shared, index: u32, rings: usize) {
    for core in &shared.rings[..rings] {
        if let Err(e) = core.set_file(index, -1) {
            tracing::warn!(index, error = %e, "cannot empty a fixed-file slot");
        }
    }
    shared.files.free.lock().unwrap_or_else(PoisonError::into_inner).push(index);
}

impl Drop for Fixed {
    fn drop(&mut self) {
        let (Some(index), Some(shared)) = (self.index, self.shared.upgrade()) else { return };
        shared.files.registered.fetch_sub(1, Relaxed);
        if !shared.files.closing.load(Relaxed) {
            release(&shared, index, shared.rings.len());
        }
    }
}
