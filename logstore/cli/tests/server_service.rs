//! `woodpecker server` over gRPC with a raw tonic client: append frames, fence and completion that
//! survive restarts, reads bounded by the LAC, compaction to the test bed's MinIO, bad input.
//! Real server processes, real MinIO.

mod cluster;

use std::time::Duration;

use bytes::Bytes;
use cluster::{Cluster, ClusterOptions, ServerNode};
use futures::StreamExt;
use woodpecker_proto::logstore::log_store_client::LogStoreClient;
use woodpecker_proto::logstore::{
    AddEntriesRequest, AddEntriesResponse, AddEntryRequest, AddEntryState, CompactSegmentRequest,
    CompleteSegmentRequest, FenceSegmentRequest, GetBatchEntriesAdvRequest, GetSegmentLastAddConfirmedRequest,
    LogEntry, NotifySegmentCompactedRequest, UpdateLastAddConfirmedRequest,
};
use woodpecker_storage::object::{S3ObjectStorage, S3Options};
use woodpecker_storage::segment::object::{ObjectSegmentBackend, ObjectSegmentOptions};
use woodpecker_storage::segment::{SegmentBackend, SegmentRef};

type Client = LogStoreClient<tonic::transport::Channel>;

fn root(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("srv-{tag}-{}-{nanos}", std::process::id())
}

fn payload(seg: i64, id: i64) -> Bytes {
    Bytes::from(format!("payload of segment {seg} entry {id}").into_bytes())
}

fn entries(seg: i64, ids: std::ops::Range<i64>) -> Vec<LogEntry> {
    ids.map(|id| LogEntry { seg_id: seg, entry_id: id, values: payload(seg, id) }).collect()
}

/// Sends one AddEntries and collects every frame until the stream ends.
async fn add_entries(c: &mut Client, root: &str, log: i64, es: Vec<LogEntry>) -> Vec<AddEntriesResponse> {
    let req =
        AddEntriesRequest { bucket_name: cluster::bucket(), root_path: root.to_owned(), log_id: log, entries: es };
    let mut stream = c.add_entries(req).await.expect("AddEntries call").into_inner();
    let mut frames = Vec::new();
    while let Some(f) = tokio::time::timeout(Duration::from_secs(40), stream.next()).await.expect("frame in time") {
        frames.push(f.expect("frame"));
    }
    frames
}

/// The ids a stream reported Synced, and its Failed frame's status code if any.
fn synced_and_failure(frames: &[AddEntriesResponse]) -> (Vec<i64>, Option<i32>) {
    let mut synced = Vec::new();
    let mut failed = None;
    for f in frames {
        match AddEntryState::try_from(f.state) {
            Ok(AddEntryState::Synced) => synced.extend(&f.entry_id),
            Ok(AddEntryState::Failed) => failed = f.status.as_ref().map(|s| s.code),
            _ => {}
        }
    }
    (synced, failed)
}

async fn read(c: &mut Client, root: &str, log: i64, seg: i64, from: i64) -> Result<Vec<LogEntry>, i32> {
    let req = GetBatchEntriesAdvRequest {
        bucket_name: cluster::bucket(),
        root_path: root.to_owned(),
        log_id: log,
        segment_id: seg,
        from_entry_id: from,
        max_entries: 200,
        last_read_state: None,
    };
    let r = c.get_batch_entries_adv(req).await.expect("GetBatchEntriesAdv call").into_inner();
    let code = r.status.map_or(0, |s| s.code);
    if code != 0 {
        return Err(code);
    }
    let entries = r.result.map(|b| b.entries).unwrap_or_default();
    assert!(!entries.is_empty(), "a successful read is never empty");
    Ok(entries)
}

/// Reads from `from` until an error code; returns the ids read and that code.
async fn read_all(c: &mut Client, root: &str, log: i64, seg: i64, from: i64) -> (Vec<i64>, i32) {
    let mut ids = Vec::new();
    let mut next = from;
    loop {
        match read(c, root, log, seg, next).await {
            Ok(es) => {
                for e in es {
                    assert_eq!((e.seg_id, e.entry_id), (seg, next), "entries come in order with their own ids");
                    assert_eq!(e.values, payload(seg, next), "entry {next} comes back as written");
                    ids.push(next);
                    next += 1;
                }
            }
            Err(code) => return (ids, code),
        }
    }
}

async fn push_lac(c: &mut Client, root: &str, log: i64, seg: i64, lac: i64) {
    let req = UpdateLastAddConfirmedRequest {
        bucket_name: cluster::bucket(),
        root_path: root.to_owned(),
        log_id: log,
        segment_id: seg,
        last_add_confirmed: lac,
    };
    let s = c.update_last_add_confirmed(req).await.expect("UpdateLastAddConfirmed").into_inner();
    assert_eq!(s.status.map_or(0, |s| s.code), 0);
}

async fn fence(c: &mut Client, root: &str, log: i64, seg: i64) -> (i32, i64) {
    let req = FenceSegmentRequest {
        bucket_name: cluster::bucket(),
        root_path: root.to_owned(),
        log_id: log,
        segment_id: seg,
    };
    let r = c.fence_segment(req).await.expect("FenceSegment").into_inner();
    (r.status.map_or(0, |s| s.code), r.last_entry_id)
}

async fn complete(c: &mut Client, root: &str, log: i64, seg: i64, lac: i64) -> (i32, i64) {
    let req = CompleteSegmentRequest {
        bucket_name: cluster::bucket(),
        root_path: root.to_owned(),
        log_id: log,
        segment_id: seg,
        last_add_confirmed: lac,
    };
    let r = c.complete_segment(req).await.expect("CompleteSegment").into_inner();
    (r.status.map_or(0, |s| s.code), r.last_entry_id)
}

fn one_node() -> Cluster {
    Cluster::start(1, &ClusterOptions::default())
}

async fn client(n: &ServerNode) -> Client {
    n.client().await
}

#[tokio::test(flavor = "multi_thread")]
async fn appends_are_buffered_then_synced_and_readable_up_to_the_pushed_lac() {
    let mut cl = one_node();
    let mut c = client(&cl.nodes[0]).await;
    let root = root("append");
    let frames = add_entries(&mut c, &root, 1, entries(0, 0..10)).await;
    assert_eq!(AddEntryState::try_from(frames[0].state), Ok(AddEntryState::Buffered), "frame 1 is Buffered");
    assert_eq!(frames[0].entry_id, (0..10).collect::<Vec<_>>());
    let (synced, failed) = synced_and_failure(&frames);
    assert_eq!((synced, failed), ((0..10).collect(), None), "every entry synced, in order");

    assert_eq!(read(&mut c, &root, 1, 0, 0).await.unwrap_err(), 8102, "nothing confirmed yet: not found, not empty");
    push_lac(&mut c, &root, 1, 0, 6).await;
    let (ids, code) = read_all(&mut c, &root, 1, 0, 0).await;
    assert_eq!((ids, code), ((0..=6).collect(), 8102), "reads stop at the pushed LAC");
    let lac = c
        .get_segment_last_add_confirmed(GetSegmentLastAddConfirmedRequest {
            bucket_name: cluster::bucket(),
            root_path: root.clone(),
            log_id: 1,
            segment_id: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lac.last_entry_id, 9, "the node's last durable entry, not the LAC");

    // A resend of durable entries and an AddEntry of the next one.
    let (synced, failed) = synced_and_failure(&add_entries(&mut c, &root, 1, entries(0, 8..12)).await);
    assert_eq!((synced, failed), (vec![8, 9, 10, 11], None), "resends are answered, new ones appended");
    let req = AddEntryRequest {
        bucket_name: cluster::bucket(),
        root_path: root.clone(),
        log_id: 1,
        entry: Some(LogEntry { seg_id: 0, entry_id: 12, values: payload(0, 12) }),
    };
    let mut s = c.add_entry(req).await.unwrap().into_inner();
    let mut states = Vec::new();
    while let Some(f) = s.next().await {
        let f = f.unwrap();
        states.push((AddEntryState::try_from(f.state).unwrap(), f.entry_id));
    }
    assert_eq!(states, vec![(AddEntryState::Buffered, 12), (AddEntryState::Synced, 12)]);
    drop(cl.nodes.pop());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fence_refuses_later_appends_also_after_a_kill_and_restart() {
    let mut cl = one_node();
    let root = root("fence");
    let mut c = client(&cl.nodes[0]).await;
    let (synced, _) = synced_and_failure(&add_entries(&mut c, &root, 2, entries(0, 0..5)).await);
    assert_eq!(synced.len(), 5);
    assert_eq!(fence(&mut c, &root, 2, 0).await, (0, 4));
    let frames = add_entries(&mut c, &root, 2, entries(0, 5..6)).await;
    assert_eq!(synced_and_failure(&frames), (vec![], Some(8104)), "fenced: the old writer gets no ack");
    assert_eq!(AddEntryState::try_from(frames[0].state), Ok(AddEntryState::Failed), "refused at admission");

    cl.nodes[0].restart(false);
    let mut c = client(&cl.nodes[0]).await;
    let (_, failed) = synced_and_failure(&add_entries(&mut c, &root, 2, entries(0, 5..6)).await);
    assert_eq!(failed, Some(8104), "the fence is persisted: a restarted node still refuses");
    assert_eq!(fence(&mut c, &root, 2, 0).await, (0, 4), "fence is idempotent across restarts");

    // A segment that holds data but was never fenced is in recovery mode after a restart.
    let (synced, _) = synced_and_failure(&add_entries(&mut c, &root, 2, entries(1, 0..3)).await);
    assert_eq!(synced.len(), 3);
    cl.nodes[0].restart(false);
    let mut c = client(&cl.nodes[0]).await;
    let (_, failed) = synced_and_failure(&add_entries(&mut c, &root, 2, entries(1, 3..4)).await);
    assert_eq!(failed, Some(2218), "a restarted node takes no appends into a segment with data");
    assert_eq!(fence(&mut c, &root, 2, 1).await, (0, 2), "fencing it finds what is durable");

    // A fence on a segment this node never saw leaves a persisted marker: a wiped-later writer cannot start it.
    assert_eq!(fence(&mut c, &root, 2, 7).await, (0, -1));
    let (_, failed) = synced_and_failure(&add_entries(&mut c, &root, 2, entries(7, 0..1)).await);
    assert_eq!(failed, Some(8104));
}

#[tokio::test(flavor = "multi_thread")]
async fn completion_records_the_quorum_lac_and_reads_end_there_after_a_restart() {
    let mut cl = one_node();
    let root = root("complete");
    let mut c = client(&cl.nodes[0]).await;
    let _ = add_entries(&mut c, &root, 3, entries(0, 0..10)).await;
    assert_eq!(fence(&mut c, &root, 3, 0).await, (0, 9));
    assert_eq!(complete(&mut c, &root, 3, 0, 7).await, (0, 7), "the footer takes the LAC the client computed");
    let (ids, code) = read_all(&mut c, &root, 3, 0, 0).await;
    assert_eq!((ids, code), ((0..=7).collect(), 2310), "entries past the LAC were never acknowledged: EOF after 7");
    assert_eq!(complete(&mut c, &root, 3, 0, 9).await, (0, 7), "completion is idempotent; the stored LAC wins");
    cl.nodes[0].restart(false);
    let mut c = client(&cl.nodes[0]).await;
    let (ids, code) = read_all(&mut c, &root, 3, 0, 5).await;
    assert_eq!((ids, code), ((5..=7).collect(), 2310), "the footer LAC survives a restart");
    let (_, failed) = synced_and_failure(&add_entries(&mut c, &root, 3, entries(0, 10..11)).await);
    assert_eq!(failed, Some(2216), "a finalized segment takes no appends");
    assert_eq!(fence(&mut c, &root, 3, 0).await, (0, 7), "re-fencing a finalized segment answers its LAC");

    // A copy that lacks entries the LAC covers says "not here" for them, never EOF.
    let _ = add_entries(&mut c, &root, 3, entries(1, 0..3)).await;
    assert_eq!(complete(&mut c, &root, 3, 1, 5).await, (0, 5));
    let (ids, code) = read_all(&mut c, &root, 3, 1, 0).await;
    assert_eq!((ids, code), (vec![0, 1, 2], 8102), "entries 3..=5 live on other replicas");
}

fn s3_store_options() -> S3Options {
    let endpoint = std::env::var("WP_MINIO_ENDPOINT").expect("WP_MINIO_ENDPOINT");
    S3Options {
        endpoint,
        bucket: cluster::bucket(),
        access_key: std::env::var("WP_MINIO_ACCESS_KEY").expect("key"),
        secret_key: std::env::var("WP_MINIO_SECRET_KEY").expect("secret"),
        ..S3Options::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_uploads_entries_up_to_the_lac_and_a_short_copy_refuses() {
    let cl = one_node();
    let root = root("compact");
    let mut c = client(&cl.nodes[0]).await;
    // Big enough entries for several local blocks.
    let big =
        |id: i64| LogEntry { seg_id: 0, entry_id: id, values: Bytes::from(vec![b'a' + (id % 26) as u8; 300_000]) };
    for chunk in 0..4 {
        let es: Vec<_> = (chunk * 5..chunk * 5 + 5).map(big).collect();
        let (synced, failed) = synced_and_failure(&add_entries(&mut c, &root, 4, es).await);
        assert_eq!((synced.len(), failed), (5, None));
    }
    let compact_req = |seg: i64| CompactSegmentRequest {
        bucket_name: cluster::bucket(),
        root_path: root.clone(),
        log_id: 4,
        segment_id: seg,
    };
    let r = c.compact_segment(compact_req(0)).await.unwrap().into_inner();
    assert_ne!(r.status.map_or(0, |s| s.code), 0, "an unfinalized copy is never compacted");
    assert_eq!(complete(&mut c, &root, 4, 0, 17).await, (0, 17));
    let r = c.compact_segment(compact_req(0)).await.unwrap().into_inner();
    assert_eq!(r.status.as_ref().map_or(0, |s| s.code), 0, "{:?}", r.status);
    let meta = r.metadata.expect("metadata");
    assert_eq!(meta.state, woodpecker_proto::meta::SegmentState::Sealed as i32);
    assert!(meta.size > 0 && meta.sealed_time > 0);
    let again = c.compact_segment(compact_req(0)).await.unwrap().into_inner();
    assert_eq!(again.metadata.map(|m| m.size), Some(meta.size), "idempotent: the stored size");

    // What an embedded reader finds in object storage: entries 0..=17, merged, compacted.
    let store = S3ObjectStorage::connect(s3_store_options()).await.expect("connect MinIO");
    let backend = ObjectSegmentBackend::new(std::sync::Arc::new(store), root.clone(), ObjectSegmentOptions::default());
    let seg = SegmentRef { log_id: 4, segment_id: 0 };
    let mut reader = backend.open_reader(seg).await.expect("reader");
    let mut next = 0;
    loop {
        let b = reader.read_batch(next, 1000, 64 << 20).await.expect("read compacted");
        for (id, data) in &b.entries {
            assert_eq!((*id, data.clone()), (next, big(next).values));
            next += 1;
        }
        if b.end_of_segment {
            break;
        }
        assert!(!b.entries.is_empty(), "a compacted segment is complete: no waiting");
    }
    assert_eq!(next, 18, "exactly the entries up to the LAC");

    // Confirmed compaction reclaims the local copy; the fence stays, so the old writer stays refused.
    let notify = |seg: i64| NotifySegmentCompactedRequest {
        bucket_name: cluster::bucket(),
        root_path: root.clone(),
        log_id: 4,
        segment_id: seg,
    };
    let seg_dir = cl.nodes[0].data_dir.join(cluster::bucket()).join(&root).join("4").join("0");
    assert!(seg_dir.join("data.log").is_file());
    let r = c.notify_segment_compacted(notify(0)).await.unwrap().into_inner();
    assert_eq!(r.status.map_or(0, |s| s.code), 0);
    assert!(!seg_dir.join("data.log").exists(), "local copy reclaimed");
    assert!(seg_dir.join("data.compacted").is_file(), "tombstone written");
    let (_, failed) = synced_and_failure(&add_entries(&mut c, &root, 4, vec![big(20)]).await);
    assert_eq!(failed, Some(8104), "a reclaimed segment takes no appends");
    let r = c.notify_segment_compacted(notify(9)).await.unwrap().into_inner();
    assert_eq!(r.status.map(|s| s.code), Some(8105), "not compacted: nothing reclaimed");

    // A replica that completed with a LAC beyond its data refuses, so the client asks the next one.
    let _ = add_entries(&mut c, &root, 4, entries(1, 0..3)).await;
    assert_eq!(complete(&mut c, &root, 4, 1, 5).await, (0, 5));
    let r = c.compact_segment(compact_req(1)).await.unwrap().into_inner();
    assert_eq!(r.status.map(|s| s.code), Some(8107), "short copy: refused, nothing sealed");
    // An empty segment becomes a footer-only object (readers get end of segment).
    assert_eq!(complete(&mut c, &root, 4, 2, -1).await, (0, -1));
    let r = c.compact_segment(compact_req(2)).await.unwrap().into_inner();
    assert_eq!(r.status.map_or(0, |s| s.code), 0);
    let mut empty = backend.open_reader(SegmentRef { log_id: 4, segment_id: 2 }).await.unwrap();
    let b = empty.read_batch(0, 10, 1 << 20).await.unwrap();
    assert!(b.entries.is_empty() && b.end_of_segment, "footer-only: the segment ends at once");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_status_and_the_node_keeps_serving() {
    let opts = ClusterOptions {
        extra_yaml: "woodpecker:\n  client:\n    maxEntrySize: 524288\n  logstore:\n    grpc:\n      serverMaxRecvSize: 1048576\n    segmentSyncPolicy:\n      maxEntries: 100\n".into(),
    };
    let cl = Cluster::start(1, &opts);
    let root = root("bad");
    let mut c = client(&cl.nodes[0]).await;
    let code = |frames: Vec<AddEntriesResponse>| synced_and_failure(&frames).1;

    let empty = vec![LogEntry { seg_id: 0, entry_id: 0, values: Bytes::new() }];
    assert_eq!(code(add_entries(&mut c, &root, 5, empty).await), Some(8101), "empty payload");
    assert_eq!(code(add_entries(&mut c, &root, 5, vec![]).await), Some(8101), "no entries");
    for bad_root in ["../escape", "/abs", "a//b", "a/./b"] {
        assert_eq!(code(add_entries(&mut c, bad_root, 5, entries(0, 0..1)).await), Some(2008), "root {bad_root:?}");
    }
    let mut mixed = entries(0, 0..2);
    mixed.extend(entries(1, 2..3));
    assert_eq!(code(add_entries(&mut c, &root, 5, mixed).await), Some(2215), "entries of two segments");
    assert_eq!(code(add_entries(&mut c, &root, 5, entries(0, 1_000_000..1_000_001)).await), Some(2200), "far ahead");
    assert_eq!(code(add_entries(&mut c, &root, -1, entries(0, 0..1)).await), Some(2215), "negative log id");
    assert_eq!(read(&mut c, &root, 999, 0, 0).await.unwrap_err(), 8102, "unknown log: not found");
    let huge = vec![LogEntry { seg_id: 0, entry_id: 0, values: Bytes::from(vec![7u8; 2 << 20]) }];
    let req = AddEntriesRequest { bucket_name: cluster::bucket(), root_path: root.clone(), log_id: 5, entries: huge };
    let refused = match c.add_entries(req).await {
        Err(s) => s.code(),
        Ok(r) => r.into_inner().next().await.and_then(|f| f.err()).map(|s| s.code()).unwrap_or(tonic::Code::Ok),
    };
    assert_ne!(refused, tonic::Code::Ok, "a message above serverMaxRecvSize is refused by gRPC");
    let bucket_bad =
        AddEntriesRequest { bucket_name: "../x".into(), root_path: root.clone(), log_id: 5, entries: entries(0, 0..1) };
    let mut s = c.add_entries(bucket_bad).await.unwrap().into_inner();
    let f = s.next().await.unwrap().unwrap();
    assert_eq!(f.status.map(|s| s.code), Some(2008), "bucket with a separator");

    let (synced, failed) = synced_and_failure(&add_entries(&mut c, &root, 5, entries(0, 0..3)).await);
    assert_eq!((synced, failed), (vec![0, 1, 2], None), "the node still serves");
}
