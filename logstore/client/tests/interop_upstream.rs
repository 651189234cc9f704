//! Byte compatibility with upstream Woodpecker (Go, v0.1.35), both ways, through real etcd + MinIO.
//!
//! `wp-interop` (e2e/interop) drives the upstream embedded client; it is built by `scripts/testbed.sh
//! install` and named by `WP_INTEROP_BIN`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::{bed_config, read_n, unique};
use woodpecker_client::{Client, LogMessageId, WriteMessage};

#[derive(serde::Deserialize, Debug, PartialEq)]
struct GoEntry {
    segment: i64,
    entry: i64,
    payload_b64: String,
    properties: BTreeMap<String, String>,
}

fn interop_bin() -> String {
    std::env::var("WP_INTEROP_BIN").unwrap_or_else(|_| {
        panic!("WP_INTEROP_BIN is not set: run `scripts/testbed.sh install` and `eval \"$(scripts/testbed.sh env)\"`")
    })
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The upstream-format woodpecker.yaml for the same etcd root and object prefix as `bed_config(root)`.
fn go_config(root: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{root}.yaml"));
    let status = Command::new(repo_root().join("scripts/testbed.sh"))
        .args(["render-config", path.to_str().expect("utf-8 temp path"), root, root])
        .status()
        .expect("run scripts/testbed.sh render-config");
    assert!(status.success(), "render-config failed");
    path
}

fn go(args: &[&str]) -> Vec<GoEntry> {
    let out = Command::new(interop_bin()).args(args).output().expect("run wp-interop");
    assert!(out.status.success(), "wp-interop {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("wp-interop JSON line"))
        .collect()
}

#[tokio::test]
async fn log_written_by_upstream_reads_back_identically() {
    let root = unique("go2rs");
    let cfg_path = go_config(&root);
    let written = go(&[
        "write",
        "--config",
        cfg_path.to_str().unwrap(),
        "--log",
        "interop",
        "--count",
        "1500",
        "--payload-size",
        "300",
    ]);
    assert_eq!(written.len(), 1500);
    // Recover the segment upstream left (it may be active or completed) and read with our client.
    let client = Client::open(bed_config(&root, "")).await.unwrap();
    let log = client.open_log("interop").await.unwrap();
    let mut reader = log.open_reader(LogMessageId::EARLIEST, "rs").await.unwrap();
    let got = read_n(&mut reader, written.len(), Duration::from_secs(60)).await;
    for (w, m) in written.iter().zip(&got) {
        assert_eq!((m.id.segment_id, m.id.entry_id), (w.segment, w.entry));
        let payload = base64::engine::general_purpose::STANDARD.decode(&w.payload_b64).unwrap();
        assert_eq!(m.payload, payload, "payload at {}", m.id);
        assert_eq!(m.properties, w.properties, "properties at {}", m.id);
    }
    reader.close().await.unwrap();
    // And our writer can continue the upstream log.
    let writer = log.open_writer().await.unwrap();
    let next = writer.write(WriteMessage::new("rust-after-go")).await.unwrap();
    assert!(next.segment_id > written.last().unwrap().segment);
    writer.close().await.unwrap();
}

#[tokio::test]
async fn log_written_by_us_reads_back_identically_in_upstream() {
    let root = unique("rs2go");
    let client = Client::open(bed_config(&root, "")).await.unwrap();
    client.create_log("interop").await.unwrap();
    let log = client.open_log("interop").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    let mut ids = Vec::new();
    let mut futs = Vec::new();
    for i in 0..1500 {
        let msg = WriteMessage::new(format!("rs-{i:06}-{}", "z".repeat(i % 500)))
            .with_property("idx", i.to_string())
            .with_property("src", "rust");
        futs.push(writer.write_async(msg).await.unwrap());
    }
    for f in futs {
        ids.push(f.await.unwrap());
    }
    writer.close().await.unwrap();
    let cfg_path = go_config(&root);
    let read = go(&["read", "--config", cfg_path.to_str().unwrap(), "--log", "interop", "--count", "1500"]);
    assert_eq!(read.len(), 1500, "upstream read a different number of entries");
    for (i, e) in read.iter().enumerate() {
        assert_eq!((e.segment, e.entry), (ids[i].segment_id, ids[i].entry_id), "position of entry {i}");
        let payload = base64::engine::general_purpose::STANDARD.decode(&e.payload_b64).unwrap();
        assert_eq!(payload, format!("rs-{i:06}-{}", "z".repeat(i % 500)).into_bytes(), "payload {i}");
        assert_eq!(e.properties.get("idx"), Some(&i.to_string()));
        assert_eq!(e.properties.get("src").map(String::as_str), Some("rust"));
    }
}
