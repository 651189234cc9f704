//! Golden-byte tests for `woodpecker.proto.logstore`: expected bytes are computed by hand from the
//! field numbers and wire types in `spec/wire.md`.
//!
//! Tag byte = (field << 3) | wire type; wire types: 0 varint, 1 fixed64, 2 length-delimited.
//! Request scoping prefix used below: bucket_name "b" = `0a 01 62`, root_path "r" = `12 01 72`,
//! log_id 1 = `18 01`, segment_id 2 = `20 02`.

mod golden;

use std::collections::BTreeMap;

use golden::{assert_decodes_to, assert_golden};
use prost::bytes::Bytes;
use woodpecker_proto::logstore::{
    AddEntriesRequest, AddEntriesResponse, AddEntryRequest, AddEntryResponse, AddEntryState, AffinityMode,
    AppendResultUpdate, AppendResultsSubscribeRequest, BatchReadResult, CleanSegmentRequest, CleanSegmentResponse,
    CompactSegmentRequest, CompactSegmentResponse, CompleteSegmentRequest, CompleteSegmentResponse,
    FenceSegmentRequest, FenceSegmentResponse, GetBatchEntriesAdvRequest, GetBatchEntriesAdvResponse,
    GetSegmentBlockCountRequest, GetSegmentBlockCountResponse, GetSegmentLastAddConfirmedRequest,
    GetSegmentLastAddConfirmedResponse, LastReadState, LogEntry, LogMessageIdData, LogMessageLayout,
    MarkInstanceDeletedRequest, MarkInstanceDeletedResponse, MarkLogDeletedRequest, MarkLogDeletedResponse, NodeFilter,
    NodeMeta, NotifySegmentCompactedRequest, NotifySegmentCompactedResponse, SelectNodesRequest, SelectNodesResponse,
    Status, StrategyType, UpdateLastAddConfirmedRequest, UpdateLastAddConfirmedResponse,
};
use woodpecker_proto::meta::{SegmentMetadata, SegmentState};

const SCOPE: &str = "0a 01 62 12 01 72 18 01";

fn entry() -> LogEntry {
    LogEntry { seg_id: 1, entry_id: 2, values: Bytes::from_static(b"abc") }
}
const ENTRY_HEX: &str = "08 01 10 02 1a 03 61 62 63";

#[test]
fn log_message_id_data_encodes_seg_id_then_entry_id() {
    let id = LogMessageIdData { seg_id: 5, entry_id: 300 };
    assert_golden(&id, "08 05 10 ac 02");
}

#[test]
fn log_message_id_data_encodes_negative_ids_as_ten_byte_varints() {
    let id = LogMessageIdData { seg_id: -1, entry_id: 0 };
    assert_golden(&id, "08 ff ff ff ff ff ff ff ff ff 01");
}

#[test]
fn log_message_layout_encodes_payload_and_each_property_as_a_map_entry() {
    let layout = LogMessageLayout {
        payload: Bytes::from_static(b"hi"),
        properties: BTreeMap::from([("k2".to_owned(), "v2".to_owned()), ("k1".to_owned(), "v1".to_owned())]),
    };
    assert_golden(
        &layout,
        "0a 02 68 69 \
         12 08 0a 02 6b 31 12 02 76 31 \
         12 08 0a 02 6b 32 12 02 76 32",
    );
}

#[test]
fn log_message_layout_empty_encodes_to_nothing() {
    assert_golden(&LogMessageLayout::default(), "");
}

#[test]
fn log_message_layout_accepts_go_map_entries_with_explicit_empty_value() {
    let layout = LogMessageLayout {
        payload: Bytes::from_static(b"p"),
        properties: BTreeMap::from([("k".to_owned(), String::new())]),
    };
    // prost omits the empty value inside the entry...
    assert_golden(&layout, "0a 01 70 12 03 0a 01 6b");
    // ...Go writes it as `12 00`; both decode to the same map.
    assert_decodes_to("0a 01 70 12 05 0a 01 6b 12 00", &layout);
    // Entries may also arrive before the payload and out of key order.
    let two = LogMessageLayout {
        payload: Bytes::from_static(b"p"),
        properties: BTreeMap::from([("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())]),
    };
    assert_decodes_to("12 06 0a 01 62 12 01 32 0a 01 70 12 06 0a 01 61 12 01 31", &two);
}

#[test]
fn log_entry_encodes_ids_and_values() {
    assert_golden(&entry(), ENTRY_HEX);
}

#[test]
fn last_read_state_encodes_negative_int32_as_ten_byte_varint() {
    let state = LastReadState {
        segment_id: 1,
        flags: 0,
        version: 2,
        last_block_id: -1,
        block_offset: 4096,
        block_size: 100,
        node: "n1".to_owned(),
    };
    assert_golden(
        &state,
        "08 01 18 02 \
         20 ff ff ff ff ff ff ff ff ff 01 \
         28 80 20 30 64 3a 02 6e 31",
    );
}

#[test]
fn batch_read_result_encodes_entries_and_camel_case_last_read_state() {
    let result = BatchReadResult {
        entries: vec![entry()],
        last_read_state: Some(LastReadState { segment_id: 1, ..LastReadState::default() }),
    };
    assert_golden(&result, &format!("0a 09 {ENTRY_HEX} 12 02 08 01"));
}

#[test]
fn status_encodes_code_retriable_and_extra_info() {
    let status = Status {
        reason: "r".to_owned(),
        code: 8104,
        retriable: true,
        detail: "d".to_owned(),
        extra_info: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
    };
    assert_golden(&status, "0a 01 72 10 a8 3f 18 01 22 01 64 2a 06 0a 01 6b 12 01 76");
}

#[test]
fn add_entry_request_and_response() {
    let req =
        AddEntryRequest { bucket_name: "b".to_owned(), root_path: "r".to_owned(), log_id: 1, entry: Some(entry()) };
    assert_golden(&req, &format!("{SCOPE} 22 09 {ENTRY_HEX}"));
    let resp = AddEntryResponse { status: Some(Status::default()), entry_id: 5, state: AddEntryState::Synced as i32 };
    // A present-but-empty Status is still written, as a zero-length field.
    assert_golden(&resp, "0a 00 10 05 18 01");
}

#[test]
fn add_entries_request_and_packed_entry_ids_in_response() {
    let req = AddEntriesRequest {
        bucket_name: "b".to_owned(),
        root_path: "r".to_owned(),
        log_id: 1,
        entries: vec![entry(), entry()],
    };
    assert_golden(&req, &format!("{SCOPE} 22 09 {ENTRY_HEX} 22 09 {ENTRY_HEX}"));
    let resp = AddEntriesResponse { status: None, entry_id: vec![1, 2, 300], state: AddEntryState::Buffered as i32 };
    // proto3 packs repeated scalars: one length-delimited field 2.
    assert_golden(&resp, "12 04 01 02 ac 02");
    // Unpacked encoding (one tag per element) must decode too.
    assert_decodes_to("10 01 10 02 10 ac 02", &resp);
    let failed = AddEntriesResponse { status: None, entry_id: vec![7], state: AddEntryState::Failed as i32 };
    assert_golden(&failed, "12 01 07 18 02");
}

#[test]
fn get_batch_entries_adv_request_and_response() {
    let req = GetBatchEntriesAdvRequest {
        bucket_name: "b".to_owned(),
        root_path: "r".to_owned(),
        log_id: 1,
        segment_id: 2,
        from_entry_id: 3,
        max_entries: 200,
        last_read_state: Some(LastReadState { segment_id: 2, ..LastReadState::default() }),
    };
    assert_golden(&req, &format!("{SCOPE} 20 02 28 03 30 c8 01 3a 02 08 02"));
    let resp = GetBatchEntriesAdvResponse {
        status: Some(Status { code: 8102, retriable: true, ..Status::default() }),
        result: Some(BatchReadResult::default()),
    };
    assert_golden(&resp, "0a 05 10 a6 3f 18 01 12 00");
}

#[test]
fn fence_and_complete_segment() {
    let fence =
        FenceSegmentRequest { bucket_name: "b".to_owned(), root_path: "r".to_owned(), log_id: 1, segment_id: 2 };
    assert_golden(&fence, &format!("{SCOPE} 20 02"));
    let fenced = FenceSegmentResponse { status: None, last_entry_id: -1 };
    assert_golden(&fenced, "10 ff ff ff ff ff ff ff ff ff 01");
    let complete = CompleteSegmentRequest {
        bucket_name: "b".to_owned(),
        root_path: "r".to_owned(),
        log_id: 1,
        segment_id: 2,
        last_add_confirmed: 7,
    };
    assert_golden(&complete, &format!("{SCOPE} 20 02 28 07"));
    let completed = CompleteSegmentResponse { status: None, last_entry_id: 7 };
    assert_golden(&completed, "10 07");
}

#[test]
fn compact_and_notify_segment() {
    let compact =
        CompactSegmentRequest { bucket_name: "b".to_owned(), root_path: "r".to_owned(), log_id: 1, segment_id: 2 };
    assert_golden(&compact, &format!("{SCOPE} 20 02"));
    let compacted = CompactSegmentResponse {
        status: None,
        metadata: Some(SegmentMetadata { seg_no: 2, state: SegmentState::Sealed as i32, ..SegmentMetadata::default() }),
    };
    assert_golden(&compacted, "12 04 08 02 20 03");
    let notify = NotifySegmentCompactedRequest {
        bucket_name: "b".to_owned(),
        root_path: "r".to_owned(),
        log_id: 1,
        segment_id: 2,
    };
    assert_golden(&notify, &format!("{SCOPE} 20 02"));
    let notified =
        NotifySegmentCompactedResponse { status: Some(Status { reason: "ok".to_owned(), ..Status::default() }) };
    assert_golden(&notified, "0a 04 0a 02 6f 6b");
}

#[test]
fn last_add_confirmed_and_block_count() {
    let lac = GetSegmentLastAddConfirmedRequest {
        bucket_name: "b".to_owned(),
        root_path: "r".to_owned(),
        log_id: 1,
        segment_id: 2,
    };
    assert_golden(&lac, &format!("{SCOPE} 20 02"));
    let lac_resp = GetSegmentLastAddConfirmedResponse { status: None, last_entry_id: 9 };
    assert_golden(&lac_resp, "10 09");
    let blocks = GetSegmentBlockCountRequest {
        bucket_name: "b".to_owned(),
        root_path: "r".to_owned(),
        log_id: 1,
        segment_id: 2,
    };
    assert_golden(&blocks, &format!("{SCOPE} 20 02"));
    let blocks_resp = GetSegmentBlockCountResponse { status: None, block_count: 3 };
    assert_golden(&blocks_resp, "10 03");
    let update = UpdateLastAddConfirmedRequest {
        bucket_name: "b".to_owned(),
        root_path: "r".to_owned(),
        log_id: 1,
        segment_id: 2,
        last_add_confirmed: 9,
    };
    assert_golden(&update, &format!("{SCOPE} 20 02 28 09"));
    let updated = UpdateLastAddConfirmedResponse { status: Some(Status::default()) };
    assert_golden(&updated, "0a 00");
}

#[test]
fn clean_segment_and_deletion_marks() {
    let clean = CleanSegmentRequest {
        bucket_name: "b".to_owned(),
        root_path: "r".to_owned(),
        log_id: 1,
        segment_id: 2,
        flag: 1,
    };
    assert_golden(&clean, &format!("{SCOPE} 20 02 28 01"));
    assert_golden(&CleanSegmentResponse { status: Some(Status::default()) }, "0a 00");
    let mark_log = MarkLogDeletedRequest { bucket_name: "b".to_owned(), root_path: "r".to_owned(), log_id: 1 };
    assert_golden(&mark_log, SCOPE);
    assert_golden(
        &MarkLogDeletedResponse { status: Some(Status { code: 2006, ..Status::default() }) },
        // 2006 = 15 * 128 + 86 -> d6 0f
        "0a 03 10 d6 0f",
    );
    let mark_instance = MarkInstanceDeletedRequest { bucket_name: "b".to_owned(), root_path: "r".to_owned() };
    assert_golden(&mark_instance, "0a 01 62 12 01 72");
    assert_golden(&MarkInstanceDeletedResponse { status: None }, "");
}

#[test]
fn append_result_messages_without_rpc() {
    let subscribe = AppendResultsSubscribeRequest { bucket_name: "b".to_owned(), root_path: "r".to_owned(), log_id: 1 };
    assert_golden(&subscribe, SCOPE);
    let update = AppendResultUpdate {
        log_id: 1,
        segment_id: 2,
        entry_id: 3,
        status: Some(Status { code: 1, ..Status::default() }),
    };
    assert_golden(&update, "08 01 10 02 18 03 22 02 10 01");
}

#[test]
fn node_meta_encodes_load_factor_as_little_endian_double() {
    let node = NodeMeta {
        node_id: "n".to_owned(),
        resource_group: "g".to_owned(),
        az: "z".to_owned(),
        endpoint: "e:1".to_owned(),
        tags: BTreeMap::new(),
        version: 1,
        last_update: 2,
        cluster_name: "c".to_owned(),
        region: "r".to_owned(),
        load_factor: 0.5,
        load_updated_at: 3,
    };
    assert_golden(
        &node,
        "0a 01 6e 12 01 67 1a 01 7a 22 03 65 3a 31 30 01 38 02 42 01 63 4a 01 72 \
         51 00 00 00 00 00 00 e0 3f \
         58 03",
    );
}

#[test]
fn select_nodes_request_and_response() {
    let filter = NodeFilter {
        az: "z".to_owned(),
        resource_group: "g".to_owned(),
        tags: BTreeMap::from([("t".to_owned(), "1".to_owned())]),
        limit: 2,
    };
    assert_golden(&filter, "0a 01 7a 12 01 67 1a 06 0a 01 74 12 01 31 20 02");
    let req = SelectNodesRequest {
        strategy: StrategyType::CrossRegion as i32,
        affinity_mode: AffinityMode::Hard as i32,
        filters: vec![NodeFilter { limit: 1, ..NodeFilter::default() }],
    };
    assert_golden(&req, "08 05 10 01 1a 02 20 01");
    let resp = SelectNodesResponse {
        status: None,
        nodes: vec![NodeMeta { node_id: "n".to_owned(), ..NodeMeta::default() }],
        total_count: 4,
    };
    assert_golden(&resp, "12 03 0a 01 6e 18 04");
}

#[test]
fn enum_values_match_upstream() {
    assert_eq!(AddEntryState::Buffered as i32, 0);
    assert_eq!(AddEntryState::Synced as i32, 1);
    assert_eq!(AddEntryState::Failed as i32, 2);
    let strategies = [
        (StrategyType::Random, 0, "RANDOM"),
        (StrategyType::SingleAzSingleRg, 1, "SINGLE_AZ_SINGLE_RG"),
        (StrategyType::SingleAzMultiRg, 2, "SINGLE_AZ_MULTI_RG"),
        (StrategyType::MultiAzSingleRg, 3, "MULTI_AZ_SINGLE_RG"),
        (StrategyType::MultiAzMultiRg, 4, "MULTI_AZ_MULTI_RG"),
        (StrategyType::CrossRegion, 5, "CROSS_REGION"),
        (StrategyType::Custom, 6, "CUSTOM"),
        (StrategyType::RandomGroup, 7, "RANDOM_GROUP"),
    ];
    for (strategy, value, name) in strategies {
        assert_eq!(strategy as i32, value, "{name}");
        assert_eq!(strategy.as_str_name(), name);
    }
    assert_eq!(AffinityMode::Soft as i32, 0);
    assert_eq!(AffinityMode::Hard as i32, 1);
}
