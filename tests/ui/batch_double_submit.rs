// Misuse: the same buffer pushed into a batch twice (two operations on one slot).
use ferrite_io::{Batch, BufPool, File};

#[allow(dead_code)]
fn twice(pool: &BufPool, file: &File) -> Batch {
    let buf = pool.try_acquire().unwrap();
    let mut batch = Batch::new();
    batch.write_at(file, buf, 0);
    batch.write_at(file, buf, 4096);
    batch
}

fn main() {}
