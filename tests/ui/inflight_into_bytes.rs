// Misuse: taking a `Bytes` (or `Vec`) out of a buffer the kernel may still be writing.
use ferrite_io::{Buf, InFlight};

#[allow(dead_code)]
fn share(buf: Buf<InFlight>) -> bytes::Bytes {
    buf.into_bytes()
}

#[allow(dead_code)]
fn narrow(buf: Buf<InFlight>) -> Buf<InFlight> {
    buf.slice(0..1)
}

fn main() {}
