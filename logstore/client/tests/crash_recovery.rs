//! A writer process killed with SIGKILL mid-stream: a new writer recovers the log; every acknowledged
//! entry is readable, nothing that was never written shows up, and writing continues.
//!
//! The child is this test binary re-run with `WP_CRASH_CHILD` set: it writes until it is killed and
//! prints one line per acknowledgement.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{bed_config, local_config, payload, unique};
use woodpecker_client::{Client, Config, LogMessageId, WriteMessage};

const CHILD_ENV: &str = "WP_CRASH_CHILD_CONFIG";
const SMALL: &str = "woodpecker:\n  client:\n    segmentRollingPolicy:\n      maxSize: 256K\n  logstore:\n    segmentSyncPolicy:\n      maxFlushSize: 16K\n";

/// Not a test of its own: the body of the child process (ignored in normal runs).
#[tokio::test]
#[ignore = "runs only as the child process of the crash tests"]
async fn crash_child_writer() {
    let Ok(yaml) = std::env::var(CHILD_ENV) else { return };
    let cfg = Config::from_yaml_str(&yaml).expect("child config");
    let client = Client::open(cfg).await.expect("child client");
    client.create_log_if_absent("crash").await.expect("create");
    let log = client.open_log("crash").await.expect("open");
    let writer = log.open_writer().await.expect("writer");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let printer = tokio::spawn(async move {
        use std::io::Write;
        while let Some(f) = rx.recv().await {
            let (i, f): (usize, woodpecker_client::AppendFuture) = f;
            let id = f.await.expect("child write failed");
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ACK {i} {} {}", id.segment_id, id.entry_id);
            let _ = out.flush();
        }
    });
    for i in 0.. {
        let f = writer.write_async(WriteMessage::new(payload(i))).await.expect("queue");
        if tx.send((i, f)).is_err() {
            break;
        }
    }
    let _ = printer.await;
}

fn run_child_and_kill(yaml: &str, acks_before_kill: usize) -> Vec<(usize, LogMessageId)> {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["--exact", "crash_child_writer", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, yaml)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child writer");
    let stdout = child.stdout.take().expect("child stdout");
    let mut acks = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while acks.len() < acks_before_kill {
        assert!(std::time::Instant::now() < deadline, "child acknowledged only {} entries in time", acks.len());
        let Some(Ok(line)) = lines.next() else { panic!("child exited after {} acks", acks.len()) };
        if let Some(rest) = line.strip_prefix("ACK ") {
            let f: Vec<i64> = rest.split(' ').map(|x| x.parse().expect("ack line")).collect();
            acks.push((f[0] as usize, LogMessageId::new(f[1], f[2])));
        }
    }
    child.kill().expect("SIGKILL child"); // Child::kill sends SIGKILL on Unix
    let _ = child.wait();
    // Acks printed before the kill but not yet read are acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("ACK ") {
            let f: Vec<i64> = rest.split(' ').filter_map(|x| x.parse().ok()).collect();
            if f.len() == 3 {
                acks.push((f[0] as usize, LogMessageId::new(f[1], f[2])));
            }
        }
    }
    acks
}

async fn recover_and_check(cfg: Config, acks: Vec<(usize, LogMessageId)>) {
    let client = Client::open(cfg).await.expect("client after crash");
    let log = client.open_log("crash").await.unwrap();
    let writer = log.open_writer().await.expect("a new writer recovers the crashed segment");
    let after = writer.write(WriteMessage::new("after-crash")).await.expect("writing continues");
    writer.close().await.unwrap();

    let mut reader = log.open_reader(LogMessageId::EARLIEST, "verify").await.unwrap();
    let mut read = Vec::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), reader.read_next())
            .await
            .expect("reading the recovered log must not stall")
            .expect("read");
        if m.id == after {
            assert_eq!(&m.payload[..], b"after-crash");
            break;
        }
        read.push(m);
    }
    // Everything visible is exactly a prefix of what the child submitted, in order, without gaps.
    for (i, m) in read.iter().enumerate() {
        assert_eq!(m.payload, payload(i).as_bytes(), "entry {i} at {}", m.id);
    }
    // Every acknowledged entry is there, at its acknowledged position.
    let max_acked = acks.iter().map(|(i, _)| *i).max().expect("some acks");
    assert!(read.len() > max_acked, "acknowledged entry {max_acked} lost: only {} readable", read.len());
    for (i, id) in &acks {
        assert_eq!(read[*i].id, *id, "entry {i} moved");
    }
    reader.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writer_on_local_storage_recovers_every_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "woodpecker:\n  storage:\n    type: local\n    rootPath: {}\n  meta:\n    type: embedded\n  client:\n    segmentRollingPolicy:\n      maxSize: 256K\n  logstore:\n    segmentSyncPolicy:\n      maxFlushSize: 16K\n",
        dir.path().display()
    );
    let acks = run_child_and_kill(&yaml, 20_000);
    recover_and_check(local_config(dir.path(), SMALL), acks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writer_on_minio_recovers_every_acknowledged_entry() {
    let root = unique("crash");
    let cfg = bed_config(&root, SMALL);
    let yaml = cfg.to_commented_yaml().expect("render child config");
    let acks = run_child_and_kill(&yaml, 20_000);
    recover_and_check(cfg, acks).await;
}
