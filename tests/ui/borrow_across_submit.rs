// Misuse: keeping a slice of a buffer's bytes while the buffer is submitted (it would alias
// memory the kernel writes).
use ferrite_io::{File, IoEngine};

#[allow(dead_code)]
async fn read_while_borrowed<E: IoEngine>(engine: &E, file: &File) -> u8 {
    let buf = engine.pool().acquire().await;
    let bytes: &[u8] = &buf;
    let _done = engine.read_at(file, buf, 0).await;
    bytes[0]
}

fn main() {}
