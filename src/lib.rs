//! # ferrite-io
//!
//! The fastest safe way for a storage engine to move pages between memory and disk: owned,
//! aligned page buffers whose lifecycle is a type, an io_uring engine, and a tokio engine with
//! the same API for everywhere io_uring is missing or blocked.
//!
//! ```text
//!  BufPool::acquire        engine.write_at(&file, buf, off)        completion
//!  Buf::from(vec)
//!  ---------------> Free|Registered ------------------> InFlight ------------> Completed
//!                       ^          (buf moved in; caller   (engine owns  |  bytes + result
//!                       |           holds only a future)    the buffer)  |  readable
//!                       +---------- into_free() / drop returns to pool --+
//!                                   into_bytes() / into_vec(): out, no copy
//! ```
//!
//! - [`buf`]: [`Buf<S>`](Buf) and its states, over a slot of a [`BufPool`] (the `memmap2`
//!   arena, registered as io_uring fixed buffers) or over the caller's own `Vec<u8>`,
//!   `Box<[u8]>` or `bytes::BytesMut`; sub-range views (`slice`) and `into_bytes`.
//! - [`io`]: the [`IoEngine`] trait, [`UringEngine`], [`TokioEngine`], [`create_engine`] and
//!   [`check_uring_support`] (in `io::detect`), the `RWF_NOWAIT` fast path, and
//!   [`io::fault::FaultyEngine`] for tests of code above the engine.
//! - [`hybridlog`]: the page format, [`hybridlog::PageFlusher`] (owned pages in, durable pages
//!   back), [`hybridlog::read_page`] and [`hybridlog::recover`].
//! - [`config`]: [`IoEngineConfig`], the `[io]` TOML table.
//! - [`error`]: [`Error`], typed with the operation, file, offset and engine; converts into
//!   `std::io::Error`.
//! - `src/bin/ferrite-io`: the CLI (`flush`, `probe`, `bench`); its workloads are shared with the
//!   Criterion benches.
//! - `examples/`: `paged_reader` (reads in flight), `group_commit` (an appender),
//!   `shared_engine` (tasks sharing one engine).
//!
//! ```
//! use ferrite_io::{IoEngine, IoEngineConfig, OpenOptions};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let dir = tempfile::tempdir().unwrap();
//! let engine = ferrite_io::create_engine(IoEngineConfig::default())?;
//! let file = engine.open(dir.path().join("log"), &OpenOptions::new().create(true)).await?;
//!
//! let mut page = engine.acquire().await; // Buf<Registered>, 64 KiB, 4096-aligned
//! page.fill(0xAB);
//! let written = engine.write_all_at(&file, page, 0).await;
//! written.0?;
//! engine.sync_data(&file).await?;
//!
//! let page = written.1.into_free(); // Completed -> Free: recycle the same buffer
//! let read = engine.read_exact_at(&file, page, 0).await;
//! read.0?;
//! assert!(read.1.iter().all(|&b| b == 0xAB));
//! # Ok::<(), ferrite_io::Error>(()) }).unwrap();
//! ```
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]

pub mod buf;
pub mod config;
pub mod error;
pub mod hybridlog;
pub mod io;

pub use buf::{Buf, BufPool, Completed, Free, InFlight, Registered};
pub use config::{ENGINE_ENV, EngineChoice, IoEngineConfig};
pub use error::{Backend, Error, Op, Result};
#[cfg(uring)]
pub use io::UringEngine;
pub use io::detect::{Unsupported, UringInfo, UringSupport, check_uring_support};
pub use io::{
    Alignment, AlignmentSource, Batch, BatchResults, BufResult, Engine, EngineStats, File, IoEngine, Misaligned,
    OpenOptions, PositionalIo, Reason, Selection, SharedIoEngine, TokioEngine, create_engine,
};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
