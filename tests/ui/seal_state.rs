// Misuse: adding a fifth buffer state; `BufState` is sealed.
#[allow(dead_code)]
struct Peek;

impl ferrite_io::buf::BufState for Peek {
    const NAME: &'static str = "Peek";
}

fn main() {}
