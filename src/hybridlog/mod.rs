//! A FASTER-style HybridLog's I/O on owned buffers: the page format, the page flusher that hands
//! page buffers back once they are durable, the cold-page reader, and the recovery scan.
//!
//! The log is one file; a page's log address is its byte offset, a multiple of the page size.

mod flusher;
pub mod page;

pub use flusher::{FlusherConfig, PageFlusher, SyncPolicy};
mod reader;
pub use reader::{Hole, HoleKind, Recovery, read_page, recover};
