//! Shared helpers for the golden-byte tests.

use std::fmt::Debug;

use prost::Message;

/// Parses whitespace-separated hex bytes ("08 01 1a 03").
pub fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|e| panic!("bad hex byte {b:?}: {e}")))
        .collect()
}

/// Asserts `msg` encodes to exactly `expected_hex` and decodes back to itself.
pub fn assert_golden<M: Message + Default + PartialEq + Debug>(msg: &M, expected_hex: &str) {
    let expected = hex(expected_hex);
    let encoded = msg.encode_to_vec();
    assert_eq!(encoded, expected, "encoding of {msg:?}\n got:      {encoded:02x?}\n expected: {expected:02x?}");
    assert_eq!(msg.encoded_len(), expected.len(), "encoded_len of {msg:?}");
    assert_decodes_to(expected_hex, msg);
}

/// Asserts the bytes decode to `expected`.
pub fn assert_decodes_to<M: Message + Default + PartialEq + Debug>(bytes_hex: &str, expected: &M) {
    let decoded = M::decode(hex(bytes_hex).as_slice()).expect("golden bytes must decode");
    assert_eq!(&decoded, expected);
}
