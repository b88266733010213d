//! The on-disk page format (version 2): a header sector, then the payload.
//!
//! ```text
//!  0                 48                    512                                   page_size
//!  +-----------------+---------------------+-------------------------------------+
//!  | PageHeader      | unit table (1 B per | payload (payload_len bytes), zeros  |
//!  | (header_crc ..) | data unit)          |                                     |
//!  +-----------------+---------------------+-------------------------------------+
//!  |<----------- header sector ----------->|<---- data units (512 B each) ---->|
//! ```
//!
//! # Why this layout
//!
//! A power loss may keep any subset of the sectors of a write that no completed `fdatasync`
//! covered; the device writes a sector (512 B, or 4 KiB on 4Kn devices, which is a union of
//! 512 B sectors) whole or not at all. Recovery must call every such state a tear, and call
//! corruption only what no crash explains. So every part of a page that a tear can separate is
//! checked on its own:
//!
//! - The **header sector** (the first 512 bytes) is one sector, so it is always from a single
//!   write. It carries its own CRC32C (`header_crc`), the page's address (a page written at
//!   another address is [`PageError::Misdirected`]), the payload length and the CRC32C of the
//!   payload, and the **unit table**: one byte per data unit, the low byte of the CRC32C of
//!   (address, unit index, unit bytes). Data units are 512 bytes for pages up to 232 KiB;
//!   larger pages use the smallest power-of-two unit that keeps the table at 464 entries.
//! - The header also names the **previous acknowledged flush** of the same page (`prev_len`,
//!   `prev_crc`): a page may be flushed several times while it fills (see
//!   [`PageFlusher::flush_partial`](super::PageFlusher::flush_partial)); each flush only appends
//!   payload, so the bytes of the previous flush are still in the page, and when the new flush
//!   is torn, the previous one is what [`verify`] returns.
//!
//! [`verify`] then decides:
//!
//! 1. The payload CRC passes: the page is intact (at `payload_len`).
//! 2. Otherwise every data unit that should hold new payload bytes is compared with the unit
//!    table. A unit that does not match is *explained by a crash* when one of its 512-byte
//!    sectors is all zeros in the bytes the new flush added (the new write never reached it,
//!    and before it the page held zeros there, or the previous flush's bytes followed by zeros).
//!    Any other mismatch (a unit holding bytes that no write of this page put there: bit rot,
//!    another page's sector) is [`PageError::Checksum`].
//! 3. A page whose damage a crash explains is intact at the previous flush's length when that
//!    prefix still passes `prev_crc` (the tear only cut off the new bytes), and
//!    [`PageError::Torn`] otherwise (a torn first write).
//!
//! Whatever a crash leaves of an unsynced write is therefore never corruption, and bit rot under
//! a completed sync is (with the odds of a CRC32C collision in the payload, and of 1 in 256 per
//! damaged unit for telling rot from a tear).
//!
//! Format version 1 (a 32-byte header, a footer, one CRC over the page) called a torn first write
//! whose first and last sectors landed a checksum failure, and had no safe way to flush a page
//! twice; this crate reads and writes only version 2.

use bytemuck::{Pod, Zeroable};

/// `"FRPG"`, little endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"FRPG");
/// The format version this crate writes and reads.
pub const VERSION: u16 = 2;
/// The granularity a power loss tears writes at: the smallest logical sector of any device.
pub const SECTOR: usize = 512;
/// Where the payload starts: the header sector is all metadata.
pub const PAYLOAD_START: usize = SECTOR;
/// Bytes of every page that are not payload.
pub const OVERHEAD: usize = PAYLOAD_START;
/// [`PageHeader::flags`] bit: the page is still filling (written by
/// [`PageFlusher::flush_partial`](super::PageFlusher::flush_partial)); the log's durable prefix
/// ends inside it.
pub const FLAG_OPEN: u16 = 1;
/// Entries of the unit table: what the header sector holds after the header.
pub const MAX_UNITS: usize = SECTOR - size_of::<PageHeader>();

/// The front of every page.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct PageHeader {
    /// [`MAGIC`].
    pub magic: u32,
    /// [`VERSION`].
    pub version: u16,
    /// [`FLAG_OPEN`] or 0.
    pub flags: u16,
    /// The page's log address: its byte offset in the log file.
    pub address: u64,
    /// The flush sequence number the page was written with (monotonic per log).
    pub sequence: u64,
    /// Payload bytes after the header sector.
    pub payload_len: u32,
    /// CRC32C of those payload bytes.
    pub payload_crc: u32,
    /// Payload bytes of the previous acknowledged flush of this page (0 for the first).
    pub prev_len: u32,
    /// CRC32C of the first `prev_len` payload bytes.
    pub prev_crc: u32,
    /// Bytes of the page (the unit table's unit follows from it).
    pub page_size: u32,
    /// CRC32C of the header sector, computed with this field set to zero.
    pub header_crc: u32,
}

static_assertions::const_assert_eq!(size_of::<PageHeader>(), 48);
static_assertions::const_assert_eq!(align_of::<PageHeader>(), 8);

/// Why a page read back is not the page that was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// All zeros: nothing was ever written there.
    #[error("page at {address} was never written")]
    NeverWritten {
        /// The address asked for.
        address: u64,
    },
    /// Only some sectors of the page's first write reached the disk (a crash explains it).
    #[error("page at {address} is torn: only part of its write reached the disk")]
    Torn {
        /// The address asked for.
        address: u64,
    },
    /// A well-formed header for another address.
    #[error("page at {expected} is misdirected: it holds the page for address {found}")]
    Misdirected {
        /// The address asked for.
        expected: u64,
        /// The address in the header.
        found: u64,
    },
    /// The header sector or the payload holds bytes that no write of this page put there.
    #[error("page at {address} fails its checksum (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// The address asked for.
        address: u64,
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// Not a page of this format (bad magic, version or length), and not torn.
    #[error("page at {address} has an invalid header: {reason}")]
    Invalid {
        /// The address asked for.
        address: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

/// What a verified page says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageInfo {
    /// The page's header as read.
    pub header: PageHeader,
    /// The payload bytes that verified: `header.payload_len`, or `header.prev_len` when the
    /// latest flush of the page was torn and the previous one survives.
    pub payload_len: u32,
}

impl PageInfo {
    /// The payload range within the page.
    pub fn payload(&self) -> std::ops::Range<usize> {
        PAYLOAD_START..PAYLOAD_START + self.payload_len as usize
    }

    /// Whether the page is still filling: flushed by `flush_partial`, or its latest flush was
    /// torn and an earlier partial flush is what survived. The log's durable data ends inside it.
    pub fn is_open(&self) -> bool {
        self.header.flags & FLAG_OPEN != 0 || self.payload_len != self.header.payload_len
    }

    /// Bytes of the page (from its start) that hold verified data: the whole page once it is
    /// closed, the header sector and the verified payload while it is open.
    pub fn durable_len(&self, page_size: usize) -> usize {
        if self.is_open() { PAYLOAD_START + self.payload_len as usize } else { page_size }
    }
}

/// Bytes of payload a page of `page_size` bytes holds.
///
/// ```
/// assert_eq!(ferrite_io::hybridlog::page::capacity(65536), 65536 - 512);
/// ```
pub fn capacity(page_size: usize) -> usize {
    page_size.saturating_sub(PAYLOAD_START)
}

/// The unit size of the table for a page of `page_size` bytes: 512, or the smallest power of two
/// that keeps the table at [`MAX_UNITS`] entries.
fn unit_size(page_size: usize) -> usize {
    let mut unit = SECTOR;
    while capacity(page_size).div_ceil(unit) > MAX_UNITS {
        unit *= 2;
    }
    unit
}

const HEADER_CRC: std::ops::Range<usize> = 44..48;

fn header_crc(sector: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&sector[..HEADER_CRC.start]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &sector[HEADER_CRC.end..SECTOR])
}

/// The table entry of data unit `index` holding `bytes`.
fn unit_tag(address: u64, index: usize, bytes: &[u8]) -> u8 {
    let crc = crc32c::crc32c(&address.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &(index as u64).to_le_bytes());
    crc32c::crc32c_append(crc, bytes) as u8
}

fn check_size(page: &[u8], address: u64) -> Result<(), PageError> {
    let size = page.len();
    if size < 4096 || size % 4096 != 0 {
        return Err(PageError::Invalid { address, reason: "page size is not a multiple of 4096" });
    }
    Ok(())
}

/// Stamps `page` (a whole page, a multiple of 4096 bytes) as the page at `address`, written with
/// `sequence` (at least 1), whose first `payload_len` payload bytes are already in place at
/// [`PAYLOAD_START`]. Zeroes the rest of the payload area and writes the header sector.
///
/// `prev_len` is the payload length of the previous acknowledged flush of this page (0 for its
/// first flush); the first `prev_len` payload bytes must be the bytes that flush wrote. `open`
/// marks a page that will be flushed again ([`FLAG_OPEN`]).
///
/// # Errors
///
/// [`PageError::Invalid`] when the page is smaller than 4096 bytes or not a multiple of it,
/// `payload_len` does not fit, `prev_len > payload_len`, or `sequence` is 0.
///
/// ```
/// use ferrite_io::hybridlog::page::{self, PAYLOAD_START};
/// let mut page = vec![0u8; 8192];
/// page[PAYLOAD_START..PAYLOAD_START + 5].copy_from_slice(b"hello");
/// page::seal(&mut page, 8192, 1, 5, 0, false)?;
/// let info = page::verify(&page, 8192)?;
/// assert_eq!(&page[info.payload()], b"hello");
/// # Ok::<(), page::PageError>(())
/// ```
pub fn seal(
    page: &mut [u8],
    address: u64,
    sequence: u64,
    payload_len: usize,
    prev_len: usize,
    open: bool,
) -> Result<(), PageError> {
    check_size(page, address)?;
    if sequence == 0 {
        return Err(PageError::Invalid { address, reason: "sequence 0 is reserved" });
    }
    if payload_len > capacity(page.len()) {
        return Err(PageError::Invalid { address, reason: "payload does not fit the page" });
    }
    if prev_len > payload_len {
        return Err(PageError::Invalid { address, reason: "a flush may not shorten the page" });
    }
    let unit = unit_size(page.len());
    let page_size = page.len() as u32;
    let (head, data) = page.split_at_mut(PAYLOAD_START);
    data[payload_len..].fill(0);
    let header = PageHeader {
        magic: MAGIC,
        version: VERSION,
        flags: if open { FLAG_OPEN } else { 0 },
        address,
        sequence,
        payload_len: payload_len as u32,
        payload_crc: crc32c::crc32c(&data[..payload_len]),
        prev_len: prev_len as u32,
        prev_crc: crc32c::crc32c(&data[..prev_len]),
        page_size,
        header_crc: 0,
    };
    head.fill(0);
    head[..size_of::<PageHeader>()].copy_from_slice(bytemuck::bytes_of(&header));
    for (index, bytes) in data.chunks(unit).enumerate() {
        head[size_of::<PageHeader>() + index] = unit_tag(address, index, bytes);
    }
    let crc = header_crc(head);
    head[HEADER_CRC].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Checks that `page` holds the page at `address`, as a crash may have left it.
///
/// # Errors
///
/// The [`PageError`] that says what is wrong: never written (all zeros), torn (a first write
/// only partly on disk), misdirected (a header naming another address), checksum (bytes no write
/// of this page explains), invalid (not this format).
pub fn verify(page: &[u8], address: u64) -> Result<PageInfo, PageError> {
    check_size(page, address)?;
    if page.iter().all(|&b| b == 0) {
        return Err(PageError::NeverWritten { address });
    }
    let (head, data) = page.split_at(PAYLOAD_START);
    if head.iter().all(|&b| b == 0) {
        // The header sector of a first write did not land, some data sector did.
        return Err(PageError::Torn { address });
    }
    let header: PageHeader = bytemuck::pod_read_unaligned(&head[..size_of::<PageHeader>()]);
    if header.magic != MAGIC {
        return Err(PageError::Invalid { address, reason: "bad magic" });
    }
    let computed = header_crc(head);
    if computed != header.header_crc {
        return Err(PageError::Checksum { address, stored: header.header_crc, computed });
    }
    if header.address != address {
        return Err(PageError::Misdirected { expected: address, found: header.address });
    }
    if header.version != VERSION {
        return Err(PageError::Invalid { address, reason: "unknown format version" });
    }
    let (len, prev) = (header.payload_len as usize, header.prev_len as usize);
    if header.page_size as usize != page.len() {
        return Err(PageError::Invalid { address, reason: "written with another page size" });
    }
    if len > data.len() || prev > len {
        return Err(PageError::Invalid { address, reason: "lengths do not fit the page" });
    }
    let info = |payload_len| PageInfo { header, payload_len };
    let unit = unit_size(page.len());
    let tag = |index: usize| {
        let start = index * unit;
        unit_tag(address, index, &data[start..(start + unit).min(data.len())])
    };
    let computed = crc32c::crc32c(&data[..len]);
    if computed == header.payload_crc {
        // A closed page was written whole, once: its zeros after the payload are checked too.
        // (After an open page's payload, a later flush of it may have left its bytes.)
        let closed = header.flags & FLAG_OPEN == 0;
        let units = len / unit..data.len().div_ceil(unit);
        if let Some(index) = units.filter(|_| closed).find(|&i| tag(i) != head[size_of::<PageHeader>() + i]) {
            let stored = head[size_of::<PageHeader>() + index].into();
            return Err(PageError::Checksum { address, stored, computed: tag(index).into() });
        }
        return Ok(info(header.payload_len));
    }
    // The new bytes are [prev, len): is every unit holding some of them the new write's, or
    // what was there before it (zeros past `prev`)?
    let mut explained = false;
    for index in prev / unit..len.div_ceil(unit) {
        if tag(index) == head[size_of::<PageHeader>() + index] {
            continue;
        }
        let start = index * unit;
        let never_reached = (start..(start + unit).min(data.len())).step_by(SECTOR).any(|sector| {
            let new = sector.max(prev)..(sector + SECTOR).min(len);
            !new.is_empty() && data[new.start..sector + SECTOR].iter().all(|&b| b == 0)
        });
        if !never_reached {
            return Err(PageError::Checksum { address, stored: header.payload_crc, computed });
        }
        explained = true;
    }
    if !explained {
        return Err(PageError::Checksum { address, stored: header.payload_crc, computed });
    }
    if prev > 0 && crc32c::crc32c(&data[..prev]) == header.prev_crc {
        return Ok(info(header.prev_len));
    }
    if prev > 0 {
        // The bytes of an acknowledged flush changed: no tear of the new write does that.
        return Err(PageError::Checksum { address, stored: header.prev_crc, computed });
    }
    Err(PageError::Torn { address })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: usize = 8192;
    /// Random cases per property (fewer under miri, which interprets every CRC).
    const ROUNDS: usize = if cfg!(miri) { 12 } else { 4000 };

    fn filled(len: usize, seed: u8) -> Vec<u8> {
        let mut page = vec![0u8; P];
        for (i, b) in page[PAYLOAD_START..PAYLOAD_START + len].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed) | 1;
        }
        page
    }

    fn page(address: u64, len: usize, prev: usize, open: bool) -> Vec<u8> {
        let mut page = filled(len, 7);
        seal(&mut page, address, 3, len, prev, open).unwrap();
        page
    }

    /// Sector `s` of `from` copied over `onto`.
    fn keep_sectors(onto: &[u8], from: &[u8], sectors: impl Fn(usize) -> bool) -> Vec<u8> {
        let mut out = onto.to_vec();
        for s in (0..P / SECTOR).filter(|&s| sectors(s)) {
            out[s * SECTOR..(s + 1) * SECTOR].copy_from_slice(&from[s * SECTOR..(s + 1) * SECTOR]);
        }
        out
    }

    #[test]
    fn a_sealed_page_verifies() {
        let p = page(8192, 100, 0, false);
        let info = verify(&p, 8192).unwrap();
        assert_eq!((info.header.address, info.header.sequence, info.payload()), (8192, 3, 512..612));
        assert!(!info.is_open());
        assert_eq!(info.durable_len(P), P);
    }

    /// Defect 1: a first write of which only the first and last sectors landed was a checksum
    /// failure in format 1. Every subset of the sectors of a first write is torn or intact.
    #[test]
    fn every_subset_of_a_first_write_is_torn_never_corrupt() {
        let full = page(0, P - OVERHEAD, 0, false);
        let zeros = vec![0u8; P];
        let sectors = P / SECTOR;
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        for round in 0..ROUNDS {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mask = if round == 0 { 1 | 1 << (sectors - 1) } else { rng };
            let torn = keep_sectors(&zeros, &full, |s| mask >> s & 1 == 1);
            let all = (0..sectors).all(|s| mask >> s & 1 == 1);
            match verify(&torn, 0) {
                Ok(_) => assert!(all, "mask {mask:#x}: only a complete write is intact"),
                Err(PageError::Torn { .. } | PageError::NeverWritten { .. }) => assert!(!all),
                Err(e) => panic!("mask {mask:#x}: {e}"),
            }
        }
    }

    /// Defect 2's format half: a page flushed again as it fills keeps the previous flush when
    /// any subset of the new flush's sectors lands.
    #[test]
    fn a_torn_extension_keeps_the_previous_flush() {
        let mut old = filled(3000, 7);
        seal(&mut old, 0, 1, 1000, 0, true).unwrap();
        let mut new = filled(3000, 7);
        seal(&mut new, 0, 2, 3000, 1000, true).unwrap();
        let mut rng = 0x1234_5678u64;
        for _ in 0..ROUNDS / 2 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let torn = keep_sectors(&old, &new, |s| rng >> s & 1 == 1);
            let info = verify(&torn, 0).unwrap_or_else(|e| panic!("mask {rng:#x}: {e}"));
            assert!([1000, 3000].contains(&info.payload_len), "mask {rng:#x}: {info:?}");
            assert_eq!(torn[info.payload()], new[info.payload()]);
        }
    }

    #[test]
    fn damage_no_crash_explains_is_corruption() {
        let p = page(0, 5000, 0, false);
        // A bit flipped in the payload, in the padding's unit table, in the header.
        for at in [600, 3000, 5500 - 1, 100, 20, 7000] {
            let mut rot = p.clone();
            rot[at] ^= 0x10;
            let e = verify(&rot, 0).unwrap_err();
            assert!(matches!(e, PageError::Checksum { .. }), "byte {at}: {e:?}");
        }
        // A bit flipped in the payload of a page whose previous flush survives.
        let mut ext = filled(5000, 7);
        seal(&mut ext, 0, 2, 5000, 1000, false).unwrap();
        ext[4000] ^= 1;
        assert!(matches!(verify(&ext, 0), Err(PageError::Checksum { .. })));
        // Another page's sector in the middle of this one.
        let mut other = filled(5000, 9);
        seal(&mut other, 8192, 3, 5000, 0, false).unwrap();
        let mixed = keep_sectors(&p, &other, |s| s == 3);
        assert!(matches!(verify(&mixed, 0), Err(PageError::Checksum { .. })));
        // A whole page written at the wrong address.
        assert_eq!(verify(&other, 0), Err(PageError::Misdirected { expected: 0, found: 8192 }));
        let mut magic = p.clone();
        magic[0] ^= 1;
        assert_eq!(verify(&magic, 0), Err(PageError::Invalid { address: 0, reason: "bad magic" }));
    }

    #[test]
    fn each_crash_state_is_named() {
        assert_eq!(verify(&[0; 4096], 0), Err(PageError::NeverWritten { address: 0 }));
        let mut body_only = page(0, 5000, 0, false);
        body_only[..SECTOR].fill(0);
        assert_eq!(verify(&body_only, 0), Err(PageError::Torn { address: 0 }));
        let mut header_only = page(0, 5000, 0, false);
        header_only[SECTOR..].fill(0);
        assert_eq!(verify(&header_only, 0), Err(PageError::Torn { address: 0 }));
        // A page with an empty payload is its header sector alone.
        assert!(verify(&page(0, 0, 0, false), 0).is_ok());
    }

    #[test]
    #[cfg_attr(miri, ignore = "a megabyte of CRCs takes minutes interpreted")]
    fn large_pages_use_larger_units() {
        assert_eq!(unit_size(8192), 512);
        assert_eq!(unit_size(232 * 1024), 512);
        assert_eq!(unit_size(1 << 20), 4096);
        let mut big = vec![0u8; 1 << 20];
        big[PAYLOAD_START..PAYLOAD_START + 100_000].fill(9);
        seal(&mut big, 0, 1, 100_000, 0, false).unwrap();
        assert!(verify(&big, 0).is_ok());
        // A 512-byte tear inside a 4 KiB unit is still a tear.
        big[PAYLOAD_START + 4096..PAYLOAD_START + 4608].fill(0);
        assert_eq!(verify(&big, 0), Err(PageError::Torn { address: 0 }));
    }

    #[test]
    fn seal_refuses_what_does_not_fit() {
        assert!(seal(&mut [0; 4096], 0, 1, 4096 - OVERHEAD + 1, 0, false).is_err());
        assert!(seal(&mut [0; 1000], 0, 1, 0, 0, false).is_err());
        assert!(seal(&mut [0; 4096], 0, 0, 0, 0, false).is_err(), "sequence 0 is reserved");
        assert!(seal(&mut [0; 4096], 0, 1, 10, 20, false).is_err(), "a flush never shortens a page");
    }
}
