//! Shared building blocks of Woodpecker: positions, the on-storage record codec, storage key layout and
//! log-name rules and configuration. Nothing here does I/O except loading a config file.

pub mod codec;
pub mod config;
pub mod crc_shift;
pub mod entry;
pub mod ids;
pub mod keys;
pub mod names;
pub mod retry;
pub mod tls_failure;
