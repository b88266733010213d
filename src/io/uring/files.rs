//! Registered files: every file the engine does I/O on gets one index in the fixed-file table of
//! every ring, so its operations carry `IOSQE_FIXED_FILE` and the kernel skips looking the
//! descriptor up and taking a reference to the file for each one (about a tenth of a cached
//! read through the ring: `cargo bench --bench io -- ring_setup`, `cached_read_fd` against
//! `cached_read_fixed_file`).
//!
//! **Lifetime.** The index is taken on the file's first operation on this engine and lives in
//! the [`File`] (`File::fixed`) as a [`Fixed`]. Each operation holds a handle of its file until
//! its completion is reaped (`ring::Payload`), so the `Fixed` is dropped only when no entry that
//! names the index is queued or in flight. Its drop clears the index in every ring (the kernel
//! then lets go of the file: closing a registered file is not delayed) and frees it for the next
//! file. A file used by a second engine keeps the first engine's slot and goes to the second by
//! descriptor.
//!
//! **Drops under a ring lock.** Clearing the index takes each ring's lock. A file whose last
//! handle goes away while this thread holds a ring lock (a batch entry that fails before it is
//! submitted, the engine draining on drop) cannot do that, so its index is parked and cleared by
//! the next registration or release that runs outside a lock, or with the rings when the engine
//! goes away. A parked index is never handed out before it is cleared.
//!
//! **Without it.** A kernel without sparse file tables (before 5.19), a table that is full, or a
//! failed registration: the operation goes by descriptor, as before.

use std::any::Any;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::Shared;
use super::ring;
use crate::io::File;

/// Most fixed files per engine (further files go by descriptor). The kernel also caps a table
/// at the process's `RLIMIT_NOFILE`.
const MOST: u64 = 4096;

/// The engine's fixed-file index allocator.
pub(super) struct Table {
    /// Indices every ring's table has; 0 without sparse tables.
    capacity: u32,
    free: Mutex<Vec<u32>>,
    /// Indices cleared of a file dropped under a ring lock, waiting to be cleared in the rings.
    parked: Mutex<Vec<u32>>,
    /// Files registered now.
    registered: AtomicU64,
    /// Set when the engine goes away: the rings' tables go with them.
    closing: AtomicBool,
}

/// One file's index, in [`File::fixed`]; its drop releases the index.
pub(super) struct Fixed {
    shared: Weak<Shared>,
    index: Option<u32>,
}

impl Table {
    /// A table of `capacity` indices; the rings register sparse tables of that size.
    pub(super) fn new(capacity: u32) -> Table {
        Table {
            capacity,
            free: Mutex::new((0..capacity).rev().collect()),
            parked: Mutex::new(Vec::new()),
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
/// means "by descriptor". Must not be called with a ring lock held.
pub(super) fn index(shared: &Arc<Shared>, file: &File) -> Option<u32> {
    if shared.files.capacity == 0 {
        return None;
    }
    debug_assert!(!ring::held(), "registering takes ring locks");
    let slot = file.fixed().get_or_init(|| Box::new(register(shared, file)) as Box<dyn Any + Send + Sync>);
    mine(shared, slot)
}

/// As [`index`] without registering: for a file whose registration was already attempted.
/// Takes no lock.
pub(super) fn known(shared: &Arc<Shared>, file: &File) -> Option<u32> {
    mine(shared, file.fixed().get()?)
}

/// The index in `slot` if this engine made it (another engine's rings know nothing of it).
fn mine(shared: &Arc<Shared>, slot: &(dyn Any + Send + Sync)) -> Option<u32> {
    let fixed = slot.downcast_ref::<Fixed>()?;
    (fixed.shared.as_ptr() == Arc::as_ptr(shared)).then_some(fixed.index).flatten()
}

/// Takes a free index and puts `file` in it on every ring.
fn register(shared: &Arc<Shared>, file: &File) -> Fixed {
    let table = &shared.files;
    unpark(shared);
    let index = table.free.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let index = index.filter(|&index| {
        let done = shared.rings.iter().take_while(|core| core.lock().set_file(index, file.fd()).is_ok()).count();
        if done == shared.rings.len() {
            return true;
        }
        tracing::debug!(index, file = ?file.path(), "cannot register the file in every ring; it goes by descriptor");
        clear(shared, index, done);
        false
    });
    if index.is_some() {
        table.registered.fetch_add(1, Relaxed);
    }
    Fixed { shared: Arc::downgrade(shared), index }
}

/// Clears `index` in the first `rings` rings and frees it.
fn clear(shared: &Shared, index: u32, rings: usize) {
    for core in &shared.rings[..rings] {
        if let Err(e) = core.lock().set_file(index, -1) {
            tracing::warn!(index, error = %e, "cannot clear a fixed-file index");
        }
    }
    shared.files.free.lock().unwrap_or_else(PoisonError::into_inner).push(index);
}

/// Clears the parked indices (see the module docs).
fn unpark(shared: &Shared) {
    loop {
        let Some(index) = shared.files.parked.lock().unwrap_or_else(PoisonError::into_inner).pop() else {
            return;
        };
        clear(shared, index, shared.rings.len());
    }
}

impl Drop for Fixed {
    fn drop(&mut self) {
        let (Some(index), Some(shared)) = (self.index, self.shared.upgrade()) else { return };
        let table = &shared.files;
        table.registered.fetch_sub(1, Relaxed);
        if table.closing.load(Relaxed) {
            return;
        }
        if ring::held() {
            table.parked.lock().unwrap_or_else(PoisonError::into_inner).push(index);
            return;
        }
        clear(&shared, index, shared.rings.len());
        unpark(&shared);
    }
}
