//! Generates the prost messages and the tonic LogStore client and server from `proto/`.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so the build needs nothing installed beyond Rust;
//! `PROTOC` overrides it, and a platform without a bundled binary falls back to `protoc` on `PATH`.

use std::io;
use std::path::PathBuf;

fn protoc() -> PathBuf {
    if let Some(path) = std::env::var_os("PROTOC") {
        return path.into();
    }
    protoc_bin_vendored::protoc_bin_path().unwrap_or_else(|_| PathBuf::from("protoc"))
}

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed=proto/meta.proto");
    println!("cargo:rerun-if-changed=proto/logstore.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut prost = tonic_prost_build::Config::new();
    prost.protoc_executable(protoc());
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Ordered maps give deterministic encodings: byte-equal values for etcd compares
        // and golden tests.
        .btree_map(".")
        // Payloads decode as `bytes::Bytes`, sharing the receive buffer instead of copying.
        .bytes(".")
        .compile_with_config(prost, &["proto/meta.proto", "proto/logstore.proto"], &["proto"])
}
