//! The record codec shared by every segment format (upstream Woodpecker's v6 layout, byte for byte).
//!
//! Every record is a 9-byte header followed by its payload; integers are little-endian:
//!
//! ```text
//!  0       4      5          9
//!  +-------+------+----------+------------------------+
//!  | crc32 | type | length   | payload (length bytes) |
//!  +-------+------+----------+------------------------+
//!  crc32 = CRC-32/IEEE over type, length and payload (bytes 4..)
//! ```
//!
//! A block is a `BlockHeader` record followed by the `Data` records of consecutive entries; the block
//! header carries the CRC of those data records (headers included), so a block is verified as a whole.
//! Entry ids are implicit: the i-th data record of a block is entry `first_entry_id + i`.
//!
//! Decoding never skips: a truncated record, a bad CRC or an unknown type is an error carrying the byte
//! offset, so callers can name the object and the offset in what they report (upstream silently stops).

use bytes::{Buf, BufMut, Bytes};
use thiserror::Error;

use crate::entry::EntryData;

/// Size of the record header: crc32 (4) + type (1) + length (4).
pub const RECORD_HEADER_LEN: usize = 9;
/// Format version written by this implementation.
pub const FORMAT_VERSION: u16 = 6;
/// Magic at the end of a header record payload.
pub const HEADER_MAGIC: [u8; 4] = *b"HDR\x01";
/// Magic inside a footer record payload.
pub const FOOTER_MAGIC: [u8; 4] = *b"FTR\x01";
/// Header/footer flag: the data was rewritten by compaction into merged blocks.
pub const FLAG_COMPACTED: u16 = 1;
/// Encoded size of a header record.
pub const HEADER_RECORD_LEN: usize = RECORD_HEADER_LEN + 16;
/// Encoded size of an index record.
pub const INDEX_RECORD_LEN: usize = RECORD_HEADER_LEN + 32;
/// Encoded size of a v6 footer record.
pub const FOOTER_V6_RECORD_LEN: usize = RECORD_HEADER_LEN + 44;
/// Encoded size of a v5 footer record (no LAC).
pub const FOOTER_V5_RECORD_LEN: usize = RECORD_HEADER_LEN + 36;
/// Encoded size of a block header record.
pub const BLOCK_HEADER_RECORD_LEN: usize = RECORD_HEADER_LEN + 28;

/// Most bytes of data records (headers included) one block may hold: the block with a header record in
/// front of it (block 0) must have a size that `IndexRecord::block_size`, a u32, can hold.
pub const MAX_BLOCK_DATA_LEN: usize = u32::MAX as usize - HEADER_RECORD_LEN - BLOCK_HEADER_RECORD_LEN;

/// Record type tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// File/segment header.
    Header = 1,
    /// One entry's bytes.
    Data = 2,
    /// Index entry for one block.
    Index = 3,
    /// Segment footer.
    Footer = 4,
    /// Header of one block.
    BlockHeader = 5,
}

impl RecordType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Header,
            2 => Self::Data,
            3 => Self::Index,
            4 => Self::Footer,
            5 => Self::BlockHeader,
            _ => return None,
        })
    }
}

/// Payload of a header record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRecord {
    /// Format version (5 or 6).
    pub version: u16,
    /// Flags; bit 0 = compacted.
    pub flags: u16,
    /// First entry id of the segment (always 0 for new segments).
    pub first_entry_id: i64,
}

/// Payload of an index record: where one block is and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRecord {
    /// Block number inside the segment.
    pub block_number: i32,
    /// Byte offset of the block in a file, or the block id for object storage.
    pub start_offset: i64,
    /// Bytes of the block (header record + data records; for object storage the object size).
    pub block_size: u32,
    /// First entry in the block.
    pub first_entry_id: i64,
    /// Last entry in the block.
    pub last_entry_id: i64,
}

/// Payload of a footer record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FooterRecord {
    /// Number of blocks.
    pub total_blocks: i32,
    /// Number of records as counted by the writer (upstream writes the block count).
    pub total_records: u32,
    /// Bytes before the footer.
    pub total_size: u64,
    /// Where the index records start.
    pub index_offset: u64,
    /// Bytes of index records.
    pub index_length: u32,
    /// Footer version (5 or 6).
    pub version: u16,
    /// Flags; bit 0 = compacted.
    pub flags: u16,
    /// Last add-confirmed entry (v6 only; -1 when decoded from v5).
    pub lac: i64,
}

impl FooterRecord {
    /// Whether the segment was compacted into merged blocks.
    pub fn is_compacted(&self) -> bool {
        self.flags & FLAG_COMPACTED != 0
    }
}

/// Payload of a block header record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeaderRecord {
    /// Block number inside the segment.
    pub block_number: i32,
    /// First entry in the block.
    pub first_entry_id: i64,
    /// Last entry in the block.
    pub last_entry_id: i64,
    /// Bytes of the data records that follow (headers included).
    pub block_length: u32,
    /// CRC-32/IEEE of those bytes.
    pub block_crc: u32,
}

/// One decoded record; data payloads borrow from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Segment header.
    Header(HeaderRecord),
    /// An entry's bytes.
    Data(Bytes),
    /// A block's index entry.
    Index(IndexRecord),
    /// Segment footer.
    Footer(FooterRecord),
    /// A block's header.
    BlockHeader(BlockHeaderRecord),
}

/// Why bytes could not be decoded. Offsets are relative to the buffer handed to the decoder.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// The buffer ends inside a record.
    #[error("truncated record at offset {offset}: need {needed} bytes, {available} available")]
    Truncated {
        /// Start of the record.
        offset: u64,
        /// Bytes the record needs.
        needed: u64,
        /// Bytes left.
        available: u64,
    },
    /// A record's CRC does not match its bytes.
    #[error("CRC mismatch in record at offset {offset}: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// Start of the record.
        offset: u64,
        /// CRC in the record.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A block's data CRC does not match.
    #[error("block {block} at offset {offset}: data CRC mismatch, stored {stored:#010x}, computed {computed:#010x}")]
    BlockCrcMismatch {
        /// Block number.
        block: i32,
        /// Start of the block header record.
        offset: u64,
        /// CRC in the block header.
        stored: u32,
        /// CRC of the data.
        computed: u32,
    },
    /// A record has a type this codec does not know.
    #[error("unknown record type {tag} at offset {offset}")]
    UnknownType {
        /// Start of the record.
        offset: u64,
        /// The type byte.
        tag: u8,
    },
    /// A block header's entry range cannot be what its data holds: ids outside `0..i64::MAX`, no entry (last
    /// before first), or more entries than its data bytes can hold (each data record takes at least
    /// [`RECORD_HEADER_LEN`] bytes).
    #[error(
        "block {block} at offset {offset} declares entries {first_entry_id}..={last_entry_id}, which {block_length} \
         bytes of data records cannot hold"
    )]
    ImpossibleEntryRange {
        /// Block number.
        block: i32,
        /// Start of the block header record.
        offset: u64,
        /// First entry the header declares.
        first_entry_id: i64,
        /// Last entry the header declares.
        last_entry_id: i64,
        /// Bytes of data records the header declares.
        block_length: u32,
    },
    /// A record is well-formed but not what the format requires at this place.
    #[error("malformed data at offset {offset}: {reason}")]
    Malformed {
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

impl CodecError {
    /// Byte offset (within the decoded buffer) where the problem starts.
    pub fn offset(&self) -> u64 {
        match self {
            Self::Truncated { offset, .. }
            | Self::CrcMismatch { offset, .. }
            | Self::BlockCrcMismatch { offset, .. }
            | Self::UnknownType { offset, .. }
            | Self::ImpossibleEntryRange { offset, .. }
            | Self::Malformed { offset, .. } => *offset,
        }
    }
}

fn put_record(out: &mut Vec<u8>, ty: RecordType, payload: &[u8]) {
    let start = out.len();
    out.put_u32_le(0);
    out.put_u8(ty as u8);
    out.put_u32_le(payload.len() as u32);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a header record.
pub fn encode_header(out: &mut Vec<u8>, h: &HeaderRecord) {
    let mut p = Vec::with_capacity(16);
    p.put_u16_le(h.version);
    p.put_u16_le(h.flags);
    p.put_i64_le(h.first_entry_id);
    p.extend_from_slice(&HEADER_MAGIC);
    put_record(out, RecordType::Header, &p);
}

/// Appends a data record holding `entry`.
pub fn encode_data(out: &mut Vec<u8>, entry: &[u8]) {
    put_record(out, RecordType::Data, entry);
}

/// Appends an index record.
pub fn encode_index(out: &mut Vec<u8>, r: &IndexRecord) {
    let mut p = Vec::with_capacity(32);
    p.put_i32_le(r.block_number);
    p.put_i64_le(r.start_offset);
    p.put_u32_le(r.block_size);
    p.put_i64_le(r.first_entry_id);
    p.put_i64_le(r.last_entry_id);
    put_record(out, RecordType::Index, &p);
}

/// Appends a footer record (v6 layout with LAC, or v5 without when `f.version == 5`).
pub fn encode_footer(out: &mut Vec<u8>, f: &FooterRecord) {
    let mut p = Vec::with_capacity(44);
    p.put_i32_le(f.total_blocks);
    p.put_u32_le(f.total_records);
    p.put_u64_le(f.total_size);
    p.put_u64_le(f.index_offset);
    p.put_u32_le(f.index_length);
    p.put_u16_le(f.version);
    p.put_u16_le(f.flags);
    p.extend_from_slice(&FOOTER_MAGIC);
    if f.version >= 6 {
        p.put_i64_le(f.lac);
    }
    put_record(out, RecordType::Footer, &p);
}

/// Appends a block header record.
pub fn encode_block_header(out: &mut Vec<u8>, b: &BlockHeaderRecord) {
    let mut p = Vec::with_capacity(28);
    p.put_i32_le(b.block_number);
    p.put_i64_le(b.first_entry_id);
    p.put_i64_le(b.last_entry_id);
    p.put_u32_le(b.block_length);
    p.put_u32_le(b.block_crc);
    put_record(out, RecordType::BlockHeader, &p);
}

/// Records up to this long are folded into the block CRC by hashing them a second time, or by table
/// shifts when many in a row have the same length; longer ones are combined.
const REHASH_MAX: usize = 4096;

/// Records of one length in a row before the shift tables for that length are built (about 50 us,
/// kept per thread, so a stream of same-sized entries builds them once).
const SHIFT_STREAK: usize = 16;

thread_local! {
    /// Shift tables for the record length seen last in a row: past a whole record, and past a record
    /// without its CRC field.
    static SHIFTS: std::cell::RefCell<Option<RecordShifts>> = const { std::cell::RefCell::new(None) };
}

/// What folding records of one length into the block CRC needs.
///
/// A record `R` is its CRC field `F` (4 bytes, the value `v = crc(D)`) then `D`. With `S_n` the shift past
/// `n` bytes, `crc(R) = S_len(D)(crc(F)) ^ v`, and for four bytes `crc(F) = S_4(!v) ^ !0`. Shifts are
/// linear and compose (`S_a(S_b(x)) = S_(a+b)(x)`), so the block CRC after `R` is
/// `S_len(R)(block ^ !v) ^ S_len(D)(!0) ^ v`: one shift per record and a constant.
struct RecordShifts {
    whole: crate::crc_shift::Shift,
    /// `S_len(D)(!0)`.
    field_term: u32,
}

impl RecordShifts {
    fn new(len: usize) -> Self {
        let rest = crate::crc_shift::Shift::new(len - 4);
        Self { whole: crate::crc_shift::Shift::new(len), field_term: rest.apply(!0) }
    }

    /// The block CRC `block` extended by a record of this length whose CRC field holds `record_crc`.
    fn fold(&self, block: u32, record_crc: u32) -> u32 {
        self.whole.apply(block ^ !record_crc) ^ self.field_term ^ record_crc
    }
}

/// Encodes one block: `BlockHeader` followed by a `Data` record per entry. Returns the block header.
///
/// `first_entry_id` is the id of `entries[0]`; `entries` must not be empty and their data records must
/// not exceed [`MAX_BLOCK_DATA_LEN`] bytes (writers refuse larger blocks before encoding them).
pub fn encode_block<E: EntryData>(
    out: &mut Vec<u8>,
    block_number: i32,
    first_entry_id: i64,
    entries: &[E],
) -> BlockHeaderRecord {
    // Data records are written straight after a placeholder header record and the header is patched in
    // afterwards, so a block's bytes are copied once (blocks are megabytes on the write path).
    let header_at = out.len();
    let data_len: usize = entries.iter().map(|e| e.data_len() + RECORD_HEADER_LEN).sum();
    out.reserve(BLOCK_HEADER_RECORD_LEN + data_len);
    out.resize(header_at + BLOCK_HEADER_RECORD_LEN, 0);
    // The block CRC covers every data record including its CRC field, so it cannot be taken in the same
    // pass as the record CRCs. Each record's CRC is folded in: for a run of same-sized records by one
    // table shift ([`RecordShifts::fold`]), otherwise a record still in L1 is hashed again (cheaper than a
    // general combination up to 3-4 KB; measured), and a longer one is combined.
    let mut shifts = SHIFTS.with(|s| s.borrow_mut().take());
    let mut built = false;
    let mut streak = (0usize, 0usize);
    let mut block_crc = 0u32;
    // Cloned per record: `Hasher::new` (and `crc32fast::hash`) detect the CPU's features on every call.
    let fresh = crc32fast::Hasher::new();
    for e in entries {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0, RecordType::Data as u8]);
        out.extend_from_slice(&(e.data_len() as u32).to_le_bytes());
        e.append_data(out);
        let mut hasher = fresh.clone();
        hasher.update(&out[start + 4..]);
        let record_crc = hasher.finalize();
        out[start..start + 4].copy_from_slice(&record_crc.to_le_bytes());
        let len = out.len() - start;
        if len > REHASH_MAX {
            let mut h = crc32fast::Hasher::new_with_initial(block_crc);
            h.update(&record_crc.to_le_bytes());
            h.combine(&crc32fast::Hasher::new_with_initial_len(record_crc, (len - 4) as u64));
            block_crc = h.finalize();
            continue;
        }
        streak = if streak.0 == len { (len, streak.1 + 1) } else { (len, 1) };
        if streak.1 >= SHIFT_STREAK && !built && shifts.as_ref().is_none_or(|s| s.whole.len() != len) {
            shifts = Some(RecordShifts::new(len));
            built = true;
        }
        match &shifts {
            Some(s) if s.whole.len() == len => block_crc = s.fold(block_crc, record_crc),
            _ => {
                let mut h = crc32fast::Hasher::new_with_initial(block_crc);
                h.update(&out[start..]);
                block_crc = h.finalize();
            }
        }
    }
    SHIFTS.with(|s| *s.borrow_mut() = shifts);
    let data_start = header_at + BLOCK_HEADER_RECORD_LEN;
    let header = BlockHeaderRecord {
        block_number,
        first_entry_id,
        last_entry_id: first_entry_id + entries.len() as i64 - 1,
        block_length: (out.len() - data_start) as u32,
        block_crc,
    };
    let mut record = Vec::with_capacity(BLOCK_HEADER_RECORD_LEN);
    encode_block_header(&mut record, &header);
    out[header_at..data_start].copy_from_slice(&record);
    header
}

/// Decodes the record that starts at `buf[offset..]`. Returns the record and its encoded length.
///
/// `buf` is shared (`Bytes`) so data payloads are zero-copy slices of it.
pub fn decode_record(buf: &Bytes, offset: usize) -> Result<(Record, usize), CodecError> {
    let avail = buf.len().saturating_sub(offset);
    if avail < RECORD_HEADER_LEN {
        return Err(CodecError::Truncated {
            offset: offset as u64,
            needed: RECORD_HEADER_LEN as u64,
            available: avail as u64,
        });
    }
    let mut h = &buf[offset..offset + RECORD_HEADER_LEN];
    let stored = h.get_u32_le();
    let tag = h.get_u8();
    let len = h.get_u32_le() as usize;
    let total = RECORD_HEADER_LEN + len;
    if avail < total {
        return Err(CodecError::Truncated { offset: offset as u64, needed: total as u64, available: avail as u64 });
    }
    let computed = crc32fast::hash(&buf[offset + 4..offset + total]);
    if computed != stored {
        return Err(CodecError::CrcMismatch { offset: offset as u64, stored, computed });
    }
    let ty = RecordType::from_u8(tag).ok_or(CodecError::UnknownType { offset: offset as u64, tag })?;
    let payload = buf.slice(offset + RECORD_HEADER_LEN..offset + total);
    let bad_len = |want: &str| CodecError::Malformed {
        offset: offset as u64,
        reason: format!("{ty:?} record payload of {len} bytes, expected {want}"),
    };
    let mut p = &payload[..];
    let record = match ty {
        RecordType::Data => Record::Data(payload.clone()),
        RecordType::Header => {
            if len != 16 {
                return Err(bad_len("16"));
            }
            let version = p.get_u16_le();
            let flags = p.get_u16_le();
            let first_entry_id = p.get_i64_le();
            if p[..4] != HEADER_MAGIC {
                return Err(CodecError::Malformed { offset: offset as u64, reason: "bad header magic".into() });
            }
            if version != 5 && version != 6 {
                return Err(CodecError::Malformed {
                    offset: offset as u64,
                    reason: format!("unsupported format version {version}"),
                });
            }
            Record::Header(HeaderRecord { version, flags, first_entry_id })
        }
        RecordType::Index => {
            if len != 32 {
                return Err(bad_len("32"));
            }
            Record::Index(IndexRecord {
                block_number: p.get_i32_le(),
                start_offset: p.get_i64_le(),
                block_size: p.get_u32_le(),
                first_entry_id: p.get_i64_le(),
                last_entry_id: p.get_i64_le(),
            })
        }
        RecordType::Footer => {
            if len != 44 && len != 36 {
                return Err(bad_len("44 (v6) or 36 (v5)"));
            }
            let mut f = FooterRecord {
                total_blocks: p.get_i32_le(),
                total_records: p.get_u32_le(),
                total_size: p.get_u64_le(),
                index_offset: p.get_u64_le(),
                index_length: p.get_u32_le(),
                version: p.get_u16_le(),
                flags: p.get_u16_le(),
                lac: -1,
            };
            if p[..4] != FOOTER_MAGIC {
                return Err(CodecError::Malformed { offset: offset as u64, reason: "bad footer magic".into() });
            }
            // v6 added the LAC: a length that contradicts the version would lose it, or invent one, on re-encoding.
            if (len == 44) != (f.version >= 6) {
                return Err(bad_len(if f.version >= 6 { "44 for a v6 footer" } else { "36 for a v5 footer" }));
            }
            p.advance(4);
            if len == 44 {
                f.lac = p.get_i64_le();
            }
            Record::Footer(f)
        }
        RecordType::BlockHeader => {
            if len != 28 {
                return Err(bad_len("28"));
            }
            Record::BlockHeader(BlockHeaderRecord {
                block_number: p.get_i32_le(),
                first_entry_id: p.get_i64_le(),
                last_entry_id: p.get_i64_le(),
                block_length: p.get_u32_le(),
                block_crc: p.get_u32_le(),
            })
        }
    };
    Ok((record, total))
}

/// A block decoded and verified: its header and the entries it holds, in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBlock {
    /// The block header.
    pub header: BlockHeaderRecord,
    /// Entry payloads; entry `header.first_entry_id + i` is `entries[i]`.
    pub entries: Vec<Bytes>,
    /// Encoded length of the whole block (header record + data).
    pub encoded_len: usize,
}

/// Number of entries a block header declares, when its range is possible: ids in `0..i64::MAX` (so the id
/// after the block exists), at least one entry (no writer makes an empty block, and an index record cannot
/// describe one), and no more entries than `block_length` bytes of data records can hold.
pub fn block_entry_count(header: &BlockHeaderRecord) -> Option<usize> {
    let (first, last) = (header.first_entry_id, header.last_entry_id);
    if first < 0 || last < first || last == i64::MAX {
        return None;
    }
    let count = usize::try_from(last.checked_sub(first)?.checked_add(1)?).ok()?;
    let fits = usize::try_from(header.block_length).ok()? / RECORD_HEADER_LEN;
    (count <= fits).then_some(count)
}

/// Decodes and verifies the block whose header record starts at `buf[offset..]`.
///
/// Checks the block CRC, that every record is a data record and that the count matches the header's ids.
pub fn decode_block(buf: &Bytes, offset: usize) -> Result<DecodedBlock, CodecError> {
    let (rec, hlen) = decode_record(buf, offset)?;
    let Record::BlockHeader(header) = rec else {
        return Err(CodecError::Malformed { offset: offset as u64, reason: "expected a block header record".into() });
    };
    let data_start = offset + hlen;
    let data_end = data_start + header.block_length as usize;
    if data_end > buf.len() {
        return Err(CodecError::Truncated {
            offset: offset as u64,
            needed: (hlen + header.block_length as usize) as u64,
            available: (buf.len() - offset) as u64,
        });
    }
    let computed = crc32fast::hash(&buf[data_start..data_end]);
    if computed != header.block_crc {
        return Err(CodecError::BlockCrcMismatch {
            block: header.block_number,
            offset: offset as u64,
            stored: header.block_crc,
            computed,
        });
    }
    // The header's CRC only proves the writer wrote it: its ids must still fit the bytes present, so that a
    // crafted range reserves nothing and `last_entry_id + 1` never overflows.
    let expected = block_entry_count(&header).ok_or(CodecError::ImpossibleEntryRange {
        block: header.block_number,
        offset: offset as u64,
        first_entry_id: header.first_entry_id,
        last_entry_id: header.last_entry_id,
        block_length: header.block_length,
    })?;
    let data = buf.slice(..data_end);
    let mut entries = Vec::with_capacity(expected);
    let mut at = data_start;
    while at < data_end {
        let (rec, n) = decode_record(&data, at)?;
        let Record::Data(payload) = rec else {
            return Err(CodecError::Malformed {
                offset: at as u64,
                reason: "expected a data record inside a block".into(),
            });
        };
        entries.push(payload);
        at += n;
    }
    if entries.len() != expected {
        return Err(CodecError::Malformed {
            offset: offset as u64,
            reason: format!(
                "block {} declares entries {}..={} but holds {}",
                header.block_number,
                header.first_entry_id,
                header.last_entry_id,
                entries.len()
            ),
        });
    }
    Ok(DecodedBlock { header, entries, encoded_len: data_end - offset })
}

/// Decodes the footer at the end of `buf`: tries the 53-byte v6 record, then the 45-byte v5 record.
///
/// Returns `Ok(None)` when neither decodes (no footer, e.g. a segment still being written).
pub fn decode_footer_at_end(buf: &Bytes) -> Option<(FooterRecord, usize)> {
    for len in [FOOTER_V6_RECORD_LEN, FOOTER_V5_RECORD_LEN] {
        if buf.len() >= len
            && let Ok((Record::Footer(f), n)) = decode_record(buf, buf.len() - len)
            && n == len
        {
            return Some((f, buf.len() - len));
        }
    }
    None
}

/// Decodes the index records in `buf[offset..offset + length]`.
pub fn decode_index(buf: &Bytes, offset: usize, length: usize) -> Result<Vec<IndexRecord>, CodecError> {
    let end = match offset.checked_add(length) {
        Some(end) if end <= buf.len() => end,
        _ => {
            return Err(CodecError::Truncated {
                offset: offset as u64,
                needed: length as u64,
                available: buf.len().saturating_sub(offset) as u64,
            });
        }
    };
    // Sized only once the region is known to be present: `length` comes from a footer.
    let mut out = Vec::with_capacity(length / INDEX_RECORD_LEN);
    let region = buf.slice(..end);
    let mut at = offset;
    while at < end {
        match decode_record(&region, at)? {
            (Record::Index(r), n) => {
                out.push(r);
                at += n;
            }
            _ => {
                return Err(CodecError::Malformed { offset: at as u64, reason: "expected an index record".into() });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn header_record_golden_bytes() {
        let mut out = Vec::new();
        encode_header(&mut out, &HeaderRecord { version: 6, flags: 0, first_entry_id: 0 });
        assert_eq!(out.len(), HEADER_RECORD_LEN);
        // type 1, length 16, version 6, flags 0, first entry 0, "HDR\x01"
        assert_eq!(hex(&out[4..]), concat!("01", "10000000", "0600", "0000", "0000000000000000", "48445201"));
        let crc = crc32fast::hash(&out[4..]);
        assert_eq!(&out[..4], &crc.to_le_bytes());
        let b = Bytes::from(out);
        assert_eq!(
            decode_record(&b, 0).unwrap(),
            (Record::Header(HeaderRecord { version: 6, flags: 0, first_entry_id: 0 }), 25)
        );
    }

    #[test]
    fn data_record_golden_bytes() {
        let mut out = Vec::new();
        encode_data(&mut out, b"abc");
        // CRC-32/IEEE of 02 03000000 616263
        let crc = crc32fast::hash(&[0x02, 0x03, 0, 0, 0, b'a', b'b', b'c']);
        let mut expect = crc.to_le_bytes().to_vec();
        expect.extend_from_slice(&[0x02, 0x03, 0, 0, 0, b'a', b'b', b'c']);
        assert_eq!(out, expect);
        assert_eq!(crc, 0xdc8a5a59);
        assert_eq!(hex(&out), format!("{}0203000000616263", hex(&crc.to_le_bytes())));
    }

    #[test]
    fn index_footer_and_block_header_golden_bytes() {
        let mut out = Vec::new();
        encode_index(
            &mut out,
            &IndexRecord { block_number: 1, start_offset: 2, block_size: 3, first_entry_id: 4, last_entry_id: 5 },
        );
        assert_eq!(out.len(), INDEX_RECORD_LEN);
        assert_eq!(
            hex(&out[4..]),
            concat!(
                "03",
                "20000000",
                "01000000",
                "0200000000000000",
                "03000000",
                "0400000000000000",
                "0500000000000000"
            )
        );
        let mut f = Vec::new();
        let footer = FooterRecord {
            total_blocks: 2,
            total_records: 2,
            total_size: 100,
            index_offset: 18,
            index_length: 82,
            version: 6,
            flags: 1,
            lac: -1,
        };
        encode_footer(&mut f, &footer);
        assert_eq!(f.len(), FOOTER_V6_RECORD_LEN);
        assert_eq!(
            hex(&f[4..]),
            concat!(
                "04",
                "2c000000",
                "02000000",
                "02000000",
                "6400000000000000",
                "1200000000000000",
                "52000000",
                "0600",
                "0100",
                "46545201",
                "ffffffffffffffff"
            )
        );
        let fb = Bytes::from(f);
        assert_eq!(decode_footer_at_end(&fb), Some((footer, 0)));
        let mut v5 = Vec::new();
        encode_footer(&mut v5, &FooterRecord { version: 5, lac: 99, ..footer });
        assert_eq!(v5.len(), FOOTER_V5_RECORD_LEN);
        let v5 = Bytes::from(v5);
        assert_eq!(decode_footer_at_end(&v5).map(|(f, _)| (f.version, f.lac)), Some((5, -1)));

        let mut bh = Vec::new();
        encode_block_header(
            &mut bh,
            &BlockHeaderRecord {
                block_number: 7,
                first_entry_id: 10,
                last_entry_id: 11,
                block_length: 20,
                block_crc: 0xdead_beef,
            },
        );
        assert_eq!(bh.len(), BLOCK_HEADER_RECORD_LEN);
        assert_eq!(
            hex(&bh[4..]),
            concat!("05", "1c000000", "07000000", "0a00000000000000", "0b00000000000000", "14000000", "efbeadde")
        );
    }

    #[test]
    fn block_round_trip_and_implicit_ids() {
        let mut out = Vec::new();
        encode_header(&mut out, &HeaderRecord { version: 6, flags: 0, first_entry_id: 0 });
        let entries: Vec<Vec<u8>> = (0..5).map(|i| format!("entry-{i}").into_bytes()).collect();
        let h = encode_block(&mut out, 0, 40, &entries);
        assert_eq!((h.first_entry_id, h.last_entry_id), (40, 44));
        let b = Bytes::from(out);
        let block = decode_block(&b, HEADER_RECORD_LEN).unwrap();
        assert_eq!(block.header, h);
        assert_eq!(block.entries.len(), 5);
        assert_eq!(&block.entries[3][..], b"entry-3");
        assert_eq!(block.encoded_len, b.len() - HEADER_RECORD_LEN);
    }

    #[test]
    fn flipped_byte_is_reported_with_offset() {
        let mut out = Vec::new();
        encode_block(&mut out, 3, 0, &[b"hello".as_slice(), b"world".as_slice()]);
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x40;
            let err = decode_block(&Bytes::from(bad), 0).unwrap_err();
            match err {
                CodecError::CrcMismatch { .. }
                | CodecError::BlockCrcMismatch { .. }
                | CodecError::Truncated { .. }
                | CodecError::Malformed { .. }
                | CodecError::ImpossibleEntryRange { .. }
                | CodecError::UnknownType { .. } => {}
            }
        }
        let mut bad = out.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            decode_block(&Bytes::from(bad), 0),
            Err(CodecError::BlockCrcMismatch { block: 3, offset: 0, .. })
        ));
    }

    #[test]
    fn combined_block_crc_equals_a_plain_crc_of_the_data() {
        // Sizes on both sides of REHASH_MAX, so both ways of folding a record in are taken and mixed.
        for n in [1usize, 2, 7, 100] {
            let entries: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; i * 1_373 % 9_000]).collect();
            let mut out = Vec::new();
            let h = encode_block(&mut out, 0, 5, &entries);
            assert_eq!(h.block_crc, crc32fast::hash(&out[BLOCK_HEADER_RECORD_LEN..]), "{n} entries");
        }
    }

    #[test]
    fn runs_of_same_sized_records_fold_in_by_shifts_and_agree_with_a_plain_crc() {
        // Runs shorter and longer than SHIFT_STREAK, lengths changing mid-block and between blocks (the
        // tables are kept per thread), mixed with records past REHASH_MAX and empty entries.
        let runs: [&[(usize, usize)]; 4] = [
            &[(1024, 40)],
            &[(1024, 5), (100, 30), (5000, 2), (100, 20), (0, 17), (1024, 40)],
            &[(100, 10), (1024, 15), (100, 3), (7, 64)],
            &[(4087, 20), (4088, 20), (1024, 1)],
        ];
        for (b, run) in runs.iter().enumerate() {
            let mut entries = Vec::new();
            for &(size, count) in run.iter() {
                for i in 0..count {
                    entries.push((0..size).map(|k| (k * 31 + i * 7 + b) as u8).collect::<Vec<u8>>());
                }
            }
            let mut out = Vec::new();
            let h = encode_block(&mut out, b as i32, 0, &entries);
            assert_eq!(h.block_crc, crc32fast::hash(&out[BLOCK_HEADER_RECORD_LEN..]), "block {b}");
            assert_eq!(decode_block(&Bytes::from(out), 0).expect("decodes").entries.len(), entries.len());
        }
    }

    #[test]
    fn truncated_input_is_an_error_not_a_short_read() {
        let mut out = Vec::new();
        encode_block(&mut out, 0, 0, &[b"abcdef".as_slice()]);
        let cut = Bytes::from(out[..out.len() - 2].to_vec());
        assert!(matches!(decode_block(&cut, 0), Err(CodecError::Truncated { offset: 0, .. })));
        assert!(matches!(decode_record(&Bytes::from_static(b"\0\0"), 0), Err(CodecError::Truncated { .. })));
    }

    /// One data record under a block header whose CRCs are both valid but which declares `first..=last`.
    fn block_declaring(first_entry_id: i64, last_entry_id: i64) -> Bytes {
        let mut data = Vec::new();
        encode_data(&mut data, b"only one");
        let mut out = Vec::new();
        encode_block_header(
            &mut out,
            &BlockHeaderRecord {
                block_number: 4,
                first_entry_id,
                last_entry_id,
                block_length: data.len() as u32,
                block_crc: crc32fast::hash(&data),
            },
        );
        out.extend_from_slice(&data);
        Bytes::from(out)
    }

    #[test]
    fn crafted_entry_range_is_a_typed_error_not_an_allocation_or_overflow() {
        // 1 << 40 entries would reserve 32 TiB; the others overflow `last - first + 1` or lie outside the ids.
        let impossible =
            [(0, 1 << 40), (-1, i64::MAX), (i64::MAX, i64::MAX), (i64::MIN, 0), (10, i64::MIN), (5, 3), (5, 4), (0, 1)];
        for (first, last) in impossible {
            match decode_block(&block_declaring(first, last), 0) {
                Err(CodecError::ImpossibleEntryRange {
                    block: 4, offset: 0, first_entry_id, last_entry_id, ..
                }) => {
                    assert_eq!((first_entry_id, last_entry_id), (first, last));
                }
                other => panic!("{first}..={last}: expected an impossible entry range, got {other:?}"),
            }
        }
        // The same bytes with a range they can hold decode.
        let block = decode_block(&block_declaring(7, 7), 0).expect("one entry fits");
        assert_eq!(block.entries, vec![Bytes::from_static(b"only one")]);
    }

    #[test]
    fn index_length_past_the_buffer_is_truncated_without_reserving_it() {
        let mut out = Vec::new();
        encode_index(
            &mut out,
            &IndexRecord { block_number: 0, start_offset: 0, block_size: 10, first_entry_id: 0, last_entry_id: 0 },
        );
        let b = Bytes::from(out);
        for (offset, length) in [(0, usize::MAX), (usize::MAX, 2), (1, b.len()), (b.len() + 1, 0)] {
            assert!(
                matches!(decode_index(&b, offset, length), Err(CodecError::Truncated { .. })),
                "offset {offset}, length {length}"
            );
        }
        assert_eq!(decode_index(&b, 0, b.len()).expect("whole region").len(), 1);
    }

    #[test]
    fn footer_whose_length_contradicts_its_version_is_malformed() {
        let footer = FooterRecord {
            total_blocks: 1,
            total_records: 1,
            total_size: 10,
            index_offset: 0,
            index_length: 41,
            version: 6,
            flags: 0,
            lac: 7,
        };
        let mut v6 = Vec::new();
        encode_footer(&mut v6, &footer);
        let mut v5 = Vec::new();
        encode_footer(&mut v5, &FooterRecord { version: 5, ..footer });
        // The same payloads with the other version number, under valid record CRCs.
        for (mut payload, version) in [(v6[RECORD_HEADER_LEN..].to_vec(), 5u16), (v5[RECORD_HEADER_LEN..].to_vec(), 6)]
        {
            payload[28..30].copy_from_slice(&version.to_le_bytes());
            let mut out = Vec::new();
            put_record(&mut out, RecordType::Footer, &payload);
            let b = Bytes::from(out);
            assert!(
                matches!(decode_record(&b, 0), Err(CodecError::Malformed { offset: 0, .. })),
                "version {version} with {} payload bytes",
                payload.len()
            );
            assert_eq!(decode_footer_at_end(&b), None);
        }
    }

    #[test]
    fn index_region_decodes_in_order() {
        let mut out = Vec::new();
        for n in 0..3 {
            encode_index(
                &mut out,
                &IndexRecord {
                    block_number: n,
                    start_offset: n as i64,
                    block_size: 10,
                    first_entry_id: n as i64 * 10,
                    last_entry_id: n as i64 * 10 + 9,
                },
            );
        }
        let b = Bytes::from(out);
        let idx = decode_index(&b, 0, b.len()).unwrap();
        assert_eq!(idx.iter().map(|r| r.last_entry_id).collect::<Vec<_>>(), vec![9, 19, 29]);
    }
}
