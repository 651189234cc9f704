//! The Woodpecker write-ahead log client, embedded mode: the LogStore runs in-process and writes segments
//! straight to object storage or local files; metadata lives in etcd or an embedded store.
//!
//! ```no_run
//! # async fn demo() -> woodpecker_client::Result<()> {
//! use woodpecker_client::{Client, WriteMessage, LogMessageId};
//! let client = Client::open(woodpecker_core::config::Config::default()).await?;
//! client.create_log("orders").await?;
//! let log = client.open_log("orders").await?;
//! let writer = log.open_writer().await?;
//! let id = writer.write(WriteMessage::new("hello").with_property("k", "v")).await?;
//! let mut reader = log.open_reader(LogMessageId::EARLIEST, "demo").await?;
//! let msg = reader.read_next().await?;
//! assert_eq!(msg.id, id);
//! writer.close().await?;
//! client.close().await;
//! # Ok(()) }
//! ```

mod ack;
mod backend;
mod client;
mod error;
mod handle;
mod maintenance;
mod message;
mod reader;
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
