//! Store-agnostic scenarios of the object segment format, run against memory (`segment_object.rs`) and against a
//! real MinIO (`segment_object_minio.rs`). Compiled on its own too, where it holds no test.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use woodpecker_core::keys;
use woodpecker_storage::object::ObjectStorage;
use woodpecker_storage::segment::object::{ObjectSegmentBackend, ObjectSegmentOptions};
use woodpecker_storage::segment::{BlockToWrite, SegmentBackend, SegmentError, SegmentReader, SegmentRef};

/// Options with small windows so the tests exercise batching.
pub fn opts() -> ObjectSegmentOptions {
    ObjectSegmentOptions {
        max_flush_threads: 8,
        max_flush_retries: 3,
        retry_interval: Duration::from_millis(50),
        compaction_max_bytes: 1_000,
        read_max_fetch_threads: 4,
        ..ObjectSegmentOptions::default()
    }
}

/// A backend over `store` under `root`.
pub fn backend(store: Arc<dyn ObjectStorage>, root: &str) -> ObjectSegmentBackend {
    ObjectSegmentBackend::new(store, root.to_owned(), opts())
}

/// Segment `seg` of log 7.
pub fn seg(seg: i64) -> SegmentRef {
    SegmentRef { log_id: 7, segment_id: seg }
}

/// Payload of entry `id`: distinct and of varying length.
pub fn payload(id: i64) -> Bytes {
    Bytes::from(format!("entry-{id}-{}", "x".repeat((id % 13) as usize)))
}

/// Block `block_id` holding `n` entries from `first`.
pub fn block(block_id: i64, first: i64, n: i64) -> BlockToWrite {
    BlockToWrite { block_id, first_entry_id: first, entries: (first..first + n).map(|i| payload(i).into()).collect() }
}

/// Reads from `from` until an empty batch or the end; returns the entries and whether the end was reported.
pub async fn read_all(
    reader: &mut dyn SegmentReader,
    from: i64,
    max_entries: usize,
) -> Result<(Vec<(i64, Bytes)>, bool), SegmentError> {
    let mut out: Vec<(i64, Bytes)> = Vec::new();
    let mut next = from;
    loop {
        let batch = reader.read_batch(next, max_entries, 1 << 20).await?;
        if let Some(&(first, _)) = batch.entries.first() {
            assert_eq!(first, next, "a batch starts at the id asked for");
        }
        for (id, e) in batch.entries.iter() {
            assert_eq!(*id, next, "ids are dense and in order");
            next += 1;
            out.push((*id, e.clone()));
        }
        if batch.end_of_segment {
            return Ok((out, true));
        }
        if batch.entries.is_empty() {
            return Ok((out, false));
        }
    }
}

fn expect_payloads(got: &[(i64, Bytes)], from: i64, to_inclusive: i64) {
    let want: Vec<(i64, Bytes)> = (from..=to_inclusive).map(|i| (i, payload(i))).collect();
    assert_eq!(got.len(), want.len(), "entry count");
    assert!(got == want.as_slice(), "entries differ");
}

/// Write 6 blocks in parallel, finalize, read back; finalize is idempotent; the lock goes, the fence stays.
pub async fn round_trip(store: Arc<dyn ObjectStorage>, root: &str) {
    let b = backend(store.clone(), root);
    let s = seg(1);
    let w = b.create_writer(s).await.unwrap();
    assert_eq!(w.max_parallel_blocks(), 8);
    let lock = keys::write_lock_key(root, 7, 1);
    assert!(store.stat(&lock).await.is_ok(), "write.lock while writing");
    let sizes = [3i64, 1, 5, 2, 4, 7];
    let mut first = 0;
    let mut blocks = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        blocks.push(block(i as i64, first, *n));
        first += n;
    }
    let last = first - 1;
    futures::future::try_join_all(blocks.into_iter().map(|bl| w.write_block(bl))).await.unwrap();
    // A tail reader opened before finalize sees every block and no end yet.
    let mut tail = b.open_reader(s).await.unwrap();
    let (got, end) = read_all(tail.as_mut(), 0, 4).await.unwrap();
    expect_payloads(&got, 0, last);
    assert!(!end);
    let sum = w.finalize(5).await.unwrap();
    assert_eq!(sum.last_entry_id, last);
    assert_eq!(sum.blocks, 6);
    assert_eq!(w.finalize(5).await.unwrap(), sum, "writer finalize is idempotent");
    assert!(matches!(w.write_block(block(6, first, 1)).await, Err(SegmentError::Finalized { .. })));
    assert!(store.stat(&lock).await.is_err(), "write.lock removed by finalize");
    let fence = store.stat(&keys::block_key(root, 7, 1, 6)).await.unwrap();
    assert!(fence.fenced, "a fence object follows the last block, as upstream");
    // The tail reader now reaches the end; a fresh reader reads everything from the footer.
    let batch = tail.read_batch(last + 1, 10, 1 << 20).await.unwrap();
    assert!(batch.entries.is_empty() && batch.end_of_segment);
    let mut r = b.open_reader(s).await.unwrap();
    let (got, end) = read_all(r.as_mut(), 0, 5).await.unwrap();
    expect_payloads(&got, 0, last);
    assert!(end);
    // Reads from the middle return the entry asked for first (not the block's first).
    let batch = r.read_batch(4, 1, 1).await.unwrap();
    assert_eq!(batch.entries[0].0, 4);
    assert_eq!(b.fence(s).await.unwrap(), last, "fence of a finalized segment = its LAC");
    assert_eq!(b.finalize(s).await.unwrap(), sum, "backend finalize agrees");
    b.delete_segment(s).await.unwrap();
    assert!(store.list(&keys::segment_prefix(root, 7, 1)).await.unwrap().is_empty());
}

/// Blocks landing out of order: readers stop at the first gap until it fills.
pub async fn gap_hides_later_blocks(store: Arc<dyn ObjectStorage>, root: &str) {
    let b = backend(store, root);
    let s = seg(2);
    let w = b.create_writer(s).await.unwrap();
    w.write_block(block(0, 0, 3)).await.unwrap();
    w.write_block(block(1, 3, 3)).await.unwrap();
    w.write_block(block(3, 9, 3)).await.unwrap();
    let mut r = b.open_reader(s).await.unwrap();
    let (got, end) = read_all(r.as_mut(), 0, 100).await.unwrap();
    expect_payloads(&got, 0, 5);
    assert!(!end);
    w.write_block(block(2, 6, 3)).await.unwrap();
    let (got, end) = read_all(r.as_mut(), 6, 100).await.unwrap();
    expect_payloads(&got, 6, 11);
    assert!(!end);
    // A block that does not continue its neighbour is refused before anything is uploaded.
    assert!(matches!(w.write_block(block(4, 13, 1)).await, Err(SegmentError::OutOfOrder { .. })));
    w.close().await.unwrap();
}

/// A crashed writer left blocks 0, 1 and 3: the fence ends the segment after block 1; block 3 never shows.
pub async fn fence_after_crash_with_gap(store: Arc<dyn ObjectStorage>, root: &str) {
    let b = backend(store.clone(), root);
    let s = seg(3);
    let w = b.create_writer(s).await.unwrap();
    w.write_block(block(0, 0, 2)).await.unwrap();
    w.write_block(block(1, 2, 2)).await.unwrap();
    w.write_block(block(3, 6, 2)).await.unwrap();
    let other = backend(store.clone(), root);
    assert_eq!(other.fence(s).await.unwrap(), 3);
    assert_eq!(other.fence(s).await.unwrap(), 3, "fence is idempotent");
    assert!(matches!(w.write_block(block(2, 4, 2)).await, Err(SegmentError::Fenced { .. })));
    assert!(matches!(w.write_block(block(4, 8, 2)).await, Err(SegmentError::Fenced { .. })));
    let sum = other.finalize(s).await.unwrap();
    assert_eq!((sum.last_entry_id, sum.blocks), (3, 2));
    let mut r = other.open_reader(s).await.unwrap();
    let (got, end) = read_all(r.as_mut(), 0, 100).await.unwrap();
    expect_payloads(&got, 0, 3);
    assert!(end);
    let batch = r.read_batch(6, 10, 1 << 20).await.unwrap();
    assert!(batch.entries.is_empty() && batch.end_of_segment, "block 3 is never visible");
    // The old writer cannot finalize over the fence either.
    assert!(w.finalize(1).await.unwrap_err().is_not_writable());
}

/// Fence an empty segment: -1; the writer's first block is fenced.
pub async fn fence_empty(store: Arc<dyn ObjectStorage>, root: &str) {
    let b = backend(store, root);
    let s = seg(4);
    let w = b.create_writer(s).await.unwrap();
    assert_eq!(b.fence(s).await.unwrap(), -1);
    assert!(matches!(w.write_block(block(0, 0, 1)).await, Err(SegmentError::Fenced { .. })));
    let sum = b.finalize(s).await.unwrap();
    assert_eq!((sum.last_entry_id, sum.blocks, sum.size), (-1, 0, 0));
    let mut r = b.open_reader(s).await.unwrap();
    let batch = r.read_batch(0, 10, 1 << 20).await.unwrap();
    assert!(batch.entries.is_empty() && batch.end_of_segment);
}

/// A writer uploading `parallel` blocks at a time while another backend fences: every block in the writer's
/// contiguous Ok prefix is within the fence, the fence loses nothing acknowledged, and readers see exactly that.
pub async fn fence_race(store: Arc<dyn ObjectStorage>, root: &str, segment_id: i64, parallel: usize) {
    let s = seg(segment_id);
    let b = backend(store.clone(), root);
    let w: Arc<dyn woodpecker_storage::segment::SegmentWriter> = Arc::from(b.create_writer(s).await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let w = w.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            // (block id, result) for every attempted block.
            let mut results: Vec<(i64, i64, bool)> = Vec::new();
            let mut next_block = 0i64;
            let mut next_entry = 0i64;
            'outer: while !stop.load(Ordering::Relaxed) {
                let mut wave = Vec::new();
                for _ in 0..parallel {
                    let bl = block(next_block, next_entry, 2);
                    next_block += 1;
                    next_entry += 2;
                    wave.push(bl);
                }
                let outcomes = futures::future::join_all(wave.into_iter().map(|bl| {
                    let w = w.clone();
                    async move {
                        let (id, last) = (bl.block_id, bl.last_entry_id());
                        (id, last, w.write_block(bl).await)
                    }
                }))
                .await;
                for (id, last, r) in outcomes {
                    match r {
                        Ok(()) => results.push((id, last, true)),
                        Err(e) => {
                            assert!(e.is_not_writable(), "only fencing stops the writer here: {e}");
                            results.push((id, last, false));
                        }
                    }
                }
                if results.iter().any(|r| !r.2) {
                    break 'outer;
                }
            }
            // After the fence every further write fails.
            let later = w.write_block(block(next_block, next_entry, 1)).await;
            (results, later.is_err())
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    let fencer = backend(store.clone(), root);
    let fenced_last = fencer.fence(s).await.unwrap();
    let (results, later_failed) = tokio::time::timeout(Duration::from_secs(60), writer).await.unwrap().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(later_failed, "writes after the fence fail");
    // The caller acknowledges the contiguous prefix of Ok blocks.
    let mut acked_last = -1;
    for (i, (id, last, ok)) in results.iter().enumerate() {
        assert_eq!(*id, i as i64);
        if !ok {
            break;
        }
        acked_last = *last;
    }
    assert!(results.iter().any(|r| !r.2), "the writer noticed the fence");
    assert!(acked_last <= fenced_last, "acked {acked_last} beyond the fence {fenced_last}");
    assert_eq!(acked_last, fenced_last, "the fence keeps every acknowledged entry and nothing else");
    let mut r = fencer.open_reader(s).await.unwrap();
    let (got, end) = read_all(r.as_mut(), 0, 7).await.unwrap();
    assert!(end);
    assert_eq!(got.last().map_or(-1, |e| e.0), fenced_last);
    let sum = fencer.finalize(s).await.unwrap();
    assert_eq!(sum.last_entry_id, fenced_last);
}

/// A flipped byte in a stored block is an error naming the object, with and without a footer.
pub async fn corrupt_block_is_reported(store: Arc<dyn ObjectStorage>, root: &str) {
    let b = backend(store.clone(), root);
    let s = seg(6);
    let w = b.create_writer(s).await.unwrap();
    for i in 0..3 {
        w.write_block(block(i, i * 4, 4)).await.unwrap();
    }
    let key = keys::block_key(root, 7, 6, 1);
    let mut body = store.get(&key, None).await.unwrap().to_vec();
    let at = body.len() - 3;
    body[at] ^= 0x20;
    store.put(&key, Bytes::from(body)).await.unwrap();
    let check = |e: SegmentError| match e {
        SegmentError::Corrupt { location, .. } => assert_eq!(location, key),
        other => panic!("expected Corrupt naming {key}, got {other}"),
    };
    let mut r = b.open_reader(s).await.unwrap();
    check(read_all(r.as_mut(), 0, 100).await.unwrap_err());
    // Recovery never trusts unverified bytes.
    check(b.finalize(s).await.unwrap_err());
    // Nor does a reader of a footer written by the writer over the (then good) blocks.
    let s2 = seg(16);
    let w2 = b.create_writer(s2).await.unwrap();
    for i in 0..3 {
        w2.write_block(block(i, i * 4, 4)).await.unwrap();
    }
    w2.finalize(2).await.unwrap();
    let key2 = keys::block_key(root, 7, 16, 2);
    let mut body = store.get(&key2, None).await.unwrap().to_vec();
    body[40] ^= 1;
    store.put(&key2, Bytes::from(body)).await.unwrap();
    let mut r = b.open_reader(s2).await.unwrap();
    let first = r.read_batch(0, 4, 1).await.unwrap();
    assert_eq!(first.entries.len(), 4, "intact blocks before the corrupt one still read");
    match read_all(r.as_mut(), 0, 100).await.unwrap_err() {
        SegmentError::Corrupt { location, .. } => assert_eq!(location, key2),
        other => panic!("expected Corrupt, got {other}"),
    }
    // Compaction refuses to launder it into a fresh CRC.
    assert!(matches!(b.compact(s2).await, Err(SegmentError::Corrupt { .. })));
}

/// Compaction merges blocks, switches the footer, removes originals; a reader that started before keeps going.
pub async fn compaction_round_trip(store: Arc<dyn ObjectStorage>, root: &str) {
    let b = backend(store.clone(), root);
    let s = seg(8);
    let w = b.create_writer(s).await.unwrap();
    let mut first = 0;
    for i in 0..12 {
        w.write_block(block(i, first, 5)).await.unwrap();
        first += 5;
    }
    let last = first - 1;
    // A reader from before the finalize (no footer yet): it reads open blocks, then must find the merged ones.
    let mut before_footer = b.open_reader(s).await.unwrap();
    assert_eq!(before_footer.read_batch(0, 5, 1).await.unwrap().entries.len(), 5);
    let sum = w.finalize(11).await.unwrap();
    assert!(matches!(b.compact(seg(99)).await, Err(SegmentError::Missing { .. })), "needs a footer");
    let mut early = b.open_reader(s).await.unwrap();
    let first_batch = early.read_batch(0, 5, 1).await.unwrap();
    assert_eq!(first_batch.entries.len(), 5);
    let size = b.compact(s).await.unwrap();
    assert!(size > 0);
    assert!(size < sum.size, "merged blocks drop per-block headers");
    let listed = store.list(&keys::segment_prefix(root, 7, 8)).await.unwrap();
    let merged: Vec<_> = listed.iter().filter(|o| o.key.contains("/m_")).collect();
    assert!(merged.len() > 1 && merged.len() < 12, "blocks were grouped: {}", merged.len());
    assert!(listed.iter().all(|o| !o.key.ends_with("/0.blk") && !o.key.ends_with("/5.blk")), "original blocks removed");
    assert!(store.stat(&keys::block_key(root, 7, 8, 12)).await.unwrap().fenced, "fence object kept");
    let m0 = store.get(&keys::merged_block_key(root, 7, 8, 0), None).await.unwrap();
    assert_eq!(&m0[9..13], &[6, 0, 1, 0], "m_0 header: version 6, flags compacted");
    // The early reader hits a missing original block, re-reads the footer and continues on merged blocks.
    let (got, end) = read_all(early.as_mut(), 5, 7).await.unwrap();
    expect_payloads(&got, 5, last);
    assert!(end);
    let (got, end) = read_all(before_footer.as_mut(), 5, 11).await.unwrap();
    expect_payloads(&got, 5, last);
    assert!(end);
    let mut r = b.open_reader(s).await.unwrap();
    let (got, end) = read_all(r.as_mut(), 0, 3).await.unwrap();
    expect_payloads(&got, 0, last);
    assert!(end);
    // Idempotent: same size, nothing changes; fence/finalize still answer the LAC.
    assert_eq!(b.compact(s).await.unwrap(), size);
    assert_eq!(b.fence(s).await.unwrap(), last);
    let again = b.finalize(s).await.unwrap();
    assert_eq!((again.last_entry_id, again.size), (last, size));
}

/// `delete_log` removes every segment of the log and nothing of another log.
pub async fn delete_log(store: Arc<dyn ObjectStorage>, root: &str) {
    let b = backend(store.clone(), root);
    for s in [20, 21] {
        let w = b.create_writer(seg(s)).await.unwrap();
        w.write_block(block(0, 0, 1)).await.unwrap();
        w.close().await.unwrap();
    }
    let other = SegmentRef { log_id: 8, segment_id: 0 };
    let w = b.create_writer(other).await.unwrap();
    w.write_block(block(0, 0, 1)).await.unwrap();
    b.delete_log(7).await.unwrap();
    b.delete_log(7).await.unwrap();
    assert!(store.list(&keys::log_prefix(root, 7)).await.unwrap().is_empty());
    assert!(!store.list(&keys::log_prefix(root, 8)).await.unwrap().is_empty());
}

/// A tail reader polling while a writer uploads blocks in parallel sees dense ids, never past the contiguous
/// prefix, and reaches the end after finalize with every entry.
pub async fn tail_reader_follows_parallel_writer(store: Arc<dyn ObjectStorage>, root: &str) {
    let b = backend(store, root);
    let s = seg(40);
    let w: Arc<dyn woodpecker_storage::segment::SegmentWriter> = Arc::from(b.create_writer(s).await.unwrap());
    let blocks = 40i64;
    let per = 3i64;
    let writer = {
        let w = w.clone();
        tokio::spawn(async move {
            let futs = (0..blocks).map(|i| {
                let w = w.clone();
                async move { w.write_block(block(i, i * per, per)).await }
            });
            // Up to 8 in flight, completing in any order.
            let results: Vec<_> = futures::stream::iter(futs).buffer_unordered(8).collect().await;
            assert!(results.iter().all(|r| r.is_ok()));
            w.finalize(blocks - 1).await.unwrap()
        })
    };
    let mut r = b.open_reader(s).await.unwrap();
    let mut next = 0i64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let batch = r.read_batch(next, 10, 1 << 20).await.unwrap();
        for (id, e) in &batch.entries {
            assert_eq!(*id, next);
            assert_eq!(e, &payload(*id));
            next += 1;
        }
        if batch.end_of_segment {
            break;
        }
        if batch.entries.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "tail reader stuck at {next}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_eq!(next, blocks * per);
    let sum = writer.await.unwrap();
    assert_eq!(sum.last_entry_id, blocks * per - 1);
}
