//! The Woodpecker write-ahead log client, embedded mode: the LogStore runs in-process and writes segments
//! straight to object storage (`woodpecker.storage.type: minio`) or local files (`local`); metadata lives
//! in etcd or in an embedded single-process store. `storage.type: service` (writing through a cluster of
//! `woodpecker server` nodes) is not implemented in this client yet: [`Client::open`] refuses it with
//! [`WoodpeckerError::Unsupported`].
//!
//! A [`Client`] opens logs ([`LogHandle`]); a log has at most one [`LogWriter`] at a time (opening one
//! fences the previous writer) and any number of named [`LogReader`]s. Positions are [`LogMessageId`]s
//! (segment id, entry id).
//!
//! Guarantees: a write is acknowledged only once its entry is durable; acknowledgements arrive in entry
//! order; a reader never returns an entry beyond the durable, contiguous prefix of a segment and never
//! skips one. Every failure is a [`WoodpeckerError`] that names what failed; see
//! [`WoodpeckerError::is_retryable`] and [`WoodpeckerError::is_writer_lost`].
//!
//! This example runs as a doctest on the zero-setup configuration (local files and the embedded
//! metadata store) in a temporary directory:
//!
//! ```
//! use woodpecker_client::{Client, Config, LogMessageId, WriteMessage};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let mut config = Config::default(); // storage.type local, meta.type embedded
//! config.woodpecker.storage.root_path = dir.path().display().to_string();
//!
//! let client = Client::open(config).await?;
//! client.create_log_if_absent("orders").await?;
//! let log = client.open_log("orders").await?;
//!
//! let writer = log.open_writer().await?; // fences any previous writer of the log
//! let first = writer.write(WriteMessage::new("hello").with_property("k", "v")).await?;
//! let ack = writer.write_async(WriteMessage::new("world")).await?; // queued; resolves once durable
//! writer.flush().await?; // cut the block now instead of after maxInterval
//! let second = ack.await?;
//! assert!(second > first);
//!
//! let mut reader = log.open_reader(LogMessageId::EARLIEST, "audit").await?;
//! let msg = reader.read_next().await?; // waits at the tail for new entries
//! assert_eq!((msg.id, &msg.payload[..]), (first, &b"hello"[..]));
//! assert_eq!(msg.properties.get("k").map(String::as_str), Some("v"));
//! assert_eq!(reader.read_next().await?.id, second);
//!
//! log.truncate(first).await?; // entries up to `first` may be cleaned up after the retention TTL
//! reader.close().await?;
//! writer.close().await?; // completes the segment
//! client.close().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

#![deny(missing_docs)]

mod ack;
mod backend;
mod client;
mod error;
mod handle;
mod maintenance;
mod message;
mod reader;
mod service;
mod writer;

pub use backend::s3_options;
pub use client::Client;
pub use error::{Result, WoodpeckerError};
pub use handle::{LogHandle, SegmentInfo};
pub use maintenance::MaintenanceReport;
pub use message::{LogMessage, WriteMessage};
pub use reader::LogReader;
pub use woodpecker_core::config::Config;
pub use woodpecker_core::ids::LogMessageId;
pub use writer::{AppendFuture, LogWriter};
