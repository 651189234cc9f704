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
