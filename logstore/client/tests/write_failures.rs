//! What a writer acknowledges when storage fails under it: acknowledgements always form a prefix of
//! what was written, and what was acknowledged is exactly what readers get.
//!
//! These run against the etcd + MinIO test bed, with a fault proxy in front of MinIO.

mod common;

use std::time::Duration;

use common::fault_proxy::{Action, FaultProxy, Rule};
use common::{bed_config_via, bed_minio_hostport, read_n, unique};
use hyper::StatusCode;
use woodpecker_client::{Client, LogMessageId, WoodpeckerError, WriteMessage};

/// Small blocks, many in flight, few retries: a failing block is decided quickly.
const SMALL_BLOCKS: &str = "woodpecker:\n  logstore:\n    segmentSyncPolicy:\n      maxFlushSize: 1K\n      \
                            maxFlushRetries: 2\n      retryInterval: 10\n";

#[tokio::test]
async fn acknowledgements_form_a_prefix_after_an_upload_failure() {
    let root = unique("prefix");
    let proxy = FaultProxy::start(&bed_minio_hostport()).await;
    let client = Client::open(bed_config_via(&root, SMALL_BLOCKS, &proxy.addr.to_string())).await.unwrap();
    client.create_log("p").await.unwrap();
    let log = client.open_log("p").await.unwrap();
    // Every upload of block 3 of segment 0 fails; the fence object the writer then puts at the same key
    // (one byte) goes through.
    proxy.add_rule(Rule {
        method: "PUT",
        path_contains: format!("{root}/{}/0/3.blk", log.id()),
        min_body: 64,
        times: usize::MAX,
        action: Action::Fail(StatusCode::SERVICE_UNAVAILABLE),
    });
    let writer = log.open_writer().await.unwrap();
    let mut futures = Vec::new();
    for i in 0..300 {
        let msg = WriteMessage::new(format!("entry-{i:04}-{}", "x".repeat(120)));
        match writer.write_async(msg).await {
            Ok(f) => futures.push(f),
            Err(e) => {
                assert!(e.is_writer_lost(), "a refused write says the writer is lost: {e}");
                break;
            }
        }
    }
    let mut acked = Vec::new();
    let mut failed = 0;
    for (i, f) in futures.into_iter().enumerate() {
        match f.await {
            Ok(id) => {
                assert_eq!(failed, 0, "entry {i} was acknowledged after an earlier entry failed");
                acked.push((id, i));
            }
            Err(e) => {
                assert!(
                    matches!(&e, WoodpeckerError::WriterClosed { reason, .. } if reason.contains("upload failed")),
                    "{e}"
                );
                failed += 1;
            }
        }
    }
    assert!(
        !acked.is_empty() && failed > 0,
        "blocks 0-2 succeed, the rest fail: {} acked, {failed} failed",
        acked.len()
    );
    let late = writer.write(WriteMessage::new("late")).await.expect_err("the writer is lost after a failure");
    assert!(late.is_writer_lost(), "{late}");
    drop(writer);

    // A new writer goes on after the sealed end; readers get exactly the acknowledged entries, then its.
    proxy.clear();
    let next = log.open_writer().await.unwrap();
    let after = next.write(WriteMessage::new("after")).await.unwrap();
    next.close().await.unwrap();
    let mut r = log.open_reader(LogMessageId::EARLIEST, "check").await.unwrap();
    let got = read_n(&mut r, acked.len() + 1, Duration::from_secs(20)).await;
    for (m, (id, i)) in got.iter().zip(&acked) {
        assert_eq!(m.id, *id);
        assert!(m.payload.starts_with(format!("entry-{i:04}-").as_bytes()));
    }
    assert_eq!((got[acked.len()].id, &got[acked.len()].payload[..]), (after, &b"after"[..]));
    r.close().await.unwrap();
    client.close().await;
}

const ONE_BLOCK_SEGMENTS: &str = "woodpecker:\n  client:\n    segmentRollingPolicy:\n      maxBlocks: 1\n";

async fn wait_until_completed(log: &woodpecker_client::LogHandle, segment: i64, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let segments = log.segments().await.unwrap();
        if segments.iter().any(|s| s.id == segment && s.state != woodpecker_proto::meta::SegmentState::Active) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "segment {segment} not completed within {limit:?}: {segments:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_failed_seal_is_retried_until_the_segment_is_completed() {
    let root = unique("seal-retry");
    let proxy = FaultProxy::start(&bed_minio_hostport()).await;
    let client = Client::open(bed_config_via(&root, ONE_BLOCK_SEGMENTS, &proxy.addr.to_string())).await.unwrap();
    client.create_log("s").await.unwrap();
    let log = client.open_log("s").await.unwrap();
    // The seal of segment 0 starts with a fence object at block 1: it fails for as long as the rule stays.
    let fence = format!("{root}/{}/0/1.blk", log.id());
    proxy.add("PUT", fence.clone(), usize::MAX, Action::Fail(StatusCode::SERVICE_UNAVAILABLE));
    let writer = log.open_writer().await.unwrap();
    let e0 = writer.write(WriteMessage::new("e0")).await.unwrap();
    let e1 = writer.write(WriteMessage::new("e1")).await.unwrap();
    assert_eq!(e1.segment_id, 1, "segment 0 rolled");
    // Several whole seal attempts fail (each one retried inside the storage layer too)...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while proxy.seen().iter().filter(|s| s.path.ends_with(&fence)).count() < 10 {
        assert!(tokio::time::Instant::now() < deadline, "the seal was not retried: {:?}", proxy.seen());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(log.segments().await.unwrap()[0].state, woodpecker_proto::meta::SegmentState::Active);
    // ...and once storage answers again, the segment is completed without a new writer.
    proxy.clear();
    wait_until_completed(&log, 0, Duration::from_secs(30)).await;
    writer.close().await.unwrap();
    let mut r = log.open_reader(LogMessageId::EARLIEST, "check").await.unwrap();
    let got = read_n(&mut r, 2, Duration::from_secs(10)).await;
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), [e0, e1]);
    r.close().await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn readers_do_not_stall_on_a_segment_whose_seal_is_held() {
    use common::fault_proxy::Hold;
    let root = unique("seal-held");
    let proxy = FaultProxy::start(&bed_minio_hostport()).await;
    let client = Client::open(bed_config_via(&root, ONE_BLOCK_SEGMENTS, &proxy.addr.to_string())).await.unwrap();
    client.create_log("h").await.unwrap();
    let log = client.open_log("h").await.unwrap();
    // The seal of segment 0 starts with a fence object at block 1: held, it keeps segment 0 Active with no
    // fence for readers to find.
    let hold = Hold::new();
    proxy.add("PUT", format!("{root}/{}/0/1.blk", log.id()), 1, Action::Hold(hold.clone()));
    let writer = log.open_writer().await.unwrap();
    let e0 = writer.write(WriteMessage::new("e0")).await.unwrap();
    let e1 = writer.write(WriteMessage::new("e1")).await.unwrap();
    assert_eq!(e1.segment_id, 1, "segment 0 rolled");
    let segments = log.segments().await.unwrap();
    assert_eq!(segments[0].state, woodpecker_proto::meta::SegmentState::Active, "its seal is held: {segments:?}");

    // A reader from the start reads through segment 0 although it is not sealed: segment 1 exists.
    let mut r = log.open_reader(LogMessageId::EARLIEST, "early").await.unwrap();
    let got = read_n(&mut r, 2, Duration::from_secs(5)).await;
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), [e0, e1]);
    r.close().await.unwrap();
    hold.release();
    wait_until_completed(&log, 0, Duration::from_secs(20)).await;
    writer.close().await.unwrap();
    client.close().await;
}

/// The write buffer bounds memory for tiny entries too: while uploads are held, `write_async` stops
/// taking entries once their bytes and bookkeeping fill `maxBytes`.
#[tokio::test]
async fn the_write_buffer_counts_the_bookkeeping_of_tiny_entries() {
    use common::fault_proxy::Hold;
    let root = unique("budget");
    let proxy = FaultProxy::start(&bed_minio_hostport()).await;
    let cfg = "woodpecker:\n  client:\n    maxEntrySize: 4K\n  logstore:\n    segmentSyncPolicy:\n      maxBytes: 64K\n      maxFlushSize: 4K\n";
    let client = Client::open(bed_config_via(&root, cfg, &proxy.addr.to_string())).await.unwrap();
    client.create_log("b").await.unwrap();
    let log = client.open_log("b").await.unwrap();
    let hold = Hold::new();
    proxy.add_rule(Rule {
        method: "PUT",
        path_contains: format!("{root}/{}/0/", log.id()),
        min_body: 16,
        times: usize::MAX,
        action: Action::Hold(hold.clone()),
    });
    let writer = log.open_writer().await.unwrap();
    let mut futures = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(300), writer.write_async(WriteMessage::new("x"))).await {
            Ok(f) => futures.push(f.unwrap()),
            Err(_) => break,
        }
        assert!(futures.len() < 5_000, "64 KB of budget took {} one-byte entries", futures.len());
    }
    // Each entry costs ~130 B of memory besides its 3 encoded bytes: 64 KB hold about 500 of them.
    assert!((300..=1_000).contains(&futures.len()), "{} entries fit in 64 KB", futures.len());
    hold.release();
    proxy.clear();
    for f in futures {
        f.await.unwrap();
    }
    writer.close().await.unwrap();
    client.close().await;
}
