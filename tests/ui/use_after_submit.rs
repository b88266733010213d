// Misuse: touching a buffer after it moved into a submission (the engine owns it now).
use ferrite_io::{File, IoEngine};

#[allow(dead_code)]
async fn write_then_peek<E: IoEngine>(engine: &E, file: &File) {
    let buf = engine.pool().acquire().await;
    let _done = engine.write_at(file, buf, 0).await;
    let _ = buf.len();
}

fn main() {}
