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
/// `log_a` and `log_b` are the log as A's and B's clients see it (the same client on the embedded store,
/// whose directory one process opens once).
async fn second_writer_fences_first_after_a_roll(log_a: &LogHandle, log_b: &LogHandle) {
    let a = log_a.open_writer().await.unwrap();
    let one = a.write(WriteMessage::new("one")).await.unwrap();
    wait_for_no_active_segment(log_a).await;

    let b = log_b.open_writer().await.unwrap();
    let err = a.write(WriteMessage::new("two")).await.expect_err("the first writer was fenced by the second");
    assert!(matches!(err, WoodpeckerError::WriterFenced { .. }), "got {err}");
    let again = a.write(WriteMessage::new("two again")).await.expect_err("still fenced");
    assert!(again.is_writer_lost(), "{again}");
    let three = b.write(WriteMessage::new("three")).await.expect("the second writer, which opened last, writes");
    assert!(three > one);
    b.close().await.unwrap();
    assert_eq!(payloads_from_the_start(log_b, 2).await, [(one, "one".to_owned()), (three, "three".to_owned())]);
}

/// Two clients on one log, as two processes would open it.
async fn two_clients(cfg_a: Config, cfg_b: Config) -> (Client, LogHandle, Client, LogHandle) {
    let client_a = Client::open(cfg_a).await.unwrap();
    client_a.create_log("roll").await.unwrap();
    let log_a = client_a.open_log("roll").await.unwrap();
    let client_b = Client::open(cfg_b).await.unwrap();
    let log_b = client_b.open_log("roll").await.unwrap();
    (client_a, log_a, client_b, log_b)
}

#[tokio::test]
async fn second_writer_fences_first_after_a_roll_on_the_zero_setup_default() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(local_config(dir.path(), ONE_BLOCK_SEGMENTS)).await.unwrap();
    client.create_log("roll").await.unwrap();
    let log = client.open_log("roll").await.unwrap();
    second_writer_fences_first_after_a_roll(&log, &log).await;
    client.close().await;
}

#[tokio::test]
async fn second_writer_fences_first_after_a_roll_on_local_files_with_two_clients() {
    let dir = tempfile::tempdir().unwrap();
    let root = unique("roll-local");
    let cfg = || common::local_files_etcd_config(dir.path(), &root, ONE_BLOCK_SEGMENTS);
    let (client_a, log_a, client_b, log_b) = two_clients(cfg(), cfg()).await;
    second_writer_fences_first_after_a_roll(&log_a, &log_b).await;
    client_a.close().await;
    client_b.close().await;
}

#[tokio::test]
async fn second_writer_fences_first_after_a_roll_on_minio_with_condition_write() {
    let root = unique("roll-cw");
    let cfg = || bed_config(&root, ONE_BLOCK_SEGMENTS);
    let (client_a, log_a, client_b, log_b) = two_clients(cfg(), cfg()).await;
    second_writer_fences_first_after_a_roll(&log_a, &log_b).await;
    client_a.close().await;
    client_b.close().await;
}

/// Lock mode (conditional writes off), the worst interleaving: writer A's PUT of block 1 is held in the
/// network while A's lease is revoked and writer B takes over, and it lands after B fenced the segment.
/// B must not fence before A's uploads are over, A must not acknowledge the held entry, and readers get
/// exactly the acknowledged entries.
#[tokio::test]
async fn lock_mode_takeover_while_a_put_is_held_loses_no_acknowledged_entry() {
    use common::fault_proxy::{Action, FaultProxy, Hold, Rule};
    let root = unique("lock-late");
    let proxy = FaultProxy::start(&common::bed_minio_hostport()).await;
    // A 3 s session and a 1.5 s upload bound keep the takeover wait (TTL + bound) short.
    let cfg = format!(
        "{LOCK_MODE}      lockUploadTimeout: 1500\n  client:\n    sessionMonitor:\n      sessionTtl: 3\n      checkInterval: 1\n"
    );
    let client_a = Client::open(common::bed_config_via(&root, &cfg, &proxy.addr.to_string())).await.unwrap();
    assert!(!client_a.uses_condition_write());
    client_a.create_log("l").await.unwrap();
    let log_a = client_a.open_log("l").await.unwrap();
    let a = log_a.open_writer().await.unwrap();
    let a0 = a.write(WriteMessage::new("a0")).await.unwrap();

    let hold = Hold::new();
    proxy.add_rule(Rule {
        method: "PUT",
        path_contains: format!("{root}/{}/0/1.blk", log_a.id()),
        min_body: 16,
        times: 1,
        action: Action::Hold(hold.clone()),
    });
    let a1 = a.write_async(WriteMessage::new("a1")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hold.held() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "block 1 never reached the proxy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Revoke A's session lease, as an expired session would end it: B can take the lock at once.
    let endpoints = std::env::var("WP_ETCD_ENDPOINTS").unwrap();
    let mut etcd = etcd_client::Client::connect([endpoints.as_str()], None).await.unwrap();
    let prefix = format!("{root}/woodpecker/logs/l/lock/");
    let keys = etcd.get(prefix.as_str(), Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    etcd.lease_revoke(keys.kvs().first().expect("A holds the lock").lease()).await.unwrap();

    let client_b = Client::open(bed_config(&root, &cfg)).await.unwrap();
    let log_b = client_b.open_log("l").await.unwrap();
    let opened = std::time::Instant::now();
    let b = log_b.open_writer().await.unwrap();
    let waited = opened.elapsed();
    // B fenced segment 0; now A's held PUT of block 1 lands, late, on top of whatever B put there.
    hold.release();
    while hold.landed() == 0 {
        assert!(tokio::time::Instant::now() < deadline + Duration::from_secs(20), "the held PUT never landed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = a1.await.expect_err("the held entry must not be acknowledged: B may have fenced before it landed");
    assert!(err.is_writer_lost(), "{err}");
    assert!(waited >= Duration::from_millis(4000), "B fenced after {waited:?}, before A's uploads could be over");

    let b0 = b.write(WriteMessage::new("b0")).await.unwrap();
    b.close().await.unwrap();
    assert_eq!(payloads_from_the_start(&log_b, 2).await, [(a0, "a0".to_owned()), (b0, "b0".to_owned())]);
    // Nothing else is readable: the late block is not part of the log.
    let mut r = log_b.open_reader(LogMessageId::EARLIEST, "after").await.unwrap();
    let got = read_n(&mut r, 2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2);
    assert!(tokio::time::timeout(Duration::from_millis(500), r.read_next()).await.is_err(), "an entry beyond b0");
    r.close().await.unwrap();
    drop(a);
    client_a.close().await;
    client_b.close().await;
}
