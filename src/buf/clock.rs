//! The crate's own clock: deadlines that need no runtime. One thread for the process, started by
//! the first alarm, sleeps until the earliest deadline and wakes what is due. Waits that use it
//! ([`BufPool::acquire`](super::BufPool::acquire)'s long-wait warning,
//! [`BufPool::acquire_timeout`](super::BufPool::acquire_timeout), the fault injector's delays)
//! behave the same in a tokio runtime with or without its time driver, under another executor,
//! with no runtime at all, and under `Handle::block_on` of a runtime that has shut down, where
//! tokio's timer panics.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A set alarm; dropping it cancels it if it has not rung.
pub(crate) struct Alarm {
    key: (Instant, u64),
}

impl Drop for Alarm {
    fn drop(&mut self) {
        if let Some(clock) = clock() {
            clock.lock().set.remove(&self.key);
        }
    }
}

/// Sets an alarm that wakes `notify`'s waiter (or leaves it a permit) at `deadline`. `None`
/// when the clock's thread could not be started (the system refused a thread): nothing rings,
/// and the caller must not wait for it.
pub(crate) fn alarm(deadline: Instant, notify: Arc<Notify>) -> Option<Alarm> {
    let clock = clock()?;
    let mut alarms = clock.lock();
    alarms.next += 1;
    let key = (deadline, alarms.next);
    let earliest = alarms.set.keys().next().is_none_or(|first| key < *first);
    alarms.set.insert(key, notify);
    drop(alarms);
    if earliest {
        clock.changed.notify_one();
    }
    Some(Alarm { key })
}

/// Waits `duration` on any executor, or none (for ever when it is past the clock's range).
/// Returns at once when the clock cannot run.
pub(crate) async fn sleep(duration: Duration) {
    let Some(deadline) = Instant::now().checked_add(duration) else {
        return std::future::pending().await;
    };
    let woken = Arc::new(Notify::new());
    if let Some(_alarm) = alarm(deadline, woken.clone()) {
        woken.notified().await;
    }
}

struct Clock {
    alarms: Mutex<Alarms>,
    changed: Condvar,
}

#[derive(Default)]
struct Alarms {
    /// The last alarm's number: keys stay unique when deadlines are equal.
    next: u64,
    set: BTreeMap<(Instant, u64), Arc<Notify>>,
}

impl Clock {
    fn lock(&self) -> MutexGuard<'_, Alarms> {
        // A counter and a map that no panic can leave half-updated.
        self.alarms.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The clock, its thread started on first use; `None` if that thread could not be started.
fn clock() -> Option<&'static Clock> {
    static CLOCK: OnceLock<Option<Clock>> = OnceLock::new();
    CLOCK
        .get_or_init(|| {
            // The thread waits for this initialisation to finish before it looks at the clock.
            let thread = std::thread::Builder::new().name("ferrite-io-clock".into());
            let started = thread.spawn(|| run(clock().expect("the clock exists once its thread runs")));
            started.is_ok().then(|| Clock { alarms: Mutex::default(), changed: Condvar::new() })
        })
        .as_ref()
}

/// The clock's thread: wakes what is due (outside the lock), then sleeps until the next
/// deadline or until an earlier one is set.
fn run(clock: &'static Clock) {
    let mut alarms = clock.lock();
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(entry) = alarms.set.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        if !due.is_empty() {
            drop(alarms);
            due.iter().for_each(|notify| notify.notify_one());
            alarms = clock.lock();
            continue;
        }
        alarms = match alarms.set.keys().next() {
            Some(&(deadline, _)) => {
                let wait = deadline.saturating_duration_since(now);
                clock.changed.wait_timeout(alarms, wait).unwrap_or_else(PoisonError::into_inner).0
            }
            None => clock.changed.wait(alarms).unwrap_or_else(PoisonError::into_inner),
        };
    }
}
