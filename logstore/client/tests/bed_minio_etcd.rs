//! The embedded client against a real etcd and a real MinIO (scripts/testbed.sh).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{bed_config, payload, read_n, unique};
use woodpecker_client::{Client, LogMessageId, WoodpeckerError, WriteMessage};
use woodpecker_storage::object::{ObjectStorage, S3ObjectStorage, S3Options};

/// 2 MiB segments of 64 KiB blocks: 100,000 entries of ~100 bytes roll several times.
const ROLLING: &str = "woodpecker:\n  client:\n    segmentRollingPolicy:\n      maxSize: 2M\n  logstore:\n    segmentSyncPolicy:\n      maxFlushSize: 64K\n    retentionPolicy:\n      ttl: 1\n";

async fn object_store() -> Arc<dyn ObjectStorage> {
    let endpoint = std::env::var("WP_MINIO_ENDPOINT").expect("WP_MINIO_ENDPOINT (run the test bed)");
    let opts = S3Options {
        endpoint,
        bucket: std::env::var("WP_MINIO_BUCKET").expect("WP_MINIO_BUCKET"),
        access_key: std::env::var("WP_MINIO_ACCESS_KEY").expect("WP_MINIO_ACCESS_KEY"),
        secret_key: std::env::var("WP_MINIO_SECRET_KEY").expect("WP_MINIO_SECRET_KEY"),
        region: "us-east-1".into(),
        create_bucket: true,
        condition_write: true,
        ..S3Options::default()
    };
    Arc::new(S3ObjectStorage::connect(opts).await.expect("connect to MinIO"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_async_entries_across_rolls_read_back_in_order() {
    let root = unique("bulk");
    let client = Client::open(bed_config(&root, ROLLING)).await.unwrap();
    assert!(client.uses_condition_write(), "MinIO honours If-None-Match; the probe must say so");
    client.create_log("bulk").await.unwrap();
    let log = client.open_log("bulk").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    const N: usize = 100_000;
    let mut pending = std::collections::VecDeque::new();
    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        pending.push_back(
            writer.write_async(WriteMessage::new(format!("{}-{}", payload(i), "x".repeat(80)))).await.unwrap(),
        );
        if pending.len() >= 20_000 {
            ids.push(pending.pop_front().unwrap().await.unwrap());
        }
    }
    for f in pending {
        ids.push(f.await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    writer.close().await.unwrap();
    let segments = log.segments().await.unwrap();
    assert!(segments.len() >= 4, "expected at least 3 rolls, got {} segments", segments.len());

    let mut reader = log.open_reader(LogMessageId::EARLIEST, "all").await.unwrap();
    let all = read_n(&mut reader, N, Duration::from_secs(120)).await;
    for (i, m) in all.iter().enumerate() {
        assert_eq!(m.id, ids[i], "position of entry {i}");
        assert!(m.payload.starts_with(payload(i).as_bytes()), "payload of entry {i}");
    }
    reader.close().await.unwrap();
    let mut mid = log.open_reader(ids[N / 2], "mid").await.unwrap();
    let rest = read_n(&mut mid, N / 2, Duration::from_secs(120)).await;
    assert_eq!(rest[0].id, ids[N / 2]);
    assert_eq!(rest.last().unwrap().id, ids[N - 1]);
    mid.close().await.unwrap();
}

#[tokio::test]
async fn tailing_reader_sees_new_entries() {
    let root = unique("tail");
    let client = Client::open(bed_config(&root, "")).await.unwrap();
    client.create_log("tail").await.unwrap();
    let log = client.open_log("tail").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    writer.write(WriteMessage::new("old")).await.unwrap();
    let mut reader = log.open_reader(LogMessageId::LATEST, "tail").await.unwrap();
    let w = tokio::spawn(async move {
        for i in 0..20 {
            writer.write(WriteMessage::new(payload(i))).await.unwrap();
        }
        writer
    });
    let got = read_n(&mut reader, 20, Duration::from_secs(30)).await;
    assert_eq!(got[0].payload, payload(0).as_bytes());
    assert_eq!(got[19].payload, payload(19).as_bytes());
    w.await.unwrap().close().await.unwrap();
    reader.close().await.unwrap();
}

#[tokio::test]
async fn truncate_and_cleanup_remove_objects_then_delete_removes_everything() {
    let root = unique("gc");
    let client = Client::open(bed_config(&root, ROLLING)).await.unwrap();
    client.create_log("gc").await.unwrap();
    let log = client.open_log("gc").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    let mut futs = Vec::new();
    for i in 0..30_000 {
        futs.push(writer.write_async(WriteMessage::new(format!("{}{}", payload(i), "y".repeat(90)))).await.unwrap());
    }
    let mut ids = Vec::new();
    for f in futs {
        ids.push(f.await.unwrap());
    }
    writer.close().await.unwrap();
    let cut = ids[25_000];
    assert!(cut.segment_id >= 1, "the cut must leave whole segments behind it: {cut}");
    log.truncate(cut).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    log.run_maintenance().await.unwrap();
    log.run_maintenance().await.unwrap();
    let store = object_store().await;
    for seg in 0..cut.segment_id {
        let prefix = format!("{root}/{}/{seg}/", log.id());
        let left = store.list(&prefix).await.unwrap();
        assert!(left.is_empty(), "objects of truncated segment {seg} remain: {left:?}");
    }
    let mut r = log.open_reader(LogMessageId::EARLIEST, "after").await.unwrap();
    let first = read_n(&mut r, 1, Duration::from_secs(10)).await;
    assert_eq!(first[0].id, ids[25_001]);
    r.close().await.unwrap();

    client.delete_log("gc").await.unwrap();
    assert!(!client.log_exists("gc").await.unwrap());
    let left = store.list(&format!("{root}/{}/", log.id())).await.unwrap();
    assert!(left.is_empty(), "objects remain after delete: {} e.g. {:?}", left.len(), left.first());
}

#[tokio::test]
async fn second_writer_fences_first_with_condition_write() {
    let root = unique("fence");
    let client_a = Client::open(bed_config(&root, "")).await.unwrap();
    let client_b = Client::open(bed_config(&root, "")).await.unwrap();
    client_a.create_log("f").await.unwrap();
    let a = client_a.open_log("f").await.unwrap().open_writer().await.unwrap();
    let mut acked = vec![a.write(WriteMessage::new("a0")).await.unwrap()];
    acked.push(a.write(WriteMessage::new("a1")).await.unwrap());
    let log_b = client_b.open_log("f").await.unwrap();
    let b = log_b.open_writer().await.unwrap();
    let e = a.write(WriteMessage::new("a2")).await.unwrap_err();
    assert!(e.is_writer_lost(), "the fenced writer must fail: {e}");
    let started = std::time::Instant::now();
    let e2 = a.write(WriteMessage::new("a3")).await.unwrap_err();
    assert!(e2.is_writer_lost() && started.elapsed() < Duration::from_millis(100), "fail fast: {e2}");
    acked.push(b.write(WriteMessage::new("b0")).await.unwrap());
    b.close().await.unwrap();
    let mut r = log_b.open_reader(LogMessageId::EARLIEST, "check").await.unwrap();
    let got = read_n(&mut r, 3, Duration::from_secs(10)).await;
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), acked);
    assert_eq!(&got[2].payload[..], b"b0");
    r.close().await.unwrap();
}

#[tokio::test]
async fn without_condition_write_the_etcd_lock_keeps_one_writer() {
    let root = unique("lock");
    let cfg = "woodpecker:\n  logstore:\n    fencePolicy:\n      conditionWrite: disable\n";
    let client_a = Client::open(bed_config(&root, cfg)).await.unwrap();
    let client_b = Client::open(bed_config(&root, cfg)).await.unwrap();
    assert!(!client_a.uses_condition_write());
    client_a.create_log("l").await.unwrap();
    let log_a = client_a.open_log("l").await.unwrap();
    let a = log_a.open_writer().await.unwrap();
    a.write(WriteMessage::new("a0")).await.unwrap();
    let e = client_b.open_log("l").await.unwrap().open_writer().await.unwrap_err();
    assert!(matches!(e, WoodpeckerError::LockHeld { .. }), "{e}");
    a.write(WriteMessage::new("a1")).await.unwrap();
    a.close().await.unwrap();
    // Released on close: the other client can now write and sees both entries.
    let log_b = client_b.open_log("l").await.unwrap();
    let b = log_b.open_writer().await.unwrap();
    b.write(WriteMessage::new("b0")).await.unwrap();
    b.close().await.unwrap();
    let mut r = log_b.open_reader(LogMessageId::EARLIEST, "check").await.unwrap();
    let got = read_n(&mut r, 3, Duration::from_secs(10)).await;
    let payloads: Vec<_> = got.iter().map(|m| String::from_utf8_lossy(&m.payload).to_string()).collect();
    assert_eq!(payloads, ["a0", "a1", "b0"]);
    r.close().await.unwrap();
}

#[tokio::test]
async fn flipped_byte_in_a_block_object_fails_the_read_naming_the_object() {
    let root = unique("flip");
    let client = Client::open(bed_config(&root, "")).await.unwrap();
    client.create_log("flip").await.unwrap();
    let log = client.open_log("flip").await.unwrap();
    let w = log.open_writer().await.unwrap();
    for i in 0..50 {
        w.write_async(WriteMessage::new(payload(i))).await.unwrap();
    }
    w.close().await.unwrap();
    let store = object_store().await;
    let key = format!("{root}/{}/0/0.blk", log.id());
    let mut bytes = store.get(&key, None).await.unwrap().to_vec();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x20;
    store.put(&key, bytes.into()).await.unwrap();
    let mut r = log.open_reader(LogMessageId::EARLIEST, "flip").await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), r.read_next())
        .await
        .expect("a corrupted block must fail the read, not hang")
        .expect_err("a corrupted block must not be returned");
    let text = err.to_string();
    assert!(text.contains(&key), "error must name the object: {text}");
}

#[tokio::test]
async fn unreachable_etcd_and_s3_fail_with_clear_errors() {
    let root = unique("down");
    let mut cfg = bed_config(&root, "");
    cfg.etcd.endpoints = vec!["127.0.0.1:1".into()];
    let started = std::time::Instant::now();
    let e = Client::open(cfg).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30), "bounded: {:?}", started.elapsed());
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");

    let mut cfg = bed_config(&root, "");
    cfg.minio.port = 1;
    cfg.minio.address = "127.0.0.1".into();
    let started = std::time::Instant::now();
    let e = Client::open(cfg).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(60), "bounded: {:?}", started.elapsed());
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
}

#[tokio::test]
async fn compaction_merges_completed_segments_and_reads_are_unchanged() {
    let root = unique("compact");
    let cfg = "woodpecker:\n  client:\n    segmentRollingPolicy:\n      maxSize: 256K\n  logstore:\n    segmentSyncPolicy:\n      maxFlushSize: 8K\n    segmentCompactionPolicy:\n      maxBytes: 128K\n";
    let client = Client::open(bed_config(&root, cfg)).await.unwrap();
    client.create_log("c").await.unwrap();
    let log = client.open_log("c").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    let mut futs = Vec::new();
    for i in 0..6000 {
        futs.push(writer.write_async(WriteMessage::new(format!("{}{}", payload(i), "c".repeat(100)))).await.unwrap());
    }
    let mut ids = Vec::new();
    for f in futs {
        ids.push(f.await.unwrap());
    }
    writer.close().await.unwrap();
    let report = log.run_maintenance().await.unwrap();
    let segments = log.segments().await.unwrap();
    assert!(!report.compacted.is_empty(), "nothing compacted: {report:?}");
    assert!(
        segments.iter().all(|s| s.state == woodpecker_proto::meta::SegmentState::Sealed),
        "every completed segment is sealed after compaction: {segments:?}"
    );
    let store = object_store().await;
    let objects = store.list(&format!("{root}/{}/0/", log.id())).await.unwrap();
    assert!(objects.iter().any(|o| o.key.ends_with("m_0.blk")), "merged blocks exist: {objects:?}");
    assert!(!objects.iter().any(|o| o.key.ends_with("/1.blk")), "original blocks are removed: {objects:?}");
    let mut r = log.open_reader(LogMessageId::EARLIEST, "after-compaction").await.unwrap();
    let got = read_n(&mut r, 6000, Duration::from_secs(60)).await;
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.id, ids[i]);
        assert!(m.payload.starts_with(payload(i).as_bytes()));
    }
    r.close().await.unwrap();
}

#[tokio::test]
async fn writer_whose_etcd_lock_is_revoked_fails_fast_with_lock_lost() {
    let root = unique("lost");
    let cfg = "woodpecker:\n  logstore:\n    fencePolicy:\n      conditionWrite: disable\n";
    let client = Client::open(bed_config(&root, cfg)).await.unwrap();
    client.create_log("l").await.unwrap();
    let log = client.open_log("l").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    let first = writer.write(WriteMessage::new("kept")).await.unwrap();

    // Revoke the session lease behind the lock, as an expired session or an operator would.
    let endpoints = std::env::var("WP_ETCD_ENDPOINTS").unwrap();
    let mut etcd = etcd_client::Client::connect([endpoints.as_str()], None).await.unwrap();
    let prefix = format!("{root}/woodpecker/logs/l/lock/");
    let keys = etcd.get(prefix.as_str(), Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    let kv = keys.kvs().first().expect("the writer holds a lock key");
    etcd.lease_revoke(kv.lease()).await.unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let err = loop {
        match writer.write(WriteMessage::new("after")).await {
            Err(e) => break e,
            Ok(_) if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(_) => panic!("writes still succeed 20 s after the lock's lease was revoked"),
        }
    };
    assert!(matches!(err, WoodpeckerError::LockLost { .. }), "{err}");
    let again = writer.write(WriteMessage::new("again")).await.unwrap_err();
    assert!(matches!(again, WoodpeckerError::LockLost { .. }), "fails fast afterwards: {again}");
    drop(writer);
    // A new writer takes over and the acknowledged entry is still there.
    let w2 = log.open_writer().await.unwrap();
    w2.write(WriteMessage::new("new")).await.unwrap();
    w2.close().await.unwrap();
    let mut r = log.open_reader(LogMessageId::EARLIEST, "check").await.unwrap();
    let got = read_n(&mut r, 1, Duration::from_secs(10)).await;
    assert_eq!((got[0].id, &got[0].payload[..]), (first, &b"kept"[..]));
    r.close().await.unwrap();
}
