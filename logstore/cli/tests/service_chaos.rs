//! Upstream's service-mode chaos cases about data and readers (spec/service-mode.md §6.1), driven by
//! our client against real `woodpecker server` processes: several segments surviving a crash of every
//! node, a tailing reader across a server crash, independent readers agreeing. Named after the upstream
//! cases.

mod cluster;
mod service_client;

use std::sync::Arc;
use std::time::Duration;

use service_client::{Acks, Bed, Pump, Tail, close_writer, local, segments_of, verify_log, within, write_acked};
use woodpecker_client::LogMessageId;

const WRITE: Duration = Duration::from_secs(45);
const READ: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_recovery_multi_segment_after_crash() {
    let mut bed = Bed::start("multiseg", 3).await;
    // Roll every second: a few seconds of writing leave several segments.
    let roll = "woodpecker:\n  client:\n    segmentRollingPolicy:\n      maxInterval: 1s\n";
    let client = bed.client(3, roll).await;
    let log = bed.log(&client, "multiseg").await;
    let writer = Arc::new(within(WRITE, "open_writer", log.open_writer()).await.expect("open writer"));
    let acks = Acks::new("w");
    let pump = Pump::start(writer.clone(), acks.clone(), Duration::from_millis(10), WRITE);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while bed.last_segment("multiseg").await.unwrap_or(0) < 3 {
        assert!(std::time::Instant::now() < deadline, "fewer than 4 segments after 30 s of writing with 1 s rolls");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let acks = pump.stop(WRITE).await;
    assert!(acks.failed().is_empty(), "no write fails while rolling: {:?}", acks.failed());
    // Crash: every node killed -9 and the writer process gone (nothing closed).
    drop(writer);
    drop(log);
    drop(client);
    for n in &mut bed.cluster.nodes {
        n.kill();
    }
    for n in &mut bed.cluster.nodes {
        n.restart(false);
    }
    bed.wait_members(3, Duration::from_secs(20)).await;
    let client = bed.client(3, "").await;
    let log = bed.log(&client, "multiseg").await;
    let w2 = within(WRITE, "open_writer after the crash", log.open_writer()).await.expect("recover");
    let acks2 = Acks::new("x");
    write_acked(&w2, &acks2, 5, WRITE).await;
    close_writer(&w2).await.expect("close");
    let checker = verify_log(&log, &[&acks, &acks2], READ).await;
    let segs = segments_of(&checker.read);
    assert!(segs.len() >= 4, "entries span several segments: {segs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_reader_during_server_crash() {
    local(async {
        let mut bed = Bed::start("readercrash", 3).await;
        let client = bed.client(3, "").await;
        let log = bed.log(&client, "rc").await;
        let writer = Arc::new(within(WRITE, "open_writer", log.open_writer()).await.expect("open writer"));
        let acks = Acks::new("w");
        let tail = Tail::start(&log, LogMessageId::EARLIEST, &[&acks]).await;
        let pump = Pump::start(writer.clone(), acks.clone(), Duration::from_millis(10), WRITE);
        pump.wait_more_acks(50, Duration::from_secs(30)).await;
        let seg = acks.acked().last().unwrap().1.segment_id;
        let victim = bed.quorum("rc", seg).await[0].clone();
        bed.node(&victim).kill();
        pump.wait_more_acks(100, Duration::from_secs(30)).await;
        tail.wait_read(acks.acked().len(), Duration::from_secs(30)).await;
        bed.node(&victim).restart(false);
        bed.wait_members(3, Duration::from_secs(20)).await;
        pump.wait_more_acks(50, Duration::from_secs(30)).await;
        let acks = pump.stop(WRITE).await;
        let (tail, errors) = tail.finish(READ).await;
        eprintln!("tail reader: {} entries, {errors} transient read errors", tail.read.len());
        close_writer(&writer).await.expect("close");
        verify_log(&log, &[&acks], READ).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_concurrent_readers() {
    local(async {
        let bed = Bed::start("readers", 3).await;
        let client = bed.client(3, "").await;
        let log = bed.log(&client, "readers").await;
        let writer = Arc::new(within(WRITE, "open_writer", log.open_writer()).await.expect("open writer"));
        let acks = Acks::new("w");
        let mut tails = Vec::new();
        for _ in 0..3 {
            tails.push(Tail::start(&log, LogMessageId::EARLIEST, &[&acks]).await);
        }
        let pump = Pump::start(writer.clone(), acks.clone(), Duration::from_millis(5), WRITE);
        pump.wait_more_acks(300, Duration::from_secs(30)).await;
        let acks = pump.stop(WRITE).await;
        close_writer(&writer).await.expect("close");
        let mut seen = Vec::new();
        for t in tails {
            let (c, _) = t.finish(READ).await;
            seen.push(c.read.iter().map(|e| (e.tag.clone(), e.seq, e.id)).collect::<Vec<_>>());
        }
        let final_read = verify_log(&log, &[&acks], READ).await;
        let expected: Vec<_> = final_read.read.iter().map(|e| (e.tag.clone(), e.seq, e.id)).collect();
        for (i, s) in seen.iter().enumerate() {
            assert_eq!(s, &expected, "reader {i} saw something else than a later reader from the start");
        }
    })
    .await;
}
