//! Reading `data.log` block by block, and telling a torn tail from corruption.
//!
//! ```text
//! [Header v6][BlockHeader b0][Data…][BlockHeader b1][Data…] … [Index b0][Index b1] … [Footer v6]
//!  0         25               ▲ startOffset of b1                ▲ indexOffset         ▲ totalSize
//! ```
//!
//! Torn tail or corruption? The writer appends one block at a time and fsyncs it before the next append
//! starts, and finalize appends index + footer in one write. So a crash can damage only the bytes of the
//! *last* write, and nothing intact can follow them. The scan uses that:
//! - a block whose CRC-valid header declares an end beyond EOF is an incomplete tail (still being written,
//!   or torn by a crash): a torn write leaves a prefix of the block;
//! - a block whose header is valid and whose declared bytes are all present but fail verification is
//!   corruption, also when it ends exactly at EOF: every byte the writer wrote is there, so a crash did not
//!   cut it, and cutting it would drop a block that may have been acknowledged;
//! - a damaged block header is corruption when its (unverified) type and length fields still say that the
//!   block ends exactly at EOF, for the same reason: a torn prefix that long would hold an intact header;
//! - any other damaged block header (length unknown) is a torn tail unless an intact block-header, index or
//!   footer record starts anywhere after it, which proves later writes landed: then it is corruption;
//! - an index or footer record where a block header is expected is the start of the finalize append.
//!
//! Zeros where a block should start (a file extended by a crash but never written) are a torn tail.
//!
//! Decoding uses the shared codec; errors are re-based to file offsets.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use woodpecker_core::codec::{
    self, BLOCK_HEADER_RECORD_LEN, CodecError, DecodedBlock, FOOTER_V5_RECORD_LEN, FOOTER_V6_RECORD_LEN, FooterRecord,
    HEADER_RECORD_LEN, IndexRecord, RECORD_HEADER_LEN, Record, RecordType,
};
use woodpecker_core::ids::EntryId;

/// Largest record that can start where a block header is expected (a v6 footer).
const MAX_STRUCTURAL_RECORD_LEN: usize = FOOTER_V6_RECORD_LEN;

/// Why a scan could not go on: an OS error or bytes that fail verification (at a file offset).
#[derive(Debug)]
pub(crate) enum ScanError {
    /// Reading the file failed.
    Io(io::Error),
    /// Stored bytes are corrupt; the codec error carries the file offset.
    Corrupt(CodecError),
}

impl From<io::Error> for ScanError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Reads up to `n` bytes at `off`; fewer only at EOF (the file may have shrunk or still be growing).
pub(crate) fn read_at(file: &File, off: u64, n: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; n];
    let mut done = 0;
    while done < n {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(k) => done += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(Bytes::from(buf))
}

/// Moves a codec error's offset from buffer-relative to file-relative.
pub(crate) fn rebase(e: CodecError, base: u64) -> CodecError {
    match e {
        CodecError::Truncated { offset, needed, available } => {
            CodecError::Truncated { offset: offset + base, needed, available }
        }
        CodecError::CrcMismatch { offset, stored, computed } => {
            CodecError::CrcMismatch { offset: offset + base, stored, computed }
        }
        CodecError::BlockCrcMismatch { block, offset, stored, computed } => {
            CodecError::BlockCrcMismatch { block, offset: offset + base, stored, computed }
        }
        CodecError::UnknownType { offset, tag } => CodecError::UnknownType { offset: offset + base, tag },
        CodecError::ImpossibleEntryRange { block, offset, first_entry_id, last_entry_id, block_length } => {
            CodecError::ImpossibleEntryRange {
                block,
                offset: offset + base,
                first_entry_id,
                last_entry_id,
                block_length,
            }
        }
        CodecError::Malformed { offset, reason } => CodecError::Malformed { offset: offset + base, reason },
    }
}

/// The segment's file header state after looking at offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderState {
    /// A valid header; blocks start at [`HEADER_RECORD_LEN`].
    Present,
    /// No complete header yet (empty file, or a torn first write).
    Absent,
}

/// Checks the header record at offset 0 of a file of `len` bytes.
pub(crate) fn read_header(file: &File, len: u64) -> Result<HeaderState, ScanError> {
    if len == 0 {
        return Ok(HeaderState::Absent);
    }
    let buf = read_at(file, 0, HEADER_RECORD_LEN.min(len as usize))?;
    match codec::decode_record(&buf, 0) {
        Ok((Record::Header(_), _)) => Ok(HeaderState::Present),
        Ok(_) => Err(ScanError::Corrupt(CodecError::Malformed {
            offset: 0,
            reason: "data.log does not start with a header record".into(),
        })),
        Err(e) => {
            if intact_record_after(file, len, 0)? {
                Err(ScanError::Corrupt(e))
            } else {
                Ok(HeaderState::Absent)
            }
        }
    }
}

/// What follows a block boundary.
#[derive(Debug)]
pub(crate) enum Step {
    /// A complete, verified block and its index record.
    Block(DecodedBlock, IndexRecord),
    /// Nothing more yet: EOF, an incomplete block, or a torn tail.
    Tail,
    /// The index region of a finalize starts here (possibly incomplete).
    IndexStart,
}

/// Reads the block at `off` (a block boundary) of a file of `len` bytes, verifying it completely.
///
/// `expect_block` / `expect_first` are the block number and first entry the block must carry.
pub(crate) fn next_block(
    file: &File,
    len: u64,
    off: u64,
    expect_block: i64,
    expect_first: EntryId,
) -> Result<Step, ScanError> {
    if off >= len {
        return Ok(Step::Tail);
    }
    let head = read_at(file, off, MAX_STRUCTURAL_RECORD_LEN.min((len - off) as usize))?;
    match codec::decode_record(&head, 0) {
        Ok((Record::BlockHeader(h), _)) => {
            // The header's CRC held, so its declared length is what the writer wrote.
            let total = BLOCK_HEADER_RECORD_LEN as u64 + u64::from(h.block_length);
            // Index records size a block in a u32; the writer never makes a larger one, so this is not a tail.
            let Ok(block_size) = u32::try_from(total) else {
                return Err(ScanError::Corrupt(CodecError::Malformed {
                    offset: off,
                    reason: format!(
                        "block {} declares {total} bytes, more than an index record can hold",
                        h.block_number
                    ),
                }));
            };
            if off + total > len {
                return Ok(Step::Tail);
            }
            let buf = read_at(file, off, total as usize)?;
            match codec::decode_block(&buf, 0) {
                Ok(block) => {
                    if i64::from(block.header.block_number) != expect_block
                        || block.header.first_entry_id != expect_first
                    {
                        return Err(ScanError::Corrupt(CodecError::Malformed {
                            offset: off,
                            reason: format!(
                                "block {} starting at entry {} where block {expect_block} starting at entry \
                                 {expect_first} was expected",
                                block.header.block_number, block.header.first_entry_id
                            ),
                        }));
                    }
                    let index = IndexRecord {
                        block_number: block.header.block_number,
                        start_offset: off as i64,
                        block_size,
                        first_entry_id: block.header.first_entry_id,
                        last_entry_id: block.header.last_entry_id,
                    };
                    Ok(Step::Block(block, index))
                }
                // All the declared bytes are present: damage, not a torn write (see the module docs).
                Err(e) => Err(ScanError::Corrupt(rebase(e, off))),
            }
        }
        Ok((Record::Index(_) | Record::Footer(_), _)) => Ok(Step::IndexStart),
        Ok((other, _)) => Err(ScanError::Corrupt(CodecError::Malformed {
            offset: off,
            reason: format!("{} record where a block header was expected", record_name(&other)),
        })),
        Err(e) => {
            if declares_end_at_eof(&head, off, len) || intact_record_after(file, len, off)? {
                Err(ScanError::Corrupt(rebase(e, off)))
            } else {
                Ok(Step::Tail)
            }
        }
    }
}

/// Whether `head`, the bytes at block boundary `off` of a file of `len` bytes, is shaped like a block header
/// record (type and record length) whose block length field makes the block end exactly at EOF. The fields
/// are read without their CRC: this only tells a complete block with a damaged header from a torn tail.
fn declares_end_at_eof(head: &[u8], off: u64, len: u64) -> bool {
    let Some(h) = head.get(..BLOCK_HEADER_RECORD_LEN) else { return false };
    let field = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    // Record header: crc(4) type(1) length(4); payload: block(4) first(8) last(8) blockLength(4) blockCrc(4).
    let shaped =
        h[4] == RecordType::BlockHeader as u8 && field(5) == (BLOCK_HEADER_RECORD_LEN - RECORD_HEADER_LEN) as u32;
    shaped && off + BLOCK_HEADER_RECORD_LEN as u64 + u64::from(field(RECORD_HEADER_LEN + 20)) == len
}

fn record_name(r: &Record) -> &'static str {
    match r {
        Record::Header(_) => "header",
        Record::Data(_) => "data",
        Record::Index(_) => "index",
        Record::Footer(_) => "footer",
        Record::BlockHeader(_) => "block header",
    }
}

/// Whether an intact block-header, index or footer record starts anywhere in `(off, len)`.
///
/// Only record types and lengths the writer emits at structural positions are tried, so each candidate
/// costs one CRC over at most 53 bytes.
fn intact_record_after(file: &File, len: u64, off: u64) -> io::Result<bool> {
    // Read in chunks that overlap by one record less a byte, so a large file is never read at once and
    // every candidate position is tried on a buffer holding its whole record.
    const CHUNK: u64 = 1 << 20;
    let mut start = off + 1;
    while start < len {
        let buf = read_at(file, start, (len - start).min(CHUNK + MAX_STRUCTURAL_RECORD_LEN as u64) as usize)?;
        let last_chunk = start + buf.len() as u64 >= len;
        let positions = if last_chunk { buf.len() } else { CHUNK as usize };
        for p in 0..positions {
            if p + RECORD_HEADER_LEN > buf.len() {
                break;
            }
            let tag = buf[p + 4];
            let rlen = u32::from_le_bytes([buf[p + 5], buf[p + 6], buf[p + 7], buf[p + 8]]) as usize;
            let plausible = (tag == RecordType::BlockHeader as u8
                && rlen == BLOCK_HEADER_RECORD_LEN - RECORD_HEADER_LEN)
                || (tag == RecordType::Index as u8 && rlen == codec::INDEX_RECORD_LEN - RECORD_HEADER_LEN)
                || (tag == RecordType::Footer as u8
                    && (rlen == FOOTER_V6_RECORD_LEN - RECORD_HEADER_LEN
                        || rlen == FOOTER_V5_RECORD_LEN - RECORD_HEADER_LEN));
            if plausible && codec::decode_record(&buf, p).is_ok() {
                return Ok(true);
            }
        }
        if buf.is_empty() || last_chunk {
            break;
        }
        start += CHUNK;
    }
    Ok(false)
}

/// A footer found at the end of the file, with the index it points at.
#[derive(Debug, Clone)]
pub(crate) struct Footer {
    /// The footer record.
    pub record: FooterRecord,
    /// The blocks, in order.
    pub index: Vec<IndexRecord>,
}

/// Reads the footer and index of a file of `len` bytes, if the file ends with a valid footer.
pub(crate) fn read_footer(file: &File, len: u64) -> Result<Option<Footer>, ScanError> {
    if len < FOOTER_V5_RECORD_LEN as u64 {
        return Ok(None);
    }
    let tail_len = FOOTER_V6_RECORD_LEN.min(len as usize);
    let tail_start = len - tail_len as u64;
    let tail = read_at(file, tail_start, tail_len)?;
    if tail.len() != tail_len {
        // The file shrank under us; the caller retries on its next look.
        return Ok(None);
    }
    let Some((record, rel)) = codec::decode_footer_at_end(&tail) else {
        return Ok(None);
    };
    let footer_pos = tail_start + rel as u64;
    let consistent = record.total_size == footer_pos
        && record.index_offset.checked_add(u64::from(record.index_length)) == Some(footer_pos)
        && record.index_offset >= HEADER_RECORD_LEN as u64
        && record.total_blocks >= 0;
    if !consistent {
        // A CRC-valid footer record that does not describe this file is not this file's footer: the
        // tail of an entry payload that happens to be one (e.g. a data.log stored as an entry). The
        // scan then decides what the file holds.
        tracing::debug!(
            footer_pos,
            index_offset = record.index_offset,
            index_length = record.index_length,
            total_size = record.total_size,
            "footer-shaped bytes at the end of data.log do not locate this file's index; ignoring them"
        );
        return Ok(None);
    }
    let region = read_at(file, record.index_offset, record.index_length as usize)?;
    let index = codec::decode_index(&region, 0, region.len())
        .map_err(|e| ScanError::Corrupt(rebase(e, record.index_offset)))?;
    if index.len() != record.total_blocks as usize {
        return Err(ScanError::Corrupt(CodecError::Malformed {
            offset: footer_pos,
            reason: format!("footer counts {} blocks, index holds {}", record.total_blocks, index.len()),
        }));
    }
    let mut next_entry = 0;
    for (i, r) in index.iter().enumerate() {
        let well_placed = i64::from(r.block_number) == i as i64
            && r.first_entry_id == next_entry
            && r.last_entry_id >= r.first_entry_id;
        // The last id must have a successor: the next block starts there.
        let after = r.last_entry_id.checked_add(1).filter(|_| well_placed);
        let Some(after) = after else {
            return Err(ScanError::Corrupt(CodecError::Malformed {
                offset: record.index_offset + (i * codec::INDEX_RECORD_LEN) as u64,
                reason: format!(
                    "index record {i} names block {} with entries {}..={}, expected block {i} from entry {next_entry}",
                    r.block_number, r.first_entry_id, r.last_entry_id
                ),
            }));
        };
        next_entry = after;
    }
    let record = crate::segment::object::with_v5_lac(record, &index);
    Ok(Some(Footer { record, index }))
}

/// Reads and verifies the block an index record locates.
pub(crate) fn read_indexed_block(file: &File, r: &IndexRecord) -> Result<DecodedBlock, ScanError> {
    let off = r.start_offset as u64;
    let len = file.metadata()?.len();
    if r.start_offset < 0 || off + u64::from(r.block_size) > len {
        return Err(ScanError::Corrupt(CodecError::Truncated {
            offset: off,
            needed: u64::from(r.block_size),
            available: len.saturating_sub(off),
        }));
    }
    let buf = read_at(file, off, r.block_size as usize)?;
    let block = codec::decode_block(&buf, 0).map_err(|e| ScanError::Corrupt(rebase(e, off)))?;
    if block.header.block_number != r.block_number
        || block.header.first_entry_id != r.first_entry_id
        || block.header.last_entry_id != r.last_entry_id
        || block.encoded_len != r.block_size as usize
    {
        return Err(ScanError::Corrupt(CodecError::Malformed {
            offset: off,
            reason: format!("block {} does not match its index record", r.block_number),
        }));
    }
    Ok(block)
}

/// What a recovery scan found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// Complete blocks in order.
    pub index: Vec<IndexRecord>,
    /// Whether the file has a valid header.
    pub header: bool,
    /// End of the last complete block (or of the header); bytes after it were never acknowledged.
    pub end: u64,
    /// The footer, when the file is finalized (then `index` comes from it and `end` is the index offset).
    pub footer: Option<FooterRecord>,
}

impl Scanned {
    /// Last entry of the segment (-1 when empty).
    pub fn last_entry_id(&self) -> EntryId {
        self.index.last().map_or(-1, |r| r.last_entry_id)
    }
}

/// Finds the durable blocks of a file of `len` bytes: from the footer when there is one, else by a scan.
pub(crate) fn scan(file: &File, len: u64) -> Result<Scanned, ScanError> {
    if let Some(f) = read_footer(file, len)? {
        return Ok(Scanned { end: f.record.index_offset, header: true, footer: Some(f.record), index: f.index });
    }
    if read_header(file, len)? == HeaderState::Absent {
        return Ok(Scanned { index: Vec::new(), header: false, end: 0, footer: None });
    }
    let mut index = Vec::new();
    let mut off = HEADER_RECORD_LEN as u64;
    let mut next_entry = 0;
    while let Step::Block(_, r) = next_block(file, len, off, index.len() as i64, next_entry)? {
        off += u64::from(r.block_size);
        next_entry = r.last_entry_id + 1;
        index.push(r);
    }
    Ok(Scanned { index, header: true, end: off, footer: None })
}

/// Encodes what finalize appends at `end`: a header when the file has none, the index, then the v6 footer.
/// The footer's LAC is `lac`, or the last block's last entry when `None` (local mode; staged storage
/// records the LAC its client computed from the quorum).
pub(crate) fn encode_tail(index: &[IndexRecord], end: u64, with_header: bool, lac: Option<EntryId>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_RECORD_LEN + index.len() * codec::INDEX_RECORD_LEN + FOOTER_V6_RECORD_LEN);
    if with_header {
        codec::encode_header(&mut out, &new_header());
    }
    let index_offset = end + out.len() as u64;
    for r in index {
        codec::encode_index(&mut out, r);
    }
    let index_length = index.len() * codec::INDEX_RECORD_LEN;
    let footer = FooterRecord {
        total_blocks: index.len() as i32,
        // Upstream's local writer stores the block count here.
        total_records: index.len() as u32,
        total_size: index_offset + index_length as u64,
        index_offset,
        index_length: index_length as u32,
        version: codec::FORMAT_VERSION,
        flags: 0,
        lac: lac.unwrap_or_else(|| index.last().map_or(-1, |r| r.last_entry_id)),
    };
    codec::encode_footer(&mut out, &footer);
    out
}

/// The header every new `data.log` starts with.
pub(crate) fn new_header() -> codec::HeaderRecord {
    codec::HeaderRecord { version: codec::FORMAT_VERSION, flags: 0, first_entry_id: 0 }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File, u64) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(bytes).unwrap();
        let f = File::open(t.path()).unwrap();
        (t, f, bytes.len() as u64)
    }

    /// Header + two blocks; returns the bytes and the offset of the second block.
    fn two_blocks() -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        codec::encode_header(&mut out, &new_header());
        codec::encode_block(&mut out, 0, 0, &[b"a".as_slice(), b"bb".as_slice()]);
        let second = out.len();
        codec::encode_block(&mut out, 1, 2, &[b"ccc".as_slice()]);
        (out, second)
    }

    /// The index of [`two_blocks`] (`len` bytes, the second block at `second`), the second block's last
    /// entry id as given.
    fn two_block_index(len: usize, second: usize, second_last_entry: EntryId) -> [IndexRecord; 2] {
        [
            IndexRecord {
                block_number: 0,
                start_offset: HEADER_RECORD_LEN as i64,
                block_size: (second - HEADER_RECORD_LEN) as u32,
                first_entry_id: 0,
                last_entry_id: 1,
            },
            IndexRecord {
                block_number: 1,
                start_offset: second as i64,
                block_size: (len - second) as u32,
                first_entry_id: 2,
                last_entry_id: second_last_entry,
            },
        ]
    }

    #[test]
    fn rebase_moves_every_variant() {
        let e = rebase(CodecError::UnknownType { offset: 3, tag: 9 }, 100);
        assert_eq!(e.offset(), 103);
        let e = rebase(CodecError::BlockCrcMismatch { block: 1, offset: 0, stored: 1, computed: 2 }, 7);
        assert_eq!(e.offset(), 7);
    }

    #[test]
    fn damaged_block_header_is_torn_at_the_tail_unless_complete_or_followed_by_a_block() {
        let (bytes, second) = two_blocks();
        let first = HEADER_RECORD_LEN;
        // Damage the first block's header record: the second block after it proves corruption.
        let mut bad = bytes.clone();
        bad[first + 10] ^= 0xff;
        let (_t, f, len) = file_with(&bad);
        match next_block(&f, len, first as u64, 0, 0) {
            Err(ScanError::Corrupt(e)) => assert_eq!(e.offset(), first as u64),
            other => panic!("{other:?}"),
        }
        // Damage the last block's length field: nothing intact follows and nothing says the block is
        // complete, so it is a torn tail.
        let mut bad = bytes.clone();
        bad[second + RECORD_HEADER_LEN + 21] ^= 0xff;
        let (_t, f, len) = file_with(&bad);
        assert!(matches!(next_block(&f, len, first as u64, 0, 0), Ok(Step::Block(..))));
        assert!(matches!(next_block(&f, len, second as u64, 1, 2), Ok(Step::Tail)));
        // Damage elsewhere in the last block's header: its length fields still end the block at EOF, so
        // the block was written whole and this is corruption.
        let mut bad = bytes.clone();
        bad[second + 10] ^= 0xff;
        let (_t, f, len) = file_with(&bad);
        match next_block(&f, len, second as u64, 1, 2) {
            Err(ScanError::Corrupt(e)) => assert_eq!(e.offset(), second as u64),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn intact_block_far_after_a_damaged_header_is_found() {
        let mut bytes = Vec::new();
        codec::encode_header(&mut bytes, &new_header());
        let big = vec![b'x'; (1 << 20) + 300_000];
        codec::encode_block(&mut bytes, 0, 0, &[big.as_slice()]);
        codec::encode_block(&mut bytes, 1, 1, &[b"after".as_slice()]);
        bytes[HEADER_RECORD_LEN + 5] ^= 0x01;
        let (_t, f, len) = file_with(&bytes);
        assert!(matches!(next_block(&f, len, HEADER_RECORD_LEN as u64, 0, 0), Err(ScanError::Corrupt(_))));
        // Without the second block the same damage is a torn tail.
        let cut = bytes.len() - (BLOCK_HEADER_RECORD_LEN + RECORD_HEADER_LEN + 5);
        let (_t, f, len) = file_with(&bytes[..cut]);
        assert!(matches!(next_block(&f, len, HEADER_RECORD_LEN as u64, 0, 0), Ok(Step::Tail)));
    }

    #[test]
    fn blocks_out_of_sequence_are_corrupt() {
        let (bytes, _) = two_blocks();
        let (_t, f, len) = file_with(&bytes);
        assert!(matches!(next_block(&f, len, HEADER_RECORD_LEN as u64, 1, 0), Err(ScanError::Corrupt(_))));
        assert!(matches!(next_block(&f, len, HEADER_RECORD_LEN as u64, 0, 5), Err(ScanError::Corrupt(_))));
    }

    #[test]
    fn index_records_end_the_blocks() {
        let (mut bytes, _) = two_blocks();
        let end = bytes.len() as u64;
        codec::encode_index(
            &mut bytes,
            &IndexRecord { block_number: 0, start_offset: 25, block_size: 1, first_entry_id: 0, last_entry_id: 1 },
        );
        let (_t, f, len) = file_with(&bytes);
        assert!(matches!(next_block(&f, len, end, 2, 3), Ok(Step::IndexStart)));
        let s = scan(&f, len).unwrap();
        assert_eq!((s.index.len(), s.end, s.last_entry_id()), (2, end, 2));
    }

    #[test]
    fn block_header_declaring_more_than_an_index_record_can_size_is_corrupt_not_a_tail() {
        let mut bytes = Vec::new();
        codec::encode_header(&mut bytes, &new_header());
        codec::encode_block_header(
            &mut bytes,
            &codec::BlockHeaderRecord {
                block_number: 0,
                first_entry_id: 0,
                last_entry_id: 0,
                block_length: u32::MAX,
                block_crc: 0,
            },
        );
        let (_t, f, len) = file_with(&bytes);
        match next_block(&f, len, HEADER_RECORD_LEN as u64, 0, 0) {
            Err(ScanError::Corrupt(e)) => assert_eq!(e.offset(), HEADER_RECORD_LEN as u64),
            other => panic!("{other:?}"),
        }
    }

    /// An empty block (entries 0..=-1, no data, CRCs valid) was taken as block 0; finalize then wrote an
    /// index record its own footer check rejects.
    #[test]
    fn empty_block_is_corrupt() {
        let mut bytes = Vec::new();
        codec::encode_header(&mut bytes, &new_header());
        codec::encode_block_header(
            &mut bytes,
            &codec::BlockHeaderRecord {
                block_number: 0,
                first_entry_id: 0,
                last_entry_id: -1,
                block_length: 0,
                // CRC-32/IEEE of no bytes.
                block_crc: 0,
            },
        );
        let (_t, f, len) = file_with(&bytes);
        match next_block(&f, len, HEADER_RECORD_LEN as u64, 0, 0) {
            Err(ScanError::Corrupt(CodecError::ImpossibleEntryRange { offset, .. })) => {
                assert_eq!(offset, HEADER_RECORD_LEN as u64);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn footer_index_reaching_the_largest_entry_id_is_corrupt_not_an_overflow() {
        let (mut bytes, second) = two_blocks();
        let end = bytes.len() as u64;
        let index = two_block_index(bytes.len(), second, EntryId::MAX);
        bytes.extend_from_slice(&encode_tail(&index, end, false, None));
        let (_t, f, len) = file_with(&bytes);
        match read_footer(&f, len) {
            Err(ScanError::Corrupt(e)) => assert_eq!(e.offset(), end + codec::INDEX_RECORD_LEN as u64),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_v5_footer_covers_every_entry_its_index_lists() {
        let (mut bytes, second) = two_blocks();
        let end = bytes.len() as u64;
        let index = two_block_index(bytes.len(), second, 2);
        // The v6 tail, with its footer record replaced by upstream's older v5 one (no LAC field).
        let tail = encode_tail(&index, end, false, None);
        let index_bytes = index.len() * codec::INDEX_RECORD_LEN;
        let v6 = Bytes::from(tail.clone());
        let (record, _) = codec::decode_footer_at_end(&v6).unwrap();
        bytes.extend_from_slice(&tail[..index_bytes]);
        codec::encode_footer(&mut bytes, &FooterRecord { version: 5, ..record });
        let (_t, f, len) = file_with(&bytes);
        let footer = read_footer(&f, len).unwrap().expect("a v5 footer is a footer");
        assert_eq!((footer.record.version, footer.record.lac), (5, 2), "a v5 footer's LAC is its index's last entry");
    }

    #[test]
    fn footer_that_contradicts_its_position_is_not_a_footer() {
        let (mut bytes, _) = two_blocks();
        let end = bytes.len() as u64;
        let footer = FooterRecord {
            total_blocks: 0,
            total_records: 0,
            total_size: end + 1,
            index_offset: end,
            index_length: 0,
            version: 6,
            flags: 0,
            lac: -1,
        };
        codec::encode_footer(&mut bytes, &footer);
        let (_t, f, len) = file_with(&bytes);
        assert!(read_footer(&f, len).unwrap().is_none());
        // The scan then sees the blocks and the footer-shaped bytes as an interrupted finalize.
        let s = scan(&f, len).unwrap();
        assert_eq!((s.index.len(), s.end, s.footer), (2, end, None));
    }
}
