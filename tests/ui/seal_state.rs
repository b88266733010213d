// Misuse: adding a fifth buffer state; `BufState` is sealed.
struct Peek;

impl ferrite_io::buf::BufState for Peek {
    const NAME: &'static str = "Peek";
}

fn main() {}
