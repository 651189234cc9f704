//! The service tests' own harness checked where its answer is known: the ack recorder, pump, tail reader
//! and verifying reader on an embedded (local files) log, and the TCP proxy's partition on a real node.

mod cluster;
mod service_client;
use service_client::*;
use std::sync::Arc;
use std::time::Duration;
use woodpecker_client::{Client, Config, LogMessageId};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recorder_tail_and_verifier_agree_on_an_embedded_log_across_rolls() {
    local(async {
        let dir = tempfile::tempdir().unwrap();
        let main = format!(
            "woodpecker:\n  storage:\n    type: local\n    rootPath: {}\n  meta:\n    type: embedded\n",
            dir.path().display()
        );
        let cfg = Config::from_yaml_with_overlay(
            &main,
            "woodpecker:\n  client:\n    segmentRollingPolicy:\n      maxInterval: 1s\n",
        )
        .unwrap();
        let client = Client::open(cfg).await.unwrap();
        client.create_log("l").await.unwrap();
        let log = client.open_log("l").await.unwrap();
        let w = Arc::new(log.open_writer().await.unwrap());
        let acks = Acks::new("w");
        let tail = Tail::start(&log, LogMessageId::EARLIEST, &[&acks]).await;
        let pump = Pump::start(w.clone(), acks.clone(), Duration::from_millis(2), Duration::from_secs(20));
        pump.wait_more_acks(500, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let acks = pump.stop(Duration::from_secs(20)).await;
        tail.wait_read(acks.acked().len(), Duration::from_secs(20)).await;
        let (c, errs) = tail.finish(Duration::from_secs(20)).await;
        eprintln!(
            "tail {} errs {errs} gap {:?} p99 {:?}",
            c.read.len(),
            acks.longest_ack_gap(),
            quantile(&acks.latencies(), 0.99)
        );
        w.close().await.unwrap();
        let c = verify_log_with(&log, &[&acks], Duration::from_secs(30), |c| c.allow_failed = false).await;
        assert_eq!(c.read.len(), acks.acked().len());
        assert!(segments_of(&c.read).len() >= 2, "1 s rolls: several segments {:?}", segments_of(&c.read));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_proxy_holds_requests_without_closing_and_forwards_again_when_healed() {
    let bed = Bed::start_behind_proxies("px", 2).await;
    let n = &bed.cluster.nodes[0];
    let mut c = n.client().await;
    let req = woodpecker_proto::logstore::SelectNodesRequest {
        strategy: 0,
        affinity_mode: 0,
        filters: vec![woodpecker_proto::logstore::NodeFilter { limit: 2, ..Default::default() }],
    };
    let r = c.select_nodes(req.clone()).await.unwrap().into_inner();
    eprintln!("nodes {:?}", r.nodes.iter().map(|n| n.endpoint.clone()).collect::<Vec<_>>());
    n.proxy.as_ref().unwrap().partition(true);
    let t = tokio::time::timeout(Duration::from_secs(2), c.select_nodes(req.clone())).await;
    assert!(t.is_err(), "partitioned request answered");
    n.proxy.as_ref().unwrap().partition(false);
    let r = tokio::time::timeout(Duration::from_secs(5), c.select_nodes(req.clone())).await.expect("healed").unwrap();
    eprintln!("healed ok {}", r.into_inner().nodes.len());
}

/// A message as a reader would return it for write `seq` of `tag` at `id`.
fn message(tag: &str, seq: usize, id: LogMessageId) -> woodpecker_client::LogMessage {
    woodpecker_client::LogMessage {
        id,
        payload: bytes::Bytes::from(format!("{tag}-{seq:08}")),
        properties: Default::default(),
    }
}

fn at(segment_id: i64, entry_id: i64) -> LogMessageId {
    LogMessageId { segment_id, entry_id }
}

/// Two writes acknowledged at (0,0) and (0,1).
fn two_acked() -> Arc<Acks> {
    let acks = Acks::new("w");
    for i in 0..2 {
        let (seq, _) = acks.submit();
        acks.resolve(seq, &Ok(at(0, i)));
    }
    acks
}

#[tokio::test]
#[should_panic(expected = "returned twice")]
async fn the_checker_fails_an_entry_returned_twice() {
    let acks = two_acked();
    let mut c = Checker::new("t", &[&acks]);
    c.check(&message("w", 0, at(0, 0))).await;
    c.check(&message("w", 0, at(0, 0))).await;
}

#[tokio::test]
#[should_panic(expected = "out of order")]
async fn the_checker_fails_entries_out_of_order() {
    let acks = two_acked();
    let mut c = Checker::new("t", &[&acks]);
    c.check(&message("w", 1, at(0, 1))).await;
    c.check(&message("w", 0, at(0, 0))).await;
}

#[tokio::test]
#[should_panic(expected = "was acknowledged at")]
async fn the_checker_fails_an_entry_at_another_position_than_its_ack() {
    let acks = two_acked();
    let mut c = Checker::new("t", &[&acks]);
    c.check(&message("w", 0, at(1, 0))).await;
}

#[tokio::test]
#[should_panic(expected = "before it is acknowledged")]
async fn the_checker_fails_an_entry_returned_before_its_ack() {
    let acks = two_acked();
    let (seq, _) = acks.submit();
    let mut c = Checker::new("t", &[&acks]);
    c.grace = Duration::from_millis(50);
    c.check(&message("w", 0, at(0, 0))).await;
    c.check(&message("w", seq, at(0, 2))).await;
}

#[tokio::test]
#[should_panic(expected = "although its write failed")]
async fn the_checker_fails_a_failed_write_where_none_may_appear() {
    let acks = two_acked();
    let (seq, _) = acks.submit();
    acks.resolve(seq, &Err(woodpecker_client::WoodpeckerError::EmptyMessage));
    let mut c = Checker::new("t", &[&acks]);
    c.allow_failed = false;
    c.check(&message("w", seq, at(0, 2))).await;
}

#[tokio::test]
async fn the_checker_reports_acknowledged_entries_not_read() {
    let acks = two_acked();
    let mut c = Checker::new("t", &[&acks]);
    c.check(&message("w", 0, at(0, 0))).await;
    assert_eq!(c.missing(), vec!["w-00000001@0/1".to_owned()]);
}
