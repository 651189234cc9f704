//! Messages as the application sees them, and their stored form (`LogMessageLayout` protobuf, as upstream).

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message;
use woodpecker_core::ids::LogMessageId;
use woodpecker_proto::logstore::LogMessageLayout;

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
        let layout = LogMessageLayout { payload: self.payload.clone(), properties: self.properties.clone() };
        Bytes::from(layout.encode_to_vec())
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
}
