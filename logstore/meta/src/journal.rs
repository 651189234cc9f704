//! On-disk framing of the embedded store: checksummed records, and the payloads inside them.
//!
//! ```text
//! record := len:u32 | crc32(len bytes):u32 | crc32(payload):u32 | payload[len]     (little-endian)
//!
//! journal  := record*            one record per committed transaction (a Batch payload)
//! snapshot := record             one Snapshot payload: the whole state at a revision
//! ```
//! A damaged record at the very end of the journal is a torn write of a transaction that never
//! returned `Ok`, and is dropped. Damage anywhere else is corruption and is reported with the file
//! and offset, never skipped.

use std::path::Path;

use crate::error::{MetaError, MetaResult};

/// Size of a record header.
pub(crate) const HEADER_LEN: usize = 12;
const SNAPSHOT_MAGIC: &[u8; 8] = b"WPMETA01";

/// Frames `payload` as one record.
pub(crate) fn frame(payload: &[u8]) -> MetaResult<Vec<u8>> {
    let len = u32::try_from(payload.len()).map_err(|_| MetaError::Corrupt {
        key: String::new(),
        reason: format!("record of {} bytes exceeds the 4 GiB limit", payload.len()),
    })?;
    let len_bytes = len.to_le_bytes();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc32fast::hash(&len_bytes).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Result of scanning a journal file.
#[derive(Debug)]
pub(crate) struct Scan<'a> {
    /// Payloads of the intact records, with their offsets.
    pub records: Vec<(u64, &'a [u8])>,
    /// Offset where a torn tail starts, if one was dropped.
    pub torn_at: Option<u64>,
}

/// Splits `bytes` (the content of `path`) into records; see the module docs for the tail rule.
pub(crate) fn scan<'a>(path: &Path, bytes: &'a [u8]) -> MetaResult<Scan<'a>> {
    let corrupt = |offset: usize, reason: &str| MetaError::CorruptFile {
        path: path.to_owned(),
        offset: offset as u64,
        reason: reason.to_owned(),
    };
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < HEADER_LEN {
            return Ok(Scan { records, torn_at: Some(offset as u64) });
        }
        let len_bytes: [u8; 4] = [rest[0], rest[1], rest[2], rest[3]];
        let len_crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let payload_crc = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if crc32fast::hash(&len_bytes) != len_crc {
            // A crash while extending the file can leave zeros; anything else is damage.
            if rest.iter().all(|b| *b == 0) {
                return Ok(Scan { records, torn_at: Some(offset as u64) });
            }
            return Err(corrupt(offset, "record header checksum mismatch"));
        }
        let len = u32::from_le_bytes(len_bytes) as usize;
        let end = offset + HEADER_LEN + len;
        if end > bytes.len() {
            return Ok(Scan { records, torn_at: Some(offset as u64) });
        }
        let payload = &bytes[offset + HEADER_LEN..end];
        if crc32fast::hash(payload) != payload_crc {
            if end == bytes.len() {
                return Ok(Scan { records, torn_at: Some(offset as u64) });
            }
            return Err(corrupt(offset, "record payload checksum mismatch before the end of the file"));
        }
        records.push((offset as u64, payload));
        offset = end;
    }
    Ok(Scan { records, torn_at: None })
}

/// One change of a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mutation {
    /// Key written (lease 0 = none).
    Put { key: String, value: Vec<u8>, lease: i64 },
    /// Key deleted.
    Delete { key: String },
}

/// One key of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotEntry {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
}

/// Encodes a committed transaction: its revision and its changes in order.
pub(crate) fn encode_batch(revision: i64, mutations: &[Mutation]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&revision.to_le_bytes());
    put_u32(&mut out, mutations.len());
    for m in mutations {
        match m {
            Mutation::Put { key, value, lease } => {
                out.push(1);
                put_bytes(&mut out, key.as_bytes());
                put_bytes(&mut out, value);
                out.extend_from_slice(&lease.to_le_bytes());
            }
            Mutation::Delete { key } => {
                out.push(2);
                put_bytes(&mut out, key.as_bytes());
            }
        }
    }
    out
}

/// Decodes a batch payload.
pub(crate) fn decode_batch(payload: &[u8]) -> Result<(i64, Vec<Mutation>), String> {
    let mut r = Reader { buf: payload };
    let revision = r.i64()?;
    let n = r.u32()?;
    let mut mutations = Vec::with_capacity(n.min(1024) as usize);
    for _ in 0..n {
        match r.u8()? {
            1 => {
                let key = r.string()?;
                let value = r.bytes()?.to_vec();
                let lease = r.i64()?;
                mutations.push(Mutation::Put { key, value, lease });
            }
            2 => mutations.push(Mutation::Delete { key: r.string()? }),
            tag => return Err(format!("unknown mutation tag {tag}")),
        }
    }
    r.finish()?;
    Ok((revision, mutations))
}

/// Encodes the whole durable state.
pub(crate) fn encode_snapshot<'a>(revision: i64, entries: impl ExactSizeIterator<Item = SnapshotRef<'a>>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        put_bytes(&mut out, e.key.as_bytes());
        put_bytes(&mut out, e.value);
        out.extend_from_slice(&e.create_revision.to_le_bytes());
        out.extend_from_slice(&e.mod_revision.to_le_bytes());
        out.extend_from_slice(&e.version.to_le_bytes());
    }
    out
}

/// Borrowed view of one key for [`encode_snapshot`].
pub(crate) struct SnapshotRef<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
}

/// Decodes a snapshot payload.
pub(crate) fn decode_snapshot(payload: &[u8]) -> Result<(i64, Vec<SnapshotEntry>), String> {
    let mut r = Reader { buf: payload };
    if r.take(SNAPSHOT_MAGIC.len())? != SNAPSHOT_MAGIC {
        return Err("bad snapshot magic".to_owned());
    }
    let revision = r.i64()?;
    let n = r.u64()?;
    let mut entries = Vec::with_capacity(n.min(1 << 16) as usize);
    for _ in 0..n {
        let key = r.string()?;
        let value = r.bytes()?.to_vec();
        entries.push(SnapshotEntry {
            key,
            value,
            create_revision: r.i64()?,
            mod_revision: r.i64()?,
            version: r.i64()?,
        });
    }
    r.finish()?;
    Ok((revision, entries))
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Keys and values are far below 4 GiB; a whole record is checked in `frame`.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!("payload truncated: need {n} bytes, have {}", self.buf.len()));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|e| format!("key is not UTF-8: {e}"))
    }
    fn finish(&self) -> Result<(), String> {
        if self.buf.is_empty() { Ok(()) } else { Err(format!("{} trailing bytes", self.buf.len())) }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn journal(batches: &[(i64, Vec<Mutation>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (rev, m) in batches {
            out.extend(frame(&encode_batch(*rev, m)).expect("frame"));
        }
        out
    }

    fn put(k: &str) -> Mutation {
        Mutation::Put { key: k.to_owned(), value: b"v".to_vec(), lease: 0 }
    }

    #[test]
    fn batches_round_trip() {
        let m = vec![put("a"), Mutation::Delete { key: "b".to_owned() }];
        let bytes = journal(&[(2, m.clone())]);
        let scan = scan(&PathBuf::from("j"), &bytes).expect("scan");
        assert_eq!(scan.records.len(), 1);
        assert_eq!(decode_batch(scan.records[0].1).expect("decode"), (2, m));
    }

    #[test]
    fn every_truncation_point_is_a_torn_tail() {
        let bytes = journal(&[(2, vec![put("a")]), (3, vec![put("b")])]);
        let first_len = frame(&encode_batch(2, &[put("a")])).expect("frame").len();
        for cut in first_len..bytes.len() {
            let scan = scan(&PathBuf::from("j"), &bytes[..cut]).expect("a torn tail is not an error");
            assert_eq!(scan.records.len(), 1, "cut at {cut}");
            if cut > first_len {
                assert_eq!(scan.torn_at, Some(first_len as u64));
            }
        }
    }

    #[test]
    fn damage_before_the_tail_is_corruption_with_offset() {
        let mut bytes = journal(&[(2, vec![put("a")]), (3, vec![put("b")]), (4, vec![put("c")])]);
        let first_len = frame(&encode_batch(2, &[put("a")])).expect("frame").len();
        bytes[first_len + HEADER_LEN + 3] ^= 0x40;
        match scan(&PathBuf::from("j"), &bytes) {
            Err(MetaError::CorruptFile { offset, .. }) => assert_eq!(offset, first_len as u64),
            other => panic!("expected CorruptFile, got {other:?}"),
        }
    }
}
