//! Recovery of a local `data.log` on arbitrary bytes: the scan never panics or over-allocates; what it accepts
//! is a dense run of blocks that read back verified, and finalizing it (index + footer after the durable end,
//! as `finalize` writes them) gives a file whose footer lists the same blocks.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use woodpecker_core::codec::{self, FooterRecord, HEADER_RECORD_LEN, INDEX_RECORD_LEN, IndexRecord};
use woodpecker_storage::segment::local::{DataLogScan, read_data_log_block, scan_data_log};
use woodpecker_storage::segment::{SegmentError, SegmentRef};

const SEG: SegmentRef = SegmentRef { log_id: 1, segment_id: 0 };

/// One `data.log` per fuzzing process, on tmpfs when there is one.
fn data_path() -> &'static Path {
    static PATH: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = PATH.get_or_init(|| {
        let dir = match Path::new("/dev/shm").is_dir() {
            true => tempfile::tempdir_in("/dev/shm"),
            false => tempfile::tempdir(),
        }
        .expect("a scratch directory");
        let path = dir.path().join("data.log");
        (dir, path)
    });
    path
}

fn scan(path: &Path) -> Result<DataLogScan, SegmentError> {
    scan_data_log(SEG, path)
}

/// Blocks are numbered from 0 and hold entries densely from 0.
fn assert_dense(index: &[IndexRecord]) {
    let mut next = 0i64;
    for (i, r) in index.iter().enumerate() {
        assert_eq!(i64::from(r.block_number), i as i64, "{r:?}");
        assert_eq!(r.first_entry_id, next, "{r:?}");
        assert!(r.last_entry_id >= r.first_entry_id, "{r:?}");
        next = r.last_entry_id.checked_add(1).expect("the id after a block exists");
    }
}

/// What finalize appends at `end`: a header when the file has none, the index, the v6 footer.
fn finalize_tail(index: &[IndexRecord], end: u64, with_header: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if with_header {
        codec::encode_header(&mut out, &codec::HeaderRecord { version: 6, flags: 0, first_entry_id: 0 });
    }
    let index_offset = end + out.len() as u64;
    for r in index {
        codec::encode_index(&mut out, r);
    }
    let index_length = (index.len() * INDEX_RECORD_LEN) as u64;
    codec::encode_footer(
        &mut out,
        &FooterRecord {
            total_blocks: index.len() as i32,
            total_records: index.len() as u32,
            total_size: index_offset + index_length,
            index_offset,
            index_length: index_length as u32,
            version: 6,
            flags: 0,
            lac: index.last().map_or(-1, |r| r.last_entry_id),
        },
    );
    out
}

fuzz_target!(|data: &[u8]| {
    let path = data_path();
    std::fs::write(path, data).expect("write the input");
    let scanned = match scan(path) {
        Ok(s) => s,
        Err(SegmentError::Corrupt { location, offset, .. }) => {
            assert_eq!(location, path.display().to_string(), "corruption names the file");
            assert!(offset <= data.len() as u64, "offset {offset} inside the file");
            return;
        }
        Err(other) => panic!("a scan fails only as corruption, not {other:?}"),
    };
    let len = data.len() as u64;
    assert!(scanned.end <= len, "durable end {} past EOF {len}", scanned.end);
    assert_dense(&scanned.index);
    if !scanned.header {
        assert!(scanned.index.is_empty() && scanned.end == 0 && scanned.footer.is_none(), "{scanned:?}");
    }
    if let Some(footer) = scanned.footer {
        // A footer is trusted for the layout; each block is verified when it is read.
        assert_eq!(scanned.end, footer.index_offset);
        for r in &scanned.index {
            match read_data_log_block(SEG, path, r) {
                Ok(b) => {
                    assert_eq!((b.header.first_entry_id, b.header.last_entry_id), (r.first_entry_id, r.last_entry_id))
                }
                Err(SegmentError::Corrupt { .. }) => {}
                Err(other) => panic!("reading an indexed block fails only as corruption, not {other:?}"),
            }
        }
        return;
    }

    // Without a footer every listed block was verified by the scan and reads back.
    let mut entries = Vec::new();
    for r in &scanned.index {
        let b = read_data_log_block(SEG, path, r).expect("a scanned block reads back");
        assert_eq!(
            (b.header.first_entry_id, b.header.last_entry_id, b.encoded_len),
            (r.first_entry_id, r.last_entry_id, r.block_size as usize)
        );
        entries.extend(b.entries);
    }

    // Finalize: drop what follows the durable end, append index and footer; the footer lists the same blocks.
    let end = usize::try_from(scanned.end).expect("end inside the input");
    let mut finalized = data[..end].to_vec();
    finalized.extend_from_slice(&finalize_tail(&scanned.index, scanned.end, !scanned.header));
    std::fs::write(path, &finalized).expect("write the finalized file");
    let again = scan(path).expect("a finalized file scans");
    assert_eq!(again.index, scanned.index, "the footer lists the scanned blocks");
    assert_eq!(again.end, scanned.end.max(if scanned.header { 0 } else { HEADER_RECORD_LEN as u64 }));
    assert!(again.footer.is_some() && again.header);
    let mut reread = Vec::new();
    for r in &again.index {
        reread.extend(read_data_log_block(SEG, path, r).expect("a finalized block reads back").entries);
    }
    assert_eq!(reread, entries, "finalizing changes no entry");
});
