//! Caller-owned memory behind a [`Buf`](super::Buf): a `Vec<u8>`, `Box<[u8]>` or `BytesMut`
//! handed over by value, kept as one `BytesMut` (each converts without copying).
//!
//! Like [`pool`](super::pool), this file holds a raw pointer into buffer memory: the start of
//! the bytes, taken once from a `&mut` borrow when the memory is handed over, so that engines
//! can give the kernel a pointer that writes may go through.

use std::ptr::NonNull;

use bytes::{Bytes, BytesMut};

/// The memory of one caller-owned buffer. Boxed inside `Buf`, so `Buf` stays three words.
pub(crate) struct Owned {
    /// Start of `bytes`; valid for `bytes.len()` bytes while `bytes` is owned here: a
    /// `BytesMut` that is not grown or split never moves its bytes (I4).
    ptr: NonNull<u8>,
    bytes: BytesMut,
}

// SAFETY: `ptr` points into `bytes`, which this struct owns alone (nothing else holds a handle to
// that `BytesMut`, I1); it is only dereferenced through the owning `Buf`, as for pool slots.
unsafe impl Send for Owned {}
// SAFETY: as for `Send`: `&Owned` gives no byte access by itself, only through an owning `Buf`.
unsafe impl Sync for Owned {}

impl Owned {
    /// Takes `bytes` over; its length (its initialized part) becomes the buffer's capacity.
    pub(crate) fn new(mut bytes: BytesMut) -> Box<Owned> {
        let ptr = NonNull::from(&mut bytes[..]).cast::<u8>();
        Box::new(Owned { ptr, bytes })
    }

    /// Start of the memory.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes of memory, all initialized (I5: a `BytesMut`'s length covers only initialized bytes).
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The bytes in `range`, frozen, without copying.
    pub(crate) fn into_bytes(self, range: std::ops::Range<usize>) -> Bytes {
        self.bytes.freeze().slice(range)
    }

    /// The bytes in `range` as a `Vec`, without copying when the range starts at 0 (the
    /// `BytesMut` came from a `Vec` or a `Box<[u8]>`, or was never split).
    pub(crate) fn into_vec(self, range: std::ops::Range<usize>) -> Vec<u8> {
        let mut bytes = self.bytes;
        bytes.truncate(range.end);
        if range.start == 0 { Vec::from(bytes) } else { bytes[range.start..].to_vec() }
    }
}
