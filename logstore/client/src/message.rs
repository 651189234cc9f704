//! Messages as the application sees them, and their stored form (`LogMessageLayout` protobuf, as upstream).

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message;
use woodpecker_core::entry::EntryBytes;
use woodpecker_core::ids::LogMessageId;
use woodpecker_proto::logstore::LogMessageLayout;

/// `LogMessageLayout.payload`: field 1, wire type 2 (length-delimited).
const PAYLOAD_TAG: u8 = (1 << 3) | 2;

/// What an application appends: a payload and optional string properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteMessage {
    /// Opaque payload.
    pub payload: Bytes,
    /// Properties carried with the payload.
    pub properties: BTreeMap<String, String>,
}

impl WriteMessage {
    /// A message with a payload and no properties.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self { payload: payload.into(), properties: BTreeMap::new() }
    }

    /// Adds one property.
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// The stored bytes of this message.
    pub fn encode(&self) -> Bytes {
        self.clone().into_entry().to_bytes()
    }

    /// The stored form without copying the payload: `LogMessageLayout` field 1 (tag, length, payload)
    /// followed by the encoded properties (field 2), exactly as protobuf encodes the whole message.
    pub(crate) fn into_entry(self) -> EntryBytes {
        let tail = if self.properties.is_empty() {
            Bytes::new()
        } else {
            Bytes::from(LogMessageLayout { payload: Bytes::new(), properties: self.properties }.encode_to_vec())
        };
        if self.payload.is_empty() {
            // proto3 leaves an empty bytes field out.
            EntryBytes::new(tail)
        } else {
            EntryBytes::length_prefixed(PAYLOAD_TAG, self.payload, tail)
        }
    }
}

/// A message read back, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMessage {
    /// Where the message is in the log.
    pub id: LogMessageId,
    /// Its payload.
    pub payload: Bytes,
    /// Its properties.
    pub properties: BTreeMap<String, String>,
}

/// Decodes stored bytes into payload and properties.
pub fn decode_entry(bytes: Bytes) -> Result<(Bytes, BTreeMap<String, String>), prost::DecodeError> {
    let layout = LogMessageLayout::decode(bytes)?;
    Ok((layout.payload, layout.properties))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_upstream_layout() {
        let m = WriteMessage::new(&b"hi"[..]).with_property("k", "v");
        // field 1 (bytes) "hi", field 2 map entry {1:"k", 2:"v"}
        assert_eq!(&m.encode()[..], &[0x0a, 2, b'h', b'i', 0x12, 6, 0x0a, 1, b'k', 0x12, 1, b'v']);
        let (p, props) = decode_entry(m.encode()).unwrap();
        assert_eq!(&p[..], b"hi");
        assert_eq!(props.get("k").map(String::as_str), Some("v"));
    }

    #[test]
    fn pieces_are_byte_equal_to_protobuf_encoding() {
        let sizes = [0usize, 1, 127, 128, 1024, 16_383, 16_384, 70_000, 2_097_152];
        let props: [&[(&str, &str)]; 4] =
            [&[], &[("k", "v")], &[("", "empty-key"), ("x", "")], &[("a", "1"), ("b", &"long".repeat(50))]];
        for size in sizes {
            for p in props {
                let m = WriteMessage {
                    payload: Bytes::from(vec![0x5a; size]),
                    properties: p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                };
                let layout = LogMessageLayout { payload: m.payload.clone(), properties: m.properties.clone() };
                let entry = m.clone().into_entry();
                assert_eq!(entry.len(), layout.encoded_len(), "size {size}, properties {p:?}");
                assert_eq!(entry.to_bytes(), Bytes::from(layout.encode_to_vec()), "size {size}, properties {p:?}");
            }
        }
    }
}
