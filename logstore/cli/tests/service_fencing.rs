//! Upstream's service-mode fencing chaos cases (spec/service-mode.md §6.1 and §3), driven by our client
//! against real `woodpecker server` processes: a second writer fences the first in every case — also
//! when a node dies during the fence, and when every node restarts and loses its in-memory fence marks.
//! Each test is named after the upstream case.

mod cluster;
mod service_client;

use std::sync::Arc;
use std::time::{Duration, Instant};

use service_client::{Acks, Bed, Checker, close_writer, verify_log, verify_log_with, within, write_acked, write_one};
use woodpecker_client::LogWriter;

const WRITE: Duration = Duration::from_secs(45);
const READ: Duration = Duration::from_secs(60);

/// In read order, once an entry of `later` appears no acknowledged entry of `earlier` may follow: two
/// writers never both make progress.
fn single_writer_order(checker: &Checker, earlier: &str, later: &str) {
    let first_later = checker.read.iter().position(|e| e.tag == later);
    if let Some(at) = first_later {
        let bad: Vec<_> = checker.read[at..].iter().filter(|e| e.tag == earlier && e.acked).collect();
        assert!(
            bad.is_empty(),
            "acknowledged entries of the fenced writer {earlier} follow the new writer {later}'s first entry: {bad:?}"
        );
    }
}

/// Asserts the writer is fenced: `n` writes all fail (none acknowledged), each quickly.
async fn assert_fenced(w: &LogWriter, acks: &Arc<Acks>, n: usize) {
    for _ in 0..n {
        let started = Instant::now();
        let r = write_one(w, acks, WRITE).await;
        assert!(r.is_err(), "the fenced writer {} got an acknowledgement: {r:?}", acks.tag);
        assert!(started.elapsed() < Duration::from_secs(20), "a fenced write took {:?} to fail", started.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_competing_writers_fencing() {
    let bed = Bed::start("compete", 3).await;
    let (ca, cb) = (bed.client(3, "").await, bed.client(3, "").await);
    let (la, lb) = (bed.log(&ca, "compete").await, bed.log(&cb, "compete").await);
    let a = within(WRITE, "open writer A", la.open_writer()).await.expect("writer A");
    let (acks_a, acks_b) = (Acks::new("a"), Acks::new("b"));
    write_acked(&a, &acks_a, 5, WRITE).await;
    let b = within(WRITE, "open writer B", lb.open_writer()).await.expect("writer B fences A");
    assert_fenced(&a, &acks_a, 3).await;
    write_acked(&b, &acks_b, 5, WRITE).await;
    assert_fenced(&a, &acks_a, 1).await;
    close_writer(&b).await.expect("close B");
    let checker = verify_log_with(&lb, &[&acks_a, &acks_b], READ, |c| c.allow_failed = false).await;
    single_writer_order(&checker, "a", "b");
    assert_eq!(checker.read.len(), 10, "A's 5 then B's 5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_concurrent_writer_attempts() {
    let bed = Bed::start("race", 3).await;
    const N: usize = 4;
    let mut handles = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..N {
        let c = bed.client(3, "").await;
        handles.push(bed.log(&c, "race").await);
        clients.push(c);
    }
    let opens =
        futures::future::join_all(handles.iter().map(|h| within(WRITE, "racing open_writer", h.open_writer()))).await;
    let writers: Vec<(usize, LogWriter)> = opens
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.map(|w| (i, w)).map_err(|e| eprintln!("open {i}: {e}")).ok())
        .collect();
    assert!(!writers.is_empty(), "at least one racing open_writer succeeds");
    let acks: Vec<Arc<Acks>> = (0..N).map(|i| Acks::new(&format!("w{i}"))).collect();
    // Every writer that opened tries to write at once: only the last one opened may get acknowledgements.
    futures::future::join_all(writers.iter().map(|(i, w)| {
        let a = acks[*i].clone();
        async move {
            for _ in 0..3 {
                let _ = write_one(w, &a, WRITE).await;
            }
        }
    }))
    .await;
    let active: Vec<_> = acks.iter().filter(|a| !a.acked().is_empty()).map(|a| a.tag.clone()).collect();
    assert_eq!(active.len(), 1, "exactly one writer is active after racing opens, got {active:?}");
    let winner = acks.iter().find(|a| !a.acked().is_empty()).unwrap();
    assert_eq!(winner.acked().len(), 3, "the winner's writes are all acknowledged: failed {:?}", winner.failed());
    let (wi, w) = writers.iter().find(|(i, _)| acks[*i].tag == winner.tag).unwrap();
    close_writer(w).await.expect("close the winner");
    let refs: Vec<&Arc<Acks>> = acks.iter().collect();
    verify_log_with(&handles[*wi], &refs, READ, |c| c.allow_failed = false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_fencing_during_node_failure() {
    let mut bed = Bed::start("fencefail", 3).await;
    let (ca, cb) = (bed.client(3, "").await, bed.client(3, "").await);
    let (la, lb) = (bed.log(&ca, "ff").await, bed.log(&cb, "ff").await);
    let a = within(WRITE, "open writer A", la.open_writer()).await.expect("writer A");
    let (acks_a, acks_b) = (Acks::new("a"), Acks::new("b"));
    write_acked(&a, &acks_a, 5, WRITE).await;
    let victim = bed.quorum("ff", 0).await[1].clone();
    // The node dies while B fences: the fence succeeds on the remaining quorum.
    let open_b = tokio::spawn(async move { within(WRITE, "open writer B", lb.open_writer()).await.map(|w| (lb, w)) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    bed.node(&victim).kill();
    let (lb, b) = open_b.await.expect("join").expect("B opens although a node died during its fence");
    assert_fenced(&a, &acks_a, 2).await;
    write_acked(&b, &acks_b, 5, WRITE).await;
    close_writer(&b).await.expect("close B");
    let checker = verify_log_with(&lb, &[&acks_a, &acks_b], READ, |c| c.allow_failed = false).await;
    single_writer_order(&checker, "a", "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_all_nodes_restart_fence_marks_lost_concurrent_writers() {
    let mut bed = Bed::start("marks", 3).await;
    let (ca, cb) = (bed.client(3, "").await, bed.client(3, "").await);
    let (la, lb) = (bed.log(&ca, "marks").await, bed.log(&cb, "marks").await);
    let a = within(WRITE, "open writer A", la.open_writer()).await.expect("writer A");
    let (acks_a, acks_b) = (Acks::new("a"), Acks::new("b"));
    // A writes, then idles: it has not seen B's fence when every node restarts and loses its in-memory
    // fence marks, so its next appends reach nodes that must still refuse them.
    write_acked(&a, &acks_a, 5, WRITE).await;
    let b = within(WRITE, "open writer B", lb.open_writer()).await.expect("writer B");
    bed.cluster.restart_all();
    bed.wait_members(3, Duration::from_secs(20)).await;
    let segs = lb.segments().await.expect("segments");
    assert_eq!(segs[0].last_entry_id, 4, "B's fence recovered segment 0 up to A's last acknowledged entry: {segs:?}");
    // A and B race: A's appends must all fail, B's must be acknowledged (B may reopen once its own
    // segment's replicas restarted under it).
    let a_attempts = async {
        for _ in 0..5 {
            let _ = write_one(&a, &acks_a, WRITE).await;
        }
    };
    let b_writes = async {
        let mut b = b;
        let mut lb = lb;
        let mut done = 0;
        for _ in 0..30 {
            if done == 5 {
                break;
            }
            match write_one(&b, &acks_b, WRITE).await {
                Ok(_) => done += 1,
                Err(e) if e.is_writer_lost() => {
                    lb = bed.log(&cb, "marks").await;
                    b = within(WRITE, "reopen writer B", lb.open_writer()).await.expect("reopen B");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        assert_eq!(done, 5, "B's writes are acknowledged after the restart; failures: {:?}", acks_b.failed());
        (b, lb)
    };
    let ((), (b, lb)) = tokio::join!(a_attempts, b_writes);
    assert_eq!(
        acks_a.acked().len(),
        5,
        "the fenced writer A got acknowledgements after every node restarted: {:?}",
        acks_a.acked()
    );
    close_writer(&b).await.expect("close B");
    let checker = verify_log(&lb, &[&acks_a, &acks_b], READ).await;
    let stale: Vec<_> = checker.read.iter().filter(|e| e.tag == "a" && e.seq >= 5).collect();
    assert!(stale.is_empty(), "appends of the fenced writer A made it into the log: {stale:?}");
    single_writer_order(&checker, "a", "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_finalized_segment_survives_restart_old_writer_rejected() {
    let mut bed = Bed::start("final", 3).await;
    let (ca, cb) = (bed.client(3, "").await, bed.client(3, "").await);
    let (la, lb) = (bed.log(&ca, "final").await, bed.log(&cb, "final").await);
    let a = within(WRITE, "open writer A", la.open_writer()).await.expect("writer A");
    let (acks_a, acks_c) = (Acks::new("a"), Acks::new("c"));
    write_acked(&a, &acks_a, 5, WRITE).await;
    // B fences and completes segment 0 (finalized on the nodes), then goes away without writing.
    let b = within(WRITE, "open writer B", lb.open_writer()).await.expect("writer B");
    close_writer(&b).await.expect("close B");
    let segs = lb.segments().await.expect("segments");
    assert_eq!(segs[0].last_entry_id, 4, "segment 0 completed at A's last acknowledged entry: {segs:?}");
    bed.cluster.restart_all();
    bed.wait_members(3, Duration::from_secs(20)).await;
    // The finalized state survived: the old writer is still refused.
    assert_fenced(&a, &acks_a, 3).await;
    // A new writer works on a new segment.
    let c = within(WRITE, "open writer C", lb.open_writer()).await.expect("writer C");
    let ids = write_acked(&c, &acks_c, 5, WRITE).await;
    assert!(ids.iter().all(|i| i.segment_id > 0), "C writes a new segment: {ids:?}");
    close_writer(&c).await.expect("close C");
    let segs = lb.segments().await.expect("segments");
    assert_eq!(segs[0].last_entry_id, 4, "segment 0 unchanged by the restart and the new writer: {segs:?}");
    let checker = verify_log_with(&lb, &[&acks_a, &acks_c], READ, |c| c.allow_failed = false).await;
    single_writer_order(&checker, "a", "c");
}
