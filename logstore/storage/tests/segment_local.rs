//! Local `data.log` segments: exact bytes, crash recovery, corruption, fencing races and tailing reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use woodpecker_core::codec::{
    self, BLOCK_HEADER_RECORD_LEN, FooterRecord, HEADER_RECORD_LEN, INDEX_RECORD_LEN, RECORD_HEADER_LEN,
};
use woodpecker_storage::segment::local::LocalSegmentBackend;
use woodpecker_storage::segment::{BlockToWrite, EntryBytes, SegmentBackend, SegmentError, SegmentReader, SegmentRef};

const SEG: SegmentRef = SegmentRef { log_id: 7, segment_id: 3 };

fn backend(dir: &Path) -> LocalSegmentBackend {
    LocalSegmentBackend::new(dir.to_path_buf(), "files".into())
}

fn data_path(dir: &Path) -> PathBuf {
    dir.join("files/7/3/data.log")
}

/// Entries of block `b`: `n` payloads with distinct contents and sizes.
fn entries(b: i64, n: usize) -> Vec<EntryBytes> {
    (0..n).map(|i| Bytes::from(format!("block{b}-entry{i}-{}", "x".repeat(i * 3 + b as usize))).into()).collect()
}

/// Blocks with the given entry counts, ids dense from 0.
fn blocks(counts: &[usize]) -> Vec<BlockToWrite> {
    let mut first = 0;
    counts
        .iter()
        .enumerate()
        .map(|(b, &n)| {
            let blk = BlockToWrite { block_id: b as i64, first_entry_id: first, entries: entries(b as i64, n) };
            first += n as i64;
            blk
        })
        .collect()
}

/// What `data.log` must hold for `blocks`, built by hand with the codec: header, blocks, index, footer.
fn expected_file(blocks: &[BlockToWrite], finalized: bool) -> (Vec<u8>, Vec<codec::IndexRecord>) {
    let mut out = Vec::new();
    codec::encode_header(&mut out, &codec::HeaderRecord { version: 6, flags: 0, first_entry_id: 0 });
    let mut index = Vec::new();
    for b in blocks {
        let start = out.len();
        let h = codec::encode_block(&mut out, b.block_id as i32, b.first_entry_id, &b.entries);
        index.push(codec::IndexRecord {
            block_number: b.block_id as i32,
            start_offset: start as i64,
            block_size: (out.len() - start) as u32,
            first_entry_id: h.first_entry_id,
            last_entry_id: h.last_entry_id,
        });
    }
    if finalized {
        let index_offset = out.len() as u64;
        for r in &index {
            codec::encode_index(&mut out, r);
        }
        let total_size = out.len() as u64;
        codec::encode_footer(
            &mut out,
            &FooterRecord {
                total_blocks: index.len() as i32,
                total_records: index.len() as u32,
                total_size,
                index_offset,
                index_length: (index.len() * INDEX_RECORD_LEN) as u32,
                version: 6,
                flags: 0,
                lac: index.last().map_or(-1, |r| r.last_entry_id),
            },
        );
    }
    (out, index)
}

fn all_entries(blocks: &[BlockToWrite]) -> Vec<(i64, Bytes)> {
    blocks
        .iter()
        .flat_map(|b| b.entries.iter().enumerate().map(|(i, e)| (b.first_entry_id + i as i64, e.to_bytes())))
        .collect()
}

/// Reads from entry 0 until `end_of_segment`; panics if the segment does not end.
async fn read_to_end(r: &mut dyn SegmentReader, max_entries: usize) -> Vec<(i64, Bytes)> {
    let mut out: Vec<(i64, Bytes)> = Vec::new();
    for _ in 0..10_000 {
        let from = out.last().map_or(0, |(id, _)| id + 1);
        let batch = r.read_batch(from, max_entries, u64::MAX).await.unwrap();
        if let Some((first, _)) = batch.entries.first() {
            assert_eq!(*first, from, "a batch starts at the requested id");
        }
        out.extend(batch.entries);
        if batch.end_of_segment {
            return out;
        }
    }
    panic!("segment never ended; read {} entries", out.len());
}

async fn write_all(
    b: &LocalSegmentBackend,
    blks: &[BlockToWrite],
) -> Box<dyn woodpecker_storage::segment::SegmentWriter> {
    let w = b.create_writer(SEG).await.unwrap();
    // One block appending while the next one is encoded.
    assert_eq!(w.max_parallel_blocks(), 2);
    for blk in blks {
        w.write_block(blk.clone()).await.unwrap();
    }
    w
}

#[tokio::test]
async fn write_finalize_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    let blks = blocks(&[3, 1, 5, 2, 4]);
    let w = write_all(&b, &blks).await;
    let summary = w.finalize(4).await.unwrap();
    let len = std::fs::metadata(data_path(dir.path())).unwrap().len();
    assert_eq!((summary.last_entry_id, summary.blocks, summary.size), (14, 5, len));
    // Idempotent, on the writer and through the backend.
    assert_eq!(w.finalize(4).await.unwrap(), summary);
    assert_eq!(b.finalize(SEG).await.unwrap(), summary);
    assert_eq!(b.fence(SEG).await.unwrap(), 14);
    assert!(matches!(w.write_block(blocks(&[3, 1, 5, 2, 4, 1])[5].clone()).await, Err(SegmentError::Finalized { .. })));

    let want = all_entries(&blks);
    for max_entries in [1, 3, 100] {
        let mut r = b.open_reader(SEG).await.unwrap();
        assert_eq!(read_to_end(r.as_mut(), max_entries).await, want);
    }
    // Whole blocks, at least one entry; reads from the middle of a block start at the asked id.
    let mut r = b.open_reader(SEG).await.unwrap();
    let batch = r.read_batch(5, 1, u64::MAX).await.unwrap();
    assert_eq!(batch.entries.iter().map(|e| e.0).collect::<Vec<_>>(), vec![5, 6, 7, 8]);
    assert!(!batch.end_of_segment);
    let batch = r.read_batch(13, 100, 1).await.unwrap();
    assert_eq!(batch.entries.iter().map(|e| e.0).collect::<Vec<_>>(), vec![13, 14]);
    assert!(batch.end_of_segment);
    let batch = r.read_batch(15, 100, u64::MAX).await.unwrap();
    assert!(batch.entries.is_empty() && batch.end_of_segment);
    assert_eq!(b.compact(SEG).await.unwrap(), len);
}

#[tokio::test]
async fn golden_bytes_of_data_log() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    let blks = blocks(&[2, 3, 1]);
    let w = write_all(&b, &blks).await;
    // Before finalize: header + blocks, nothing else.
    let (unfinalized, _) = expected_file(&blks, false);
    assert_eq!(std::fs::read(data_path(dir.path())).unwrap(), unfinalized);
    w.finalize(2).await.unwrap();
    let got = std::fs::read(data_path(dir.path())).unwrap();
    let (want, index) = expected_file(&blks, true);
    assert_eq!(got, want);

    // The numbers upstream's reader relies on, spelled out.
    assert_eq!(index[0].start_offset, HEADER_RECORD_LEN as i64);
    assert_eq!(index[1].start_offset, index[0].start_offset + i64::from(index[0].block_size));
    let data0: usize = blks[0].entries.iter().map(|e| e.len() + 9).sum();
    assert_eq!(index[0].block_size as usize, BLOCK_HEADER_RECORD_LEN + data0);
    let blocks_end = (index[2].start_offset + i64::from(index[2].block_size)) as usize;
    let bytes = Bytes::from(got.clone());
    let (footer, footer_pos) = codec::decode_footer_at_end(&bytes).unwrap();
    assert_eq!(footer_pos, got.len() - codec::FOOTER_V6_RECORD_LEN);
    assert_eq!(
        footer,
        FooterRecord {
            total_blocks: 3,
            total_records: 3,
            total_size: footer_pos as u64,
            index_offset: blocks_end as u64,
            index_length: 3 * INDEX_RECORD_LEN as u32,
            version: 6,
            flags: 0,
            lac: 5,
        }
    );
    assert_eq!(codec::decode_index(&bytes, blocks_end, 3 * INDEX_RECORD_LEN).unwrap(), index);
    // Header record: type 1, length 16, version 6, flags 0, first entry 0, magic.
    assert_eq!(&got[4..9], &[1, 16, 0, 0, 0]);
    assert_eq!(&got[9..25], &[6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'H', b'D', b'R', 1]);
}

#[tokio::test]
async fn empty_segments() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    // A writer that never wrote: finalize(-1) leaves header + footer with LAC -1.
    let w = b.create_writer(SEG).await.unwrap();
    let s = w.finalize(-1).await.unwrap();
    assert_eq!((s.last_entry_id, s.blocks), (-1, 0));
    assert_eq!(std::fs::read(data_path(dir.path())).unwrap(), expected_file(&[], true).0);
    let mut r = b.open_reader(SEG).await.unwrap();
    assert!(read_to_end(r.as_mut(), 10).await.is_empty());

    // A segment nobody ever created: fence and finalize still end it.
    let other = SegmentRef { log_id: 7, segment_id: 4 };
    let mut r = b.open_reader(other).await.unwrap();
    let batch = r.read_batch(0, 10, 1 << 20).await.unwrap();
    assert!(batch.entries.is_empty() && !batch.end_of_segment, "no file yet means nothing yet");
    assert_eq!(b.fence(other).await.unwrap(), -1);
    let batch = r.read_batch(0, 10, 1 << 20).await.unwrap();
    assert!(batch.entries.is_empty() && batch.end_of_segment, "fenced without data ends it");
    assert!(matches!(b.create_writer(other).await, Err(SegmentError::Fenced { .. })));
    let s = b.finalize(other).await.unwrap();
    assert_eq!((s.last_entry_id, s.blocks), (-1, 0));
    assert_eq!(b.finalize(other).await.unwrap(), s);
}

#[tokio::test]
async fn ids_must_be_dense_and_a_segment_gets_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    let blks = blocks(&[2, 2]);
    let w = b.create_writer(SEG).await.unwrap();
    assert!(matches!(w.write_block(blks[1].clone()).await, Err(SegmentError::OutOfOrder { block_id: 1, .. })));
    let mut shifted = blks[0].clone();
    shifted.first_entry_id = 1;
    assert!(matches!(w.write_block(shifted).await, Err(SegmentError::OutOfOrder { .. })));
    let mut empty = blks[0].clone();
    empty.entries.clear();
    assert!(matches!(w.write_block(empty).await, Err(SegmentError::OutOfOrder { .. })));
    w.write_block(blks[0].clone()).await.unwrap();
    assert!(matches!(w.write_block(blks[0].clone()).await, Err(SegmentError::OutOfOrder { .. })));
    w.write_block(blks[1].clone()).await.unwrap();
    assert!(b.create_writer(SEG).await.is_err(), "a second writer for an existing segment");
    assert!(matches!(w.finalize(2).await, Err(SegmentError::OutOfOrder { .. })));
    w.close().await.unwrap();
    assert!(w.write_block(blocks(&[2, 2, 1])[2].clone()).await.is_err());
    assert_eq!(b.fence(SEG).await.unwrap(), 3);
}

/// Upstream's staged crash matrix: the file cut at every interesting point recovers to exactly the
/// blocks that were completely written.
#[tokio::test]
async fn crash_matrix_recovers_fully_written_blocks() {
    let blks = blocks(&[3, 2]);
    let (full, index) = expected_file(&blks, true);
    let b0 = index[0].start_offset as usize;
    let b1 = index[1].start_offset as usize;
    let end = b1 + index[1].block_size as usize;
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        ("empty", Vec::new(), 0),
        ("inside header", full[..10].to_vec(), 0),
        ("after header", full[..b0].to_vec(), 0),
        ("inside 1st block header", full[..b0 + 20].to_vec(), 0),
        ("after 1st block header", full[..b0 + BLOCK_HEADER_RECORD_LEN].to_vec(), 0),
        ("inside 1st data record", full[..b0 + BLOCK_HEADER_RECORD_LEN + 5].to_vec(), 0),
        ("inside last data record of 1st block", full[..b1 - 1].to_vec(), 0),
        ("after 1st block", full[..b1].to_vec(), 1),
        ("inside 2nd block header", full[..b1 + 9].to_vec(), 1),
        ("inside 2nd data record", full[..b1 + BLOCK_HEADER_RECORD_LEN + 12].to_vec(), 1),
        ("after 2nd block", full[..end].to_vec(), 2),
        ("inside 1st index record", full[..end + 20].to_vec(), 2),
        ("inside 2nd index record", full[..end + INDEX_RECORD_LEN + 3].to_vec(), 2),
        ("after index", full[..end + 2 * INDEX_RECORD_LEN].to_vec(), 2),
        ("inside footer", full[..full.len() - 7].to_vec(), 2),
        ("complete", full.clone(), 2),
        ("zero-filled tail", [&full[..b1], &[0u8; 300][..]].concat(), 1),
        ("zeroed last block", [&full[..b1], &vec![0u8; end - b1][..]].concat(), 1),
        // A complete last block that fails verification is corruption, not a torn tail: see
        // corrupt_complete_last_block_is_reported_not_cut_as_a_torn_tail.
    ];
    for (name, bytes, complete) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = data_path(dir.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let want = all_entries(&blks[..complete]);
        let last = want.last().map_or(-1, |e| e.0);

        // Before the fence a reader sees the complete blocks and then waits: the tail may still grow.
        let b = backend(dir.path());
        let mut r = b.open_reader(SEG).await.unwrap();
        let batch = r.read_batch(0, 1000, u64::MAX).await.unwrap();
        if name != "complete" {
            assert_eq!(batch.entries, want, "{name}: reader before fence");
            assert!(!batch.end_of_segment || name == "complete", "{name}");
        }

        // A different "process" recovers.
        let fencer = backend(dir.path());
        assert_eq!(fencer.fence(SEG).await.unwrap(), last, "{name}: fence");
        assert_eq!(read_to_end(r.as_mut(), 1000).await, want, "{name}: reader after fence");
        let s = fencer.finalize(SEG).await.unwrap();
        assert_eq!((s.last_entry_id, s.blocks as usize), (last, complete), "{name}: finalize");
        let (golden, _) = expected_file(&blks[..complete], true);
        assert_eq!(std::fs::read(&path).unwrap(), golden, "{name}: recovered file");
        assert_eq!(s.size, golden.len() as u64, "{name}");
        assert_eq!(fencer.finalize(SEG).await.unwrap(), s, "{name}: idempotent");
        let mut r = fencer.open_reader(SEG).await.unwrap();
        assert_eq!(read_to_end(r.as_mut(), 2).await, want, "{name}: read back");
    }
}

fn assert_corrupt_at(r: Result<impl std::fmt::Debug, SegmentError>, path: &Path, at: u64) {
    match r {
        Err(SegmentError::Corrupt { location, offset, .. }) => {
            assert_eq!(location, path.display().to_string());
            assert_eq!(offset, at);
        }
        other => panic!("expected corruption at {at}, got {other:?}"),
    }
}

#[tokio::test]
async fn corruption_in_the_middle_is_reported_not_skipped() {
    let blks = blocks(&[2, 3, 2]);
    let (open_file, index) = expected_file(&blks, false);
    let mid = index[1].start_offset as usize;
    // A flipped data byte (block CRC), a flipped block-header byte (record CRC), each with a block after.
    for (name, at) in [("data", mid + BLOCK_HEADER_RECORD_LEN + 4), ("block header", mid + 12)] {
        let dir = tempfile::tempdir().unwrap();
        let path = data_path(dir.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut bad = open_file.clone();
        bad[at] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        let b = backend(dir.path());
        let mut r = b.open_reader(SEG).await.unwrap();
        let first = r.read_batch(0, 1, u64::MAX).await.unwrap();
        assert_eq!(first.entries.len(), 2, "{name}: the block before is fine");
        assert_corrupt_at(r.read_batch(2, 100, u64::MAX).await, &path, mid as u64);
        assert_corrupt_at(b.fence(SEG).await, &path, mid as u64);
        assert_corrupt_at(b.finalize(SEG).await, &path, mid as u64);
        assert_eq!(std::fs::read(&path).unwrap(), bad, "{name}: nothing truncated");
    }

    // Finalized file: fence trusts the footer, the reader verifies the block it reads.
    let (finalized, _) = expected_file(&blks, true);
    let dir = tempfile::tempdir().unwrap();
    let path = data_path(dir.path());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut bad = finalized.clone();
    bad[mid + BLOCK_HEADER_RECORD_LEN + 1] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let b = backend(dir.path());
    let mut r = b.open_reader(SEG).await.unwrap();
    assert_eq!(r.read_batch(0, 1, u64::MAX).await.unwrap().entries.len(), 2);
    assert_corrupt_at(r.read_batch(2, 1, u64::MAX).await, &path, mid as u64);
    assert_corrupt_at(r.read_batch(3, 1, u64::MAX).await, &path, mid as u64);
}

/// A torn tail is a last block whose bytes end before its declared length. When every declared byte is there
/// but the block fails verification, the block was written whole and then damaged: the reader, fence and
/// finalize report it with the file and offset, and nothing is truncated.
#[tokio::test]
async fn corrupt_complete_last_block_is_reported_not_cut_as_a_torn_tail() {
    let blks = blocks(&[3, 2]);
    let (open_file, index) = expected_file(&blks, false);
    let last = index[1].start_offset as usize;
    let cases = [
        ("data byte", open_file.len() - 2),
        ("first data record header", last + BLOCK_HEADER_RECORD_LEN + 4),
        // Block number and block CRC fields: the header's type and length fields still locate EOF.
        ("block number in the block header", last + RECORD_HEADER_LEN + 1),
        ("block CRC in the block header", last + BLOCK_HEADER_RECORD_LEN - 2),
    ];
    for (name, at) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = data_path(dir.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut bad = open_file.clone();
        bad[at] ^= 0x55;
        std::fs::write(&path, &bad).unwrap();
        let b = backend(dir.path());
        let mut r = b.open_reader(SEG).await.unwrap();
        let first = r.read_batch(0, 1, u64::MAX).await.unwrap();
        assert_eq!(first.entries, all_entries(&blks[..1]), "{name}: the block before is fine");
        assert_corrupt_at(r.read_batch(3, 100, u64::MAX).await, &path, last as u64);
        assert_corrupt_at(b.fence(SEG).await, &path, last as u64);
        assert_corrupt_at(b.finalize(SEG).await, &path, last as u64);
        assert_eq!(std::fs::read(&path).unwrap(), bad, "{name}: nothing truncated");
    }
}

/// A block whose size with its headers does not fit the u32 of its index record is refused before it is
/// encoded (the payload below is never touched: its zero pages are not even mapped in).
#[tokio::test]
async fn block_too_large_for_its_index_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    let w = b.create_writer(SEG).await.unwrap();
    let huge = Bytes::from(vec![0u8; codec::MAX_BLOCK_DATA_LEN - RECORD_HEADER_LEN + 1]);
    let blk = BlockToWrite { block_id: 0, first_entry_id: 0, entries: vec![huge.into()] };
    match w.write_block(blk).await {
        Err(SegmentError::Io { op: "encode block", source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput);
        }
        other => panic!("expected the block to be refused, got {other:?}"),
    }
    assert_eq!(std::fs::metadata(data_path(dir.path())).unwrap().len(), 0, "nothing appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_race_never_loses_an_acknowledged_block() {
    for round in 0..12u64 {
        let dir = tempfile::tempdir().unwrap();
        let b = Arc::new(backend(dir.path()));
        let w = b.create_writer(SEG).await.unwrap();
        let writer = tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut first = 0;
            for id in 0.. {
                let n = 1 + (id as usize % 3);
                let blk = BlockToWrite { block_id: id, first_entry_id: first, entries: entries(id, n) };
                match w.write_block(blk.clone()).await {
                    Ok(()) => {
                        acked.push(blk.last_entry_id());
                        first += n as i64;
                    }
                    Err(e) => {
                        assert!(matches!(e, SegmentError::Fenced { .. }), "{e}");
                        // Every later write fails the same way.
                        let next = w.write_block(blk).await.unwrap_err();
                        assert!(matches!(next, SegmentError::Fenced { .. }));
                        return acked;
                    }
                }
            }
            acked
        });
        // A reader tails the segment through the fence; it must end exactly at the fenced entry.
        let mut tail_reader = b.open_reader(SEG).await.unwrap();
        let tailer = tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let from = ids.last().map_or(0, |id| id + 1);
                let batch = tail_reader.read_batch(from, 7, 1 << 20).await.unwrap();
                let empty = batch.entries.is_empty();
                ids.extend(batch.entries.iter().map(|e| e.0));
                if batch.end_of_segment {
                    return ids;
                }
                if empty {
                    tokio::task::yield_now().await;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(2 + round * 3)).await;
        let fencer = backend(dir.path());
        let fenced = fencer.fence(SEG).await.unwrap();
        let acked = writer.await.unwrap();
        let tailed = tokio::time::timeout(Duration::from_secs(20), tailer).await.unwrap().unwrap();
        assert_eq!(tailed, (0..=fenced).collect::<Vec<_>>(), "round {round}: tailing reader");
        let last_acked = acked.last().copied().unwrap_or(-1);
        assert_eq!(fenced, last_acked, "round {round}: fence returns exactly the acknowledged end");
        let mut r = fencer.open_reader(SEG).await.unwrap();
        let got = read_to_end(r.as_mut(), 50).await;
        assert_eq!(got.iter().map(|e| e.0).collect::<Vec<_>>(), (0..=fenced).collect::<Vec<_>>());
        let s = fencer.finalize(SEG).await.unwrap();
        assert_eq!(s.last_entry_id, fenced);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tailing_reader_sees_every_entry_then_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(backend(dir.path()));
    let blks = blocks(&[1, 4, 2, 7, 1, 1, 3, 5, 2, 2, 6, 1, 1, 1, 9, 2, 3, 1, 4, 2]);
    let want = all_entries(&blks);
    let mut reader = b.open_reader(SEG).await.unwrap();
    let tail = tokio::spawn(async move {
        let mut got: Vec<(i64, Bytes)> = Vec::new();
        loop {
            let from = got.last().map_or(0, |(id, _)| id + 1);
            let batch = reader.read_batch(from, 3, 64).await.unwrap();
            if let Some((first, _)) = batch.entries.first() {
                assert_eq!(*first, from);
            }
            let empty = batch.entries.is_empty();
            got.extend(batch.entries);
            if batch.end_of_segment {
                return got;
            }
            if empty {
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
        }
    });
    let w = b.create_writer(SEG).await.unwrap();
    for blk in &blks {
        w.write_block(blk.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    w.finalize(blks.len() as i64 - 1).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), tail).await.unwrap().unwrap();
    assert_eq!(got, want);
}

#[tokio::test]
async fn fence_across_two_backend_instances() {
    let dir = tempfile::tempdir().unwrap();
    let a = backend(dir.path());
    let blks = blocks(&[2, 3, 1]);
    let w = a.create_writer(SEG).await.unwrap();
    w.write_block(blks[0].clone()).await.unwrap();
    w.write_block(blks[1].clone()).await.unwrap();
    let mut reader = a.open_reader(SEG).await.unwrap();
    assert_eq!(reader.read_batch(0, 100, u64::MAX).await.unwrap().entries.len(), 5);

    let b = backend(dir.path());
    assert_eq!(b.fence(SEG).await.unwrap(), 4);
    assert_eq!(b.fence(SEG).await.unwrap(), 4, "idempotent");
    assert!(matches!(w.write_block(blks[2].clone()).await, Err(SegmentError::Fenced { .. })));
    assert!(matches!(w.finalize(1).await, Err(SegmentError::Fenced { .. })));
    // The reader learns the end from the fence alone, before any footer exists.
    let batch = reader.read_batch(5, 100, u64::MAX).await.unwrap();
    assert!(batch.entries.is_empty() && batch.end_of_segment);
    let s = b.finalize(SEG).await.unwrap();
    assert_eq!((s.last_entry_id, s.blocks), (4, 2));
    assert_eq!(std::fs::read(data_path(dir.path())).unwrap(), expected_file(&blks[..2], true).0);
    assert!(a.create_writer(SEG).await.is_err());
}

#[tokio::test]
async fn reader_opened_before_the_file_exists() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    let mut r = b.open_reader(SEG).await.unwrap();
    let batch = r.read_batch(0, 10, u64::MAX).await.unwrap();
    assert!(batch.entries.is_empty() && !batch.end_of_segment);
    let w = b.create_writer(SEG).await.unwrap();
    let batch = r.read_batch(0, 10, u64::MAX).await.unwrap();
    assert!(batch.entries.is_empty() && !batch.end_of_segment, "an empty file is nothing yet");
    let blks = blocks(&[2]);
    w.write_block(blks[0].clone()).await.unwrap();
    assert_eq!(r.read_batch(0, 10, u64::MAX).await.unwrap().entries, all_entries(&blks));
}

#[tokio::test]
async fn delete_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    write_all(&b, &blocks(&[1])).await.finalize(0).await.unwrap();
    let other = SegmentRef { log_id: 7, segment_id: 9 };
    b.fence(other).await.unwrap();
    b.delete_segment(SEG).await.unwrap();
    b.delete_segment(SEG).await.unwrap();
    assert!(!dir.path().join("files/7/3").exists());
    assert!(dir.path().join("files/7/9").exists());
    assert!(matches!(b.compact(SEG).await, Err(SegmentError::Missing { .. })));
    b.delete_log(7).await.unwrap();
    b.delete_log(7).await.unwrap();
    assert!(!dir.path().join("files/7").exists());
    assert!(dir.path().join("files").exists());
    assert!(b.describe().starts_with("local:"));
}

/// Entries holding segment bytes (a whole finalized data.log) must not be mistaken for structure.
#[tokio::test]
async fn entries_that_look_like_segment_files() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    let (inner, _) = expected_file(&blocks(&[2, 1]), true);
    let blks = vec![
        BlockToWrite { block_id: 0, first_entry_id: 0, entries: vec![Bytes::from_static(b"plain").into()] },
        BlockToWrite { block_id: 1, first_entry_id: 1, entries: vec![Bytes::from(inner.clone()).into()] },
    ];
    let w = write_all(&b, &blks).await;
    let mut r = b.open_reader(SEG).await.unwrap();
    let batch = r.read_batch(0, 100, u64::MAX).await.unwrap();
    assert_eq!(batch.entries, all_entries(&blks));
    assert!(!batch.end_of_segment, "footer-shaped payload tail is not a footer");
    w.close().await.unwrap();

    // Torn inside the nested payload: recovery keeps block 0 only.
    let path = data_path(dir.path());
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 30]).unwrap();
    let fencer = backend(dir.path());
    assert_eq!(fencer.fence(SEG).await.unwrap(), 0);
    assert_eq!(fencer.finalize(SEG).await.unwrap().last_entry_id, 0);
    let mut r = fencer.open_reader(SEG).await.unwrap();
    assert_eq!(read_to_end(r.as_mut(), 10).await, all_entries(&blks[..1]));
}

#[tokio::test]
async fn writer_finalize_excludes_later_blocks_and_fencing_finalize_stops_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    let blks = blocks(&[2, 2, 3]);
    let w = write_all(&b, &blks).await;
    let s = w.finalize(1).await.unwrap();
    assert_eq!((s.last_entry_id, s.blocks), (3, 2));
    assert_eq!(std::fs::read(data_path(dir.path())).unwrap(), expected_file(&blks[..2], true).0);
    assert_eq!(b.fence(SEG).await.unwrap(), 3);

    // Finalize through the backend (another process) fences a live writer.
    let other = SegmentRef { log_id: 7, segment_id: 4 };
    let w = b.create_writer(other).await.unwrap();
    w.write_block(blks[0].clone()).await.unwrap();
    let s = backend(dir.path()).finalize(other).await.unwrap();
    assert_eq!(s.last_entry_id, 1);
    assert!(matches!(w.write_block(blks[1].clone()).await, Err(SegmentError::Fenced { .. })));
    assert!(matches!(w.finalize(0).await, Err(SegmentError::Fenced { .. })));
}

/// The window the flock closes, made deterministic: an append that passed its fence check holds the lock
/// while the fence flag appears. Fence and a fenced reader must wait for it and include its block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_and_reader_wait_for_an_append_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    let blks = blocks(&[2, 3]);
    let w = write_all(&b, &blks[..1]).await;
    let mut reader = b.open_reader(SEG).await.unwrap();
    assert_eq!(reader.read_batch(0, 100, u64::MAX).await.unwrap().entries.len(), 2);

    // "The writer" is mid-append: it holds the lock and has checked that no fence exists.
    let lock = std::fs::File::options().read(true).write(true).open(dir.path().join("files/7/3/write.lock")).unwrap();
    lock.lock().unwrap();
    let fencer = backend(dir.path());
    let fence = tokio::spawn(async move { fencer.fence(SEG).await });
    let fence_flag = dir.path().join("files/7/3/write.fence");
    let read = tokio::spawn(async move {
        // Wait until the fence flag exists so the reader takes its fenced path.
        while !fence_flag.exists() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let batch = reader.read_batch(2, 100, u64::MAX).await;
        (reader, batch)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!fence.is_finished(), "fence must wait for the append in progress");
    assert!(dir.path().join("files/7/3/write.fence").exists());
    assert!(!read.is_finished(), "a fenced reader must wait for the append in progress");

    // The append lands, then the lock is released.
    let (both, index) = expected_file(&blks, false);
    let start = index[1].start_offset as usize;
    let mut f = std::fs::OpenOptions::new().append(true).open(data_path(dir.path())).unwrap();
    std::io::Write::write_all(&mut f, &both[start..]).unwrap();
    f.sync_all().unwrap();
    lock.unlock().unwrap();

    assert_eq!(fence.await.unwrap().unwrap(), 4);
    let (_reader, batch) = read.await.unwrap();
    let batch = batch.unwrap();
    assert_eq!(batch.entries, all_entries(&blks)[2..].to_vec());
    assert!(batch.end_of_segment);
    assert!(matches!(w.write_block(blks[1].clone()).await, Err(SegmentError::Fenced { .. })));
}

/// Blocks handed over together (claimed in order, as the log writer does) are encoded side by side and
/// appended in block order; each call learns its own block's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_in_flight_together_land_in_block_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    let blks = blocks(&[3, 1, 5, 2, 4, 7, 1, 2]);
    let w = b.create_writer(SEG).await.unwrap();
    let results = futures::future::join_all(blks.iter().map(|blk| w.write_block(blk.clone()))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    w.finalize(blks.len() as i64 - 1).await.unwrap();
    assert_eq!(std::fs::read(data_path(dir.path())).unwrap(), expected_file(&blks, true).0);
}

/// A block whose predecessor never comes fails instead of waiting, and so does a block queued behind a
/// predecessor that is refused; the writer goes on with the right block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_behind_a_gap_fails_instead_of_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    let blks = blocks(&[2, 2, 2]);
    let w = b.create_writer(SEG).await.unwrap();
    w.write_block(blks[0].clone()).await.unwrap();
    let late = tokio::time::timeout(Duration::from_secs(10), w.write_block(blks[2].clone())).await;
    assert!(matches!(late, Ok(Err(SegmentError::OutOfOrder { block_id: 2, .. }))), "{late:?}");
    // Block 1 with wrong entry ids is refused when its turn comes; block 2 sent with it fails too.
    let mut wrong = blks[1].clone();
    wrong.first_entry_id = 5;
    let (a, c) = tokio::join!(w.write_block(wrong), w.write_block(blks[2].clone()));
    assert!(matches!(a, Err(SegmentError::OutOfOrder { block_id: 1, .. })), "{a:?}");
    assert!(matches!(c, Err(SegmentError::OutOfOrder { block_id: 2, .. })), "{c:?}");
    for blk in &blks[1..] {
        w.write_block(blk.clone()).await.unwrap();
    }
    w.finalize(2).await.unwrap();
    assert_eq!(std::fs::read(data_path(dir.path())).unwrap(), expected_file(&blks, true).0);
}
