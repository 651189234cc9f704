//! `footer.blk` of an object segment on arbitrary bytes: parsing never panics or over-allocates; a footer it
//! accepts has an index that lists dense entries up to its LAC and re-encodes to the bytes it came from.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use woodpecker_core::codec;
use woodpecker_storage::segment::SegmentError;
use woodpecker_storage::segment::object::decode_footer_object;

const KEY: &str = "fuzz/1/0/footer.blk";

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let footer = match decode_footer_object(KEY, &body) {
        Ok(f) => f,
        Err(SegmentError::Corrupt { location, .. }) => {
            assert_eq!(location, KEY, "corruption names the object");
            return;
        }
        Err(other) => panic!("a parse fails only as corruption, not {other:?}"),
    };
    let r = footer.record;
    assert_eq!(usize::try_from(r.total_blocks).ok(), Some(footer.index.len()));
    for pair in footer.index.windows(2) {
        assert_eq!(pair[0].last_entry_id.checked_add(1), Some(pair[1].first_entry_id), "{pair:?}");
    }
    for rec in &footer.index {
        assert!(0 <= rec.first_entry_id && rec.first_entry_id <= rec.last_entry_id, "{rec:?}");
    }
    let last = footer.index.last().map_or(-1, |rec| rec.last_entry_id);
    assert!((-1..=last).contains(&r.lac), "LAC {} outside ..={last}", r.lac);

    // The index region and footer record are exactly what the encoder writes for them.
    let mut again = Vec::new();
    for rec in &footer.index {
        codec::encode_index(&mut again, rec);
    }
    codec::encode_footer(&mut again, &r);
    let from = usize::try_from(r.index_offset).expect("the index lies inside the body");
    assert_eq!(&again[..], &body[from..], "footer object does not re-encode to its bytes");
});
