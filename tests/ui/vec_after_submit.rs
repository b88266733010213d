// Misuse: keeping access to caller memory after handing it over. `Buf::from` takes the `Vec` by
// value, so its bytes are reachable only through the buffer, and not at all while in flight.
use ferrite_io::{Buf, File, IoEngine};

#[allow(dead_code)]
async fn read_into_vec_then_peek<E: IoEngine>(engine: &E, file: &File) {
    let vec = vec![0u8; 4096];
    let buf = Buf::from(vec);
    let _done = engine.read_at(file, buf, 0).await;
    let _ = vec[0];
}

#[allow(dead_code)]
fn lend_instead_of_give(vec: &mut Vec<u8>) -> Buf<ferrite_io::Free> {
    Buf::from(vec)
}

fn main() {}
