//! One writer means one writer: a later writer fences every earlier one, in every storage and fence
//! mode, whatever the earlier writer was doing when the later one opened.
//!
//! Local files run everywhere; the MinIO cases need the etcd + MinIO test bed (`scripts/testbed.sh`).

mod common;

use std::time::Duration;

use common::{bed_config, local_config, read_n, unique};
use woodpecker_client::{Client, Config, LogHandle, LogMessageId, WoodpeckerError, WriteMessage};
use woodpecker_proto::meta::SegmentState;

/// One block per segment: every acknowledged block rolls the segment, and the roll completes it.
const ONE_BLOCK_SEGMENTS: &str = "woodpecker:\n  client:\n    segmentRollingPolicy:\n      maxBlocks: 1\n";
const LOCK_MODE: &str = "woodpecker:\n  logstore:\n    fencePolicy:\n      conditionWrite: disable\n";

/// Waits until no segment of the log is Active (the last roll's completion has been written).
async fn wait_for_no_active_segment(log: &LogHandle) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let segments = log.segments().await.unwrap();
        if !segments.is_empty() && segments.iter().all(|s| s.state != SegmentState::Active) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "a segment is still active after 10 s: {segments:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn payloads_from_the_start(log: &LogHandle, n: usize) -> Vec<(LogMessageId, String)> {
    let mut r = log.open_reader(LogMessageId::EARLIEST, &unique("check")).await.unwrap();
    let got = read_n(&mut r, n, Duration::from_secs(20)).await;
    r.close().await.unwrap();
    got.into_iter().map(|m| (m.id, String::from_utf8_lossy(&m.payload).into_owned())).collect()
}

/// Writer A's segment rolls and completes, so no segment is Active when B opens: B must still fence A.
async fn second_writer_fences_first_after_a_roll(cfg_a: Config, cfg_b: Config) {
    let client_a = Client::open(cfg_a).await.unwrap();
    client_a.create_log("roll").await.unwrap();
    let log_a = client_a.open_log("roll").await.unwrap();
    let a = log_a.open_writer().await.unwrap();
    let one = a.write(WriteMessage::new("one")).await.unwrap();
    wait_for_no_active_segment(&log_a).await;

    let client_b = Client::open(cfg_b).await.unwrap();
    let log_b = client_b.open_log("roll").await.unwrap();
    let b = log_b.open_writer().await.unwrap();
    let err = a.write(WriteMessage::new("two")).await.expect_err("the first writer was fenced by the second");
    assert!(matches!(err, WoodpeckerError::WriterFenced { .. }), "got {err}");
    let again = a.write(WriteMessage::new("two again")).await.expect_err("still fenced");
    assert!(again.is_writer_lost(), "{again}");
    let three = b.write(WriteMessage::new("three")).await.expect("the second writer, which opened last, writes");
    assert!(three > one);
    b.close().await.unwrap();
    assert_eq!(payloads_from_the_start(&log_b, 2).await, [(one, "one".to_owned()), (three, "three".to_owned())]);
    drop(a);
    client_a.close().await;
    client_b.close().await;
}

#[tokio::test]
async fn second_writer_fences_first_after_a_roll_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    // Two clients of one process share the embedded store (a second open of its directory is refused), so
    // the second writer is opened through the same client; the fence does not depend on that.
    let cfg = local_config(dir.path(), ONE_BLOCK_SEGMENTS);
    let client = Client::open(cfg).await.unwrap();
    client.create_log("roll").await.unwrap();
    let log = client.open_log("roll").await.unwrap();
    let a = log.open_writer().await.unwrap();
    let one = a.write(WriteMessage::new("one")).await.unwrap();
    wait_for_no_active_segment(&log).await;
    let b = log.open_writer().await.unwrap();
    let err = a.write(WriteMessage::new("two")).await.expect_err("the first writer was fenced by the second");
    assert!(matches!(err, WoodpeckerError::WriterFenced { .. }), "got {err}");
    let three = b.write(WriteMessage::new("three")).await.expect("the second writer, which opened last, writes");
    b.close().await.unwrap();
    assert_eq!(payloads_from_the_start(&log, 2).await, [(one, "one".to_owned()), (three, "three".to_owned())]);
}

#[tokio::test]
async fn second_writer_fences_first_after_a_roll_on_minio_with_condition_write() {
    let root = unique("roll-cw");
    second_writer_fences_first_after_a_roll(
        bed_config(&root, ONE_BLOCK_SEGMENTS),
        bed_config(&root, ONE_BLOCK_SEGMENTS),
    )
    .await;
}
