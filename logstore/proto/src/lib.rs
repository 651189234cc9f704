//! Protobuf messages and the `LogStore` gRPC service, wire-compatible with upstream Woodpecker.
//!
//! The `.proto` sources live in `logstore/proto/proto/`; field numbers and types follow
//! `spec/wire.md`. Nothing else in the workspace declares protobuf messages.

/// Metadata messages stored in etcd (package `woodpecker.proto.meta`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod meta {
    include!(concat!(env!("OUT_DIR"), "/woodpecker.proto.meta.rs"));
}

/// The `LogStore` service, its messages and the client-side entry layouts
/// (package `woodpecker.proto.logstore`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod logstore {
    include!(concat!(env!("OUT_DIR"), "/woodpecker.proto.logstore.rs"));
}

pub mod status;
