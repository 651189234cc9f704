//! Object segment format against the test bed's real MinIO (conditional PUTs, fence metadata, ranged GETs on the wire).
//!
//! Needs `WP_MINIO_ENDPOINT`, `WP_MINIO_ACCESS_KEY`, `WP_MINIO_SECRET_KEY`, `WP_MINIO_BUCKET`:
//! `scripts/testbed.sh start && eval "$(scripts/testbed.sh env)"`. Without them every test fails with that
//! instruction; nothing is skipped silently.

#[path = "segment_object_scenarios.rs"]
mod scenarios;

use std::sync::Arc;

use woodpecker_storage::object::{CloudProvider, ObjectStorage, S3ObjectStorage, S3Options};
use woodpecker_storage::segment::object::{ObjectSegmentBackend, ObjectSegmentOptions};
use woodpecker_storage::segment::{SegmentBackend, SegmentRef};

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: these tests need the real MinIO of the test bed; run \
             `scripts/testbed.sh install && scripts/testbed.sh start && eval \"$(scripts/testbed.sh env)\"` first"
        ),
    }
}

/// A fresh root in the test bed's MinIO, a config for the upstream Go interop binary rendered for it (kept
/// in the returned directory), the store and a segment backend on that root.
async fn go_interop_bed(
    prefix: &str,
) -> (String, tempfile::TempDir, String, Arc<dyn ObjectStorage>, ObjectSegmentBackend) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let root = format!("{prefix}-{}-{nanos}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wp.yaml").to_str().unwrap().to_owned();
    let testbed = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/testbed.sh");
    let status = std::process::Command::new(testbed).args(["render-config", &config, &root, &root]).status().unwrap();
    assert!(status.success(), "render-config");
    let store = minio().await;
    let b = ObjectSegmentBackend::new(store.clone(), root.clone(), ObjectSegmentOptions::default());
    (root, dir, config, store, b)
}

async fn minio() -> Arc<dyn ObjectStorage> {
    let opts = S3Options {
        endpoint: env("WP_MINIO_ENDPOINT"),
        bucket: env("WP_MINIO_BUCKET"),
        access_key: env("WP_MINIO_ACCESS_KEY"),
        secret_key: env("WP_MINIO_SECRET_KEY"),
        region: std::env::var("WP_MINIO_REGION").unwrap_or_default(),
        cloud_provider: CloudProvider::Minio,
        create_bucket: true,
        ..S3Options::default()
    };
    Arc::new(S3ObjectStorage::connect(opts).await.expect("connect to the test bed's MinIO"))
}

/// An object root no other test (or earlier run) uses; removed afterwards.
fn unique_root(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("segment-object-tests/{test}-{}-{nanos}", std::process::id())
}

/// Runs a scenario under a fresh root and removes the root afterwards, also when the scenario panics.
async fn run<F, Fut>(test: &str, f: F)
where
    F: FnOnce(Arc<dyn ObjectStorage>, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let store = minio().await;
    let root = unique_root(test);
    let outcome = tokio::spawn(f(store.clone(), root.clone())).await;
    store.remove_prefix(&format!("{root}/")).await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn minio_round_trip() {
    run("round-trip", |s, r| async move { scenarios::round_trip(s, &r).await }).await;
}

#[tokio::test]
async fn minio_gap_hides_later_blocks() {
    run("gap", |s, r| async move { scenarios::gap_hides_later_blocks(s, &r).await }).await;
}

#[tokio::test]
async fn minio_fence_after_crash_with_gap() {
    run("crash-gap", |s, r| async move { scenarios::fence_after_crash_with_gap(s, &r).await }).await;
}

#[tokio::test]
async fn minio_fence_empty() {
    run("fence-empty", |s, r| async move { scenarios::fence_empty(s, &r).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minio_fence_race_sequential_writer() {
    run("race-seq", |s, r| async move { scenarios::fence_race(s, &r, 5, 1).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minio_fence_race_parallel_writer() {
    run("race-par", |s, r| async move { scenarios::fence_race(s, &r, 5, 8).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minio_tail_reader_follows_parallel_writer() {
    run("tail", |s, r| async move { scenarios::tail_reader_follows_parallel_writer(s, &r).await }).await;
}

#[tokio::test]
async fn minio_corrupt_block_is_reported() {
    run("corrupt", |s, r| async move { scenarios::corrupt_block_is_reported(s, &r).await }).await;
}

#[tokio::test]
async fn minio_compaction_round_trip() {
    run("compaction", |s, r| async move { scenarios::compaction_round_trip(s, &r).await }).await;
}

#[tokio::test]
async fn minio_delete_log() {
    run("delete-log", |s, r| async move { scenarios::delete_log(s, &r).await }).await;
}

// ---- interop with upstream Go woodpecker v0.1.35 (wp-interop) on the same MinIO ----

/// Payload wp-interop writes for entry `i`: `entry-<i>` padded to `size` with `'a' + (i + j) % 26`.
fn go_payload(i: i64, size: usize) -> Vec<u8> {
    let mut p = format!("entry-{i}").into_bytes();
    let mut j = 0i64;
    while p.len() < size {
        p.push(b'a' + ((i + j) % 26) as u8);
        j += 1;
    }
    p
}

/// Runs wp-interop with `args`; returns its stdout lines.
fn wp_interop(args: &[&str]) -> Vec<String> {
    let bin = env("WP_INTEROP_BIN");
    let out = std::process::Command::new(&bin).args(args).output().expect("run wp-interop");
    assert!(
        out.status.success(),
        "wp-interop {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// Reads segment `seg` of `log` and checks it holds wp-interop's entries `0..count`.
async fn check_go_entries(b: &ObjectSegmentBackend, log: i64, seg: i64, count: i64, size: usize, end: bool) {
    use prost::Message;
    let mut r = b.open_reader(SegmentRef { log_id: log, segment_id: seg }).await.unwrap();
    let (got, at_end) = scenarios::read_all(r.as_mut(), 0, 64).await.unwrap();
    assert_eq!(at_end, end);
    assert_eq!(got.len() as i64, count);
    for (id, bytes) in got {
        let layout = woodpecker_proto::logstore::LogMessageLayout::decode(bytes).unwrap();
        assert_eq!(layout.payload, go_payload(id, size), "entry {id}");
        assert_eq!(layout.properties.get("idx").map(String::as_str), Some(id.to_string().as_str()));
    }
}

/// Log id of the only log under `root` (upstream assigns ids from etcd).
async fn only_log_id(store: &Arc<dyn ObjectStorage>, root: &str) -> i64 {
    let listed = store.list(&format!("{root}/")).await.unwrap();
    let ids: std::collections::BTreeSet<i64> = listed
        .iter()
        .filter_map(|o| o.key.strip_prefix(&format!("{root}/"))?.split('/').next()?.parse().ok())
        .collect();
    assert_eq!(ids.len(), 1, "one log under {root}: {ids:?}");
    ids.into_iter().next().unwrap()
}

#[tokio::test]
async fn minio_interop_with_upstream_go() {
    let (root, _dir, config, store, b) = go_interop_bed("segobj-go").await;
    let config = config.as_str();

    // 1. Go writer crashes after 300 acked entries (6 blocks, no footer): we read, fence, finalize.
    let lines = wp_interop(&[
        "write",
        "--config",
        config,
        "--log",
        "crashy",
        "--count",
        "300",
        "--window",
        "50",
        "--payload-size",
        "40",
        "--crash",
    ]);
    assert_eq!(lines.len(), 300);
    let log = only_log_id(&store, &root).await;
    check_go_entries(&b, log, 0, 300, 40, false).await;
    let s = SegmentRef { log_id: log, segment_id: 0 };
    assert_eq!(b.fence(s).await.unwrap(), 299);
    let sum = b.finalize(s).await.unwrap();
    assert_eq!(sum.last_entry_id, 299);
    check_go_entries(&b, log, 0, 300, 40, true).await;

    // 2. Upstream's reader reads the segment we fenced and finalized (our fence object and footer).
    let read =
        wp_interop(&["read", "--config", config, "--log", "crashy", "--count", "300", "--verify", "--timeout", "60s"]);
    assert_eq!(read.len(), 300);

    // 3. We compact it; upstream's reader still reads it (merged blocks, compacted footer).
    b.compact(s).await.unwrap();
    check_go_entries(&b, log, 0, 300, 40, true).await;
    let read =
        wp_interop(&["read", "--config", config, "--log", "crashy", "--count", "300", "--verify", "--timeout", "60s"]);
    assert_eq!(read.len(), 300);

    store.remove_prefix(&format!("{root}/")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minio_upstream_go_reads_blocks_we_write() {
    use prost::Message;
    let (root, _dir, config, store, b) = go_interop_bed("segobj-go-w").await;
    let config = config.as_str();

    // Upstream creates the log and an Active segment 0 in etcd; we replace its objects by our own writer's.
    wp_interop(&["write", "--config", config, "--log", "ours", "--count", "3", "--crash"]);
    let log = only_log_id(&store, &root).await;
    let s = SegmentRef { log_id: log, segment_id: 0 };
    b.delete_segment(s).await.unwrap();
    let w = b.create_writer(s).await.unwrap();
    let entry = |i: i64| {
        let layout = woodpecker_proto::logstore::LogMessageLayout {
            payload: go_payload(i, 48).into(),
            properties: [("idx".to_owned(), i.to_string()), ("src".to_owned(), "go".to_owned())].into(),
        };
        bytes::Bytes::from(layout.encode_to_vec())
    };
    let blocks: Vec<_> = (0..3i64)
        .map(|n| woodpecker_storage::segment::BlockToWrite {
            block_id: n,
            first_entry_id: n * 40,
            entries: (n * 40..n * 40 + 40).map(|i| entry(i).into()).collect(),
        })
        .collect();
    futures::future::try_join_all(blocks.into_iter().map(|bl| w.write_block(bl))).await.unwrap();

    // Open segment (no footer): upstream's reader discovers our blocks.
    let read =
        wp_interop(&["read", "--config", config, "--log", "ours", "--count", "120", "--verify", "--timeout", "60s"]);
    assert_eq!(read.len(), 120);
    // Finalized by our writer (fence object + footer): upstream reads it too.
    assert_eq!(w.finalize(2).await.unwrap().last_entry_id, 119);
    let read =
        wp_interop(&["read", "--config", config, "--log", "ours", "--count", "120", "--verify", "--timeout", "60s"]);
    assert_eq!(read.len(), 120);

    store.remove_prefix(&format!("{root}/")).await.unwrap();
}
