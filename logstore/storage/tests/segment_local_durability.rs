//! Local segments show readers only what is fsynced: a block written into `data.log` whose fsync has
//! not returned (or failed, and is cut off again) is invisible to a lock-free reader.

use std::path::Path;

use bytes::Bytes;
use woodpecker_storage::segment::local::{DURABLE_FILE, LocalSegmentBackend};
use woodpecker_storage::segment::{BlockToWrite, EntryBytes, SegmentBackend, SegmentRef};

const SEG: SegmentRef = SegmentRef { log_id: 7, segment_id: 3 };

fn entries(b: i64, n: usize) -> Vec<EntryBytes> {
    (0..n).map(|i| Bytes::from(format!("block{b}-entry{i}")).into()).collect()
}

fn durable_path(dir: &Path) -> std::path::PathBuf {
    dir.join("files/7/3").join(DURABLE_FILE)
}

/// The `data.durable` record for `len`: the length and its complement, little endian.
fn durable_record(len: u64) -> Vec<u8> {
    let mut v = len.to_le_bytes().to_vec();
    v.extend_from_slice(&(!len).to_le_bytes());
    v
}

fn read_durable(dir: &Path) -> u64 {
    let b = std::fs::read(durable_path(dir)).unwrap();
    let len = u64::from_le_bytes(b[..8].try_into().unwrap());
    assert_eq!(len, !u64::from_le_bytes(b[8..16].try_into().unwrap()), "a consistent record");
    len
}

#[tokio::test]
async fn readers_stop_at_the_fsynced_length_the_writer_published() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalSegmentBackend::new(dir.path().to_path_buf(), "files".into());
    let w = backend.create_writer(SEG).await.unwrap();
    assert_eq!(read_durable(dir.path()), 0, "created with nothing durable");
    w.write_block(BlockToWrite { block_id: 0, first_entry_id: 0, entries: entries(0, 3) }).await.unwrap();
    let after_first = read_durable(dir.path());
    let data_len = std::fs::metadata(dir.path().join("files/7/3/data.log")).unwrap().len();
    assert_eq!(after_first, data_len, "the whole file is fsynced after the first block");
    w.write_block(BlockToWrite { block_id: 1, first_entry_id: 3, entries: entries(1, 2) }).await.unwrap();
    let after_second = read_durable(dir.path());
    assert!(after_second > after_first);

    // As the file looks while block 1 is written but its fsync has not returned: the published length
    // still ends after block 0.
    std::fs::write(durable_path(dir.path()), durable_record(after_first)).unwrap();
    let mut r = backend.open_reader(SEG).await.unwrap();
    let batch = r.read_batch(0, 100, u64::MAX).await.unwrap();
    assert_eq!(batch.entries.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [0, 1, 2], "block 1 is not durable yet");
    assert!(!batch.end_of_segment);
    assert!(r.read_batch(3, 100, u64::MAX).await.unwrap().entries.is_empty(), "still nothing past block 0");

    // A torn record (the halves disagree) shows nothing new rather than trusting either half.
    let mut torn = durable_record(after_second);
    torn[8] ^= 1;
    std::fs::write(durable_path(dir.path()), torn).unwrap();
    assert!(r.read_batch(3, 100, u64::MAX).await.unwrap().entries.is_empty(), "a torn length is not trusted");

    // The fsync returns and the writer publishes the new length: block 1 shows up.
    std::fs::write(durable_path(dir.path()), durable_record(after_second)).unwrap();
    let batch = r.read_batch(3, 100, u64::MAX).await.unwrap();
    assert_eq!(batch.entries.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(&batch.entries[0].1[..], b"block1-entry0");
    w.finalize(1).await.unwrap();
}

#[tokio::test]
async fn a_segment_without_a_durable_length_is_read_to_its_end_as_upstream_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalSegmentBackend::new(dir.path().to_path_buf(), "files".into());
    let w = backend.create_writer(SEG).await.unwrap();
    w.write_block(BlockToWrite { block_id: 0, first_entry_id: 0, entries: entries(0, 2) }).await.unwrap();
    std::fs::remove_file(durable_path(dir.path())).unwrap();
    let mut r = backend.open_reader(SEG).await.unwrap();
    let batch = r.read_batch(0, 100, u64::MAX).await.unwrap();
    assert_eq!(batch.entries.len(), 2, "an upstream writer publishes no length: its whole file counts");
}
