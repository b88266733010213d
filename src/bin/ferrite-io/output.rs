//! What the commands print: durations in readable units, plain tables, the short engine line,
//! whether colour is allowed, and progress (a bar on a terminal, periodic plain lines elsewhere).

use std::fmt;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrite_io::{Reason, Selection};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether escape codes may go to stderr: it is a terminal and `NO_COLOR` is unset or empty.
pub fn stderr_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `x` with three significant digits (at least), e.g. `1.23`, `12.3`, `123`, `20781`.
fn sig3(x: f64) -> String {
    match x {
        x if x < 10.0 => format!("{x:.2}"),
        x if x < 100.0 => format!("{x:.1}"),
        x => format!("{x:.0}"),
    }
}

/// A duration in the unit that keeps it short: `850 ns`, `12.3 us`, `20.8 ms`, `1.52 s`.
pub fn duration(d: Duration) -> String {
    let ns = d.as_secs_f64() * 1e9;
    match ns {
        ns if ns < 1e3 => format!("{ns:.0} ns"),
        ns if ns < 1e6 => format!("{} us", sig3(ns / 1e3)),
        ns if ns < 1e9 => format!("{} ms", sig3(ns / 1e6)),
        ns => format!("{} s", sig3(ns / 1e9)),
    }
}

/// A duration given in microseconds, as [`duration`].
pub fn micros(us: f64) -> String {
    duration(Duration::from_secs_f64(us.max(0.0) / 1e6))
}

/// Rows of cells as a table: the first column left-aligned, the others right-aligned, each as
/// wide as its widest cell, two spaces apart.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| if c == 0 { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// Where the engine choice came from, weakest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineSource {
    /// Nothing asked: the default, `auto`.
    Default,
    /// The config file (its `engine` key, or its default when the key is absent).
    File(String),
    /// The `FERRITE_IO_ENGINE` environment variable.
    Env,
    /// The `--engine` flag.
    Flag,
}

impl fmt::Display for EngineSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineSource::Default => f.write_str("default"),
            EngineSource::File(path) => write!(f, "config {path}"),
            EngineSource::Env => f.write_str(ferrite_io::ENGINE_ENV),
            EngineSource::Flag => f.write_str("--engine"),
        }
    }
}

/// One line: the engine that runs, what was asked and by whom, and why (the probe's full
/// feature list is `probe`'s business).
pub fn engine_line(selection: &Selection, source: &EngineSource) -> String {
    let asked = format!("{} from {source}", selection.requested);
    match &selection.reason {
        Reason::Requested(_) => format!("{} ({asked})", selection.backend),
        Reason::Probed(_) => format!("{} ({asked}: the io_uring probe succeeded)", selection.backend),
        Reason::FellBack(why) => format!("{} ({asked}: io_uring unavailable: {why})", selection.backend),
    }
}

/// How often a phase prints a plain progress line when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// Progress of one phase on stderr: a bar on a terminal; otherwise a plain line every
/// [`PLAIN_EVERY`] and one when the phase ends. Shareable between tasks.
pub struct Progress {
    phase: String,
    unit: &'static str,
    len: u64,
    bar: Option<ProgressBar>,
    done: AtomicU64,
    start: Instant,
    next_line: Mutex<Instant>,
}

impl Progress {
    /// Starts phase `phase` of `len` `unit`s.
    pub fn start(phase: impl Into<String>, len: u64, unit: &'static str) -> Progress {
        let phase = phase.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            let template = format!("{{spinner}} {phase} [{{bar:40}}] {{pos}}/{{len}} {unit} eta {{eta}}");
            bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
            bar
        });
        let start = Instant::now();
        Progress { phase, unit, len, bar, done: AtomicU64::new(0), start, next_line: Mutex::new(start + PLAIN_EVERY) }
    }

    /// Counts `n` more units done.
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
            return;
        }
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let now = Instant::now();
        if let Ok(mut next) = self.next_line.try_lock()
            && now >= *next
        {
            *next = now + PLAIN_EVERY;
            eprintln!("{}: {done}/{} {} after {}", self.phase, self.len, self.unit, duration(now - self.start));
        }
    }

    /// Sets the message shown next to the bar (a terminal only).
    pub fn message(&self, text: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(text);
        }
    }

    /// Ends the phase: clears the bar, or prints the closing plain line.
    pub fn finish(self) {
        match self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => eprintln!(
                "{}: done, {} {} in {}",
                self.phase,
                self.done.load(Ordering::Relaxed),
                self.unit,
                duration(self.start.elapsed())
            ),
        }
    }
}

/// What direct I/O is called on this platform (what `--direct` and `io.direct_io` turn on).
pub const DIRECT: &str = if cfg!(target_os = "linux") {
    "O_DIRECT"
} else if cfg!(target_os = "macos") {
    "F_NOCACHE"
} else if cfg!(windows) {
    "FILE_FLAG_NO_BUFFERING"
} else {
    "direct I/O"
};

/// An engine's counters on one line: what moved, how it completed, what waited or failed.
pub fn stats_line(s: &ferrite_io::EngineStats) -> String {
    let mut line = format!(
        "{} reads ({} B), {} writes ({} B), {} syncs; ring: {} submitted, {} inline, {} later, {} rings, {} files registered; \
         fast path {} hits, {} refused; in flight {} (max {}); waits: {} buffer, {} ring room; \
         {} CQ overflows, {} submit errors",
        s.reads,
        s.bytes_read,
        s.writes,
        s.bytes_written,
        s.syncs,
        s.submitted,
        s.inline_completions,
        s.later_completions,
        s.rings,
        s.registered_files,
        s.fast_path_hits,
        s.fast_path_refusals,
        s.in_flight,
        s.in_flight_high_water,
        s.buffer_waits,
        s.ring_waits,
        s.cq_overflows,
        s.submit_errors,
    );
    if s.completion_thread {
        line += &format!("; completion thread running ({} reaps)", s.completion_thread_reaps);
    }
    if let Some(reason) = &s.fallback_reason {
        line += &format!("; fell back: {reason}");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_a_short_unit() {
        assert_eq!(duration(Duration::from_nanos(850)), "850 ns");
        assert_eq!(duration(Duration::from_nanos(1_234)), "1.23 us");
        assert_eq!(duration(Duration::from_nanos(163_000)), "163 us");
        assert_eq!(duration(Duration::from_micros(20_780)), "20.8 ms");
        assert_eq!(duration(Duration::from_millis(1_520)), "1.52 s");
        assert_eq!(micros(20780.4), "20.8 ms");
    }

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["row".to_owned(), "a".to_owned(), "b".to_owned()],
            vec!["cached".to_owned(), "1.2 us".to_owned(), "-".to_owned()],
        ];
        assert_eq!(table(&rows), "row          a  b\ncached  1.2 us  -\n");
    }
}
