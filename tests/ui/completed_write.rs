// Misuse: writing into a `Buf<Completed>`: its bytes are the operation's result, read-only
// until the buffer is recycled with `into_free`.
use ferrite_io::{Buf, Completed};

#[allow(dead_code)]
fn scribble(buf: Buf<Completed>) -> Buf<Completed> {
    buf[0] = 1;
    buf
}

fn main() {}
