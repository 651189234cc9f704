//! Shared set-up for the client's integration tests.
#![allow(dead_code)]

pub mod fault_proxy;
pub mod pki;
pub mod server_process;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use woodpecker_client::{Config, LogMessage, LogReader};

/// A name unique to this test run, usable as a log name and a storage prefix.
pub fn unique(tag: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("{tag}-{}-{nanos}", std::process::id())
}

/// Zero-setup config (local files + embedded metadata) in `dir`, with `extra` YAML merged over it.
pub fn local_config(dir: &std::path::Path, extra: &str) -> Config {
    let main = format!(
        "woodpecker:\n  storage:\n    type: local\n    rootPath: {}\n  meta:\n    type: embedded\n",
        dir.display()
    );
    Config::from_yaml_with_overlay(&main, extra).expect("local test config")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the real etcd + MinIO test bed. Run \
             `scripts/testbed.sh install && scripts/testbed.sh start && eval \"$(scripts/testbed.sh env)\"` \
             (scripts/test-all.sh does this)"
        )
    })
}

/// Local segment files under `dir` with metadata in the test bed's etcd under `root`: several clients
/// (processes) can share the log, which the embedded store does not allow.
pub fn local_files_etcd_config(dir: &std::path::Path, root: &str, extra: &str) -> Config {
    let etcd = env("WP_ETCD_ENDPOINTS");
    let main = format!(
        "woodpecker:\n  meta:\n    type: etcd\n    prefix: woodpecker\n  storage:\n    type: local\n    rootPath: {}\n\
         etcd:\n  endpoints: [{etcd}]\n  rootPath: {root}\n",
        dir.display()
    );
    Config::from_yaml_with_overlay(&main, extra).expect("local files + etcd config")
}

/// The test bed's MinIO as `host:port`.
pub fn bed_minio_hostport() -> String {
    let endpoint = env("WP_MINIO_ENDPOINT");
    endpoint.trim_start_matches("http://").trim_start_matches("https://").to_owned()
}

/// Config for the real etcd + MinIO test bed, isolated under a fresh etcd root and object prefix.
pub fn bed_config(root: &str, extra: &str) -> Config {
    bed_config_via(root, extra, &bed_minio_hostport())
}

/// Like [`bed_config`], with object storage reached at `hostport` (a proxy in front of the bed's MinIO).
pub fn bed_config_via(root: &str, extra: &str, hostport: &str) -> Config {
    let etcd = env("WP_ETCD_ENDPOINTS");
    let (host, port) = hostport.rsplit_once(':').expect("host:port");
    let main = format!(
        "woodpecker:\n  meta:\n    type: etcd\n    prefix: woodpecker\n  storage:\n    type: minio\n    rootPath: /tmp/wp-test\n\
         etcd:\n  endpoints: [{etcd}]\n  rootPath: {root}\n\
         minio:\n  address: {host}\n  port: {port}\n  accessKeyID: {ak}\n  secretAccessKey: {sk}\n  bucketName: {bucket}\n  rootPath: {root}\n  createBucket: true\n",
        ak = env("WP_MINIO_ACCESS_KEY"),
        sk = env("WP_MINIO_SECRET_KEY"),
        bucket = env("WP_MINIO_BUCKET"),
    );
    Config::from_yaml_with_overlay(&main, extra).expect("test bed config")
}

/// Reads exactly `n` messages, failing the test if they do not arrive within `limit`.
pub async fn read_n(reader: &mut LogReader, n: usize, limit: Duration) -> Vec<LogMessage> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + limit;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, reader.read_next()).await {
            Ok(Ok(m)) => out.push(m),
            Ok(Err(e)) => panic!("read {} of {n}, then error: {e}", out.len()),
            Err(_) => panic!("read only {} of {n} messages within {limit:?}", out.len()),
        }
    }
    out
}

/// Payload of entry `i` in tests: recognisable and checkable.
pub fn payload(i: usize) -> String {
    format!("entry-{i:08}")
}
