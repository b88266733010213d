// Misuse: a sub-range view next to the buffer it was cut from. `slice` consumes the buffer, so
// the view is the only handle (no aliasing), and a borrow of the bytes cannot outlive the cut.
use ferrite_io::{File, IoEngine};

#[allow(dead_code)]
async fn view_and_whole<E: IoEngine>(engine: &E, file: &File) {
    let buf = engine.pool().acquire().await;
    let view = buf.slice(0..512);
    let _done = engine.read_at(file, view, 0).await;
    let _ = buf.len();
}

#[allow(dead_code)]
async fn bytes_across_cut<E: IoEngine>(engine: &E) -> u8 {
    let buf = engine.pool().acquire().await;
    let bytes: &[u8] = &buf;
    let view = buf.slice(0..512);
    drop(view);
    bytes[0]
}

fn main() {}
