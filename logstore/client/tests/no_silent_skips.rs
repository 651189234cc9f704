//! Readers and writers never skip data silently: a missing segment, an undecodable entry, a lost
//! writer all give typed errors, and keep giving them.
//!
//! Local segment files with metadata in the test bed's etcd, so the test can change the metadata and
//! the files under a client the way a damaged deployment would.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{local_files_etcd_config, unique};
use woodpecker_client::{Client, LogMessageId, WoodpeckerError, WriteMessage};
use woodpecker_meta::{EtcdOptions, MetadataStore};
use woodpecker_proto::meta::{SegmentMetadata, SegmentState};
use woodpecker_storage::segment::local::LocalSegmentBackend;
use woodpecker_storage::segment::{BlockToWrite, EntryBytes, SegmentBackend, SegmentRef};

const ONE_BLOCK_SEGMENTS: &str = "woodpecker:\n  client:\n    segmentRollingPolicy:\n      maxBlocks: 1\n";

async fn bed_store(root: &str) -> MetadataStore {
    let endpoints = std::env::var("WP_ETCD_ENDPOINTS").expect("the etcd test bed (scripts/testbed.sh)");
    let endpoints: Vec<&str> = endpoints.split(',').collect();
    MetadataStore::open_etcd(&endpoints, root, "woodpecker", &EtcdOptions::default()).await.unwrap()
}

#[tokio::test]
async fn a_segment_missing_above_the_truncation_point_is_an_error_not_a_skip() {
    let dir = tempfile::tempdir().unwrap();
    let root = unique("missing-seg");
    let client = Client::open(local_files_etcd_config(dir.path(), &root, ONE_BLOCK_SEGMENTS)).await.unwrap();
    client.create_log("m").await.unwrap();
    let log = client.open_log("m").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    for i in 0..3 {
        writer.write(WriteMessage::new(format!("e{i}"))).await.unwrap();
    }
    writer.close().await.unwrap();
    assert!(log.segments().await.unwrap().len() >= 3);
    // Segment 1's metadata disappears although nothing was truncated.
    bed_store(&root).await.delete_segment("m", 1).await.unwrap();

    let mut reader = log.open_reader(LogMessageId::EARLIEST, "r").await.unwrap();
    assert_eq!(&reader.read_next().await.unwrap().payload[..], b"e0");
    for _ in 0..2 {
        let err = tokio::time::timeout(Duration::from_secs(10), reader.read_next())
            .await
            .expect("an error, not a wait")
            .expect_err("segment 1 is missing: skipping to segment 2 would lose e1 silently");
        assert!(err.to_string().contains("segment 1"), "names the missing segment: {err}");
    }
    reader.close().await.unwrap();

    // Below the truncation point a removed segment is expected, and the reader moves on.
    log.truncate(LogMessageId::new(2, 0)).await.unwrap();
    let mut from_one = log.open_reader(LogMessageId::new(1, 0), "r2").await.unwrap();
    assert_eq!(&from_one.read_next().await.unwrap().payload[..], b"e2");
    from_one.close().await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn an_undecodable_entry_is_reported_on_every_read_and_never_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let root = unique("bad-entry");
    let cfg = local_files_etcd_config(dir.path(), &root, "");
    let client = Client::open(cfg.clone()).await.unwrap();
    client.create_log("b").await.unwrap();
    let log = client.open_log("b").await.unwrap();
    // Segment 0 holds a good entry, one whose LogMessageLayout is cut short (its CRCs are valid), and a
    // good one, as a buggy or foreign writer could leave it.
    let good = |s: &str| EntryBytes::new(WriteMessage::new(s.to_owned()).encode());
    let entries = vec![good("first"), EntryBytes::new(Bytes::from_static(&[0x0a, 50, 1])), good("third")];
    let backend = LocalSegmentBackend::new(dir.path().to_path_buf(), cfg.minio.root_path.clone());
    let seg = SegmentRef { log_id: log.id(), segment_id: 0 };
    let w = backend.create_writer(seg).await.unwrap();
    w.write_block(BlockToWrite { block_id: 0, first_entry_id: 0, entries }).await.unwrap();
    let summary = w.finalize(0).await.unwrap();
    let meta = SegmentMetadata {
        seg_no: 0,
        state: SegmentState::Completed as i32,
        last_entry_id: summary.last_entry_id,
        size: summary.size as i64,
        ..Default::default()
    };
    bed_store(&root).await.create_segment("b", &meta).await.unwrap();

    let mut reader = log.open_reader(LogMessageId::EARLIEST, "r").await.unwrap();
    assert_eq!(&reader.read_next().await.unwrap().payload[..], b"first");
    for _ in 0..3 {
        let err = reader.read_next().await.expect_err("entry 0/1 cannot be decoded");
        assert!(
            matches!(&err, WoodpeckerError::BadEntry { position, .. } if *position == LogMessageId::new(0, 1)),
            "the same entry, every time: {err}"
        );
        assert_eq!(reader.position(), LogMessageId::new(0, 1));
    }
    reader.close().await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn closing_a_fenced_writer_says_it_was_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let root = unique("close-fenced");
    let client = Client::open(local_files_etcd_config(dir.path(), &root, "")).await.unwrap();
    client.create_log("c").await.unwrap();
    let log = client.open_log("c").await.unwrap();
    let first = log.open_writer().await.unwrap();
    first.write(WriteMessage::new("one")).await.unwrap();
    let second = log.open_writer().await.unwrap();
    first.write(WriteMessage::new("two")).await.expect_err("fenced");
    let err = first.close().await.expect_err("the first writer did not complete its segment: close must say so");
    assert!(matches!(err, WoodpeckerError::WriterFenced { .. }), "{err}");
    second.close().await.unwrap();
    second.close().await.expect("closing twice is fine");
    client.close().await;
}

/// `truncate` past what an Active segment holds would hide entries written after it, unread; a reader at
/// `LATEST` starts right after the durable end, found from block headers.
#[tokio::test]
async fn truncating_past_the_written_end_of_an_active_segment_is_refused_and_latest_starts_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let root = unique("trunc-end");
    let configs = [
        ("local files", local_files_etcd_config(dir.path(), &root, "")),
        ("MinIO", common::bed_config(&format!("{root}-minio"), "")),
    ];
    for (what, cfg) in configs {
        let client = Client::open(cfg).await.unwrap();
        client.create_log("t").await.unwrap();
        let log = client.open_log("t").await.unwrap();
        let writer = log.open_writer().await.unwrap();
        for i in 0..3 {
            writer.write(WriteMessage::new(format!("e{i}"))).await.unwrap();
        }
        let err = log.truncate(LogMessageId::new(0, 5)).await.expect_err("entries 3..=5 do not exist yet");
        assert!(matches!(err, WoodpeckerError::InvalidPosition { .. }), "{what}: {err}");
        assert!(err.to_string().contains("up to 2"), "{what}: {err}");
        log.truncate(LogMessageId::new(0, 1)).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut reader = log.open_reader(LogMessageId::LATEST, "latest").await.unwrap();
        writer.write(WriteMessage::new("after")).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(20), reader.read_next()).await.expect("in time").unwrap();
        assert_eq!((m.id, m.payload.as_ref()), (LogMessageId::new(0, 3), &b"after"[..]), "{what}");
        reader.close().await.unwrap();
        writer.close().await.unwrap();
        client.close().await;
    }
}
