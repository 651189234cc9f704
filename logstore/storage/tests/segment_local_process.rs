//! Fencing a local segment from another process: the writer is a child process appending blocks in a
//! loop; the parent fences. Exclusion then rests only on `write.fence` and the flock on `write.lock`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use woodpecker_storage::segment::local::LocalSegmentBackend;
use woodpecker_storage::segment::{BlockToWrite, SegmentBackend, SegmentError, SegmentRef};

const SEG: SegmentRef = SegmentRef { log_id: 11, segment_id: 0 };
const DIR_ENV: &str = "WP_LOCAL_SEGMENT_WRITER_DIR";

fn backend(dir: &Path) -> LocalSegmentBackend {
    LocalSegmentBackend::new(dir.to_path_buf(), "wal".into())
}

/// Body of the child writer process; run only by the test below.
#[tokio::test]
#[ignore = "helper process for fence_from_another_process"]
async fn writer_process() {
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("started by fence_from_another_process"));
    let b = backend(&dir);
    let w = b.create_writer(SEG).await.unwrap();
    let mut first = 0i64;
    for id in 0..1_000_000i64 {
        let n = 1 + (id % 4) as usize;
        let entries = (0..n).map(|i| Bytes::from(format!("child-{id}-{i}")).into()).collect();
        match w.write_block(BlockToWrite { block_id: id, first_entry_id: first, entries }).await {
            Ok(()) => {
                first += n as i64;
                // Printed only after the block is acknowledged.
                println!("ack {}", first - 1);
            }
            Err(SegmentError::Fenced { .. }) => {
                println!("fenced");
                return;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    panic!("never fenced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_from_another_process() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "writer_process", "--ignored", "--nocapture", "--test-threads=1"])
            .env(DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let wait_for = 5 + round * 20;
        // Read acks on a thread; tell the test once `wait_for` blocks are acknowledged.
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        let lines = std::thread::spawn(move || {
            let mut seen_tx = Some(seen_tx);
            let mut out = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                if line.starts_with("ack ") || line == "fenced" {
                    out.push(line);
                }
                if out.len() == wait_for
                    && let Some(tx) = seen_tx.take()
                {
                    let _ = tx.send(());
                }
            }
            out
        });
        tokio::time::timeout(std::time::Duration::from_secs(60), seen_rx).await.unwrap().unwrap();
        let b = backend(dir.path());
        let fenced = b.fence(SEG).await.unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "child writer failed: {status}");
        let lines = lines.join().unwrap();
        assert_eq!(lines.last().map(String::as_str), Some("fenced"), "the child saw the fence");
        let last_ack: i64 =
            lines.iter().rev().find_map(|l| l.strip_prefix("ack ")).map(|n| n.parse().unwrap()).unwrap();
        assert_eq!(fenced, last_ack, "round {round}: fence returns exactly the last acknowledged entry");
        let s = b.finalize(SEG).await.unwrap();
        assert_eq!(s.last_entry_id, fenced);
        let mut r = b.open_reader(SEG).await.unwrap();
        let mut next = 0;
        loop {
            let batch = r.read_batch(next, 1000, u64::MAX).await.unwrap();
            for (id, _) in &batch.entries {
                assert_eq!(*id, next);
                next += 1;
            }
            if batch.end_of_segment {
                break;
            }
        }
        assert_eq!(next - 1, fenced);
    }
}
