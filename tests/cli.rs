//! The `ferrite-io` binary as a user runs it: bad numbers, refusals, cleanup on failure, on
//! success, on a full disk and on Ctrl-C, `--keep`, `--config` on every command, unknown tables
//! and keys, the `FERRITE_IO_ENGINE` override, exit codes, plain output off a terminal, and the
//! engine counters of `flush --json` (a fallback's reason among them). Every run is small (a few
//! hundred KiB) and watched by a deadline.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest any run may take before the test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(120);

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrite-io"));
    command
        .args(args)
        .env_remove("FERRITE_IO_ENGINE")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for `child` within [`DEADLINE`], killing it and failing past that.
fn finish(mut child: Child, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("{what} still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn run_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = command(args);
    command.envs(env.iter().copied());
    finish(spawn(&mut command), &args.join(" "))
}

/// `ERROR_INTERNAL_ERROR`: what wine's `CreateProcess` returned, once in many CI runs of the
/// Windows suite, for a start of the CLI that succeeded when run again.
const WINE_SPAWN_FLAKE: i32 = 1359;

/// Starts the CLI. On Windows a start that fails with [`WINE_SPAWN_FLAKE`] is tried again, up
/// to three times: that error comes from the process loader, before any of our code runs. Any
/// other failure, and that one on other systems, fails the test at once.
fn spawn(command: &mut Command) -> Child {
    let mut tries = 1;
    loop {
        match command.spawn() {
            Ok(child) => return child,
            Err(e) if cfg!(windows) && e.raw_os_error() == Some(WINE_SPAWN_FLAKE) && tries < 4 => {
                eprintln!("spawn ferrite-io, try {tries}: {e}; trying again");
                tries += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("spawn ferrite-io: {e}"),
        }
    }
}

fn run(args: &[&str]) -> Output {
    run_with(args, &[])
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "stdout:\n{}\nstderr:\n{}", stdout(out), stderr(out));
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir).expect("read_dir").map(|e| e.expect("entry").path()).collect();
    all.sort();
    all
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A small flush: 4 pages of 64 KiB, 4 cold reads.
const SMALL: [&str; 4] = ["--size", "256KiB", "--reads", "4"];

#[test]
fn bad_numbers_are_usage_errors_naming_the_flag() {
    let huge = "18446744073709551616";
    let cases: &[(&str, &str, &[&str])] = &[
        ("flush", "--page-size", &[huge, "0", "-1", "abc", "3", "1000", "2GiB", "2305843009213693952"]),
        ("flush", "--pages", &[huge, "0", "-1", "abc", "281474976710656", "2305843009213693952"]),
        ("flush", "--size", &[huge, "0", "-1", "abc", "1000", "2TiB", "16EiB"]),
        ("flush", "--depth", &[huge, "0", "-1", "abc", "4294967296", "2305843009213693952"]),
        ("flush", "--reads", &[huge, "-1", "abc", "1e11", "18446744073709551615"]),
        ("bench", "--rounds", &[huge, "0", "-1", "abc", "1001"]),
    ];
    for (sub, flag, values) in cases {
        for value in *values {
            let arg = format!("{flag}={value}");
            let out = run(&[sub, &arg]);
            assert_exit(&out, 2);
            let err = stderr(&out);
            assert!(err.contains(flag) && !err.contains("io.buffer_size"), "{sub} {arg}: {err}");
            assert!(!err.contains("panicked"), "{sub} {arg}: {err}");
        }
    }
}

#[test]
fn silent_clamps_and_no_ops_are_refused() {
    let dir = common::tempdir();
    let d = path(dir.path());
    let cases: &[(&[&str], &[&str])] = &[
        (&["flush", "--dir", d, "--depth", "0"], &["--depth"]),
        (&["flush", "--dir", d, "--pages", "0"], &["--pages"]),
        (&["flush", "--dir", d, "--size", "1000"], &["--size"]),
        (&["flush", "--dir", d, "--size", "64KiB", "--page-size", "1MiB"], &["--size", "--page-size"]),
        (&["flush", "--dir", d, "--size", "100KiB"], &["--size", "--page-size"]),
        (&["flush", "--dir", d, "--pages", "16777216", "--page-size", "1GiB"], &["--pages", "--page-size"]),
        (&["flush", "--dir", d, "--pages", "1", "--page-size", "1GiB", "--depth", "8"], &["--page-size", "--depth"]),
        (&["bench", "--dir", d, "--only", "nomatch"], &["--only", "cached_read_4k"]),
    ];
    for (args, names) in cases {
        let out = run(args);
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(names.iter().all(|n| err.contains(n)), "{args:?}: {err}");
    }
    assert!(entries(dir.path()).is_empty(), "a refused command created {:?}", entries(dir.path()));
}

#[test]
fn every_command_removes_its_files_on_success_and_keep_keeps_them() {
    let dir = common::tempdir();
    let new = dir.path().join("new");
    for args in [vec!["probe"], [&["flush"][..], &SMALL].concat()] {
        let mut args = args.clone();
        args.extend(["--dir", path(&new)]);
        let out = run(&args);
        assert_exit(&out, 0);
        assert!(!new.exists(), "{args:?} left {:?}", new.exists().then(|| entries(&new)));

        args.push("--keep");
        let out = run(&args);
        assert_exit(&out, 0);
        let kept = entries(&new);
        assert_eq!(kept.len(), 1, "{args:?}: {kept:?}");
        assert!(stderr(&out).contains(&format!("kept: {}", kept[0].display())), "{args:?}: {}", stderr(&out));
        std::fs::remove_dir_all(&new).expect("clean up");
    }
}

#[test]
fn only_the_given_directory_is_created() {
    let dir = common::tempdir();
    let missing = dir.path().join("nonexistent");
    let target = missing.join("x");
    for sub in ["probe", "flush", "bench"] {
        let out = run(&[sub, "--dir", path(&target)]);
        assert_exit(&out, 1);
        assert!(stderr(&out).contains("its parent must exist"), "{sub}: {}", stderr(&out));
        assert!(!missing.exists(), "{sub} created the parent chain");
    }
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let out = run(&["flush", "--dir", path(&file)]);
    assert_exit(&out, 1);
    assert_eq!(std::fs::read(&file).expect("read"), b"x");
}

/// A tmpfs of 4 MiB mounted for the test, unmounted on drop (Linux).
#[cfg(target_os = "linux")]
struct SmallDisk(PathBuf);

#[cfg(target_os = "linux")]
impl SmallDisk {
    fn mount(at: PathBuf) -> Result<SmallDisk, String> {
        std::fs::create_dir(&at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "ferrite-io-test", path(&at)])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(SmallDisk(at))
    }
}

#[cfg(target_os = "linux")]
impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_leaves_nothing_behind() {
    let dir = common::tempdir();
    let disk = match SmallDisk::mount(dir.path().join("small")) {
        Ok(disk) => disk,
        Err(why) => {
            println!("skipped: cannot mount a 4 MiB tmpfs ({why}); needs root");
            return;
        }
    };
    // Twice: a failed run must not leave a file that makes the next one fail sooner.
    for _ in 0..2 {
        let out = run(&["flush", "--dir", path(&disk.0), "--size", "8MiB", "--engine", "tokio"]);
        assert_exit(&out, 1);
        assert!(stderr(&out).contains("fallocate"), "{}", stderr(&out));
        assert!(entries(&disk.0).is_empty(), "flush left {:?}", entries(&disk.0));
    }
    let out =
        run(&["bench", "--dir", path(&disk.0), "--only", "cached_read_4k", "--chart", path(&dir.path().join("c.svg"))]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("No space left") && err.contains(&format!("bench files in {}", disk.0.display())), "{err}");
    assert!(entries(&disk.0).is_empty(), "bench left {:?}", entries(&disk.0));
    // In a directory the full run created, the directory goes too.
    let sub = disk.0.join("sub");
    let out = run(&["flush", "--dir", path(&sub), "--size", "8MiB"]);
    assert_exit(&out, 1);
    assert!(!sub.exists());
}

/// Starts `args` with `--dir DIR/run`, waits until a file appears there, sends `signal`, and
/// checks the exit code `code` and that the directory is gone (unix).
#[cfg(unix)]
fn stop(args: &[&str], signal: libc::c_int, code: i32) {
    let dir = common::tempdir();
    let run_dir = dir.path().join("run");
    let child = spawn(&mut command(&[args, &["--dir", path(&run_dir)]].concat()));
    let start = Instant::now();
    while !run_dir.exists() || entries(&run_dir).is_empty() {
        assert!(start.elapsed() < DEADLINE, "{args:?}: no file appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill takes no pointers; `pid` is our child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let out = finish(child, "stopped run");
    assert_exit(&out, code);
    assert!(!run_dir.exists(), "{args:?} left {:?}", entries(&run_dir));
}

#[cfg(unix)]
#[test]
fn ctrl_c_removes_what_the_command_created() {
    stop(&["flush", "--size", "1GiB", "--sync", "per-page"], libc::SIGINT, 130);
    // While it lays out its 577 MiB of files.
    let dir = common::tempdir();
    stop(&["bench", "--chart", path(&dir.path().join("c.svg"))], libc::SIGINT, 130);
    assert!(entries(dir.path()).is_empty(), "no chart for an interrupted run");
}

/// `kill` and `timeout` send SIGTERM, not SIGINT: before the fix it killed the process with
/// its files left behind (a 1 GiB log, 577 MiB of bench files).
#[cfg(unix)]
#[test]
fn sigterm_removes_what_the_command_created() {
    stop(&["flush", "--size", "1GiB", "--sync", "per-page"], libc::SIGTERM, 143);
    let dir = common::tempdir();
    stop(&["bench", "--chart", path(&dir.path().join("c.svg"))], libc::SIGTERM, 143);
    assert!(entries(dir.path()).is_empty(), "no chart for a terminated run");
}

/// A chart path that cannot be written is refused before the run (before the fix, `bench`
/// laid out 577 MiB and measured every row, then failed to write the chart).
#[test]
fn an_unwritable_chart_is_refused_before_the_run() {
    let dir = common::tempdir();
    let run_dir = dir.path().join("run");
    let missing = dir.path().join("missing").join("c.svg");
    for chart in [missing.as_path(), dir.path()] {
        let started = Instant::now();
        let out = run(&["bench", "--dir", path(&run_dir), "--chart", path(chart)]);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(&format!("--chart {}", chart.display())), "{}", stderr(&out));
        assert!(started.elapsed() < Duration::from_secs(10), "refused at once, not after the run");
        assert!(!run_dir.exists() && !missing.parent().expect("parent").exists());
    }
    // An existing chart survives a failed run unchanged; a new one is not left half-made.
    let old = dir.path().join("old.svg");
    std::fs::write(&old, "<svg/>").expect("write");
    let new = dir.path().join("new.svg");
    for chart in [&old, &new] {
        let out = run(&["bench", "--dir", path(&dir.path().join("a").join("b")), "--chart", path(chart)]);
        assert_exit(&out, 1);
    }
    assert_eq!(std::fs::read_to_string(&old).expect("old chart"), "<svg/>");
    assert!(!new.exists(), "a failed run left a chart");
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, text).expect("write config");
    file
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

#[test]
fn config_applies_to_every_command() {
    let dir = common::tempdir();
    let d = path(dir.path());
    let config = write_config(dir.path(), "tokio.toml", "[io]\nengine = \"tokio\"\nnowait_fast_path = false\n");
    let c = path(&config);

    let out = run(&["probe", "--dir", d, "--config", c]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains(&format!("engine:            tokio (tokio from config {c})")), "{}", stdout(&out));

    let out = run(&[&["flush", "--dir", d, "--config", c, "--json"][..], &SMALL].concat());
    assert_exit(&out, 0);
    let report = json(&out);
    assert_eq!(report["version"], 2);
    assert_eq!(report["engine"], "tokio");
    assert_eq!(report["engine_requested_by"], format!("config {c}"));
    for key in ["p50_us", "p99_us", "p999_us", "max_us"] {
        assert!(report["durable"][key].as_f64().is_some_and(|v| v > 0.0), "{key}: {report}");
        assert!(report["cold_reads"]["latency"][key].as_f64().is_some_and(|v| v > 0.0), "{key}: {report}");
    }
    assert_eq!(report["cold_reads"]["verified"], 4);

    // bench with the tokio config runs no io_uring backend; it cleans up and draws its chart.
    let chart = dir.path().join("chart.svg");
    let bench_dir = dir.path().join("bench");
    let args = ["bench", "--dir", path(&bench_dir), "--config", c, "--only", "direct_randread_qd1", "--rounds", "1"];
    let out = run(&[&args[..], &["--json", "--chart", path(&chart)]].concat());
    assert_exit(&out, 0);
    let report = json(&out);
    assert_eq!((report["version"].clone(), report["engine_requested"].clone()), (8.into(), "tokio".into()));
    let row = &report["rows"][0];
    assert_eq!(row["row"], "direct_randread_qd1");
    let backends: Vec<&str> = row["us_per_op"].as_object().expect("us_per_op").keys().map(String::as_str).collect();
    assert!(backends.contains(&"tokio_engine") && !backends.iter().any(|b| b.contains("uring")), "{backends:?}");
    assert!(row["ratios"]["tokio/spawn_blk"]["median"].as_f64().is_some(), "{row}");
    assert!(!bench_dir.exists(), "bench left {:?}", entries(&bench_dir));
    let svg = std::fs::read_to_string(&chart).expect("chart");
    assert!(svg.starts_with("<svg") && svg.contains("direct_randread_qd1") && svg.contains("tokio/spawn_blk"));
}

/// `flush --json` reports the engine's counters, and they add up to the run: each page written
/// once and whole, each cold read once, one sync per page with `per-page` (plus the final one),
/// nothing left in flight, every ring submission completed. Pins the `stats` object of the report.
#[test]
fn flush_json_reports_counters_that_match_the_run() {
    let dir = common::tempdir();
    let d = path(dir.path());
    let engines: &[&str] =
        if cfg!(all(feature = "io-uring", target_os = "linux")) { &["uring", "tokio"] } else { &["tokio"] };
    for engine in engines {
        for sync in ["per-page", "group"] {
            let what = format!("{engine}, sync {sync}");
            let out = run(&[&["flush", "--dir", d, "--json", "--engine", engine, "--sync", sync][..], &SMALL].concat());
            assert_exit(&out, 0);
            let report = json(&out);
            let stats = &report["stats"];
            let count = |key: &str| stats[key].as_u64().unwrap_or_else(|| panic!("{what}: no stats.{key}: {report}"));
            let (pages, page_size) = (report["pages"].as_u64(), report["page_size"].as_u64());
            let (Some(pages), Some(page_size)) = (pages, page_size) else { panic!("{what}: {report}") };
            assert_eq!((pages, page_size), (4, 64 * 1024), "{what}: SMALL is 4 pages of 64 KiB");
            assert_eq!(report["flushed_until"], pages * page_size, "{what}: {report}");
            assert_eq!((count("writes"), count("bytes_written")), (pages, pages * page_size), "{what}: {stats}");
            let reads = report["cold_reads"]["verified"].as_u64().unwrap_or(0);
            assert_eq!(reads, 4, "{what}: {report}");
            assert_eq!((count("reads"), count("bytes_read")), (reads, reads * page_size), "{what}: {stats}");
            // The flusher's syncs, and the one before the cold reads.
            let syncs = count("syncs");
            match sync {
                "per-page" => assert_eq!(syncs, pages + 1, "{what}: {stats}"),
                _ => assert!((2..=pages + 1).contains(&syncs), "{what}: {stats}"),
            }
            for key in ["in_flight", "cq_overflows", "submit_errors"] {
                assert_eq!(count(key), 0, "{what}: {key}: {stats}");
            }
            assert!(count("in_flight_high_water") >= 1, "{what}: {stats}");
            assert!(stats["fallback_reason"].is_null(), "{what}: the engine was asked for by name: {stats}");
            if *engine == "uring" {
                let submitted = count("submitted");
                assert!(count("rings") >= 1 && submitted >= 1, "{what}: {stats}");
                assert_eq!(count("inline_completions") + count("later_completions"), submitted, "{what}: {stats}");
            } else {
                assert_eq!((count("rings"), count("submitted")), (0, 0), "{what}: {stats}");
            }
        }
    }
}

/// `engine = "auto"` where `io_uring_setup` fails (a seccomp filter installed in the child
/// between fork and exec refuses it with EPERM): `flush --json` runs on the tokio engine and its
/// counters carry the reason, the one the engine line gives. Pins `stats.fallback_reason`.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[test]
fn flush_json_names_the_fallback_reason() {
    use std::os::unix::process::CommandExt;
    let dir = common::tempdir();
    let filter = common::SyscallFilter::refuse(&[libc::SYS_io_uring_setup], libc::EPERM);
    let mut command =
        command(&[&["flush", "--dir", path(dir.path()), "--json", "--engine", "auto"][..], &SMALL].concat());
    // SAFETY: the hook runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed; `install` makes two `prctl` calls and neither allocates nor locks.
    unsafe { command.pre_exec(move || filter.install()) };
    let out = finish(spawn(&mut command), "flush with io_uring refused");
    assert_exit(&out, 0);
    let report = json(&out);
    assert_eq!(
        (report["engine"].as_str(), report["engine_requested"].as_str()),
        (Some("tokio"), Some("auto")),
        "{report}"
    );
    let reason = report["stats"]["fallback_reason"].as_str().unwrap_or_else(|| panic!("no fallback reason: {report}"));
    assert!(reason.contains("io_uring_setup") && reason.contains("EPERM"), "{reason}");
    let selection = report["selection"].as_str().unwrap_or_default();
    assert!(selection.contains(reason), "the engine line and the counters give one reason: {report}");
    assert_eq!(report["stats"]["writes"], 4, "{report}");
}

#[test]
fn bad_configs_are_usage_errors_naming_file_and_line() {
    let dir = common::tempdir();
    let d = path(dir.path());
    let cases = [
        ("table.toml", "[oi]\nengine = \"tokio\"\n", "line 1", "unknown field `oi`"),
        ("key.toml", "[io]\nengine = \"tokio\"\nring_size = 8\n", "line 3", "unknown field `ring_size`"),
        ("range.toml", "[io]\n\nbuffer_size = 5000\n", "line 3", "io.buffer_size = 5000"),
        ("engine.toml", "[io]\nengine = \"fast\"\n", "line 2", "`uring`"),
    ];
    for (name, text, line, what) in cases {
        let config = write_config(dir.path(), name, text);
        for sub in ["probe", "flush", "bench"] {
            let out = run(&[sub, "--dir", d, "--config", path(&config)]);
            assert_exit(&out, 2);
            let err = stderr(&out);
            assert!(err.contains(path(&config)) && err.contains(line) && err.contains(what), "{sub} {name}: {err}");
        }
    }
    assert_eq!(entries(dir.path()).len(), cases.len(), "only the config files");
    let out = run(&["probe", "--config", path(&dir.path().join("missing.toml"))]);
    assert_exit(&out, 2);
}

#[test]
fn the_engine_comes_from_the_flag_then_the_environment_then_the_file() {
    let dir = common::tempdir();
    let d = path(dir.path());
    let auto = write_config(dir.path(), "auto.toml", "[io]\nengine = \"auto\"\n");
    let engine_line = |out: &Output| {
        assert_exit(out, 0);
        stdout(out).lines().find(|l| l.starts_with("engine:")).expect("an engine line").to_owned()
    };
    let env = [("FERRITE_IO_ENGINE", "tokio")];
    let line = engine_line(&run_with(&["probe", "--dir", d, "--config", path(&auto)], &env));
    assert_eq!(line, "engine:            tokio (tokio from FERRITE_IO_ENGINE)");
    let line = engine_line(&run_with(&["probe", "--dir", d, "--engine", "tokio"], &[("FERRITE_IO_ENGINE", "auto")]));
    assert_eq!(line, "engine:            tokio (tokio from --engine)");
    assert!(line.len() < 100, "a short engine line: {line}");
    let out = run_with(&["flush", "--dir", d, "--json", "--size", "256KiB", "--reads", "1"], &env);
    assert_exit(&out, 0);
    assert_eq!(json(&out)["engine_requested_by"], "FERRITE_IO_ENGINE");

    for sub in ["probe", "flush", "bench"] {
        let out = run_with(&[sub, "--dir", d], &[("FERRITE_IO_ENGINE", "fast")]);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains("FERRITE_IO_ENGINE = fast"), "{sub}: {}", stderr(&out));
    }
}

#[test]
fn output_off_a_terminal_is_plain_and_complete() {
    let dir = common::tempdir();
    let d = path(dir.path());
    let out = run_with(&[&["flush", "--dir", d, "--engine", "tokio"][..], &SMALL].concat(), &[("RUST_LOG", "debug")]);
    assert_exit(&out, 0);
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(err.contains("DEBUG") || err.contains("INFO"), "the log is on: {err}");
    assert!(!text.contains('\x1b') && !err.contains('\x1b'), "escape codes off a terminal:\n{text}\n{err}");
    for phase in ["preallocate: done", "flush: done, 4 pages", "cold reads: done, 4 pages"] {
        assert!(err.contains(phase), "no plain progress line {phase:?}: {err}");
    }
    let cold = if cfg!(target_os = "linux") { "posix_fadvise DONTNEED" } else { "page cache not dropped" };
    assert!(text.contains(cold), "cold reads say how they are cold: {text}");
    for line in text.lines().filter(|l| l.starts_with("time to durable") || l.starts_with("cold reads")) {
        let words: Vec<&str> = line.split([' ', ',']).collect();
        for pair in words.windows(2).filter(|w| w[1] == "us") {
            let value: f64 = pair[0].parse().unwrap_or_else(|_| panic!("{line}"));
            assert!(value < 1000.0, "microseconds past 1000 print as ms: {line}");
        }
    }

    let help = stdout(&run(&["--help"]));
    for code in ["0 ", "1 ", "2 ", "130", "143"] {
        assert!(help.contains(&format!("  {code}")), "exit code {code} documented: {help}");
    }
    assert!(stdout(&run(&["flush", "--help"])).contains("Exit codes"));
}

/// On io_uring, the O_DIRECT QD1 row also runs the paired comparison (engine, raw ring, raw ring
/// waited for through tokio's reactor, and engine under `block_on`, rotating per operation) and
/// the raw SQPOLL baseline, and both reach the JSON report.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[test]
fn bench_pairs_qd1_with_the_raw_ring() {
    let dir = common::tempdir();
    let bench_dir = dir.path().join("bench");
    let chart = dir.path().join("chart.svg");
    let args =
        ["bench", "--dir", path(&bench_dir), "--engine", "uring", "--only", "direct_randread_qd1", "--rounds", "1"];
    let out = run(&[&args[..], &["--json", "--chart", path(&chart)]].concat());
    assert_exit(&out, 0);
    let report = json(&out);
    assert_eq!(report["version"], 8);
    let paired = &report["qd1_paired"];
    assert_eq!(paired["pairs"], 2000, "{report}");
    let keys = [
        "uring_fixed_p50_us",
        "raw_ring_p50_us",
        "uring_fixed_mean_us",
        "raw_ring_mean_us",
        "ratio_p50",
        "raw_ring_tokio_p50_us",
        "raw_ring_tokio_mean_us",
        "tokio_floor_p50",
        "ratio_to_floor_p50",
        "block_on_p50_us",
        "block_on_mean_us",
        "block_on_ratio_p50",
    ];
    for key in keys {
        assert!(paired[key].as_f64().is_some_and(|v| v.is_finite() && v > 0.0), "{key}: {paired}");
    }
    // All sides read the same disk in the same moments: their ratios cannot be far from 1.
    for key in ["ratio_p50", "tokio_floor_p50", "ratio_to_floor_p50", "block_on_ratio_p50"] {
        let ratio = paired[key].as_f64().unwrap_or(0.0);
        assert!((0.5..2.0).contains(&ratio), "{key}: the sides measured different things: {paired}");
    }
    let row = &report["rows"][0];
    assert!(row["us_per_op"]["raw_sqpoll"].as_f64().is_some_and(|v| v > 0.0), "{row}");
    assert!(!bench_dir.exists(), "bench left {:?}", entries(&bench_dir));
}

/// On io_uring, the cached rows also run their paired comparisons in chunks: single reads
/// against `preadv2(RWF_NOWAIT)` and batches of 8 against the raw ring; both reach the JSON
/// report with every chunk counted.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[test]
fn bench_pairs_the_cached_rows_in_chunks() {
    let dir = common::tempdir();
    let bench_dir = dir.path().join("bench");
    let chart = dir.path().join("chart.svg");
    let args = ["bench", "--dir", path(&bench_dir), "--engine", "uring", "--only", "cached_read_4k", "--rounds", "1"];
    let out = run(&[&args[..], &["--json", "--chart", path(&chart)]].concat());
    assert_exit(&out, 0);
    let report = json(&out);
    let rows: Vec<&str> = report["rows"].as_array().expect("rows").iter().filter_map(|r| r["row"].as_str()).collect();
    assert_eq!(rows, ["cached_read_4k", "batch8_cached_read_4k"], "{report}");
    let (cached, batch, hot) = (&report["cached_paired"], &report["batch_paired"], &report["batch_paired_hot"]);
    assert_eq!((cached["chunks"].clone(), cached["reads_per_chunk"].clone()), (200.into(), 2000.into()), "{cached}");
    for batch in [batch, hot] {
        assert_eq!((batch["chunks"].clone(), batch["batches_per_chunk"].clone()), (100.into(), 250.into()), "{batch}");
    }
    for (paired, keys) in [
        (cached, ["uring_fixed_p50_us", "nowait_p50_us", "ratio_p50"]),
        (batch, ["uring_fixed_p50_us", "raw_ring_p50_us", "ratio_p50"]),
        (hot, ["uring_fixed_p50_us", "raw_ring_p50_us", "ratio_p50"]),
    ] {
        for key in keys {
            assert!(paired[key].as_f64().is_some_and(|v| v.is_finite() && v > 0.0), "{key}: {paired}");
        }
        // Both sides read the same cached file in the same moments, so neither can be a
        // hundred times the other; the engine's user-space share is several times larger in an
        // unoptimized build (the engine twice the raw ring's time per batch under `cargo test`).
        let ratio = paired["ratio_p50"].as_f64().unwrap_or(0.0);
        assert!((0.1..10.0).contains(&ratio), "the sides measured different things: {paired}");
    }
    assert!(!bench_dir.exists(), "bench left {:?}", entries(&bench_dir));
}

/// The CPU-bound scaling rows run on the engine without the fast path: the report gives their
/// scaling against the baselines', and the counters of that engine (which did every read
/// through its rings), not only those of the engine the other rows use.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[test]
fn bench_reports_the_scaling_rows_and_their_engine() {
    let dir = common::tempdir();
    let bench_dir = dir.path().join("bench");
    let chart = dir.path().join("chart.svg");
    let args = ["bench", "--dir", path(&bench_dir), "--engine", "uring", "--only", "scale_cached", "--rounds", "1"];
    let out = run(&[&args[..], &["--json", "--chart", path(&chart)]].concat());
    assert_exit(&out, 0);
    let report = json(&out);
    let scaling = report["scaling"].as_array().expect("scaling");
    assert!(!scaling.is_empty(), "{report}");
    let ring_only = &report["uring_ring_only_stats"];
    let reads = ring_only["reads"].as_u64().unwrap_or(0);
    assert!(reads > 0 && ring_only["submitted"].as_u64() >= Some(reads), "every read went through a ring: {ring_only}");
    assert_eq!(ring_only["fast_path_hits"], 0, "{ring_only}");
    assert_eq!(report["uring_stats"]["reads"], 0, "the fast-path engine ran no row here: {report}");
    assert!(!bench_dir.exists(), "bench left {:?}", entries(&bench_dir));
}

/// Runs `probe` as root without `CAP_IPC_LOCK` under a 64 KiB locked-memory limit, where the
/// ring sets up but the pool cannot be registered. Before the fix `probe` printed "io_uring
/// probe: supported" above an engine that had fallen back for that very reason.
#[cfg(target_os = "linux")]
#[test]
fn a_memlock_limit_is_reported_consistently() {
    let dir = common::tempdir();
    let script = format!(
        "ulimit -l 64 && exec setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock {} probe --dir {}",
        env!("CARGO_BIN_EXE_ferrite-io"),
        path(dir.path())
    );
    let out = finish(
        Command::new("bash").args(["-c", &script]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("bash"),
        "probe under a memlock limit",
    );
    if out.status.code() != Some(0) || !stderr(&out).contains("ulimit -l") {
        println!(
            "skipped: cannot drop CAP_IPC_LOCK under a memlock limit here (needs root and setpriv): {}",
            stderr(&out)
        );
        return;
    }
    let text = stdout(&out);
    let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).unwrap_or_default().to_owned();
    assert!(line("engine:").contains("ulimit -l"), "{text}");
    assert!(
        !line("io_uring probe:").contains("probe:    supported"),
        "a probe that says supported above a fallback: {text}"
    );
}
