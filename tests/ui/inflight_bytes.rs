// Misuse: reading the bytes of a `Buf<InFlight>` (the kernel may be writing them): no `Deref`.
use ferrite_io::{Buf, InFlight};

#[allow(dead_code)]
fn peek(buf: &Buf<InFlight>) -> u8 {
    buf[0]
}

#[allow(dead_code)]
fn view(buf: &Buf<InFlight>) -> &[u8] {
    &**buf
}

fn main() {}
