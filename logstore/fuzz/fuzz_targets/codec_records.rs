//! The record and block codec on arbitrary bytes: decoding never panics or over-allocates, every record it
//! accepts re-encodes to exactly its bytes, and a block it accepts re-encodes to the same header and bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use woodpecker_core::codec::{self, Record};

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    let mut at = 0;
    while let Ok((record, n)) = codec::decode_record(&buf, at) {
        let mut again = Vec::new();
        match &record {
            Record::Header(h) => codec::encode_header(&mut again, h),
            Record::Data(d) => codec::encode_data(&mut again, d),
            Record::Index(r) => codec::encode_index(&mut again, r),
            Record::Footer(f) => codec::encode_footer(&mut again, f),
            Record::BlockHeader(b) => codec::encode_block_header(&mut again, b),
        }
        assert_eq!(&again[..], &buf[at..at + n], "{record:?} at {at} does not re-encode to its bytes");
        at += n;
    }

    // A block at the start, or after a leading header record (block 0 of an object).
    let start = match codec::decode_record(&buf, 0) {
        Ok((Record::Header(_), n)) => n,
        _ => 0,
    };
    if let Ok(block) = codec::decode_block(&buf, start) {
        let h = block.header;
        assert_eq!(codec::block_entry_count(&h), Some(block.entries.len()), "{h:?}");
        assert!(h.last_entry_id.checked_add(1).is_some(), "{h:?}: the id after the block exists");
        if !block.entries.is_empty() {
            let mut again = Vec::new();
            let encoded = codec::encode_block(&mut again, h.block_number, h.first_entry_id, &block.entries);
            assert_eq!(encoded, h, "block header does not re-encode");
            assert_eq!(&again[..], &buf[start..start + block.encoded_len], "block does not re-encode to its bytes");
        }
    }

    if let Some((footer, at)) = codec::decode_footer_at_end(&buf) {
        let mut again = Vec::new();
        codec::encode_footer(&mut again, &footer);
        assert_eq!(&again[..], &buf[at..], "footer does not re-encode to its bytes");
    }
    if let Ok(index) = codec::decode_index(&buf, 0, buf.len()) {
        assert_eq!(index.len() * codec::INDEX_RECORD_LEN, buf.len());
    }
});
