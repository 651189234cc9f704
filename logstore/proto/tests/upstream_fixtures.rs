//! Decodes metadata values written by upstream Woodpecker (Go) into etcd, captured under
//! `e2e/interop/golden/` by the interop program: every value must decode, re-encode to the same
//! bytes, and agree field by field with the protojson dump (proto field names, 64-bit integers as
//! strings, enums by name) captured next to it.

use std::path::{Path, PathBuf};

use prost::Message;
use serde_json::{Value, json};
use woodpecker_proto::meta::{LogMeta, QuorumInfo, QuorumNode, ReaderTempInfo, SegmentMetadata, SegmentState, Version};

fn golden_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../e2e/interop/golden")
}

/// Every `etcd-keys.txt` under the golden tree (one per captured etcd dump).
fn key_listings(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            key_listings(&path, out);
        } else if path.file_name().is_some_and(|n| n == "etcd-keys.txt") {
            out.push(path);
        }
    }
}

fn s(v: impl ToString) -> Value {
    Value::String(v.to_string())
}

fn log_meta_json(m: &LogMeta) -> Value {
    json!({
        "logId": s(m.log_id),
        "max_segment_roll_time_seconds": s(m.max_segment_roll_time_seconds),
        "max_segment_roll_size_bytes": s(m.max_segment_roll_size_bytes),
        "compaction_buffer_size_bytes": s(m.compaction_buffer_size_bytes),
        "max_compaction_file_count": s(m.max_compaction_file_count),
        "creation_timestamp": s(m.creation_timestamp),
        "modification_timestamp": s(m.modification_timestamp),
        "truncated_segment_id": s(m.truncated_segment_id),
        "truncated_entry_id": s(m.truncated_entry_id),
    })
}

fn quorum_node_json(n: &QuorumNode) -> Value {
    json!({
        "endpoint": n.endpoint,
        "node_id": n.node_id,
        "cluster_name": n.cluster_name,
        "region": n.region,
        "az": n.az,
        "resource_group": n.resource_group,
        "tags": n.tags,
    })
}

fn quorum_json(q: &QuorumInfo) -> Value {
    json!({
        "id": s(q.id),
        "es": q.es,
        "wq": q.wq,
        "aq": q.aq,
        "nodes": q.nodes,
        "replicas": q.replicas.iter().map(quorum_node_json).collect::<Vec<_>>(),
    })
}

fn segment_json(m: &SegmentMetadata) -> Value {
    let state = SegmentState::try_from(m.state).map(|st| s(st.as_str_name())).unwrap_or(json!(m.state));
    let mut value = json!({
        "segNo": s(m.seg_no),
        "createTime": s(m.create_time),
        "quorumId": s(m.quorum_id),
        "state": state,
        "completionTime": s(m.completion_time),
        "lastEntryId": s(m.last_entry_id),
        "size": s(m.size),
        "sealedTime": s(m.sealed_time),
    });
    if let (Some(q), Some(obj)) = (&m.quorum, value.as_object_mut()) {
        obj.insert("quorum".to_owned(), quorum_json(q));
    }
    value
}

fn version_json(v: &Version) -> Value {
    json!({"major": v.major, "minor": v.minor, "patch": v.patch})
}

fn reader_json(r: &ReaderTempInfo) -> Value {
    json!({
        "reader_name": r.reader_name,
        "open_timestamp": s(r.open_timestamp),
        "log_id": s(r.log_id),
        "open_segment_id": s(r.open_segment_id),
        "open_entry_id": s(r.open_entry_id),
        "recent_read_segment_id": s(r.recent_read_segment_id),
        "recent_read_entry_id": s(r.recent_read_entry_id),
        "recent_read_timestamp": s(r.recent_read_timestamp),
    })
}

fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(t) => t.is_empty() || t == "0" || t == "Active",
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_default),
    }
}

/// Every key of the dump must match ours; keys the dump leaves out must be defaults on our side.
fn assert_matches_dump(ours: &Value, dump: &Value, what: &str) {
    let (Some(ours), Some(dump)) = (ours.as_object(), dump.as_object()) else {
        panic!("{what}: not an object");
    };
    for (key, value) in dump {
        let mine = ours.get(key).unwrap_or_else(|| panic!("{what}: upstream field `{key}` unknown to us"));
        if value.is_object() {
            assert_matches_dump(mine, value, &format!("{what}.{key}"));
        } else {
            assert_eq!(mine, value, "{what}.{key}");
        }
    }
    for (key, value) in ours {
        if !dump.contains_key(key) {
            assert!(is_default(value), "{what}.{key} = {value} but upstream's dump omits it");
        }
    }
}

fn check<M: Message + Default>(bytes: &[u8], dump: Option<&Value>, to_json: fn(&M) -> Value, what: &str) {
    let decoded = M::decode(bytes).unwrap_or_else(|e| panic!("{what}: decode failed: {e}"));
    assert_eq!(decoded.encode_to_vec(), bytes, "{what}: re-encoding differs from upstream's bytes");
    if let Some(dump) = dump {
        assert_matches_dump(&to_json(&decoded), dump, what);
    }
}

#[test]
fn upstream_etcd_values_decode_and_match_their_json_dumps() {
    let mut listings = Vec::new();
    key_listings(&golden_root(), &mut listings);
    if listings.is_empty() {
        eprintln!("no upstream fixtures under {}; nothing to check", golden_root().display());
        return;
    }
    let mut checked = 0;
    for listing in &listings {
        let dir = listing.parent().map(|d| d.join("etcd")).expect("listing has a parent");
        let text = std::fs::read_to_string(listing).expect("read etcd-keys.txt");
        for line in text.lines() {
            let mut fields = line.split('\t');
            let (Some(key), Some(kind)) = (fields.next(), fields.next()) else { continue };
            let stem = key.replace('/', "__");
            let bin = dir.join(format!("{stem}.bin"));
            let bytes = std::fs::read(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
            let dump: Option<Value> = std::fs::read_to_string(dir.join(format!("{stem}.json")))
                .ok()
                .map(|t| serde_json::from_str(&t).expect("dump is JSON"));
            let what = format!("{} ({kind})", bin.display());
            match kind {
                "LogMeta" => check::<LogMeta>(&bytes, dump.as_ref(), log_meta_json, &what),
                "SegmentMetadata" => check::<SegmentMetadata>(&bytes, dump.as_ref(), segment_json, &what),
                "Version" => check::<Version>(&bytes, dump.as_ref(), version_json, &what),
                "ReaderTempInfo" => check::<ReaderTempInfo>(&bytes, dump.as_ref(), reader_json, &what),
                // Text values and lock keys are not protobuf.
                _ => continue,
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "fixtures present but no protobuf value checked");
}

#[test]
fn upstream_top_level_dumps_decode() {
    let Ok(dirs) = std::fs::read_dir(golden_root()) else { return };
    for dir in dirs.flatten().map(|d| d.path()) {
        let read_json =
            |name: &str| std::fs::read_to_string(dir.join(name)).ok().map(|t| serde_json::from_str::<Value>(&t));
        if let Ok(bytes) = std::fs::read(dir.join("LogMeta.pb")) {
            let dump = read_json("LogMeta.json").transpose().expect("LogMeta.json");
            check::<LogMeta>(&bytes, dump.as_ref(), log_meta_json, &format!("{}/LogMeta.pb", dir.display()));
        }
        if let Ok(bytes) = std::fs::read(dir.join("SegmentMetadata.pb")) {
            let dump = read_json("SegmentMetadata.json").transpose().expect("SegmentMetadata.json");
            let what = format!("{}/SegmentMetadata.pb", dir.display());
            check::<SegmentMetadata>(&bytes, dump.as_ref(), segment_json, &what);
        }
        if let Ok(bytes) = std::fs::read(dir.join("Version.pb")) {
            let version = Version::decode(bytes.as_slice()).expect("Version.pb decodes");
            assert_eq!((version.major, version.minor, version.patch), (1, 0, 0));
        }
    }
}
