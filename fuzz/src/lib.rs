//! Support for the `buf_lifecycle` fuzz target: the shared model ([`model`], also compiled into
//! the main crate's `tests/lifecycle.rs`) and how fuzz input decodes into its actions.

pub mod model;

use arbitrary::{Arbitrary, Result, Unstructured};

use model::{Action, Io, MAX_BATCH, MAX_SET_LEN, Setup};

/// Most actions one input runs.
pub const MAX_ACTIONS: usize = 64;

/// The first bytes of an input.
#[derive(Debug, Arbitrary)]
struct Header {
    slots: u8,
    big: bool,
    nowait: bool,
    end_in_flight: bool,
    tokio: bool,
}

/// One fuzz input: which engine, its pool, and the actions.
#[derive(Debug)]
pub struct Input {
    /// Run on the io_uring engine (when this machine has io_uring), else on the tokio engine.
    pub uring: bool,
    /// The pool under test.
    pub setup: Setup,
    /// What to do.
    pub actions: Vec<Action>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let h: Header = u.arbitrary()?;
        let mut actions = Vec::new();
        while !u.is_empty() && actions.len() < MAX_ACTIONS {
            actions.push(action(u)?);
        }
        Ok(Input {
            uring: !h.tokio,
            setup: Setup::new(h.slots % model::MAX_SLOTS + 1, h.big, h.nowait, h.end_in_flight),
            actions,
        })
    }
}

fn io(u: &mut Unstructured<'_>) -> Result<Io> {
    Ok(if u.arbitrary()? { Io::Read } else { Io::Write })
}

fn action(u: &mut Unstructured<'_>) -> Result<Action> {
    Ok(match u.int_in_range(0u8..=15)? {
        0..=2 => Action::Acquire { foreign: u.ratio(1u8, 4)?, wait: u.ratio(1u8, 3)? },
        3 => Action::SetLen { pick: u.arbitrary()?, len: u.int_in_range(0..=MAX_SET_LEN)? },
        4 | 5 => Action::Fill { pick: u.arbitrary()?, tag: u.arbitrary()? },
        6 => Action::Register { pick: u.arbitrary()?, foreign_engine: u.ratio(1u8, 3)? },
        7 => Action::Unregister { pick: u.arbitrary()? },
        8 => Action::Recycle { pick: u.arbitrary()?, register: u.arbitrary()?, foreign_engine: u.ratio(1u8, 3)? },
        9..=11 => Action::Op {
            pick: u.arbitrary()?,
            io: io(u)?,
            fixed: u.arbitrary()?,
            block: u.arbitrary()?,
            abandon: u.ratio(1u8, 4)?,
        },
        12 | 13 => {
            let n = u.int_in_range(0..=MAX_BATCH)?;
            let mut ops = Vec::with_capacity(n);
            for _ in 0..n {
                ops.push((u.arbitrary()?, io(u)?, u.arbitrary()?));
            }
            Action::Batch { ops, abandon: u.ratio(1u8, 4)? }
        }
        _ => Action::Drop { pick: u.arbitrary()? },
    })
}
