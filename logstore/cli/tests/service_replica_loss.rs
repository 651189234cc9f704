//! Losing replicas while writing, as issue 12 requires of our client (where upstream stalls or hangs):
//! a replica killed -9 mid-stream costs no stall and comes back into use; with no spare node writes go
//! on at the ack quorum and fail fast below it; a replica partitioned away (connections open, nothing
//! answered) does not hold writes for upstream's 30 s. Figures are printed (`--nocapture`).

mod cluster;
mod service_client;

use std::sync::Arc;
use std::time::{Duration, Instant};

use service_client::{Acks, Bed, Pump, close_writer, quantile, verify_log, within, write_acked, write_one};

const WRITE: Duration = Duration::from_secs(45);
const READ: Duration = Duration::from_secs(60);

/// Longest time without any acknowledgement that still counts as "no stall" while one replica of
/// three dies (the other two are the ack quorum and keep answering in milliseconds).
const NO_STALL: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replica_killed_mid_stream_writes_continue_without_stall_and_the_restarted_node_is_used_again() {
    let mut bed = Bed::start("kill9", 3).await;
    // Segments roll every 3 s, so "the next roll" after the restart comes soon.
    let roll = "woodpecker:\n  client:\n    segmentRollingPolicy:\n      maxInterval: 3s\n";
    let client = bed.client(3, roll).await;
    let log = bed.log(&client, "kill9").await;
    let writer = Arc::new(within(WRITE, "open_writer", log.open_writer()).await.expect("open writer"));
    let acks = Acks::new("w");
    let pump = Pump::start(writer.clone(), acks.clone(), Duration::from_millis(5), WRITE);
    pump.wait_more_acks(200, Duration::from_secs(30)).await;
    let seg = acks.acked().last().unwrap().1.segment_id;
    let victim = bed.quorum("kill9", seg).await[0].clone();
    let killed = Instant::now();
    bed.node(&victim).kill();
    pump.wait_more_acks(300, Duration::from_secs(20)).await;
    let gap_while_down = acks.longest_ack_gap();
    bed.node(&victim).restart(false);
    bed.wait_members(3, Duration::from_secs(20)).await;
    let back = bed.last_segment("kill9").await.unwrap_or(0);
    // The next segment created after the node is back must have it in its ensemble (3 nodes, es=3).
    let deadline = Instant::now() + Duration::from_secs(30);
    let reused_in = loop {
        let last = bed.last_segment("kill9").await.unwrap_or(0);
        if last > back {
            let q = bed.quorum("kill9", last).await;
            if q.contains(&victim) {
                break last;
            }
            assert_eq!(q.len(), 3, "segment {last} created after the node came back must have a full ensemble: {q:?}");
        }
        assert!(Instant::now() < deadline, "no segment uses the restarted node {victim} within 30 s (last {last})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let acks = pump.stop(WRITE).await;
    let gap = acks.longest_ack_gap();
    let lat = acks.latencies();
    eprintln!(
        "kill -9 mid-stream: {} acknowledged, {} failed, longest ack gap {gap:?} (while down {gap_while_down:?}), \
         p50 {:?} p99 {:?} max {:?}; node back in segment {reused_in} {:?} after the kill",
        acks.acked().len(),
        acks.failed().len(),
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        lat.last().copied().unwrap_or_default(),
        killed.elapsed()
    );
    assert!(
        acks.failed().is_empty(),
        "no write fails when one replica of three dies: {:?}",
        &acks.failed()[..acks.failed().len().min(3)]
    );
    assert!(gap <= NO_STALL, "writes stalled: {gap:?} without an acknowledgement (bound {NO_STALL:?})");
    close_writer(&writer).await.expect("close");
    verify_log(&log, &[&acks], READ).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_spare_node_writes_continue_at_ack_quorum_and_fail_fast_below_it() {
    let mut bed = Bed::start("nospare", 3).await;
    let client = bed.client(3, "").await;
    let log = bed.log(&client, "nospare").await;
    let writer = within(WRITE, "open_writer", log.open_writer()).await.expect("open writer");
    let acks = Acks::new("w");
    write_acked(&writer, &acks, 5, WRITE).await;
    let q = bed.quorum("nospare", 0).await;
    bed.node(&q[0]).kill();
    // Degraded: two replicas left, the ack quorum. Each write still answers in seconds, not a hang.
    let started = Instant::now();
    for _ in 0..10 {
        let t = Instant::now();
        let r = write_one(&writer, &acks, WRITE).await;
        assert!(r.is_ok(), "with 2 of 3 replicas alive (aq=2) writes go on: {r:?}");
        assert!(t.elapsed() < Duration::from_secs(10), "a degraded write took {:?}", t.elapsed());
    }
    eprintln!("10 degraded writes in {:?}", started.elapsed());
    // Below the ack quorum: the write fails, in bounded time, saying why.
    bed.node(&q[1]).kill();
    let t = Instant::now();
    let err = write_one(&writer, &acks, WRITE).await.expect_err("one replica of three cannot acknowledge (aq=2)");
    let took = t.elapsed();
    let text = err.to_string();
    eprintln!("below the ack quorum: failed after {took:?}: {text}");
    assert!(took < Duration::from_secs(20), "failing below the ack quorum took {took:?}: fail fast, not hang");
    let lower = text.to_lowercase();
    assert!(
        lower.contains("quorum") || (lower.contains("needs 2") && lower.contains("replicas")),
        "the error must say the ack quorum (2 replicas) is lost: {text}"
    );
    let t = Instant::now();
    let again = write_one(&writer, &acks, WRITE).await;
    assert!(again.is_err(), "still below the ack quorum: {again:?}");
    assert!(t.elapsed() < Duration::from_secs(20), "the next write also fails fast, took {:?}", t.elapsed());
    // Nodes back: a new writer recovers the log; every acknowledged entry is there.
    drop(writer);
    bed.restart_together(&q[..2]);
    bed.wait_members(3, Duration::from_secs(20)).await;
    let w2 = within(WRITE, "open_writer after the outage", log.open_writer()).await.expect("recover");
    close_writer(&w2).await.expect("close");
    verify_log(&log, &[&acks], READ).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_replica_does_not_stall_writes() {
    let mut bed = Bed::start_behind_proxies("partition", 4).await;
    let client = bed.client(3, "").await;
    let log = bed.log(&client, "partition").await;
    let writer = Arc::new(within(WRITE, "open_writer", log.open_writer()).await.expect("open writer"));
    let acks = Acks::new("w");
    let pump = Pump::start(writer.clone(), acks.clone(), Duration::from_millis(5), WRITE);
    pump.wait_more_acks(200, Duration::from_secs(30)).await;
    let seg = acks.acked().last().unwrap().1.segment_id;
    let victim = bed.quorum("partition", seg).await[0].clone();
    let before = acks.submitted();
    let proxy = bed.node(&victim).proxy.clone().expect("nodes are behind proxies");
    proxy.partition(true);
    let cut = Instant::now();
    // Keep writing for 8 s of partition.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = acks.submitted();
    proxy.partition(false);
    pump.wait_more_acks(100, Duration::from_secs(30)).await;
    let acks = pump.stop(WRITE).await;
    let gap = acks.longest_ack_gap();
    // Latencies of the writes submitted during the partition.
    let lat = acks.latencies_in(before..during);
    let p99 = quantile(&lat, 0.99);
    eprintln!(
        "partition of {victim} for {:?}: {} writes submitted during it, {} acknowledged in all, {} failed; \
         longest ack gap {gap:?}; p50 {:?} p99 {p99:?} max {:?}",
        cut.elapsed(),
        during - before,
        acks.acked().len(),
        acks.failed().len(),
        quantile(&lat, 0.5),
        lat.last().copied().unwrap_or_default()
    );
    assert!(during - before > 100, "the writer kept submitting during the partition ({} writes)", during - before);
    assert!(
        acks.failed().is_empty(),
        "no write fails with 3 of 4 nodes reachable: {:?}",
        &acks.failed()[..acks.failed().len().min(3)]
    );
    // The per-replica deadline in the test config is 5 s (ackTimeout/firstResponseTimeout).
    assert!(p99 <= Duration::from_secs(5), "p99 append latency {p99:?} exceeds the per-replica deadline");
    assert!(gap <= Duration::from_secs(5), "writes stalled {gap:?} behind a partitioned replica");
    close_writer(&writer).await.expect("close");
    verify_log(&log, &[&acks], READ).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_replica_does_not_stall_writes_and_nothing_is_lost_when_it_resumes() {
    let mut bed = Bed::start("sigstop", 3).await;
    let client = bed.client(3, "").await;
    let log = bed.log(&client, "sigstop").await;
    let writer = Arc::new(within(WRITE, "open_writer", log.open_writer()).await.expect("open writer"));
    let acks = Acks::new("w");
    let pump = Pump::start(writer.clone(), acks.clone(), Duration::from_millis(5), WRITE);
    pump.wait_more_acks(200, Duration::from_secs(30)).await;
    let seg = acks.acked().last().unwrap().1.segment_id;
    let victim = bed.quorum("sigstop", seg).await[0].clone();
    let before = acks.submitted();
    // SIGSTOP: the node's sockets stay open and its kernel still accepts bytes, but nothing answers
    // (a hung or badly overloaded node). No spare node: writes go on at the ack quorum.
    bed.node(&victim).pause();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = acks.submitted();
    bed.node(&victim).resume();
    pump.wait_more_acks(100, Duration::from_secs(30)).await;
    let acks = pump.stop(WRITE).await;
    let gap = acks.longest_ack_gap();
    let lat = acks.latencies_in(before..during);
    let p99 = quantile(&lat, 0.99);
    eprintln!(
        "SIGSTOP of {victim} for 8 s: {} writes submitted during it, {} acknowledged in all, {} failed; longest ack \
         gap {gap:?}; p50 {:?} p99 {p99:?} max {:?}",
        during - before,
        acks.acked().len(),
        acks.failed().len(),
        quantile(&lat, 0.5),
        lat.last().copied().unwrap_or_default()
    );
    assert!(
        during - before > 100,
        "the writer kept submitting while the node was stopped ({} writes)",
        during - before
    );
    assert!(
        acks.failed().is_empty(),
        "no write fails with 2 of 3 replicas answering: {:?}",
        &acks.failed()[..acks.failed().len().min(3)]
    );
    assert!(p99 <= Duration::from_secs(5), "p99 append latency {p99:?} exceeds the per-replica deadline (5 s)");
    assert!(gap <= Duration::from_secs(5), "writes stalled {gap:?} behind a stopped replica");
    close_writer(&writer).await.expect("close");
    verify_log(&log, &[&acks], READ).await;
}
