// Misuse: resubmitting a `Buf<Completed>` without recycling it (`into_free`/`try_into_registered`).
use ferrite_io::{File, IoEngine};

#[allow(dead_code)]
async fn write_twice<E: IoEngine>(engine: &E, file: &File) {
    let buf = engine.pool().acquire().await;
    let done = engine.write_at(file, buf, 0).await.1; // Buf<Completed>
    let _again = engine.write_at(file, done, 4096).await;
}

fn main() {}
