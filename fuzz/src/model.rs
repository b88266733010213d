//! A model of the buffer lifecycle, shared by the `buf_lifecycle` fuzz target and by
//! `tests/lifecycle.rs` (which includes this file with `#[path]`), so both check the same things.
//! It may use only what both crates have: `ferrite_io`, `tokio` and `std`.
//!
//! A run drives one engine under test (io_uring or tokio) whose pool has [`Setup::slots`]
//! buffers, a *foreign* tokio engine with a pool of its own ([`FOREIGN_SLOTS`] buffers), and a
//! real file. It applies [`Action`]s to the buffers it holds and, after every action, checks:
//!
//! - **accounting**: `available() + held == capacity()` for both pools, exactly, whenever no
//!   operation is outstanding. After a future was dropped mid-operation it waits (up to the
//!   run's timeout) for the pools to refill; meanwhile, on io_uring, with `in_flight()` read
//!   first, `available + held + in_flight()` must lie in `capacity..=capacity + in_flight()`
//!   at every look (an abandoned operation counts until its buffer is back), and equal
//!   `capacity` when `in_flight()` is 0;
//! - **one handle per slot** (I1): held indices are distinct per pool and below the capacity;
//! - **lengths**: fresh buffers are full length, `set_len` past the capacity is an error that
//!   changes nothing, completions carry the bytes transferred;
//! - **bytes**: every byte a held buffer shows is the one the model expects (the tag of the last
//!   fill, the file's bytes after a read, the old bytes where nothing wrote), where it knows.
//!
//! Where concurrency leaves a value open (an abandoned read, overlapping writes in one batch), the
//! model forgets the byte and learns it back from the next observation. At the end it drops
//! everything, then the engines, and checks that every buffer is back: at once for io_uring,
//! which drains in `Drop`, eventually for tokio, whose blocking tasks may still hold one.

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ferrite_io::{
    Batch, Buf, BufPool, BufResult, Completed, Engine, EngineChoice, Error, File, Free, IoEngine, IoEngineConfig,
    OpenOptions, Registered, TokioEngine,
};

/// Most buffers in the pool under test.
pub const MAX_SLOTS: u8 = 8;
/// Buffers in the foreign pool.
pub const FOREIGN_SLOTS: u32 = 2;
/// Bytes per foreign buffer.
pub const FOREIGN_BUFFER_SIZE: usize = 4096;
/// Offsets are multiples of this...
pub const BLOCK: u64 = 512;
/// ...below this many blocks, so operations overlap often.
pub const BLOCKS: u8 = 48;
/// Most operations in one batch.
pub const MAX_BATCH: usize = 4;
/// Lengths worth asking `set_len` for: up to twice the largest capacity, plus one.
pub const MAX_SET_LEN: u16 = 2 * 8192 + 1;

/// The pool under test and how the run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// Buffers in the pool, `1..=MAX_SLOTS`.
    pub slots: u32,
    /// 4096 or 8192.
    pub buffer_size: usize,
    /// The engine's `nowait_fast_path`: try `RWF_NOWAIT` inline before the ring or the pool.
    pub nowait: bool,
    /// Leave one write in flight (future dropped after one poll) when dropping the engine.
    pub end_in_flight: bool,
}

impl Setup {
    /// `slots` is clamped to `1..=MAX_SLOTS`; `big` picks 8192-byte buffers over 4096.
    pub fn new(slots: u8, big: bool, nowait: bool, end_in_flight: bool) -> Setup {
        let (slots, buffer_size) = (u32::from(slots.clamp(1, MAX_SLOTS)), if big { 8192 } else { 4096 });
        Setup { slots, buffer_size, nowait, end_in_flight }
    }

    /// The engine configuration for this setup.
    pub fn config(&self, engine: EngineChoice) -> IoEngineConfig {
        IoEngineConfig {
            engine,
            uring_entries: 16,
            registered_buffers: self.slots,
            buffer_size: self.buffer_size,
            direct_io: false,
            nowait_fast_path: self.nowait,
            ..IoEngineConfig::default()
        }
    }
}

/// The foreign engine's configuration: a tokio engine with a small pool of its own.
pub fn foreign_config() -> IoEngineConfig {
    IoEngineConfig {
        engine: EngineChoice::Tokio,
        uring_entries: 16,
        registered_buffers: FOREIGN_SLOTS,
        buffer_size: FOREIGN_BUFFER_SIZE,
        direct_io: false,
        ..IoEngineConfig::default()
    }
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// `read_at`, `read_fixed_at` or a batched read.
    Read,
    /// `write_at`, `write_fixed_at` or a batched write.
    Write,
}

/// One step. `pick` chooses among the held buffers the action applies to (modulo their number);
/// an action with nothing to apply to does nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `try_acquire` on the pool under test or the foreign one; with `wait`, the engine's
    /// `acquire()` polled once instead (ready iff a buffer is free) and dropped if pending.
    Acquire { foreign: bool, wait: bool },
    /// `set_len(len)` on a `Free` or `Registered` buffer; past the capacity it must fail.
    SetLen { pick: u8, len: u16 },
    /// Fill a `Free` or `Registered` buffer with `tag`.
    Fill { pick: u8, tag: u8 },
    /// `try_into_registered` of a `Free` buffer with the engine under test or the foreign one:
    /// succeeds iff the buffer comes from that engine's pool.
    Register { pick: u8, foreign_engine: bool },
    /// `Registered -> Free`.
    Unregister { pick: u8 },
    /// Recycle a `Completed` buffer: `into_free`, or `try_into_registered` with either engine.
    Recycle { pick: u8, register: bool, foreign_engine: bool },
    /// One read or write on the engine under test at `block * BLOCK`. `fixed` takes a
    /// `Registered` buffer through `*_fixed_at` (a foreign one must fail with `ForeignBuffer`);
    /// otherwise any `Free` or `Registered` buffer goes through `*_at`. With `abandon` the
    /// future is polled once and dropped.
    Op { pick: u8, io: Io, fixed: bool, block: u8, abandon: bool },
    /// `submit_batch` of up to `MAX_BATCH` distinct buffers, each `(pick, io, block)`;
    /// with `abandon` the future is polled once and dropped.
    Batch { ops: Vec<(u8, Io, u8)>, abandon: bool },
    /// Drop a held buffer: it goes back to its pool.
    Drop { pick: u8 },
}

/// What the model can ask an engine beyond [`IoEngine`].
pub trait EngineProbe: IoEngine {
    /// Operations the engine holds buffers for, when it can tell (io_uring's `in_flight()`);
    /// `None` for the tokio engine, whose blocking tasks are not counted.
    fn in_flight_ops(&self) -> Option<usize>;

    /// Whether dropping the engine waits for every outstanding operation.
    fn drains_on_drop(&self) -> bool;
}

impl EngineProbe for TokioEngine {
    fn in_flight_ops(&self) -> Option<usize> {
        None
    }

    fn drains_on_drop(&self) -> bool {
        false
    }
}

#[cfg(all(feature = "io-uring", target_os = "linux"))]
impl EngineProbe for ferrite_io::UringEngine {
    fn in_flight_ops(&self) -> Option<usize> {
        Some(self.in_flight())
    }

    fn drains_on_drop(&self) -> bool {
        true
    }
}

impl EngineProbe for Engine {
    fn in_flight_ops(&self) -> Option<usize> {
        match self {
            #[cfg(all(feature = "io-uring", target_os = "linux"))]
            Engine::Uring(e) => e.in_flight_ops(),
            Engine::Tokio(e) => e.in_flight_ops(),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    fn drains_on_drop(&self) -> bool {
        match self {
            #[cfg(all(feature = "io-uring", target_os = "linux"))]
            Engine::Uring(e) => e.drains_on_drop(),
            Engine::Tokio(e) => e.drains_on_drop(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// How a run behaves beyond its actions.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long to wait for the buffers of dropped futures before calling them leaked.
    pub timeout: Duration,
}

/// Polls `fut` once with a no-op waker and drops it if it is not ready.
pub fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

async fn drive<F: Future>(fut: F, abandon: bool) -> Option<F::Output> {
    if abandon { poll_once(fut) } else { Some(fut.await) }
}

/// Runs `actions` against `engine` (and `foreign`, another pool's engine) on a file created at
/// `path`, checking the model after every step; panics on the first divergence. Must run inside
/// a tokio runtime with time enabled.
pub async fn run<E: EngineProbe>(
    engine: E,
    foreign: TokioEngine,
    path: &Path,
    setup: &Setup,
    actions: &[Action],
    options: Options,
) {
    let timeout = options.timeout;
    let (main, other) = (engine.pool().clone(), foreign.pool().clone());
    assert_eq!(main.capacity(), setup.slots as usize, "{main:?}");
    assert_eq!(main.buffer_size(), setup.buffer_size, "{main:?}");
    assert_eq!(main.available(), main.capacity(), "{main:?}");
    assert_ne!(main.id(), other.id(), "two pools share an id");
    let open = OpenOptions::new().create(true).truncate(true);
    let file = engine.open(path, &open).await.expect("open the data file");
    let left_in_flight = {
        let mut model = Model::new(&engine, &foreign, file, options);
        for (step, action) in actions.iter().enumerate() {
            model.step = step;
            model.current = Some(action);
            model.apply(action).await;
            model.check();
        }
        setup.end_in_flight && model.leave_in_flight().await
        // The model drops here, with every buffer it holds and its file handle.
    };
    let backend = engine.backend();
    let drains = engine.drains_on_drop();
    drop(engine);
    drop(foreign);
    if drains || !left_in_flight {
        // Nothing can still hold a buffer: the io_uring engine drained in `Drop`.
        assert_eq!(
            (main.available(), other.available()),
            (main.capacity(), other.capacity()),
            "{backend}: a buffer did not come back after dropping everything: {main:?} {other:?}"
        );
    } else {
        // The tokio engine's blocking task still holds the buffer (of either pool) it was given.
        let deadline = Instant::now() + timeout;
        while main.available() != main.capacity() || other.available() != other.capacity() {
            assert!(
                Instant::now() < deadline,
                "{backend}: the buffer of an operation left in flight never came back: {main:?} {other:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Registered,
    Completed,
}

enum AnyBuf {
    Free(Buf<Free>),
    Registered(Buf<Registered>),
    Completed(Buf<Completed>),
}

impl AnyBuf {
    fn state(&self) -> State {
        match self {
            AnyBuf::Free(_) => State::Free,
            AnyBuf::Registered(_) => State::Registered,
            AnyBuf::Completed(_) => State::Completed,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            AnyBuf::Free(b) => b,
            AnyBuf::Registered(b) => b,
            AnyBuf::Completed(b) => b,
        }
    }

    fn index(&self) -> u32 {
        match self {
            AnyBuf::Free(b) => b.index(),
            AnyBuf::Registered(b) => b.index(),
            AnyBuf::Completed(b) => b.index(),
        }
    }

    fn len(&self) -> usize {
        self.bytes().len()
    }

    fn capacity(&self) -> usize {
        match self {
            AnyBuf::Free(b) => b.capacity(),
            AnyBuf::Registered(b) => b.capacity(),
            AnyBuf::Completed(b) => b.capacity(),
        }
    }

    fn pool_id(&self) -> u64 {
        match self {
            AnyBuf::Free(b) => b.pool_id(),
            AnyBuf::Registered(b) => b.pool_id(),
            AnyBuf::Completed(b) => b.pool_id(),
        }
    }
}

/// A buffer the model holds, and the length it expects.
struct Held {
    foreign: bool,
    len: usize,
    buf: AnyBuf,
}

/// One operation handed to the engine.
#[derive(Debug)]
struct Planned {
    io: Io,
    foreign: bool,
    index: u32,
    len: usize,
    off: usize,
    /// A foreign `Registered` buffer through `*_fixed_at`: must fail, nothing is submitted.
    foreign_fixed: bool,
}

/// Expected bytes; `None` where the model does not know (and learns at the next look).
type Bytes = Vec<Option<u8>>;

struct Model<'a, E> {
    engine: &'a E,
    foreign: &'a TokioEngine,
    file: File,
    main: BufPool,
    other: BufPool,
    /// Expected contents of every slot of each pool, whole capacity: the arena keeps a slot's
    /// bytes across release and acquire.
    main_slots: Vec<Bytes>,
    other_slots: Vec<Bytes>,
    held: Vec<Held>,
    /// Expected file contents; its length is the file size.
    disk: Bytes,
    options: Options,
    step: usize,
    current: Option<&'a Action>,
}

fn offset(block: u8) -> usize {
    usize::from(block % BLOCKS) * BLOCK as usize
}

impl<'a, E: EngineProbe> Model<'a, E> {
    fn new(engine: &'a E, foreign: &'a TokioEngine, file: File, options: Options) -> Self {
        let (main, other) = (engine.pool().clone(), foreign.pool().clone());
        // A fresh arena is zeroed (I5).
        let slots = |pool: &BufPool| vec![vec![Some(0); pool.buffer_size()]; pool.capacity()];
        Model {
            engine,
            foreign,
            file,
            main_slots: slots(&main),
            other_slots: slots(&other),
            main,
            other,
            held: Vec::new(),
            disk: Vec::new(),
            options,
            step: 0,
            current: None,
        }
    }

    /// Where we are, for failure messages.
    fn ctx(&self) -> String {
        format!("{} engine, step {}: {:?}", self.engine.backend(), self.step, self.current)
    }

    fn pool(&self, foreign: bool) -> &BufPool {
        if foreign { &self.other } else { &self.main }
    }

    fn slot(&mut self, foreign: bool, index: u32) -> &mut Bytes {
        let slots = if foreign { &mut self.other_slots } else { &mut self.main_slots };
        &mut slots[index as usize]
    }

    /// The index in `held` of the `pick`-th buffer that `wanted` accepts.
    fn pick(&self, pick: u8, wanted: impl Fn(&Held) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.held.len()).filter(|&i| wanted(&self.held[i])).collect();
        if candidates.is_empty() { None } else { Some(candidates[usize::from(pick) % candidates.len()]) }
    }

    async fn apply(&mut self, action: &Action) {
        let submittable = |h: &Held| h.buf.state() != State::Completed;
        match *action {
            Action::Acquire { foreign, wait } => self.acquire(foreign, wait),
            Action::SetLen { pick, len } => {
                let Some(i) = self.pick(pick, submittable) else {
                    return;
                };
                let len = usize::from(len);
                let capacity = self.held[i].buf.capacity();
                let result = match &mut self.held[i].buf {
                    AnyBuf::Free(b) => b.set_len(len),
                    AnyBuf::Registered(b) => b.set_len(len),
                    AnyBuf::Completed(_) => unreachable!("picked a submittable buffer"),
                };
                if len <= capacity {
                    assert!(result.is_ok(), "{}: {result:?}", self.ctx());
                    self.held[i].len = len;
                } else {
                    // `check` verifies the length is unchanged.
                    let expected = matches!(
                        result,
                        Err(Error::Length { len: l, capacity: c }) if l == len && c == capacity
                    );
                    assert!(expected, "{}: {result:?}", self.ctx());
                }
            }
            Action::Fill { pick, tag } => {
                let Some(i) = self.pick(pick, submittable) else {
                    return;
                };
                let held = &mut self.held[i];
                match &mut held.buf {
                    AnyBuf::Free(b) => b.fill(tag),
                    AnyBuf::Registered(b) => b.fill(tag),
                    AnyBuf::Completed(_) => unreachable!("picked a submittable buffer"),
                }
                let (foreign, index, len) = (held.foreign, held.buf.index(), held.len);
                self.slot(foreign, index)[..len].fill(Some(tag));
            }
            Action::Register { pick, foreign_engine } => {
                let Some(i) = self.pick(pick, |h| h.buf.state() == State::Free) else {
                    return;
                };
                let held = self.held.swap_remove(i);
                let AnyBuf::Free(buf) = held.buf else { unreachable!("picked a free buffer") };
                let result = if foreign_engine {
                    buf.try_into_registered(self.foreign)
                } else {
                    buf.try_into_registered(self.engine)
                };
                let buf = match result {
                    Ok(buf) => {
                        assert_eq!(held.foreign, foreign_engine, "{}: registered", self.ctx());
                        AnyBuf::Registered(buf)
                    }
                    Err(buf) => {
                        assert_ne!(held.foreign, foreign_engine, "{}: refused", self.ctx());
                        AnyBuf::Free(buf)
                    }
                };
                self.held.push(Held { buf, ..held });
            }
            Action::Unregister { pick } => {
                let Some(i) = self.pick(pick, |h| h.buf.state() == State::Registered) else {
                    return;
                };
                let held = self.held.swap_remove(i);
                let AnyBuf::Registered(buf) = held.buf else { unreachable!("picked a registered buffer") };
                let buf = AnyBuf::Free(buf.into_free());
                self.held.push(Held { buf, ..held });
            }
            Action::Recycle { pick, register, foreign_engine } => {
                let Some(i) = self.pick(pick, |h| h.buf.state() == State::Completed) else {
                    return;
                };
                let held = self.held.swap_remove(i);
                let AnyBuf::Completed(buf) = held.buf else { unreachable!("picked a completed buffer") };
                let buf = if !register {
                    AnyBuf::Free(buf.into_free())
                } else {
                    let result = if foreign_engine {
                        buf.try_into_registered(self.foreign)
                    } else {
                        buf.try_into_registered(self.engine)
                    };
                    assert_eq!(result.is_ok(), held.foreign == foreign_engine, "{}", self.ctx());
                    match result {
                        Ok(buf) => AnyBuf::Registered(buf),
                        Err(buf) => AnyBuf::Free(buf),
                    }
                };
                self.held.push(Held { buf, ..held });
            }
            Action::Op { pick, io, fixed, block, abandon } => self.op(pick, io, fixed, block, abandon).await,
            Action::Batch { ref ops, abandon } => self.batch(ops, abandon).await,
            Action::Drop { pick } => {
                if let Some(i) = self.pick(pick, |_| true) {
                    drop(self.held.swap_remove(i));
                }
            }
        }
    }

    fn acquire(&mut self, foreign: bool, wait: bool) {
        let pool = self.pool(foreign).clone();
        let free = pool.available() > 0;
        let buf = if wait {
            let acquired = if foreign { poll_once(self.foreign.acquire()) } else { poll_once(self.engine.acquire()) };
            // Ready at once iff a buffer is free; a pending waiter dropped takes nothing.
            assert_eq!(acquired.is_some(), free, "{}: {pool:?}", self.ctx());
            acquired.map(AnyBuf::Registered)
        } else {
            let acquired = pool.try_acquire();
            assert_eq!(acquired.is_some(), free, "{}: {pool:?}", self.ctx());
            acquired.map(AnyBuf::Free)
        };
        if let Some(buf) = buf {
            // A fresh buffer's length is its capacity.
            let len = pool.buffer_size();
            assert_eq!(buf.len(), len, "{}", self.ctx());
            self.held.push(Held { foreign, len, buf });
        }
    }

    async fn op(&mut self, pick: u8, io: Io, fixed: bool, block: u8, abandon: bool) {
        let wanted = |h: &Held| match h.buf.state() {
            State::Registered => true,
            State::Free => !fixed,
            State::Completed => false,
        };
        let Some(i) = self.pick(pick, wanted) else {
            return;
        };
        let held = self.held.swap_remove(i);
        let off = offset(block);
        let planned = Planned {
            io,
            foreign: held.foreign,
            index: held.buf.index(),
            len: held.len,
            off,
            // A foreign `Registered` buffer is registered with the foreign engine only.
            foreign_fixed: fixed && held.foreign,
        };
        let (engine, file, pos) = (self.engine, self.file.clone(), off as u64);
        let out = match (held.buf, io, fixed) {
            (AnyBuf::Free(b), Io::Read, _) => drive(engine.read_at(&file, b, pos), abandon).await,
            (AnyBuf::Free(b), Io::Write, _) => drive(engine.write_at(&file, b, pos), abandon).await,
            (AnyBuf::Registered(b), Io::Read, false) => drive(engine.read_at(&file, b, pos), abandon).await,
            (AnyBuf::Registered(b), Io::Write, false) => drive(engine.write_at(&file, b, pos), abandon).await,
            (AnyBuf::Registered(b), Io::Read, true) => drive(engine.read_fixed_at(&file, b, pos), abandon).await,
            (AnyBuf::Registered(b), Io::Write, true) => drive(engine.write_fixed_at(&file, b, pos), abandon).await,
            (AnyBuf::Completed(_), ..) => unreachable!("picked a submittable buffer"),
        };
        match out {
            Some(result) => self.completed(&[planned], vec![result]),
            None => self.abandoned(&[planned]).await,
        }
    }

    async fn batch(&mut self, ops: &[(u8, Io, u8)], abandon: bool) {
        let mut batch = Batch::new();
        let mut planned = Vec::new();
        for &(pick, io, block) in ops.iter().take(MAX_BATCH) {
            let Some(i) = self.pick(pick, |h| h.buf.state() != State::Completed) else {
                break;
            };
            let held = self.held.swap_remove(i);
            let off = offset(block);
            planned.push(Planned {
                io,
                foreign: held.foreign,
                index: held.buf.index(),
                len: held.len,
                off,
                foreign_fixed: false,
            });
            let pos = off as u64;
            match (held.buf, io) {
                (AnyBuf::Free(b), Io::Read) => batch.read_at(&self.file, b, pos),
                (AnyBuf::Free(b), Io::Write) => batch.write_at(&self.file, b, pos),
                (AnyBuf::Registered(b), Io::Read) => batch.read_at(&self.file, b, pos),
                (AnyBuf::Registered(b), Io::Write) => batch.write_at(&self.file, b, pos),
                (AnyBuf::Completed(_), _) => unreachable!("picked a submittable buffer"),
            }
        }
        assert_eq!(batch.len(), planned.len(), "{}", self.ctx());
        let submitted = async { self.engine.submit_batch(&mut batch).await.collect::<Vec<_>>() };
        match drive(submitted, abandon).await {
            Some(results) => self.completed(&planned, results),
            None => self.abandoned(&planned).await,
        }
    }

    /// Checks the results of `planned` (one batch, or one operation) and takes the buffers
    /// back. Operations of one batch may run in any order and concurrently.
    fn completed(&mut self, planned: &[Planned], results: Vec<BufResult<usize, Buf<Completed>>>) {
        assert_eq!(results.len(), planned.len(), "{}: one result per op", self.ctx());
        let size_before = self.disk.len();
        let mut done = Vec::with_capacity(planned.len());
        for (p, BufResult(result, buf)) in planned.iter().zip(results) {
            assert_eq!(buf.index(), p.index, "{}: {p:?} came back in another slot", self.ctx());
            let pool_id = self.pool(p.foreign).id();
            assert_eq!(buf.pool_id(), pool_id, "{}: {p:?}", self.ctx());
            let n = if p.foreign_fixed {
                let (buf_pool, engine_pool) = (self.other.id(), self.main.id());
                let expected = matches!(
                    result,
                    Err(Error::ForeignBuffer { buf_pool: b, engine_pool: e })
                        if b == buf_pool && e == engine_pool
                );
                assert!(expected, "{}: {p:?}: {result:?}", self.ctx());
                // Nothing was submitted: the buffer comes back with the length it went in with.
                p.len
            } else {
                let n = match result {
                    Ok(n) => n,
                    Err(e) => panic!("{}: {p:?} failed: {e}", self.ctx()),
                };
                if p.io == Io::Write {
                    // A regular file takes the whole buffer.
                    assert_eq!(n, p.len, "{}: {p:?}: short write", self.ctx());
                }
                n
            };
            assert_eq!(buf.len(), n, "{}: {p:?}: length of the completion", self.ctx());
            done.push((p, n, buf));
        }
        // The file after the writes. Zero-length writes do not extend it.
        let writes: Vec<&Planned> =
            planned.iter().filter(|p| p.io == Io::Write && !p.foreign_fixed && p.len > 0).collect();
        let end = writes.iter().map(|p| p.off + p.len).max().unwrap_or(0);
        if end > self.disk.len() {
            self.disk.resize(end, Some(0));
        }
        let mut cover = vec![0u8; self.disk.len()];
        for p in &writes {
            for c in &mut cover[p.off..p.off + p.len] {
                *c = c.saturating_add(1);
            }
        }
        for p in &writes {
            let data = self.slot(p.foreign, p.index)[..p.len].to_vec();
            for (i, byte) in data.into_iter().enumerate() {
                let at = p.off + i;
                // Two writes of one batch over the same byte: either may land last.
                self.disk[at] = if cover[at] > 1 { None } else { byte };
            }
        }
        // The reads: they see the file before or after each write of their batch.
        for &(p, n, _) in &done {
            if p.io != Io::Read || p.foreign_fixed {
                continue;
            }
            let lo = p.len.min(size_before.saturating_sub(p.off));
            let hi = p.len.min(self.disk.len().saturating_sub(p.off));
            assert!(
                (lo..=hi).contains(&n),
                "{}: {p:?} read {n} bytes, expected {lo}..={hi} (file size {size_before} -> {})",
                self.ctx(),
                self.disk.len()
            );
            let read: Bytes = (p.off..p.off + n).map(|at| if cover[at] > 0 { None } else { self.disk[at] }).collect();
            self.slot(p.foreign, p.index)[..n].copy_from_slice(&read);
        }
        for (p, n, buf) in done {
            let buf = AnyBuf::Completed(buf);
            self.held.push(Held { foreign: p.foreign, len: n, buf });
        }
    }

    /// The futures of `planned` were dropped before completing: the buffers must come back to
    /// their pools once the operations finish, and what they did is unknown.
    async fn abandoned(&mut self, planned: &[Planned]) {
        let size_before = self.disk.len();
        let mut size_max = size_before;
        for p in planned {
            match p.io {
                Io::Read => self.slot(p.foreign, p.index)[..p.len].fill(None),
                Io::Write if p.len > 0 => size_max = size_max.max(p.off + p.len),
                Io::Write => {}
            }
        }
        self.settle().await;
        let size = self.file.size().expect("fstat") as usize;
        assert!(
            (size_before..=size_max).contains(&size),
            "{}: file size {size}, expected {size_before}..={size_max}",
            self.ctx()
        );
        self.disk.resize(size, Some(0));
        for p in planned.iter().filter(|p| p.io == Io::Write) {
            let end = (p.off + p.len).min(size);
            if p.off < end {
                self.disk[p.off..end].fill(None);
            }
        }
    }

    /// Leaves one write in flight for the engine's `Drop`; whether one is left.
    async fn leave_in_flight(&mut self) -> bool {
        let Some(i) = self.pick(0, |h| h.buf.state() != State::Completed) else {
            return false;
        };
        let held = self.held.swap_remove(i);
        let (engine, file) = (self.engine, self.file.clone());
        let out = match held.buf {
            AnyBuf::Free(b) => poll_once(engine.write_at(&file, b, 0)),
            AnyBuf::Registered(b) => poll_once(engine.write_at(&file, b, 0)),
            AnyBuf::Completed(_) => unreachable!("picked a submittable buffer"),
        };
        out.is_none()
    }

    fn held_counts(&self) -> (usize, usize) {
        let foreign = self.held.iter().filter(|h| h.foreign).count();
        (self.held.len() - foreign, foreign)
    }

    fn accounting(&self) -> String {
        let (held_main, held_other) = self.held_counts();
        format!(
            "pool under test: {} available + {held_main} held of {}; foreign pool: {} + {held_other} of {}; engine in flight: {:?}",
            self.main.available(),
            self.main.capacity(),
            self.other.available(),
            self.other.capacity(),
            self.engine.in_flight_ops()
        )
    }

    fn settled(&self) -> bool {
        let (held_main, held_other) = self.held_counts();
        self.main.available() + held_main == self.main.capacity()
            && self.other.available() + held_other == self.other.capacity()
    }

    /// What must hold at any moment, in flight or not.
    fn check_accounting(&self) {
        // In flight first: an abandoned operation stops counting only after its buffer is back,
        // so a buffer may be counted twice at a look taken while one completes, never missed.
        let in_flight = self.engine.in_flight_ops();
        let (held_main, held_other) = self.held_counts();
        let (main, other) = (self.main.available(), self.other.available());
        assert!(
            main + held_main <= self.main.capacity() && other + held_other <= self.other.capacity(),
            "{}: a slot is both free and held: {}",
            self.ctx(),
            self.accounting()
        );
        if let Some(in_flight) = in_flight {
            // Every operation the model starts carries exactly one buffer; with none in flight
            // nothing moves, and the count is exact.
            let counted = main + held_main + other + held_other + in_flight;
            let capacity = self.main.capacity() + self.other.capacity();
            let exact = in_flight == 0 && counted == capacity;
            assert!(
                exact || (in_flight > 0 && (capacity..=capacity + in_flight).contains(&counted)),
                "{}: {counted} buffers counted of {capacity}: {}",
                self.ctx(),
                self.accounting()
            );
        }
    }

    /// Waits for abandoned operations to finish and give their buffers back.
    async fn settle(&mut self) {
        let deadline = Instant::now() + self.options.timeout;
        loop {
            self.check_accounting();
            if self.settled() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: buffers of dropped operations did not come back within {:?}: {}",
                self.ctx(),
                self.options.timeout,
                self.accounting()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The invariants after a step, when nothing is outstanding.
    fn check(&mut self) {
        self.check_accounting();
        assert!(self.settled(), "{}: a buffer is missing: {}", self.ctx(), self.accounting());
        let mut seen = [Vec::new(), Vec::new()];
        for h in &self.held {
            let pool = self.pool(h.foreign);
            let index = h.buf.index();
            assert!((index as usize) < pool.capacity(), "{}", self.ctx());
            assert_eq!(h.buf.pool_id(), pool.id(), "{}", self.ctx());
            assert_eq!(h.buf.capacity(), pool.buffer_size(), "{}", self.ctx());
            assert_eq!(h.buf.len(), h.len, "{}: slot {index}", self.ctx());
            seen[usize::from(h.foreign)].push(index);
        }
        for indices in &mut seen {
            let n = indices.len();
            indices.sort_unstable();
            indices.dedup();
            assert_eq!(indices.len(), n, "{}: two handles for one slot", self.ctx());
        }
        for i in 0..self.held.len() {
            let (foreign, index) = (self.held[i].foreign, self.held[i].buf.index());
            let slots = if foreign { &mut self.other_slots } else { &mut self.main_slots };
            let expected = &mut slots[index as usize];
            let actual = self.held[i].buf.bytes();
            for (at, (want, &got)) in expected.iter_mut().zip(actual).enumerate() {
                match *want {
                    Some(want) if want != got => panic!(
                        "{} engine, step {}: {:?}: slot {index} (foreign: {foreign}) byte {at} is {got}, expected {want}",
                        self.engine.backend(),
                        self.step,
                        self.current
                    ),
                    Some(_) => {}
                    None => *want = Some(got),
                }
            }
        }
    }
}
