//! The on-disk page format: a [`PageHeader`] at the front, a [`PageFooter`] at the back, the
//! payload between, and a CRC32C over the whole page.
//!
//! ```text
//!  0            32                                        page_size - 16   page_size
//!  +------------+-----------------------------------------+----------------+
//!  | PageHeader |  payload (payload_len bytes, then zero) |   PageFooter   |
//!  +------------+-----------------------------------------+----------------+
//! ```
//!
//! The footer repeats the header's address and sequence. A torn write (the device persisted only
//! some sectors of the page) leaves header and footer from different writes, which
//! [`verify`] reports as [`PageError::Torn`]; a page whose header and footer agree but whose
//! checksum does not is corrupt ([`PageError::Checksum`]); a page that carries another page's
//! address was misdirected; a page of zeros was never written.

use bytemuck::{Pod, Zeroable};

/// `"FRPG"`, little endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"FRPG");
/// The format version this crate writes and reads.
pub const VERSION: u16 = 1;
/// Bytes the header and footer take from every page.
pub const OVERHEAD: usize = size_of::<PageHeader>() + size_of::<PageFooter>();

/// The front of every page.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct PageHeader {
    /// [`MAGIC`].
    pub magic: u32,
    /// [`VERSION`].
    pub version: u16,
    /// Reserved, zero.
    pub flags: u16,
    /// The page's log address: its byte offset in the log file.
    pub address: u64,
    /// The flush sequence number the page was written with (monotonic per log).
    pub sequence: u64,
    /// Payload bytes after the header.
    pub payload_len: u32,
    /// CRC32C of the whole page, computed with this field set to zero.
    pub checksum: u32,
}

/// The back of every page: a copy of the header's identity, to detect torn writes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct PageFooter {
    /// Same as [`PageHeader::address`].
    pub address: u64,
    /// Same as [`PageHeader::sequence`].
    pub sequence: u64,
}

static_assertions::const_assert_eq!(size_of::<PageHeader>(), 32);
static_assertions::const_assert_eq!(align_of::<PageHeader>(), 8);
static_assertions::const_assert_eq!(size_of::<PageFooter>(), 16);
static_assertions::const_assert_eq!(align_of::<PageFooter>(), 8);

/// Why a page read back is not the page that was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// All zeros: nothing was ever written there.
    #[error("page at {address} was never written")]
    NeverWritten {
        /// The address asked for.
        address: u64,
    },
    /// Header and footer come from different writes (or one of them is missing).
    #[error("page at {address} is torn: its header and footer come from different writes")]
    Torn {
        /// The address asked for.
        address: u64,
    },
    /// A well-formed page for another address.
    #[error("page at {expected} is misdirected: it holds the page for address {found}")]
    Misdirected {
        /// The address asked for.
        expected: u64,
        /// The address in the header.
        found: u64,
    },
    /// Header and footer agree, the checksum does not.
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
    /// The page's header.
    pub header: PageHeader,
}

impl PageInfo {
    /// The payload range within the page.
    pub fn payload(&self) -> std::ops::Range<usize> {
        size_of::<PageHeader>()..size_of::<PageHeader>() + self.header.payload_len as usize
    }
}

fn checksum(page: &[u8]) -> u32 {
    const FIELD: std::ops::Range<usize> = 28..32;
    let crc = crc32c::crc32c(&page[..FIELD.start]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &page[FIELD.end..])
}

/// Stamps `page` (a whole page, a multiple of 4096 bytes) as the page at `address`, written
/// with `sequence` (at least 1), whose first `payload_len` payload bytes are already in place after the header.
/// Zeroes the rest of the payload area, writes header and footer, and computes the checksum.
///
/// # Errors
///
/// [`PageError::Invalid`] when the page is smaller than 4096 bytes, not a multiple of it, or
/// `payload_len` does not fit, or `sequence` is 0.
pub fn seal(page: &mut [u8], address: u64, sequence: u64, payload_len: usize) -> Result<(), PageError> {
    let size = page.len();
    if size < 4096 || size % 4096 != 0 {
        return Err(PageError::Invalid { address, reason: "page size is not a multiple of 4096" });
    }
    if sequence == 0 {
        return Err(PageError::Invalid { address, reason: "sequence 0 is reserved (a zero footer means unwritten)" });
    }
    if payload_len > size - OVERHEAD {
        return Err(PageError::Invalid { address, reason: "payload does not fit the page" });
    }
    let header_len = size_of::<PageHeader>();
    page[header_len + payload_len..size - size_of::<PageFooter>()].fill(0);
    let header = PageHeader {
        magic: MAGIC,
        version: VERSION,
        flags: 0,
        address,
        sequence,
        payload_len: payload_len as u32,
        checksum: 0,
    };
    page[..header_len].copy_from_slice(bytemuck::bytes_of(&header));
    let footer = PageFooter { address, sequence };
    page[size - size_of::<PageFooter>()..].copy_from_slice(bytemuck::bytes_of(&footer));
    let crc = checksum(page);
    page[28..32].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Checks that `page` is an intact page for `address`.
///
/// # Errors
///
/// The [`PageError`] that says what is wrong, checked in this order: never written, invalid
/// header, misdirected (a header or footer naming another address), torn, checksum.
pub fn verify(page: &[u8], address: u64) -> Result<PageInfo, PageError> {
    let size = page.len();
    if size < 4096 || size % 4096 != 0 {
        return Err(PageError::Invalid { address, reason: "page size is not a multiple of 4096" });
    }
    if page.iter().all(|&b| b == 0) {
        return Err(PageError::NeverWritten { address });
    }
    let header: PageHeader = bytemuck::pod_read_unaligned(&page[..size_of::<PageHeader>()]);
    let footer: PageFooter = bytemuck::pod_read_unaligned(&page[size - size_of::<PageFooter>()..]);
    let header_written = header.magic == MAGIC;
    let footer_written = footer != PageFooter::zeroed();
    // A crash leaves every sector either zero or from some write of *this* page, which carries
    // this address: anything else in the header or footer is not a torn write.
    if !header_written && page[..size_of::<PageHeader>()].iter().any(|&b| b != 0) {
        return Err(PageError::Invalid { address, reason: "bad magic" });
    }
    for found in [header_written.then_some(header.address), footer_written.then_some(footer.address)] {
        if let Some(found) = found.filter(|&found| found != address) {
            return Err(PageError::Misdirected { expected: address, found });
        }
    }
    // Header or footer missing, or from different writes: only some sectors of the page reached
    // the disk. (Neither written but the body is: a middle sector of a torn first write.)
    if !header_written || !footer_written || (footer.address, footer.sequence) != (header.address, header.sequence) {
        return Err(PageError::Torn { address });
    }
    if header.version != VERSION {
        return Err(PageError::Invalid { address, reason: "unknown format version" });
    }
    if header.payload_len as usize > size - OVERHEAD {
        return Err(PageError::Invalid { address, reason: "payload length exceeds the page" });
    }
    let computed = checksum(page);
    if computed != header.checksum {
        return Err(PageError::Checksum { address, stored: header.checksum, computed });
    }
    if header.address != address {
        return Err(PageError::Misdirected { expected: address, found: header.address });
    }
    Ok(PageInfo { header })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(address: u64, sequence: u64) -> Vec<u8> {
        let mut page = vec![0u8; 8192];
        page[32..132].fill(7);
        seal(&mut page, address, sequence, 100).unwrap();
        page
    }

    #[test]
    fn a_sealed_page_verifies() {
        let info = verify(&page(8192, 3), 8192).unwrap();
        assert_eq!((info.header.address, info.header.sequence, info.payload()), (8192, 3, 32..132));
    }

    #[test]
    fn each_failure_is_named() {
        assert_eq!(verify(&[0; 4096], 0), Err(PageError::NeverWritten { address: 0 }));
        // Torn: the second half comes from another write of the same page.
        let (a, b) = (page(0, 1), page(0, 2));
        let torn: Vec<u8> = a[..4096].iter().chain(&b[4096..]).copied().collect();
        assert_eq!(verify(&torn, 0), Err(PageError::Torn { address: 0 }));
        // Torn: only the first sector reached the disk.
        let mut half = page(0, 1);
        half[4096..].fill(0);
        assert_eq!(verify(&half, 0), Err(PageError::Torn { address: 0 }));
        // Corruption in the header is not a tear: a crash only leaves sectors of this page.
        let mut magic = page(0, 1);
        magic[0] ^= 1;
        assert_eq!(verify(&magic, 0), Err(PageError::Invalid { address: 0, reason: "bad magic" }));
        let mut moved = page(8192, 1);
        moved[8] ^= 0x40; // one bit of the header's address
        assert!(matches!(verify(&moved, 8192), Err(PageError::Misdirected { expected: 8192, .. })));
        let mut flipped = page(0, 1);
        flipped[500] ^= 1;
        assert!(matches!(verify(&flipped, 0), Err(PageError::Checksum { address: 0, .. })));
        assert_eq!(verify(&page(8192, 1), 0), Err(PageError::Misdirected { expected: 0, found: 8192 }));
        let mut garbage = vec![0u8; 4096];
        garbage[4000] = 1;
        assert_eq!(verify(&garbage, 0), Err(PageError::Torn { address: 0 }));
    }

    #[test]
    fn seal_refuses_what_does_not_fit() {
        assert!(seal(&mut [0; 4096], 0, 1, 4096 - OVERHEAD + 1).is_err());
        assert!(seal(&mut [0; 1000], 0, 1, 0).is_err());
        assert!(seal(&mut [0; 4096], 0, 0, 0).is_err(), "sequence 0 would look unwritten");
    }
}
