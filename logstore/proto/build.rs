//! Generates the prost messages and the tonic LogStore client and server from `proto/`.

use std::io;

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed=proto/meta.proto");
    println!("cargo:rerun-if-changed=proto/logstore.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Ordered maps give deterministic encodings: byte-equal values for etcd compares
        // and golden tests.
        .btree_map(".")
        // Payloads decode as `bytes::Bytes`, sharing the receive buffer instead of copying.
        .bytes(".")
        .compile_protos(&["proto/meta.proto", "proto/logstore.proto"], &["proto"])
}
