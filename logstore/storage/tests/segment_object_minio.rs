//! Object segment format against the test bed's real MinIO (conditional PUTs, fence metadata, ranged GETs on the wire).
//!
//! Needs `WP_MINIO_ENDPOINT`, `WP_MINIO_ACCESS_KEY`, `WP_MINIO_SECRET_KEY`, `WP_MINIO_BUCKET`:
//! `scripts/testbed.sh start && eval "$(scripts/testbed.sh env)"`. Without them every test fails with that
//! instruction; nothing is skipped silently.

#[path = "segment_object_scenarios.rs"]
mod scenarios;

use std::sync::Arc;

use woodpecker_storage::object::{CloudProvider, ObjectStorage, S3ObjectStorage, S3Options};

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: these tests need the real MinIO of the test bed; run \
             `scripts/testbed.sh install && scripts/testbed.sh start && eval \"$(scripts/testbed.sh env)\"` first"
        ),
    }
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
