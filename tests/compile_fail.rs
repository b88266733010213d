//! Compile-fail suite: misuse of the buffer typestates that must be rejected by the compiler.
//!
//! Each `tests/ui/<case>.rs` is a tiny program that must *not* compile, and `<case>.stderr` pins
//! the error, so a case that starts compiling, or fails for another reason, breaks this test.
//! The snapshots are pinned to the stable toolchain (rustc 1.95); regenerate them after a
//! toolchain bump with `TRYBUILD=overwrite cargo test --test compile_fail` and re-read them.
//!
//! | case                      | misuse                                                | error            |
//! |---------------------------|-------------------------------------------------------|------------------|
//! | `inflight_bytes`          | index or deref a `Buf<InFlight>`                      | E0608, E0614     |
//! | `use_after_submit`        | use a buffer after `write_at` took it                 | E0382            |
//! | `borrow_across_submit`    | hold `&[u8]` of a buffer across `read_at`             | E0505            |
//! | `free_to_fixed`           | `Buf<Free>` to `write_fixed_at`                       | E0308            |
//! | `completed_resubmit`      | `Buf<Completed>` to `write_at` without recycling      | E0277            |
//! | `completed_write`         | write into a `Buf<Completed>`                         | E0594            |
//! | `batch_double_submit`     | the same buffer pushed into a `Batch` twice           | E0382            |
//! | `forge_marker`            | `Registered(())` / `InFlight(())` outside the crate   | E0423            |
//! | `seal_state`              | `impl BufState for MyState`                           | E0277 (`Sealed`) |
//! | `vec_to_fixed`            | a `Buf` made from a `Vec` to `write_fixed_at`         | E0308            |
//! | `vec_as_registered`       | a `Buf<Registered>` made straight from a `Vec`        | E0308            |
//! | `vec_after_submit`        | a `Vec` used after `Buf::from` took it; lent, not given | E0382, E0277   |
//! | `slice_alias`             | a slot used next to its view; a borrow across the cut | E0382, E0505     |
//! | `inflight_into_bytes`     | `into_bytes` / `slice` of a `Buf<InFlight>`           | E0599            |
//!
//! # Build cost
//!
//! trybuild compiles the cases in a project of its own, with its own target directory
//! (`target/tests/trybuild`) and `--cfg trybuild --verbose -A dead_code` in the rustflags of
//! every crate, so it cannot reuse the main build's dependencies (even a shared directory would
//! miss: the flags change every crate's hash), and a fresh clone checks them all once more.
//! It would also check every dev-dependency, which it copies into that project; `Cargo.toml`
//! therefore lists them under `cfg(not(trybuild))`, which that project's flags make false.

//! # Not a compile-time property: cross-pool registration
//!
//! The type system cannot tell two pools (or two engines) apart: a `Buf<Registered>` says only
//! "registered with *some* engine". Registering a buffer with the wrong engine, or handing one
//! engine's registered buffer to another, therefore compiles, and is caught at run time instead:
//! `Buf::<Free>::try_into_registered(&engine)` returns `Err(buf)` for a buffer of another pool,
//! and `read_fixed_at` / `write_fixed_at` return `Error::ForeignBuffer` (submitting nothing).
//! That is tested by the runtime test `foreign_buffer_is_rejected` in `tests/ops.rs`, not here.

/// Every case in `tests/ui` fails to compile, with the pinned error.
///
/// - `inflight_bytes`: `Buf<InFlight>` has no `Deref`, so neither `buf[0]` nor `&**buf` reaches
///   bytes the kernel may be writing.
/// - `use_after_submit`: an operation takes the buffer by value; after `write_at(file, buf, ..)`
///   the caller holds only the future, and `buf` is a moved value.
/// - `borrow_across_submit`: a `&[u8]` taken from a `Buf<Free>` keeps it borrowed, so the buffer
///   cannot move into `read_at` while the slice is alive (no aliasing of in-flight memory).
/// - `free_to_fixed`: READ_FIXED/WRITE_FIXED take only `Buf<Registered>`; a `Buf<Free>` is a type
///   mismatch, not a runtime error.
/// - `completed_resubmit`: `Completed` is not `Submittable`; a finished buffer must be recycled
///   (`into_free` / `try_into_registered`) before another operation.
/// - `completed_write`: `Buf<Completed>` has `Deref` but no `DerefMut`: its bytes are the
///   operation's result, read-only until recycled.
/// - `batch_double_submit`: `Batch::write_at` takes the buffer by value, so one slot cannot be
///   in two operations of a batch.
/// - `forge_marker`: the state markers have a private field; no one outside the crate can build
///   one.
/// - `seal_state`: `BufState` is sealed; no fifth state (e.g. one that is `Readable` while in
///   flight) can be added from outside.
/// - `vec_to_fixed`: caller memory becomes a `Buf<Free>`, and fixed operations take only
///   `Buf<Registered>`: a `Vec` can never name a fixed-buffer index.
/// - `vec_as_registered`: `From<Vec<u8>>` exists for `Buf<Free>` only; the only way to
///   `Registered` is `try_into_registered`, which refuses caller memory at run time.
/// - `vec_after_submit`: `Buf::from` takes the `Vec` by value, so the caller cannot touch its
///   bytes while the kernel may; a `&mut Vec<u8>` (a loan) does not convert at all.
/// - `slice_alias`: `slice` consumes the buffer, so the view is the only handle to the memory;
///   a `&[u8]` borrowed from the buffer cannot outlive the cut.
/// - `inflight_into_bytes`: the ways out (`into_bytes`, `into_vec`) and `slice` need a
///   `Readable` state; `Buf<InFlight>` has none of them.
///
/// Not on Windows: trybuild runs `cargo` for the target, and the Windows suite runs under wine,
/// which has none; the cases are the same on every platform and run on Linux.
#[cfg(not(windows))]
#[test]
fn misuse_does_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
