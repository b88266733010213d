//! The same random sequence of operations on every engine variant (io_uring and tokio, with and
//! without the `RWF_NOWAIT` fast path) gives the same results, the same bytes back, and the same
//! file. Every operation draws its buffer kind: a registered slot, a plain slot, a slot sliced at
//! an offset, or caller memory (`Vec<u8>`, `Box<[u8]>`, `BytesMut`).

mod common;

use common::Rng;

use ferrite_io::{Batch, Buf, Completed, EngineChoice, Error, Free, IoEngine, OpenOptions, SharedIoEngine};

const SPAN: u64 = 256 << 10;

/// Where an operation's buffer comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A pool slot as `Buf<Registered>`: fixed opcodes on io_uring.
    Fixed,
    /// A pool slot as `Buf<Free>`.
    Slot,
    /// A pool slot narrowed with `slice` to a view that starts past 0.
    Sliced,
    /// Caller memory, handed over as a `Vec<u8>`.
    Vec,
    /// Caller memory, handed over as a `Box<[u8]>`.
    Boxed,
    /// Caller memory, handed over as a `BytesMut`.
    BytesMut,
}

const KINDS: [Kind; 6] = [Kind::Fixed, Kind::Slot, Kind::Sliced, Kind::Vec, Kind::Boxed, Kind::BytesMut];

#[derive(Debug, Clone)]
enum Action {
    Write { offset: u64, len: usize, seed: u8, kind: Kind },
    Read { offset: u64, len: usize, kind: Kind },
    WriteAll { offset: u64, len: usize, seed: u8, kind: Kind },
    ReadExact { offset: u64, len: usize, kind: Kind },
    WriteDurable { offset: u64, len: usize, seed: u8, kind: Kind },
    WriteVectored { offset: u64, lens: Vec<(usize, Kind)>, seed: u8 },
    ReadVectored { offset: u64, lens: Vec<(usize, Kind)> },
    Batch { ops: Vec<(bool, u64, usize, u8, Kind)> },
    Sync { data: bool },
}

fn action(rng: &mut Rng) -> Action {
    let mut offset = rng.below(SPAN);
    if rng.below(40) == 0 {
        offset = u64::MAX - rng.below(2); // invalid: EINVAL on both
    }
    let len = 1 + rng.below(8192) as usize;
    let seed = rng.below(256) as u8;
    let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
    let lens = (0..1 + rng.below(3))
        .map(|_| (rng.below(8193) as usize, KINDS[rng.below(KINDS.len() as u64) as usize]))
        .collect();
    match rng.below(9) {
        0 => Action::Write { offset, len, seed, kind },
        1 => Action::Read { offset, len, kind },
        2 => Action::WriteAll { offset, len, seed, kind },
        3 => Action::ReadExact { offset, len, kind },
        4 => Action::WriteDurable { offset, len, seed, kind },
        5 => Action::WriteVectored { offset, lens, seed },
        6 => Action::ReadVectored { offset, lens },
        // Batched operations may run in any order, so they get disjoint ranges.
        7 => Action::Batch {
            ops: (0..1 + rng.below(8))
                .map(|slot| {
                    (
                        rng.below(2) == 0,
                        slot * (SPAN / 8) + rng.below(SPAN / 16),
                        1 + rng.below(8192) as usize,
                        rng.below(256) as u8,
                        KINDS[rng.below(KINDS.len() as u64) as usize],
                    )
                })
                .collect(),
        },
        _ => Action::Sync { data: rng.below(2) == 0 },
    }
}

/// What an action produced, in a form both engines can be compared on: results, and the length
/// and FNV-1a hash of every buffer that came back.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    results: Vec<Result<usize, String>>,
    bytes: Vec<(usize, u64)>,
}

fn digest(bytes: &[u8]) -> (usize, u64) {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (bytes.len(), hash)
}

fn describe(e: &Error) -> String {
    match e {
        Error::Io { op, offset, source, .. } => format!("{op}@{offset}: errno {:?}", source.raw_os_error()),
        Error::UnexpectedEof { done, wanted, .. } => format!("eof {done}/{wanted}"),
        other => other.to_string(),
    }
}

fn stamp(buf: &mut [u8], seed: u8) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = seed.wrapping_add((i % 253) as u8);
    }
}

async fn buffer(engine: &SharedIoEngine, len: usize, seed: u8) -> Buf<ferrite_io::Registered> {
    let mut buf = engine.acquire().await;
    buf.set_len(len).unwrap();
    stamp(&mut buf, seed);
    buf
}

/// A `Buf<Free>` of `len` bytes of `kind` (`Fixed` gives a plain slot), stamped with `seed`.
async fn plain(engine: &SharedIoEngine, len: usize, seed: u8, kind: Kind) -> Buf<Free> {
    let mut buf = match kind {
        Kind::Fixed | Kind::Slot => {
            let mut buf = engine.pool().acquire().await;
            buf.set_len(len).unwrap();
            buf
        }
        Kind::Sliced => {
            let buf = engine.pool().acquire().await;
            let start = usize::from(seed) * 31 % (buf.capacity() - len + 1);
            buf.slice(start..start + len)
        }
        Kind::Vec => Buf::from(vec![0; len]),
        Kind::Boxed => Buf::from(vec![0; len].into_boxed_slice()),
        Kind::BytesMut => Buf::from(bytes::BytesMut::zeroed(len)),
    };
    stamp(&mut buf, seed);
    buf
}

/// `$op` with a registered slot for `Kind::Fixed`, a plain buffer of the kind otherwise.
macro_rules! either {
    ($engine:expr, $kind:expr, $len:expr, $seed:expr, |$buf:ident| $op:expr) => {
        if $kind == Kind::Fixed {
            let $buf = buffer($engine, $len, $seed).await;
            $op
        } else {
            let $buf = plain($engine, $len, $seed, $kind).await;
            $op
        }
    };
}

fn one(result: ferrite_io::BufResult<usize, Buf<Completed>>) -> Outcome {
    Outcome { results: vec![result.0.map_err(|e| describe(&e))], bytes: vec![digest(&result.1)] }
}

fn unit(result: ferrite_io::BufResult<(), Buf<Completed>>) -> Outcome {
    Outcome { results: vec![result.0.map(|()| 0).map_err(|e| describe(&e))], bytes: vec![digest(&result.1)] }
}

async fn run(engine: &SharedIoEngine, file: &ferrite_io::File, action: &Action) -> Outcome {
    match action.clone() {
        Action::Write { offset, len, seed, kind: Kind::Fixed } => {
            one(engine.write_fixed_at(file, buffer(engine, len, seed).await, offset).await)
        }
        Action::Write { offset, len, seed, kind } => {
            one(engine.write_at(file, plain(engine, len, seed, kind).await, offset).await)
        }
        Action::Read { offset, len, kind: Kind::Fixed } => {
            one(engine.read_fixed_at(file, buffer(engine, len, 0).await, offset).await)
        }
        Action::Read { offset, len, kind } => {
            one(engine.read_at(file, plain(engine, len, 0, kind).await, offset).await)
        }
        Action::WriteAll { offset, len, seed, kind } => {
            either!(engine, kind, len, seed, |buf| unit(engine.write_all_at(file, buf, offset).await))
        }
        Action::ReadExact { offset, len, kind } => {
            either!(engine, kind, len, 0, |buf| unit(engine.read_exact_at(file, buf, offset).await))
        }
        Action::WriteDurable { offset, len, seed, kind } => {
            either!(engine, kind, len, seed, |buf| unit(engine.write_durable_at(file, buf, offset).await))
        }
        Action::WriteVectored { offset, lens, seed } => {
            let mut bufs = Vec::new();
            for (i, (len, kind)) in lens.iter().enumerate() {
                bufs.push(plain(engine, *len, seed.wrapping_add(i as u8), *kind).await);
            }
            let (result, back) = engine.write_vectored_at(file, bufs, offset).await.into_parts();
            Outcome { results: vec![result.map_err(|e| describe(&e))], bytes: back.iter().map(|b| digest(b)).collect() }
        }
        Action::ReadVectored { offset, lens } => {
            let mut bufs = Vec::new();
            for (len, kind) in lens {
                bufs.push(plain(engine, len, 0, kind).await);
            }
            let (result, back) = engine.read_vectored_at(file, bufs, offset).await.into_parts();
            Outcome { results: vec![result.map_err(|e| describe(&e))], bytes: back.iter().map(|b| digest(b)).collect() }
        }
        Action::Batch { ops } => {
            let mut batch = Batch::new();
            for (write, offset, len, seed, kind) in ops {
                either!(engine, kind, len, seed, |buf| if write {
                    batch.write_at(file, buf, offset)
                } else {
                    batch.read_at(file, buf, offset)
                })
            }
            let results: Vec<_> = engine.submit_batch(&mut batch).await.collect();
            Outcome {
                results: results.iter().map(|r| r.0.as_ref().map(|n| *n).map_err(describe)).collect(),
                bytes: results.iter().map(|r| digest(&r.1)).collect(),
            }
        }
        Action::Sync { data } => {
            let result = if data { engine.sync_data(file).await } else { engine.sync_all(file).await };
            Outcome { results: vec![result.map(|()| 0).map_err(|e| describe(&e))], bytes: vec![] }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_agree_on_a_random_sequence() {
    let engines = common::engines(&common::config(EngineChoice::Auto));
    if engines.len() < 2 {
        return; // built without io_uring: nothing to compare against
    }
    let dir = common::tempdir();
    let mut files = Vec::new();
    for (name, engine) in &engines {
        files.push(engine.open(dir.path().join(name), &OpenOptions::new().create(true)).await.unwrap());
    }
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut compared = 0;
    for step in 0..600 {
        let action = action(&mut rng);
        let mut outcomes = Vec::new();
        for ((_, engine), file) in engines.iter().zip(&files) {
            outcomes.push(run(engine, file, &action).await);
        }
        for (i, outcome) in outcomes.iter().enumerate().skip(1) {
            assert_eq!(&outcomes[0], outcome, "step {step}: {} vs {}: {action:?}", engines[0].0, engines[i].0);
        }
        compared += outcomes[0].results.len();
    }
    assert!(compared >= 600);
    let first = std::fs::read(dir.path().join(engines[0].0)).unwrap();
    assert!(first.len() as u64 > SPAN / 2, "the sequence wrote most of the span");
    for (name, _) in &engines[1..] {
        assert!(first == std::fs::read(dir.path().join(name)).unwrap(), "{} and {name} files differ", engines[0].0);
    }
    for (_, engine) in &engines {
        common::assert_pool_full(engine);
    }
}
