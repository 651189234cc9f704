//! An entry's stored bytes, handed to a segment writer in pieces so that a payload is copied once: straight
//! from the application's buffer into the block being encoded.
//!
//! ```text
//!  EntryBytes:  [ head (≤ 11 bytes, inline) ][ body (shared Bytes) ][ tail (shared Bytes, often empty) ]
//!  stored as:    head ++ body ++ tail          (one Data record; the pieces are not visible on storage)
//! ```
//!
//! The client stores a message as protobuf `LogMessageLayout { payload = 1; properties = 2 }`: a tag and a
//! length varint (the head), the payload (the body), then the encoded properties (the tail). Building that
//! as one buffer first would cost an allocation and a copy of every payload.

use bytes::Bytes;

/// Longest head: a one-byte tag plus a 64-bit varint.
const HEAD_MAX: usize = 11;

/// One entry's bytes as a short inline head, a body and a tail, stored back to back.
#[derive(Clone, Default)]
pub struct EntryBytes {
    head: [u8; HEAD_MAX],
    head_len: u8,
    body: Bytes,
    tail: Bytes,
}

impl EntryBytes {
    /// An entry whose bytes are exactly `body`.
    pub fn new(body: Bytes) -> Self {
        Self { head: [0; HEAD_MAX], head_len: 0, body, tail: Bytes::new() }
    }

    /// `tag`, the length of `body` as a varint, `body`, then `tail`: protobuf's encoding of a
    /// length-delimited field followed by further encoded fields.
    pub fn length_prefixed(tag: u8, body: Bytes, tail: Bytes) -> Self {
        let mut head = [0u8; HEAD_MAX];
        head[0] = tag;
        let mut n = 1;
        let mut v = body.len() as u64;
        while v >= 0x80 {
            head[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        head[n] = v as u8;
        n += 1;
        Self { head, head_len: n as u8, body, tail }
    }

    /// Stored length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.head_len) + self.body.len() + self.tail.len()
    }

    /// True when nothing would be stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the stored bytes to `out`.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head[..usize::from(self.head_len)]);
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&self.tail);
    }

    /// The stored bytes as one buffer (no copy when the entry is a single piece).
    pub fn to_bytes(&self) -> Bytes {
        if self.head_len == 0 && self.tail.is_empty() {
            return self.body.clone();
        }
        let mut out = Vec::with_capacity(self.len());
        self.append_to(&mut out);
        Bytes::from(out)
    }
}

impl std::fmt::Debug for EntryBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryBytes").field("len", &self.len()).finish()
    }
}

impl PartialEq for EntryBytes {
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

impl Eq for EntryBytes {}

impl From<Bytes> for EntryBytes {
    fn from(body: Bytes) -> Self {
        Self::new(body)
    }
}

impl From<Vec<u8>> for EntryBytes {
    fn from(body: Vec<u8>) -> Self {
        Self::new(Bytes::from(body))
    }
}

impl From<&'static [u8]> for EntryBytes {
    fn from(body: &'static [u8]) -> Self {
        Self::new(Bytes::from_static(body))
    }
}

impl From<&'static str> for EntryBytes {
    fn from(body: &'static str) -> Self {
        Self::new(Bytes::from_static(body.as_bytes()))
    }
}

/// What a block encoder needs of an entry: its length and a way to append its bytes.
pub trait EntryData {
    /// Stored length in bytes.
    fn data_len(&self) -> usize;
    /// Appends the stored bytes to `out`.
    fn append_data(&self, out: &mut Vec<u8>);
}

impl EntryData for EntryBytes {
    fn data_len(&self) -> usize {
        self.len()
    }

    fn append_data(&self, out: &mut Vec<u8>) {
        self.append_to(out);
    }
}

impl<T: AsRef<[u8]>> EntryData for T {
    fn data_len(&self) -> usize {
        self.as_ref().len()
    }

    fn append_data(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(e: &EntryBytes) -> Vec<u8> {
        let mut out = Vec::new();
        e.append_to(&mut out);
        assert_eq!(out.len(), e.len());
        assert_eq!(&e.to_bytes()[..], &out[..]);
        out
    }

    #[test]
    fn length_prefix_is_a_protobuf_varint() {
        for (len, prefix) in [
            (0usize, vec![0x0a, 0x00]),
            (1, vec![0x0a, 0x01]),
            (127, vec![0x0a, 0x7f]),
            (128, vec![0x0a, 0x80, 0x01]),
            (300, vec![0x0a, 0xac, 0x02]),
            (1 << 21, vec![0x0a, 0x80, 0x80, 0x80, 0x01]),
        ] {
            let e = EntryBytes::length_prefixed(0x0a, Bytes::from(vec![7u8; len]), Bytes::from_static(b"T"));
            let out = stored(&e);
            assert_eq!(&out[..prefix.len()], &prefix[..], "length {len}");
            assert_eq!(out.len(), prefix.len() + len + 1);
            assert_eq!(out.last(), Some(&b'T'));
        }
    }

    #[test]
    fn single_piece_entries_are_not_copied() {
        let body = Bytes::from(vec![1u8, 2, 3]);
        let e = EntryBytes::new(body.clone());
        assert_eq!(e.to_bytes().as_ptr(), body.as_ptr());
        assert_eq!(stored(&e), vec![1, 2, 3]);
        assert!(EntryBytes::default().is_empty());
    }
}
