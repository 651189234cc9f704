//! Object segment format against `MemoryObjectStorage` (logic) and upstream's golden fixtures (byte compatibility).

#[path = "segment_object_scenarios.rs"]
mod scenarios;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use woodpecker_core::{codec, keys};
use woodpecker_proto::logstore::LogMessageLayout;
use woodpecker_storage::object::{LocalObjectStorage, MemoryObjectStorage, ObjectStorage};
use woodpecker_storage::segment::object::{ObjectSegmentBackend, ObjectSegmentOptions};
use woodpecker_storage::segment::{SegmentBackend, SegmentError, SegmentRef};

fn mem() -> Arc<dyn ObjectStorage> {
    Arc::new(MemoryObjectStorage::new())
}

#[tokio::test]
async fn round_trip() {
    scenarios::round_trip(mem(), "files").await;
    scenarios::round_trip(mem(), "").await;
}

#[tokio::test]
async fn gap_hides_later_blocks() {
    scenarios::gap_hides_later_blocks(mem(), "files").await;
}

#[tokio::test]
async fn fence_after_crash_with_gap() {
    scenarios::fence_after_crash_with_gap(mem(), "files").await;
}

#[tokio::test]
async fn fence_empty() {
    scenarios::fence_empty(mem(), "files").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_race_sequential_writer() {
    scenarios::fence_race(mem(), "files", 5, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_race_parallel_writer() {
    scenarios::fence_race(mem(), "files", 5, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_reader_follows_parallel_writer() {
    scenarios::tail_reader_follows_parallel_writer(mem(), "files").await;
}

#[tokio::test]
async fn corrupt_block_is_reported() {
    scenarios::corrupt_block_is_reported(mem(), "files").await;
}

#[tokio::test]
async fn compaction_round_trip() {
    scenarios::compaction_round_trip(mem(), "files").await;
}

#[tokio::test]
async fn delete_log() {
    scenarios::delete_log(mem(), "files").await;
}

/// The same scenarios over a real directory (`LocalObjectStorage`: link/symlink conditions, fsync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory_store() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStorage> = Arc::new(LocalObjectStorage::open(dir.path()).unwrap());
    scenarios::round_trip(store.clone(), "files").await;
    scenarios::fence_after_crash_with_gap(store.clone(), "files").await;
    scenarios::fence_race(store.clone(), "files", 5, 4).await;
    scenarios::corrupt_block_is_reported(store.clone(), "files").await;
    scenarios::compaction_round_trip(store.clone(), "files").await;
    scenarios::delete_log(store, "files").await;
}

// ---- upstream golden fixtures (written by Go woodpecker v0.1.35) ----

fn golden_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e/interop/golden").join(case)
}

/// Loads `<case>/objects/**` into a memory store under the same keys; 1-byte `F` objects become fence objects.
async fn load_golden(case: &str, skip: impl Fn(&str) -> bool) -> Arc<dyn ObjectStorage> {
    let store = mem();
    let root = golden_dir(case).join("objects");
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let key = path.strip_prefix(&root).unwrap().to_str().unwrap().to_owned();
            if skip(&key) {
                continue;
            }
            let body = std::fs::read(&path).unwrap();
            if body == b"F" {
                store.put_fence(&key).await.unwrap();
            } else {
                store.put(&key, Bytes::from(body)).await.unwrap();
            }
        }
    }
    store
}

fn b64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("bad base64 {c}"),
    };
    let clean: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|&c| u32::from(val(c))).collect();
        let mut n = 0u32;
        for (i, x) in v.iter().enumerate() {
            n |= x << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// Expected entries per segment from a jsonl dump: (entry id, payload, properties).
type Expected = BTreeMap<i64, Vec<(i64, Vec<u8>, BTreeMap<String, String>)>>;

fn load_jsonl(case: &str, files: &[&str]) -> Expected {
    let mut out = Expected::new();
    for f in files {
        let text = std::fs::read_to_string(golden_dir(case).join(f)).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let props = v["properties"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect())
                .unwrap_or_default();
            out.entry(v["segment"].as_i64().unwrap()).or_default().push((
                v["entry"].as_i64().unwrap(),
                b64(v["payload_b64"].as_str().unwrap()),
                props,
            ));
        }
    }
    out
}

fn golden_backend(store: Arc<dyn ObjectStorage>) -> ObjectSegmentBackend {
    ObjectSegmentBackend::new(
        store,
        "golden".into(),
        ObjectSegmentOptions { read_max_fetch_threads: 3, ..ObjectSegmentOptions::default() },
    )
}

fn golden_seg(s: i64) -> SegmentRef {
    SegmentRef { log_id: 1, segment_id: s }
}

async fn assert_reads(b: &ObjectSegmentBackend, expected: &Expected, expect_end: bool) {
    for (seg, want) in expected {
        let mut r = b.open_reader(golden_seg(*seg)).await.unwrap();
        let (got, end) = scenarios::read_all(r.as_mut(), 0, 37).await.unwrap();
        assert_eq!(end, expect_end, "segment {seg} end");
        assert_eq!(got.len(), want.len(), "segment {seg} entry count");
        for ((id, bytes), (wid, wpayload, wprops)) in got.iter().zip(want) {
            assert_eq!(id, wid);
            let layout = LogMessageLayout::decode(bytes.clone()).unwrap();
            assert_eq!(&layout.payload, wpayload, "segment {seg} entry {id} payload");
            let props: BTreeMap<String, String> = layout.properties.into_iter().collect();
            assert_eq!(&props, wprops, "segment {seg} entry {id} properties");
        }
    }
}

#[tokio::test]
async fn golden_finalized_segments_read_back() {
    for case in ["small", "n1000", "shapes"] {
        let b = golden_backend(load_golden(case, |_| false).await);
        assert_reads(&b, &load_jsonl(case, &["read.jsonl"]), true).await;
        assert_reads(&b, &load_jsonl(case, &["write.jsonl"]), true).await;
    }
    let b = golden_backend(load_golden("recovered", |_| false).await);
    assert_reads(&b, &load_jsonl("recovered", &["read.jsonl"]), true).await;
    assert_eq!(b.fence(golden_seg(0)).await.unwrap(), 249);
    assert_eq!(b.finalize(golden_seg(0)).await.unwrap().blocks, 5);
}

#[tokio::test]
async fn golden_compacted_segment_reads_and_recompacts() {
    let store = load_golden("compacted", |_| false).await;
    let b = golden_backend(store.clone());
    let expected = load_jsonl("compacted", &["write-1.jsonl", "write-2.jsonl"]);
    assert_eq!(expected, load_jsonl("compacted", &["read.jsonl"]));
    assert_reads(&b, &expected, true).await;
    let footer_before = store.get("golden/1/0/footer.blk", None).await.unwrap();
    assert_eq!(b.compact(golden_seg(0)).await.unwrap(), 19826, "already compacted: size of the merged blocks");
    assert_eq!(store.get("golden/1/0/footer.blk", None).await.unwrap(), footer_before);
    let sum = b.finalize(golden_seg(0)).await.unwrap();
    assert_eq!((sum.last_entry_id, sum.size, sum.blocks), (299, 19826, 3));
    // Segment 1 compacts with our code and reads back the same.
    b.compact(golden_seg(1)).await.unwrap();
    assert_reads(&b, &expected, true).await;
}

#[tokio::test]
async fn golden_crashed_segment_fences_and_finalizes() {
    let store = load_golden("crashed", |_| false).await;
    let b = golden_backend(store.clone());
    let written = load_jsonl("crashed", &["write.jsonl"]);
    // Before recovery a reader sees every acknowledged entry but no end (the segment is still open).
    assert_reads(&b, &written, false).await;
    let mut tail = b.open_reader(golden_seg(0)).await.unwrap();
    let (got, _) = scenarios::read_all(tail.as_mut(), 0, 1000).await.unwrap();
    assert_eq!(got.len(), 250);
    assert_eq!(b.fence(golden_seg(0)).await.unwrap(), 249);
    assert!(store.stat("golden/1/0/5.blk").await.unwrap().fenced, "fence at the next block, as upstream");
    let sum = b.finalize(golden_seg(0)).await.unwrap();
    assert_eq!((sum.last_entry_id, sum.blocks), (249, 5));
    // Same footer upstream's recovery wrote for the same blocks.
    let ours = store.get("golden/1/0/footer.blk", None).await.unwrap();
    let upstream = std::fs::read(golden_dir("recovered").join("objects/golden/1/0/footer.blk")).unwrap();
    assert_eq!(ours.as_ref(), upstream.as_slice());
    let batch = tail.read_batch(250, 10, 1 << 20).await.unwrap();
    assert!(batch.entries.is_empty() && batch.end_of_segment);
    assert_reads(&b, &written, true).await;
}

#[tokio::test]
async fn golden_n1000_footer_is_byte_equal() {
    // Only the data blocks: our recovery rebuilds index + footer and must write upstream's exact bytes.
    let store = load_golden("n1000", |k| k.ends_with("footer.blk") || k.ends_with("/10.blk")).await;
    let b = golden_backend(store.clone());
    let sum = b.finalize(golden_seg(0)).await.unwrap();
    assert_eq!((sum.last_entry_id, sum.blocks, sum.size), (999, 10, 66285));
    let ours = store.get("golden/1/0/footer.blk", None).await.unwrap();
    let upstream = std::fs::read(golden_dir("n1000").join("objects/golden/1/0/footer.blk")).unwrap();
    assert_eq!(ours.as_ref(), upstream.as_slice());
    assert!(store.stat("golden/1/0/10.blk").await.unwrap().fenced);

    // The writer path produces the same footer for the same blocks.
    let store2 = mem();
    let b2 = golden_backend(store2.clone());
    let w = b2.create_writer(golden_seg(0)).await.unwrap();
    for n in 0..10 {
        let key = keys::block_key("golden", 1, 0, n);
        let body = store.get(&key, None).await.unwrap();
        let start = if n == 0 { woodpecker_core::codec::HEADER_RECORD_LEN } else { 0 };
        let block = woodpecker_core::codec::decode_block(&body, start).unwrap();
        w.write_block(woodpecker_storage::segment::BlockToWrite {
            block_id: n,
            first_entry_id: block.header.first_entry_id,
            entries: block.entries.into_iter().map(Into::into).collect(),
        })
        .await
        .unwrap();
        // Our encoder reproduces upstream's block objects byte for byte.
        assert_eq!(store2.get(&key, None).await.unwrap(), body, "block {n}");
    }
    w.finalize(9).await.unwrap();
    assert_eq!(store2.get("golden/1/0/footer.blk", None).await.unwrap().as_ref(), upstream.as_slice());
}

#[tokio::test]
async fn golden_flipped_byte_names_the_object() {
    let store = load_golden("n1000", |_| false).await;
    let key = "golden/1/0/4.blk";
    let mut body = store.get(key, None).await.unwrap().to_vec();
    body[1000] ^= 0x01;
    store.put(key, Bytes::from(body)).await.unwrap();
    let b = golden_backend(store);
    let mut r = b.open_reader(golden_seg(0)).await.unwrap();
    match scenarios::read_all(r.as_mut(), 0, 50).await.unwrap_err() {
        SegmentError::Corrupt { location, offset, .. } => {
            assert_eq!(location, key);
            assert!(offset < 6637);
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

/// A block that landed after the caller's last acknowledged one is replaced by the fence at finalize.
#[tokio::test]
async fn finalize_hides_an_excluded_block() {
    let store = mem();
    let b = scenarios::backend(store.clone(), "files");
    let s = scenarios::seg(31);
    let w = b.create_writer(s).await.unwrap();
    for i in 0..4 {
        w.write_block(scenarios::block(i, i * 2, 2)).await.unwrap();
    }
    let mut tail = b.open_reader(s).await.unwrap();
    assert_eq!(tail.read_batch(0, 2, 1).await.unwrap().entries.len(), 2);
    let sum = w.finalize(2).await.unwrap();
    assert_eq!(sum.last_entry_id, 5);
    assert!(store.stat(&keys::block_key("files", 7, 31, 3)).await.unwrap().fenced);
    let (got, end) = scenarios::read_all(tail.as_mut(), 2, 100).await.unwrap();
    assert_eq!(got.last().map(|e| e.0), Some(5));
    assert!(end);
}

// ---- footers and block headers whose CRCs hold but whose contents cannot be true ----

/// `[Index…][Footer v6]` as the object format lays it out, for hand-made index records and LAC.
fn footer_body(index: &[codec::IndexRecord], lac: i64) -> Bytes {
    let mut out = Vec::new();
    for r in index {
        codec::encode_index(&mut out, r);
    }
    let index_length = out.len() as u32;
    codec::encode_footer(
        &mut out,
        &codec::FooterRecord {
            total_blocks: index.len() as i32,
            total_records: index.len() as u32,
            total_size: index.iter().map(|r| u64::from(r.block_size)).sum(),
            index_offset: 0,
            index_length,
            version: 6,
            flags: 0,
            lac,
        },
    );
    Bytes::from(out)
}

/// Reads segment `s` of `b` from entry 0 to its end, as a reader would.
async fn read_segment(b: &ObjectSegmentBackend, s: SegmentRef) -> Result<(Vec<(i64, Bytes)>, bool), SegmentError> {
    let mut r = b.open_reader(s).await?;
    scenarios::read_all(r.as_mut(), 0, 100).await
}

/// A footer is authoritative, so one whose index leaves out a block, or whose LAC lies past its blocks, would
/// make readers skip entries or end a segment early: it is corruption naming the footer, not a shorter read.
#[tokio::test]
async fn footer_whose_index_skips_entries_or_overstates_the_lac_is_corrupt() {
    let store = mem();
    let b = scenarios::backend(store.clone(), "files");
    let s = scenarios::seg(41);
    let w = b.create_writer(s).await.unwrap();
    for i in 0..3 {
        w.write_block(scenarios::block(i, i * 3, 3)).await.unwrap();
    }
    w.finalize(2).await.unwrap();
    let footer_key = keys::footer_key("files", 7, 41);
    let real = store.get(&footer_key, None).await.unwrap();
    let index = codec::decode_index(&real, 0, 3 * codec::INDEX_RECORD_LEN).unwrap();
    assert_eq!(read_segment(&b, s).await.unwrap().0.len(), 9, "the real footer reads every entry");

    let crafted = [
        ("index without block 1", footer_body(&[index[0], index[2]], 8)),
        ("LAC past the last block", footer_body(&index, 100)),
        ("index entries out of order", footer_body(&[index[1], index[0], index[2]], 8)),
    ];
    for (name, body) in crafted {
        store.put(&footer_key, body).await.unwrap();
        match read_segment(&b, s).await {
            Err(SegmentError::Corrupt { location, .. }) => assert_eq!(location, footer_key, "{name}"),
            other => panic!("{name}: expected the footer to be corrupt, got {other:?}"),
        }
        assert!(matches!(b.fence(s).await, Err(SegmentError::Corrupt { .. })), "{name}: fence");
    }
}

/// Fencing learns the segment's last entry from the last block's header alone; a CRC-valid header claiming more
/// entries than its block can hold is corruption, not the segment's end.
#[tokio::test]
async fn fence_rejects_a_block_header_claiming_more_entries_than_it_holds() {
    let store = mem();
    let b = scenarios::backend(store.clone(), "files");
    let s = scenarios::seg(42);
    // A real one-entry block whose header, re-encoded with a valid CRC, claims entries 0..=1<<40.
    let mut block = Vec::new();
    let mut header = codec::encode_block(&mut block, 0, 0, &[b"one entry".as_slice()]);
    header.last_entry_id = 1 << 40;
    let mut body = Vec::new();
    codec::encode_header(&mut body, &codec::HeaderRecord { version: 6, flags: 0, first_entry_id: 0 });
    codec::encode_block_header(&mut body, &header);
    body.extend_from_slice(&block[codec::BLOCK_HEADER_RECORD_LEN..]);
    let key = keys::block_key("files", 7, 42, 0);
    store.put(&key, Bytes::from(body)).await.unwrap();
    match b.fence(s).await {
        Err(SegmentError::Corrupt { location, source: codec::CodecError::ImpossibleEntryRange { .. }, .. }) => {
            assert_eq!(location, key);
        }
        other => panic!("expected an impossible entry range in {key}, got {other:?}"),
    }
}

/// A block object whose size does not fit the u32 of its footer index record is refused before it is encoded.
#[tokio::test]
async fn block_too_large_for_its_index_record_is_refused() {
    let store = mem();
    let b = scenarios::backend(store.clone(), "files");
    let w = b.create_writer(scenarios::seg(43)).await.unwrap();
    let huge = Bytes::from(vec![0u8; codec::MAX_BLOCK_DATA_LEN - codec::RECORD_HEADER_LEN + 1]);
    let blk = woodpecker_storage::segment::BlockToWrite { block_id: 0, first_entry_id: 0, entries: vec![huge.into()] };
    match w.write_block(blk).await {
        Err(SegmentError::Io { op: "encode block", source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput);
        }
        other => panic!("expected the block to be refused, got {other:?}"),
    }
    let uploaded = store.stat(&keys::block_key("files", 7, 43, 0)).await;
    assert!(matches!(uploaded, Err(woodpecker_storage::object::ObjectError::NotFound { .. })), "nothing uploaded");
}

// ---- fault injection: lost replies and transient failures ----

/// Wraps a store: the first `lose` conditional puts are applied but answer `Unreachable` (a lost reply), and the
/// next `fail` ones fail `Unreachable` without being applied.
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn ObjectStorage>,
    lose: std::sync::atomic::AtomicU32,
    fail: std::sync::atomic::AtomicU32,
}

fn unreachable() -> woodpecker_storage::object::ObjectError {
    woodpecker_storage::object::ObjectError::Unreachable {
        endpoint: "flaky".into(),
        attempts: 1,
        source: "injected".into(),
    }
}

fn take(n: &std::sync::atomic::AtomicU32) -> bool {
    n.fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

#[async_trait::async_trait]
impl ObjectStorage for Flaky {
    fn describe(&self) -> String {
        "flaky".into()
    }
    async fn get(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Bytes, woodpecker_storage::object::ObjectError> {
        self.inner.get(key, range).await
    }
    async fn put(&self, key: &str, body: Bytes) -> Result<(), woodpecker_storage::object::ObjectError> {
        self.inner.put(key, body).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), woodpecker_storage::object::ObjectError> {
        if take(&self.lose) {
            self.inner.put_if_absent(key, body).await?;
            return Err(unreachable());
        }
        if take(&self.fail) {
            return Err(unreachable());
        }
        self.inner.put_if_absent(key, body).await
    }
    async fn put_fence(&self, key: &str) -> Result<(), woodpecker_storage::object::ObjectError> {
        self.inner.put_fence(key).await
    }
    async fn stat(
        &self,
        key: &str,
    ) -> Result<woodpecker_storage::object::ObjectInfo, woodpecker_storage::object::ObjectError> {
        self.inner.stat(key).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<woodpecker_storage::object::ObjectInfo>, woodpecker_storage::object::ObjectError> {
        self.inner.list(prefix).await
    }
    async fn remove(&self, key: &str) -> Result<(), woodpecker_storage::object::ObjectError> {
        self.inner.remove(key).await
    }
    async fn remove_prefix(&self, prefix: &str) -> Result<usize, woodpecker_storage::object::ObjectError> {
        self.inner.remove_prefix(prefix).await
    }
}

#[tokio::test]
async fn lost_replies_and_transient_failures_are_retried() {
    let inner = mem();
    let flaky = Arc::new(Flaky {
        inner: inner.clone(),
        lose: std::sync::atomic::AtomicU32::new(0),
        fail: std::sync::atomic::AtomicU32::new(0),
    });
    let b = ObjectSegmentBackend::new(
        flaky.clone(),
        "files".into(),
        ObjectSegmentOptions {
            max_flush_retries: 3,
            retry_interval: std::time::Duration::from_millis(5),
            write_lock_object: false,
            ..ObjectSegmentOptions::default()
        },
    );
    let s = scenarios::seg(30);
    let w = b.create_writer(s).await.unwrap();
    // Lost reply: the block landed, the retry sees our own bytes -> success.
    flaky.lose.store(1, std::sync::atomic::Ordering::SeqCst);
    w.write_block(scenarios::block(0, 0, 3)).await.unwrap();
    // Two transient failures, then success (3 attempts allowed).
    flaky.fail.store(2, std::sync::atomic::Ordering::SeqCst);
    w.write_block(scenarios::block(1, 3, 3)).await.unwrap();
    // Too many: the error surfaces as retryable, nothing was written.
    flaky.fail.store(3, std::sync::atomic::Ordering::SeqCst);
    let e = w.write_block(scenarios::block(2, 6, 3)).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    // A resend of the same block is idempotent.
    w.write_block(scenarios::block(2, 6, 3)).await.unwrap();
    w.write_block(scenarios::block(1, 3, 3)).await.unwrap();
    // Someone else's block at our next key: this writer lost the segment.
    let other = b.create_writer(s).await.unwrap();
    other.write_block(scenarios::block(3, 9, 1)).await.unwrap();
    let e = w.write_block(scenarios::block(3, 9, 2)).await.unwrap_err();
    assert!(matches!(e, SegmentError::Fenced { .. }), "{e}");
    assert!(matches!(w.write_block(scenarios::block(4, 11, 1)).await, Err(SegmentError::Fenced { .. })));
    // The segment holds what landed, verified.
    let sum = b.finalize(s).await.unwrap();
    assert_eq!((sum.last_entry_id, sum.blocks), (9, 4));
}

/// Counts the bytes `get` returns, delegating everything to a memory store.
#[derive(Debug, Default)]
struct CountingStore {
    inner: MemoryObjectStorage,
    read: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl ObjectStorage for CountingStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn get(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Bytes, woodpecker_storage::object::ObjectError> {
        let b = self.inner.get(key, range).await?;
        self.read.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(b)
    }
    async fn put(&self, key: &str, body: Bytes) -> Result<(), woodpecker_storage::object::ObjectError> {
        self.inner.put(key, body).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), woodpecker_storage::object::ObjectError> {
        self.inner.put_if_absent(key, body).await
    }
    async fn put_fence(&self, key: &str) -> Result<(), woodpecker_storage::object::ObjectError> {
        self.inner.put_fence(key).await
    }
    async fn stat(
        &self,
        key: &str,
    ) -> Result<woodpecker_storage::object::ObjectInfo, woodpecker_storage::object::ObjectError> {
        self.inner.stat(key).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<woodpecker_storage::object::ObjectInfo>, woodpecker_storage::object::ObjectError> {
        self.inner.list(prefix).await
    }
    async fn remove(&self, key: &str) -> Result<(), woodpecker_storage::object::ObjectError> {
        self.inner.remove(key).await
    }
    async fn remove_prefix(&self, prefix: &str) -> Result<usize, woodpecker_storage::object::ObjectError> {
        self.inner.remove_prefix(prefix).await
    }
}

#[tokio::test]
async fn the_visible_end_comes_from_block_headers_not_the_segment_data() {
    let store = Arc::new(CountingStore::default());
    let backend = ObjectSegmentBackend::new(store.clone(), "files".into(), ObjectSegmentOptions::default());
    let seg = SegmentRef { log_id: 1, segment_id: 0 };
    assert_eq!(backend.visible_end(seg).await.unwrap(), -1, "nothing written");
    let w = backend.create_writer(seg).await.unwrap();
    let payload = vec![7u8; 64 * 1024];
    for b in 0..40i64 {
        let block =
            woodpecker_storage::segment::BlockToWrite::new(b, b * 4, (0..4).map(|_| Bytes::from(payload.clone())));
        w.write_block(block).await.unwrap();
    }
    store.read.store(0, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(backend.visible_end(seg).await.unwrap(), 159);
    let read = store.read.load(std::sync::atomic::Ordering::Relaxed);
    assert!(read < 1024, "{read} bytes read to find the end of a 10 MiB segment");
    // A gap hides what follows it, as for readers.
    store.inner.remove(&keys::block_key("files", 1, 0, 20)).await.unwrap();
    assert_eq!(backend.visible_end(seg).await.unwrap(), 79, "blocks after the gap are not visible");
}
