//! The errors a client user sees. Each says what failed and whether retrying the same call may help.

use thiserror::Error;
use woodpecker_core::config::ConfigError;
use woodpecker_core::names::InvalidLogName;
use woodpecker_meta::MetaError;
use woodpecker_storage::object::ObjectError;
use woodpecker_storage::segment::SegmentError;

/// Result alias of the client.
pub type Result<T, E = WoodpeckerError> = std::result::Result<T, E>;

/// Everything that can go wrong in the client.
#[derive(Debug, Error)]
pub enum WoodpeckerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration combines options this client does not support.
    #[error("unsupported configuration: {0}")]
    Unsupported(String),
    /// The log name is not acceptable.
    #[error(transparent)]
    InvalidLogName(#[from] InvalidLogName),
    /// A message with neither payload nor properties.
    #[error("invalid message: payload and properties are both empty")]
    EmptyMessage,
    /// A message over `woodpecker.client.maxEntrySize`.
    #[error("entry of {size} bytes exceeds woodpecker.client.maxEntrySize ({max} bytes)")]
    EntryTooLarge {
        /// Encoded size of the entry.
        size: u64,
        /// The configured limit.
        max: u64,
    },
    /// Another writer took over the log; this writer can no longer write.
    #[error("writer of log {log:?} was fenced: {reason}")]
    WriterFenced {
        /// The log.
        log: String,
        /// How it was detected.
        reason: String,
    },
    /// The writer's etcd lock was lost (session expired or revoked).
    #[error("writer of log {log:?} lost its lock")]
    LockLost {
        /// The log.
        log: String,
    },
    /// Another process holds the log's writer lock.
    #[error("log {log:?} already has a writer holding its lock")]
    LockHeld {
        /// The log.
        log: String,
    },
    /// The writer was closed, or failed earlier and must be reopened.
    #[error("writer of log {log:?} is closed: {reason}")]
    WriterClosed {
        /// The log.
        log: String,
        /// Why.
        reason: String,
    },
    /// The reader was closed.
    #[error("reader {reader:?} is closed")]
    ReaderClosed {
        /// The reader's name.
        reader: String,
    },
    /// The client was closed.
    #[error("the Woodpecker client is closed")]
    ClientClosed,
    /// A position that does not exist or is not allowed.
    #[error("invalid position {position} for log {log:?}: {reason}")]
    InvalidPosition {
        /// The log.
        log: String,
        /// The position.
        position: woodpecker_core::ids::LogMessageId,
        /// Why.
        reason: String,
    },
    /// A stored entry could not be decoded as a `LogMessageLayout`.
    #[error("entry {position} of log {log:?} is not a valid message: {reason}")]
    BadEntry {
        /// The log.
        log: String,
        /// The entry.
        position: woodpecker_core::ids::LogMessageId,
        /// Decoder message.
        reason: String,
    },
    /// Metadata store failure.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Segment storage failure.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// Object storage failure (setup, probes).
    #[error(transparent)]
    Object(#[from] ObjectError),
}

impl WoodpeckerError {
    /// Whether repeating the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Meta(e) => e.is_retryable(),
            Self::Segment(e) => e.is_retryable(),
            Self::Object(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// Whether this writer can never write again (fenced, lock lost, closed).
    pub fn is_writer_lost(&self) -> bool {
        matches!(self, Self::WriterFenced { .. } | Self::LockLost { .. } | Self::WriterClosed { .. })
    }
}
