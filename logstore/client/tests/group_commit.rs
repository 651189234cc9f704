//! Group commit: a lone write is flushed at once (it waits for one upload or one write+fsync, not for the
//! sync timer); entries that arrive while a block is in flight share the next block; `maxInterval` still
//! bounds a block that never fills.
//!
//! The sync timer is set to an hour where it must not matter, so a write that waited for it would time
//! the test out instead of passing slowly. The object-storage cases run against the etcd + MinIO test
//! bed, with a fault proxy in front of MinIO that holds chosen block uploads.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fault_proxy::{Action, FaultProxy, Hold, Rule};
use common::{bed_config, bed_config_via, bed_minio_hostport, local_config, unique};
use woodpecker_client::{Client, Config, LogHandle, LogMessageId, WriteMessage};

/// Both sync timers at one hour.
const NO_TIMER: &str = "woodpecker:\n  logstore:\n    segmentSyncPolicy:\n      maxInterval: 3600000\n      \
                        maxIntervalForLocalStorage: 3600000\n";

/// How long a write may take here before the test calls it stuck (an hour-long timer is unmistakable).
const PROMPT: Duration = Duration::from_secs(20);

fn message(i: usize) -> WriteMessage {
    // Longer than the proxy rules' `min_body`, so a block's upload is told from a one-byte fence object.
    WriteMessage::new(format!("entry-{i:04}-{}", "x".repeat(100)))
}

async fn lone_writes_are_acknowledged_promptly(cfg: Config, log_name: &str) {
    let client = Client::open(cfg).await.unwrap();
    client.create_log(log_name).await.unwrap();
    let log = client.open_log(log_name).await.unwrap();
    let writer = log.open_writer().await.unwrap();
    for i in 0..3 {
        let id = tokio::time::timeout(PROMPT, writer.write(message(i)))
            .await
            .unwrap_or_else(|_| panic!("write {i} waited for the sync timer (maxInterval is an hour)"))
            .unwrap();
        // Each write was alone, so each went in a block of its own.
        assert_eq!(id, LogMessageId::new(0, i as i64));
    }
    writer.close().await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn a_lone_entry_is_flushed_without_waiting_for_the_sync_timer_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    lone_writes_are_acknowledged_promptly(local_config(dir.path(), NO_TIMER), "lone").await;
}

#[tokio::test]
async fn a_lone_entry_is_flushed_without_waiting_for_the_sync_timer_on_minio() {
    let root = unique("lone");
    lone_writes_are_acknowledged_promptly(bed_config(&root, NO_TIMER), "lone").await;
}

/// Block uploads (PUTs of `<root>/<log>/0/<block>.blk` with a body) the proxy has seen.
fn block_puts(proxy: &FaultProxy, root: &str, log_id: i64) -> Vec<String> {
    let prefix = format!("{root}/{log_id}/0/");
    proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "PUT" && s.path.contains(&prefix) && s.path.ends_with(".blk"))
        .map(|s| s.path.rsplit('/').next().unwrap_or_default().to_owned())
        .collect()
}

async fn wait_held(hold: &Hold, n: usize, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while hold.held() < n {
        assert!(tokio::time::Instant::now() < deadline, "{n} uploads not at the proxy within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client of a fresh log named `tag` behind a fault proxy that holds the upload of block 0 of segment 0
/// until the returned gate is released.
async fn log_with_block_0_held(tag: &str, extra: &str) -> (String, FaultProxy, Client, LogHandle, Arc<Hold>) {
    let root = unique(tag);
    let proxy = FaultProxy::start(&bed_minio_hostport()).await;
    let client = Client::open(bed_config_via(&root, extra, &proxy.addr.to_string())).await.unwrap();
    client.create_log(tag).await.unwrap();
    let log = client.open_log(tag).await.unwrap();
    let hold = Hold::new();
    proxy.add_rule(Rule {
        method: "PUT",
        path_contains: format!("{root}/{}/0/0.blk", log.id()),
        min_body: 64,
        times: 1,
        action: Action::Hold(hold.clone()),
    });
    (root, proxy, client, log, hold)
}

#[tokio::test]
async fn entries_arriving_during_a_flush_share_the_next_block() {
    let (root, proxy, client, log, hold) = log_with_block_0_held("group", NO_TIMER).await;
    let writer = log.open_writer().await.unwrap();
    let first = writer.write_async(message(0)).await.unwrap();
    // The lone entry goes at once, as block 0, and is held at the proxy.
    wait_held(&hold, 1, PROMPT).await;
    let mut rest = Vec::new();
    for i in 1..10 {
        rest.push(writer.write_async(message(i)).await.unwrap());
    }
    // While block 0 is in flight nothing else is cut (the block is far from full, the timer is an hour).
    tokio::time::sleep(Duration::from_millis(300)).await;
    // (The proxy records a request once it is answered: the held block 0 is not listed yet.)
    assert_eq!(block_puts(&proxy, &root, log.id()), Vec::<String>::new(), "nothing was uploaded behind block 0");
    assert_eq!(hold.held(), 1);
    hold.release();
    assert_eq!(
        tokio::time::timeout(PROMPT, first).await.expect("block 0 acknowledged").unwrap(),
        LogMessageId::new(0, 0)
    );
    for (i, f) in rest.into_iter().enumerate() {
        let id = tokio::time::timeout(PROMPT, f).await.expect("the next block is cut when block 0 is done").unwrap();
        assert_eq!(id, LogMessageId::new(0, i as i64 + 1));
    }
    // The nine that waited went together, in one block.
    assert_eq!(block_puts(&proxy, &root, log.id()), ["0.blk", "1.blk"]);
    writer.close().await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn max_interval_still_bounds_a_block_that_never_fills() {
    let timer = "woodpecker:\n  logstore:\n    segmentSyncPolicy:\n      maxInterval: 200\n";
    // Block 0 is held for as long as the test wants; block 1 must still be cut behind it, by the timer.
    let (root, proxy, client, log, hold) = log_with_block_0_held("bound", timer).await;
    let writer = log.open_writer().await.unwrap();
    let first = writer.write_async(message(0)).await.unwrap();
    wait_held(&hold, 1, PROMPT).await;
    let second = writer.write_async(message(1)).await.unwrap();
    let deadline = tokio::time::Instant::now() + PROMPT;
    while !block_puts(&proxy, &root, log.id()).iter().any(|b| b == "1.blk") {
        assert!(tokio::time::Instant::now() < deadline, "block 1 was not cut behind a held block 0 by maxInterval");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hold.release();
    assert_eq!(tokio::time::timeout(PROMPT, first).await.unwrap().unwrap(), LogMessageId::new(0, 0));
    assert_eq!(tokio::time::timeout(PROMPT, second).await.unwrap().unwrap(), LogMessageId::new(0, 1));
    writer.close().await.unwrap();
    client.close().await;
}
