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
