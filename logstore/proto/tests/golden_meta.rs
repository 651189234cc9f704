//! Golden-byte tests for `woodpecker.proto.meta`: every expected byte string below is computed by
//! hand from the field numbers and wire types in `spec/wire.md`, not produced by prost, so a wrong
//! field number, type or packing fails here.
//!
//! Tag byte = (field << 3) | wire type; wire types: 0 varint, 1 fixed64, 2 length-delimited.

mod golden;

use std::collections::BTreeMap;

use golden::{assert_decodes_to, assert_golden};
use woodpecker_proto::meta::{
    LogMeta, QuorumInfo, QuorumNode, ReaderTempInfo, SegmentCleanupState, SegmentCleanupStatus,
    SegmentCompactedNotifyState, SegmentCompactedNotifyStatus, SegmentMetadata, SegmentState, Version,
};

#[test]
fn log_meta_encodes_fixed64_timestamps_and_negative_ids_as_ten_byte_varints() {
    let meta = LogMeta {
        log_id: 1,
        max_segment_roll_time_seconds: 60,
        max_segment_roll_size_bytes: 1 << 28,
        compaction_buffer_size_bytes: 1 << 27,
        max_compaction_file_count: 600,
        creation_timestamp: 1_700_000_000,
        modification_timestamp: 1_700_000_001,
        truncated_segment_id: -1,
        truncated_entry_id: -1,
    };
    assert_golden(
        &meta,
        "08 01 \
         10 3c \
         18 80 80 80 80 01 \
         20 80 80 80 40 \
         28 d8 04 \
         31 00 f1 53 65 00 00 00 00 \
         39 01 f1 53 65 00 00 00 00 \
         40 ff ff ff ff ff ff ff ff ff 01 \
         48 ff ff ff ff ff ff ff ff ff 01",
    );
}

#[test]
fn log_meta_with_default_values_encodes_to_nothing() {
    assert_golden(&LogMeta::default(), "");
}

fn sample_quorum() -> QuorumInfo {
    QuorumInfo {
        id: 1,
        es: 3,
        wq: 3,
        aq: 2,
        nodes: vec!["a:1".to_owned(), "b:2".to_owned()],
        replicas: vec![QuorumNode {
            endpoint: "a:1".to_owned(),
            node_id: "n".to_owned(),
            tags: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            ..QuorumNode::default()
        }],
    }
}

// QuorumInfo: ids, sizes, repeated strings, a nested QuorumNode with a map entry.
const QUORUM_HEX: &str = "08 01 10 03 18 03 20 02 \
     2a 03 61 3a 31 \
     2a 03 62 3a 32 \
     32 10 0a 03 61 3a 31 12 01 6e 3a 06 0a 01 6b 12 01 76";

#[test]
fn quorum_info_encodes_repeated_strings_and_nested_replicas() {
    assert_golden(&sample_quorum(), QUORUM_HEX);
}

#[test]
fn quorum_node_encodes_every_field() {
    let node = QuorumNode {
        endpoint: "e".to_owned(),
        node_id: "i".to_owned(),
        cluster_name: "c".to_owned(),
        region: "r".to_owned(),
        az: "z".to_owned(),
        resource_group: "g".to_owned(),
        tags: BTreeMap::from([("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())]),
    };
    assert_golden(
        &node,
        "0a 01 65 12 01 69 1a 01 63 22 01 72 2a 01 7a 32 01 67 \
         3a 06 0a 01 61 12 01 31 \
         3a 06 0a 01 62 12 01 32",
    );
}

#[test]
fn segment_metadata_encodes_enum_state_and_nested_quorum() {
    let meta = SegmentMetadata {
        seg_no: 3,
        create_time: 300,
        quorum_id: 1,
        state: SegmentState::Sealed as i32,
        completion_time: 0,
        last_entry_id: -1,
        size: 1024,
        sealed_time: 0,
        quorum: Some(sample_quorum()),
    };
    let expected = format!(
        "08 03 10 ac 02 18 01 20 03 \
         30 ff ff ff ff ff ff ff ff ff 01 \
         38 80 08 \
         4a 24 {QUORUM_HEX}"
    );
    assert_golden(&meta, &expected);
}

#[test]
fn segment_metadata_of_a_new_segment_omits_the_active_state() {
    let meta = SegmentMetadata {
        seg_no: 0,
        create_time: 1,
        state: SegmentState::Active as i32,
        last_entry_id: -1,
        ..SegmentMetadata::default()
    };
    assert_golden(&meta, "10 01 30 ff ff ff ff ff ff ff ff ff 01");
}

#[test]
fn segment_state_values_match_upstream_and_one_stays_unused() {
    assert_eq!(SegmentState::Active as i32, 0);
    assert_eq!(SegmentState::Completed as i32, 2);
    assert_eq!(SegmentState::Sealed as i32, 3);
    assert_eq!(SegmentState::Truncated as i32, 4);
    assert!(SegmentState::try_from(1).is_err());
    assert_eq!(SegmentState::Completed.as_str_name(), "Completed");
    // An unknown state on the wire is kept as its number, not dropped.
    let meta = SegmentMetadata { state: 1, ..SegmentMetadata::default() };
    assert_golden(&meta, "20 01");
}

#[test]
fn version_encodes_major_minor_patch() {
    let version = Version { major: 1, minor: 0, patch: 2 };
    assert_golden(&version, "08 01 18 02");
}

#[test]
fn reader_temp_info_uses_fixed64_for_both_timestamps() {
    let info = ReaderTempInfo {
        reader_name: "r".to_owned(),
        open_timestamp: 1,
        log_id: 7,
        open_segment_id: 0,
        open_entry_id: -1,
        recent_read_segment_id: 2,
        recent_read_entry_id: 5,
        recent_read_timestamp: 0x0102_0304_0506_0708,
    };
    assert_golden(
        &info,
        "0a 01 72 \
         11 01 00 00 00 00 00 00 00 \
         18 07 \
         28 ff ff ff ff ff ff ff ff ff 01 \
         30 02 38 05 \
         41 08 07 06 05 04 03 02 01",
    );
}

#[test]
fn segment_cleanup_status_encodes_map_of_bool_sorted_by_key() {
    let status = SegmentCleanupStatus {
        log_id: 1,
        segment_id: 2,
        state: SegmentCleanupState::CleanupFailed as i32,
        start_time: 10,
        last_update_time: 20,
        quorum_cleanup_status: BTreeMap::from([("b".to_owned(), false), ("a".to_owned(), true)]),
        error_message: "x".to_owned(),
    };
    // prost leaves default key/value out of a map entry ("b" => false has no value field);
    // Go writes both. Both forms decode to the same map (checked below).
    assert_golden(
        &status,
        "08 01 10 02 18 02 20 0a 28 14 \
         32 05 0a 01 61 10 01 \
         32 03 0a 01 62 \
         3a 01 78",
    );
    assert_decodes_to(
        "08 01 10 02 18 02 20 0a 28 14 \
         32 05 0a 01 61 10 01 \
         32 05 0a 01 62 10 00 \
         3a 01 78",
        &status,
    );
}

#[test]
fn segment_cleanup_state_values_match_upstream() {
    assert_eq!(SegmentCleanupState::CleanupInProgress as i32, 0);
    assert_eq!(SegmentCleanupState::CleanupCompleted as i32, 1);
    assert_eq!(SegmentCleanupState::CleanupFailed as i32, 2);
    assert_eq!(SegmentCleanupState::CleanupFailed.as_str_name(), "CLEANUP_FAILED");
}

#[test]
fn segment_compacted_notify_status_encodes_state_and_map() {
    let status = SegmentCompactedNotifyStatus {
        log_id: 1,
        segment_id: 2,
        state: SegmentCompactedNotifyState::NotifyOperatorConfirmed as i32,
        start_time: 0,
        last_update_time: 1,
        quorum_notify_status: BTreeMap::from([("n".to_owned(), true)]),
        error_message: String::new(),
    };
    assert_golden(&status, "08 01 10 02 18 03 28 01 32 05 0a 01 6e 10 01");
    assert_eq!(SegmentCompactedNotifyState::NotifyInProgress as i32, 0);
    assert_eq!(SegmentCompactedNotifyState::NotifyCompleted as i32, 1);
    assert_eq!(SegmentCompactedNotifyState::NotifyPendingManual as i32, 2);
}

#[test]
fn unknown_fields_from_a_newer_peer_are_skipped() {
    // LogMeta{logId=5} followed by an unknown field 15 (varint 1) and field 16 (bytes "z").
    assert_decodes_to("08 05 78 01 82 01 01 7a", &LogMeta { log_id: 5, ..LogMeta::default() });
}
