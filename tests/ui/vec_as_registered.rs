// Misuse: making a `Buf<Registered>` straight from caller memory, skipping the pool.
use ferrite_io::{Buf, Registered};

fn main() {
    let _forged: Buf<Registered> = Buf::from(vec![0u8; 4096]);
}
