// Misuse: reading the bytes of a `Buf<InFlight>` (the kernel may be writing them): no `Deref`.
use ferrite_io::{Buf, InFlight};

fn peek(buf: &Buf<InFlight>) -> u8 {
    buf[0]
}

fn view(buf: &Buf<InFlight>) -> &[u8] {
    &**buf
}

fn main() {}
