//! How `log read` / `log tail` print one entry: a text line for people, or a JSON line for programs.
//!
//! ```text
//! text:  0/41<TAB>hello world<TAB>k=v,k2=v2          (non-UTF-8 payloads as base64:<…>)
//! json:  {"segment":0,"entry":41,"payload":"hello world","payload_encoding":"utf8","properties":{"k":"v"}}
//! ```

use serde_json::json;
use woodpecker_client::LogMessage;

/// One text line (no trailing newline). Control characters in UTF-8 payloads are escaped so that one
/// entry is always one line.
pub fn text_line(msg: &LogMessage) -> String {
    let payload = match std::str::from_utf8(&msg.payload) {
        Ok(s) => escape_controls(s),
        Err(_) => format!("base64:{}", base64(&msg.payload)),
    };
    let mut line = format!("{}\t{payload}", msg.id);
    if !msg.properties.is_empty() {
        let props: Vec<String> =
            msg.properties.iter().map(|(k, v)| format!("{}={}", escape_controls(k), escape_controls(v))).collect();
        line.push('\t');
        line.push_str(&props.join(","));
    }
    line
}

/// One JSON object (no trailing newline): segment, entry, payload (UTF-8 text or base64), properties.
pub fn json_line(msg: &LogMessage) -> String {
    let (payload, encoding) = match std::str::from_utf8(&msg.payload) {
        Ok(s) => (s.to_owned(), "utf8"),
        Err(_) => (base64(&msg.payload), "base64"),
    };
    json!({
        "segment": msg.id.segment_id,
        "entry": msg.id.entry_id,
        "payload": payload,
        "payload_encoding": encoding,
        "properties": msg.properties,
    })
    .to_string()
}

fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use woodpecker_client::LogMessageId;

    use super::*;

    fn msg(payload: &'static [u8], props: &[(&str, &str)]) -> LogMessage {
        LogMessage {
            id: LogMessageId::new(2, 7),
            payload: Bytes::from_static(payload),
            properties: props.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input), want);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn text_lines_stay_on_one_line_and_show_binary_as_base64() {
        assert_eq!(text_line(&msg(b"hello", &[])), "2/7\thello");
        assert_eq!(text_line(&msg(b"a\nb", &[("k", "v"), ("a", "b")])), "2/7\ta\\nb\ta=b,k=v");
        assert_eq!(text_line(&msg(&[0xff, 0x00], &[])), "2/7\tbase64:/wA=");
    }

    #[test]
    fn json_lines_carry_position_payload_encoding_and_properties() {
        let v: serde_json::Value = serde_json::from_str(&json_line(&msg(b"hi", &[("k", "v")]))).unwrap();
        assert_eq!(v["segment"], 2);
        assert_eq!(v["entry"], 7);
        assert_eq!(v["payload"], "hi");
        assert_eq!(v["payload_encoding"], "utf8");
        assert_eq!(v["properties"]["k"], "v");
        let v: serde_json::Value = serde_json::from_str(&json_line(&msg(&[0xff], &[]))).unwrap();
        assert_eq!(v["payload"], "/w==");
        assert_eq!(v["payload_encoding"], "base64");
    }
}
