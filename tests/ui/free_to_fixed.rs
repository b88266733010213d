// Misuse: a `Buf<Free>` given to a fixed-buffer operation, which takes only `Buf<Registered>`.
use ferrite_io::{File, IoEngine};

#[allow(dead_code)]
async fn fixed_write_unregistered<E: IoEngine>(engine: &E, file: &File) {
    let buf = engine.pool().acquire().await; // Buf<Free>
    let _done = engine.write_fixed_at(file, buf, 0).await;
}

fn main() {}
