// Misuse: caller memory (a `Buf` made from a `Vec`) given to a fixed-buffer operation. It is a
// `Buf<Free>`, and only a pool slot can become `Buf<Registered>`.
use ferrite_io::{Buf, File, IoEngine};

#[allow(dead_code)]
async fn fixed_write_from_vec<E: IoEngine>(engine: &E, file: &File) {
    let buf = Buf::from(vec![0u8; 4096]);
    let _done = engine.write_fixed_at(file, buf, 0).await;
}

fn main() {}
