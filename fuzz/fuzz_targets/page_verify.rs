//! Arbitrary bytes into page verification and recovery: never a panic, a page that verifies
//! has its payload inside the page, and a sealed page round-trips (then survives, or is caught
//! by, one flipped bit).
//!
//! `cargo +nightly fuzz run page_verify -- -max_total_time=180`

#![no_main]

use arbitrary::Arbitrary;
use ferrite_io::hybridlog::page::{self, PAYLOAD_START};
use ferrite_io::hybridlog::recover;
use ferrite_io::{IoEngine, IoEngineConfig, OpenOptions, TokioEngine};
use ferrite_io_fuzz::{runtime, scratch_file};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// 4096 << (big % 3).
    big: u8,
    address_page: u8,
    payload_len: u16,
    prev_len: u16,
    open: bool,
    flip: u16,
    /// Raw page bytes, repeated to fill the page(s).
    bytes: Vec<u8>,
}

fuzz_target!(init: { runtime(); }, |input: Input| {
    let size = 4096usize << (input.big % 3);
    let address = u64::from(input.address_page) * size as u64;
    let raw: Vec<u8> =
        if input.bytes.is_empty() { vec![0; size] } else { input.bytes.iter().copied().cycle().take(size).collect() };

    // Arbitrary bytes: any answer but a panic; an intact page's payload lies inside the page.
    if let Ok(info) = page::verify(&raw, address) {
        assert!(info.payload().end <= size);
    }

    // A sealed page round-trips.
    let cap = page::capacity(size);
    let len = usize::from(input.payload_len) % (cap + 1);
    let prev = usize::from(input.prev_len) % (len + 1);
    let mut sealed = raw.clone();
    page::seal(&mut sealed, address, 1, len, prev, input.open).expect("seal");
    let info = page::verify(&sealed, address).expect("a sealed page verifies");
    assert_eq!(info.payload_len as usize, len);
    assert_eq!(&sealed[info.payload()], &raw[PAYLOAD_START..PAYLOAD_START + len]);
    // One flipped bit: caught, or (open page, past the payload) harmless; never other bytes.
    let mut flipped = sealed.clone();
    let bit = usize::from(input.flip) % (size * 8);
    flipped[bit / 8] ^= 1 << (bit % 8);
    if let Ok(info) = page::verify(&flipped, address) {
        assert_eq!(&flipped[info.payload()], &sealed[info.payload()], "a flipped bit passed as payload");
    }

    // Recovery over the raw bytes and the sealed page, as a two-page log: never a panic.
    let path = scratch_file("");
    let log: Vec<u8> = raw.iter().chain(&flipped).copied().collect();
    std::fs::write(&path, &log).expect("write log");
    runtime().block_on(async {
        let config = IoEngineConfig { buffer_size: size, registered_buffers: 4, ..IoEngineConfig::default() };
        let engine = TokioEngine::new(&config).expect("engine");
        let file = engine.open(&path, &OpenOptions::new()).await.expect("open");
        let _ = recover(&engine, &file, size, 0).await;
    });
    let _ = std::fs::remove_file(&path);
});
