//! The `woodpecker` binary as a user runs it: in a fresh directory, no --config (the zero-setup default:
//! local files and embedded metadata under ./woodpecker-data).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn woodpecker(dir: &Path, args: &[&str]) -> Run {
    woodpecker_with_stdin(dir, args, None)
}

fn woodpecker_with_stdin(dir: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_woodpecker"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("WOODPECKER_CONFIG")
        .env_remove("WOODPECKER_DATA_DIR")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("spawn woodpecker");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let Output { status, stdout, stderr } = child.wait_with_output().expect("wait for woodpecker");
    Run {
        ok: status.success(),
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs and insists on success, showing everything when it fails.
fn ok(dir: &Path, args: &[&str]) -> Run {
    let r = woodpecker(dir, args);
    assert!(r.ok, "woodpecker {args:?} failed ({:?})\nstdout:\n{}\nstderr:\n{}", r.code, r.stdout, r.stderr);
    assert!(!r.stderr.contains("panicked"), "woodpecker {args:?} panicked:\n{}", r.stderr);
    r
}

/// Runs and insists on a clean failure: non-zero exit, one `error:` line on stderr, no panic.
fn fails(dir: &Path, args: &[&str], expect_in_message: &str) {
    let r = woodpecker(dir, args);
    assert!(!r.ok, "woodpecker {args:?} should fail\nstdout:\n{}", r.stdout);
    assert_eq!(r.code, Some(1), "woodpecker {args:?}: exit code; stderr:\n{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "woodpecker {args:?} panicked:\n{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "woodpecker {args:?}: expected one error line, got:\n{}", r.stderr);
    assert!(lines[0].starts_with("error: "), "woodpecker {args:?}: {}", lines[0]);
    assert!(lines[0].contains(expect_in_message), "woodpecker {args:?}: {:?} lacks {expect_in_message:?}", lines[0]);
}

#[test]
fn quickstart_on_a_fresh_dir_writes_reads_back_and_says_where_data_lives() {
    let dir = TempDir::new().unwrap();
    let r = ok(dir.path(), &["quickstart", "--count", "3000"]);
    let out = &r.stdout;
    assert!(out.contains("created log \"quickstart\""), "{out}");
    assert!(out.contains("wrote 3000 entries"), "{out}");
    assert!(out.contains("positions 0/0 .. 0/2999"), "{out}");
    assert!(out.contains("entries/s") && out.contains("MB/s"), "{out}");
    assert!(out.contains("Completed"), "segments are listed: {out}");
    assert!(out.contains("read back 3000 entries from 0/0 to 0/2999") && out.contains("all match"), "{out}");
    let data_dir = dir.path().canonicalize().unwrap().join("woodpecker-data");
    assert!(out.contains(&data_dir.join("files").join("1").display().to_string()), "data path: {out}");
    assert!(out.contains(&data_dir.join("meta").display().to_string()), "metadata path: {out}");
    assert!(dir.path().join("woodpecker-data/files/1/0/data.log").is_file(), "the segment file is where it says");

    // Running it again appends to the same log and still verifies what it wrote.
    let r = ok(dir.path(), &["quickstart", "--count", "100"]);
    assert!(r.stdout.contains("opened the existing log"), "{}", r.stdout);
    assert!(r.stdout.contains("read back 100 entries from 1/0 to 1/99"), "{}", r.stdout);
}

#[test]
fn log_commands_round_trip_on_the_zero_setup_default() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();

    let r = ok(d, &["log", "create", "orders"]);
    assert!(r.stdout.contains("created log \"orders\" (id 1)"), "{}", r.stdout);
    ok(d, &["log", "create", "orders", "--if-absent"]);
    ok(d, &["log", "create", "other"]);
    assert_eq!(ok(d, &["log", "list"]).stdout, "orders\nother\n");
    assert_eq!(ok(d, &["log", "list", "ord"]).stdout, "orders\n");

    let r = ok(d, &["log", "write", "orders", "--count", "10", "--message", "hi", "-p", "k=v", "-p", "n=1"]);
    assert!(r.stdout.contains("wrote 10 entries") && r.stdout.contains("last 0/9"), "{}", r.stdout);
    let r = woodpecker_with_stdin(d, &["log", "write", "orders", "--stdin"], Some("alpha\nbeta gamma\r\n"));
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("wrote 2 entries") && r.stdout.contains("first 1/0, last 1/1"), "{}", r.stdout);
    let r = ok(d, &["log", "write", "orders", "--count", "5", "--payload-size", "100"]);
    assert!(r.stdout.contains("last 2/4"), "{}", r.stdout);

    // JSON lines: position, payload, properties.
    let r = ok(d, &["log", "read", "orders", "--format", "json", "--count", "10"]);
    let lines: Vec<serde_json::Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 10);
    for (i, v) in lines.iter().enumerate() {
        assert_eq!(v["segment"], 0);
        assert_eq!(v["entry"], i as i64);
        assert_eq!(v["payload"], "hi");
        assert_eq!(v["payload_encoding"], "utf8");
        assert_eq!(v["properties"]["k"], "v");
        assert_eq!(v["properties"]["n"], "1");
    }
    // Text, everything: stops at the end of the log without waiting.
    let r = ok(d, &["log", "read", "orders"]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 17, "{}", r.stdout);
    assert_eq!(lines[10], "1/0\talpha");
    assert_eq!(lines[11], "1/1\tbeta gamma");
    assert!(lines[12].starts_with("2/0\tentry-0...."), "{}", lines[12]);
    assert_eq!(lines[12].len(), "2/0\t".len() + 100);
    let r = ok(d, &["log", "read", "orders", "--from", "1/1", "--count", "1"]);
    assert_eq!(r.stdout, "1/1\tbeta gamma\n");

    let r = ok(d, &["log", "info", "orders"]);
    assert!(r.stdout.contains("id 1"), "{}", r.stdout);
    assert!(r.stdout.contains("3 segment(s)") && r.stdout.contains("not truncated"), "{}", r.stdout);
    let info: serde_json::Value =
        serde_json::from_str(&ok(d, &["log", "info", "orders", "--format", "json"]).stdout).unwrap();
    let segs = info["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 3);
    assert_eq!(segs[0]["state"], "Completed");
    assert_eq!(segs[0]["last_entry"], 9);
    assert_eq!(segs[1]["last_entry"], 1);
    assert!(segs[0]["size"].as_i64().unwrap() > 0);

    let r = ok(d, &["log", "truncate", "orders", "0/9", "--cleanup"]);
    assert!(r.stdout.contains("truncated up to and including 0/9"), "{}", r.stdout);
    assert!(r.stdout.contains("maintenance:"), "{}", r.stdout);
    assert!(ok(d, &["log", "info", "orders"]).stdout.contains("truncated up to and including 0/9"));
    // From earliest, a reader now starts after the truncation point.
    let r = ok(d, &["log", "read", "orders", "--count", "1"]);
    assert_eq!(r.stdout, "1/0\talpha\n");
    // Truncating behind the current point changes nothing.
    assert!(ok(d, &["log", "truncate", "orders", "0/3"]).stdout.contains("unchanged"));

    // Tail from the end: nothing new arrives, so it stops at the idle timeout without error.
    let r = ok(d, &["log", "tail", "orders", "--timeout-secs", "1"]);
    assert_eq!(r.stdout, "");

    let r = ok(d, &["log", "delete", "orders"]);
    assert!(r.stdout.contains("deleted log \"orders\""), "{}", r.stdout);
    assert_eq!(ok(d, &["log", "list"]).stdout, "other\n");
    assert!(!d.join("woodpecker-data/files/1").exists(), "the log's segment files are gone");
    fails(d, &["log", "read", "orders"], "does not exist");
    ok(d, &["log", "delete", "orders", "--if-exists"]);
}

#[test]
fn bad_input_fails_with_one_clear_line_and_no_panic() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    ok(d, &["log", "create", "x"]);
    ok(d, &["log", "write", "x", "--message", "m"]);
    fails(d, &["log", "write", ""], "the name is empty");
    fails(d, &["log", "write", "a/b"], "'/'");
    fails(d, &["log", "create", ".."], "reserved");
    fails(d, &["log", "read", "nosuchlog"], "log \"nosuchlog\" does not exist");
    fails(d, &["log", "info", "nosuchlog"], "does not exist");
    fails(d, &["log", "write", "nosuchlog", "--message", "m"], "--create");
    fails(d, &["log", "delete", "nosuchlog"], "does not exist");
    fails(d, &["log", "create", "x"], "already exists");
    for bad in ["1/", "/1", "-1/0", "0/x", "first", "1/2/3", "99999999999999999999/0"] {
        fails(d, &["log", "read", "x", "--from", bad], "invalid position");
    }
    fails(d, &["log", "truncate", "x", "latest"], "invalid position");
    fails(d, &["log", "truncate", "x", "-1/0"], "invalid position");
    fails(d, &["log", "truncate", "x", "5/0"], "segment does not exist");
    fails(d, &["log", "truncate", "x", "0/7"], "ends at entry 0");
    fails(d, &["log", "write", "x", "--message", ""], "empty");
    fails(d, &["log", "write", "x", "--payload-size", "0"], "empty");
    fails(d, &["log", "read", "x", "--timeout-secs", "0"], "--timeout-secs");
    let r = woodpecker_with_stdin(d, &["log", "write", "x", "--stdin"], Some("one\n\nthree\n"));
    assert!(!r.ok && r.stderr.contains("line 2 of standard input is empty"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"));
    fails(d, &["--config", "/nonexistent/woodpecker.yaml", "log", "list"], "/nonexistent/woodpecker.yaml");
    let bad_cfg = d.join("bad.yaml");
    std::fs::write(&bad_cfg, "woodpecker:\n  storage:\n    type: floppy\n").unwrap();
    fails(d, &["--config", bad_cfg.to_str().unwrap(), "log", "list"], "cannot load configuration");
    fails(d, &["bench", "--entry-size", "0"], "entry-size");
    // Usage errors are clap's: exit status 2, no panic.
    let r = woodpecker(d, &["log", "write"]);
    assert_eq!(r.code, Some(2));
    assert!(!r.stderr.contains("panicked"));
}

#[test]
fn bench_on_local_storage_reports_a_ratio_against_the_ceiling() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let r = ok(d, &["bench", "--duration", "2"]);
    let out = &r.stdout;
    assert!(out.contains("RATIO") && out.contains("CEIL MB/s") && out.contains("PEAK RSS"), "{out}");
    assert!(out.contains("CPU ms/MB"), "{out}");
    assert!(out.contains("1 KiB") && out.contains("64 KiB"), "{out}");
    assert!(out.contains("ratio ") && out.contains("goal >= 0.90"), "{out}");

    let r = ok(d, &["bench", "--duration", "1", "--entry-size", "4KiB", "--json"]);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["storage"], "local");
    let run = &v["results"][0];
    assert_eq!(run["entry_size"], 4096);
    assert!(run["entries"].as_u64().unwrap() > 0, "{run}");
    let ratio = run["ratio"].as_f64().unwrap();
    assert!(ratio > 0.0 && ratio.is_finite(), "{run}");
    assert!(run["ceiling"]["mb_per_s"].as_f64().unwrap() > 0.0, "{run}");
    assert!(run["latency_ms"]["p99"].as_f64().unwrap() >= run["latency_ms"]["p50"].as_f64().unwrap());
    assert!(run["peak_rss_bytes"].as_u64().unwrap() > 0);
    // Writing costs this process some CPU on both sides.
    assert!(run["cpu_ms_per_mb"]["wal"].as_f64().unwrap() > 0.0, "{run}");
    assert!(run["cpu_ms_per_mb"]["ceiling"].as_f64().unwrap() > 0.0, "{run}");
    // The bench cleans up after itself: no logs, no scratch files.
    assert_eq!(ok(d, &["log", "list"]).stdout, "");
    let leftovers: Vec<_> = std::fs::read_dir(d.join("woodpecker-data/files"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.iter().all(|n| !n.to_string_lossy().starts_with(".bench-ceiling")), "{leftovers:?}");
}

#[test]
fn bench_latency_profile_reports_quantiles_beside_the_single_operation() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let r = ok(d, &["bench", "--latency", "--duration", "1", "--entry-size", "1KiB"]);
    let out = &r.stdout;
    for column in ["single op", "ceiling", "sync", "1%", "10%", "50%", "90%", "p999 ms", "p99/OP"] {
        assert!(out.contains(column), "{column:?} missing:\n{out}");
    }
    assert!(out.contains("sync p50 / single-op p50") && out.contains("p99 at 50% / single-op p99"), "{out}");

    let r = ok(d, &["bench", "--rate", "500/s", "--duration", "1", "--entry-size", "512", "--json"]);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let run = &v["results"][0];
    assert_eq!(run["entry_size"], 512);
    assert!(run["single_op"]["ops"].as_u64().unwrap() > 0, "{run}");
    assert!(run["ceiling_mb_per_s"].is_null(), "a --rate run measures no ceiling: {run}");
    let point = &run["points"][0];
    assert_eq!(point["load"], "500/s");
    assert_eq!(point["target_entries_per_s"], 500.0);
    // Open loop: about 500 entries in one second, whatever the backend could do.
    let entries = point["entries"].as_u64().unwrap();
    assert!((400..=600).contains(&entries), "{point}");
    let l = &point["latency_ms"];
    assert!(l["p999"].as_f64().unwrap() >= l["p99"].as_f64().unwrap(), "{point}");
    assert_eq!(ok(d, &["log", "list"]).stdout, "", "the bench deletes its logs");

    // A bad rate is a usage error (clap's exit status 2) that says what is wrong, without a panic.
    for (rate, why) in [("0/s", "must be more than zero"), ("fast", "invalid rate `fast`")] {
        let r = woodpecker(d, &["bench", "--rate", rate]);
        assert_eq!(r.code, Some(2), "{}", r.stderr);
        assert!(r.stderr.contains(why) && !r.stderr.contains("panicked"), "{}", r.stderr);
    }
    let r = woodpecker(d, &["bench", "--latency", "--total-bytes", "1MiB"]);
    assert_eq!(r.code, Some(2), "--latency is timed: --total-bytes is a usage error");
}

#[test]
fn a_second_process_on_the_embedded_store_is_told_to_use_etcd() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    ok(d, &["log", "create", "x"]);
    let spawn_tail = || {
        Command::new(env!("CARGO_BIN_EXE_woodpecker"))
            .args(["log", "tail", "x", "--timeout-secs", "30"])
            .current_dir(d)
            .env_remove("WOODPECKER_CONFIG")
            .env_remove("WOODPECKER_DATA_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut tail = spawn_tail();
    // Bounded wait until the tail holds the store; a tail that lost the race for the lock to one of our
    // probes exits, and is started again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let refused = loop {
        let r = woodpecker(d, &["log", "write", "x", "--message", "m"]);
        if !r.ok {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "the tail never took the embedded store");
        if tail.try_wait().unwrap().is_some() {
            tail = spawn_tail();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    tail.kill().unwrap();
    let _ = tail.wait();
    assert_eq!(refused.code, Some(1));
    assert!(!refused.stderr.contains("panicked"));
    assert!(refused.stderr.contains("one process at a time") && refused.stderr.contains("etcd"), "{}", refused.stderr);
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
}
