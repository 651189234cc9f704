//! The metadata layer's error type.

use std::path::PathBuf;

/// A boxed foreign error kept as the source of a [`MetaError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every failure of the metadata layer. Each variant names the log, segment, key or file involved.
///
/// [`MetaError::is_retryable`] says whether repeating the same call unchanged, after a backoff, may
/// succeed without anybody fixing anything first.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The log has no metadata key.
    #[error("log {name:?} not found")]
    LogNotFound {
        /// Log name.
        name: String,
    },
    /// A log with this name already exists.
    #[error("log {name:?} already exists")]
    LogAlreadyExists {
        /// Log name.
        name: String,
    },
    /// The segment has no metadata key.
    #[error("segment {segment} of log {log:?} not found")]
    SegmentNotFound {
        /// Log name.
        log: String,
        /// Segment id.
        segment: i64,
    },
    /// The segment metadata key already exists (another writer created it).
    #[error("segment {segment} of log {log:?} already exists")]
    SegmentAlreadyExists {
        /// Log name.
        log: String,
        /// Segment id.
        segment: i64,
    },
    /// A later writer opened the log: this writer's epoch no longer allows it to create segments.
    #[error("a later writer opened log {log:?} (epoch {current} after this writer's {mine})")]
    EpochSuperseded {
        /// Log name.
        log: String,
        /// This writer's epoch.
        mine: i64,
        /// The epoch in force (0 when the epoch key was removed with the log).
        current: i64,
    },
    /// A compare-and-swap found a different revision (or value) than the caller expected.
    #[error("revision conflict on key {key:?}: re-read it and try again")]
    RevisionConflict {
        /// Full key whose revision did not match.
        key: String,
    },
    /// A key that must not exist yet already exists.
    #[error("key {key:?} already exists")]
    KeyAlreadyExists {
        /// Full key.
        key: String,
    },
    /// A key that must exist does not.
    #[error("key {key:?} not found")]
    KeyNotFound {
        /// Full key.
        key: String,
    },
    /// Another holder owns the writer lock of the log.
    #[error("writer lock of log {log:?} is held by another writer")]
    LockHeld {
        /// Log name.
        log: String,
    },
    /// The writer lock was lost (lease expired, revoked or not refreshed in time).
    #[error("writer lock of log {log:?} was lost")]
    LockLost {
        /// Log name.
        log: String,
    },
    /// The etcd cluster could not be reached or did not answer in time. After a write this means
    /// the outcome is unknown (it may have been applied): re-read before retrying a conditional write.
    #[error("etcd at {endpoints:?} unreachable: {source}")]
    Unreachable {
        /// Endpoints that were tried.
        endpoints: Vec<String>,
        /// Last transport error or timeout.
        #[source]
        source: BoxError,
    },
    /// The TLS handshake with an etcd endpoint failed: a CA that did not sign the server's certificate,
    /// a name the certificate does not cover, or a client certificate the server refused.
    #[error(
        "TLS handshake with etcd endpoint {endpoint} failed: {reason} (check etcd.ssl.tlsCACert, tlsCert and tlsKey)"
    )]
    Tls {
        /// The endpoint whose handshake failed.
        endpoint: String,
        /// rustls' reason.
        reason: String,
    },
    /// etcd refused the configured user name and password.
    #[error(
        "etcd at {endpoints:?} refused to authenticate user {user:?}: {source} (check etcd.auth.userName and etcd.auth.password)"
    )]
    AuthFailed {
        /// Endpoints of the cluster.
        endpoints: Vec<String>,
        /// The user name that was refused.
        user: String,
        /// The server's answer.
        #[source]
        source: BoxError,
    },
    /// A TLS file named by the configuration cannot be used.
    #[error("{key} {path:?}: {reason}")]
    TlsFile {
        /// Config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// An etcd endpoint cannot be used with the connection settings.
    #[error("etcd endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The etcd cluster answered with an error that a retry will not fix.
    #[error("etcd at {endpoints:?} rejected {op}: {source}")]
    Rejected {
        /// Endpoints of the cluster.
        endpoints: Vec<String>,
        /// Operation that was rejected.
        op: &'static str,
        /// The server's answer.
        #[source]
        source: BoxError,
    },
    /// A stored value cannot be decoded or violates the key layout.
    #[error("corrupt metadata at key {key:?}: {reason}")]
    Corrupt {
        /// Full key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The embedded store's journal or snapshot is damaged before its tail.
    #[error("corrupt embedded metadata file {path:?} at offset {offset}: {reason}")]
    CorruptFile {
        /// File that is damaged.
        path: PathBuf,
        /// Byte offset of the first bad record.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The bootstrap keys are missing: `init_if_necessary` was never run on this prefix.
    #[error("metadata under prefix {prefix:?} is not initialised (missing {key:?})")]
    NotInitialised {
        /// Effective key prefix.
        prefix: String,
        /// The missing bootstrap key.
        key: String,
    },
    /// Only some of the bootstrap keys exist; no automatic repair is attempted.
    #[error("metadata under prefix {prefix:?} is partially initialised: present {present:?}, missing {missing:?}")]
    PartiallyInitialised {
        /// Effective key prefix.
        prefix: String,
        /// Bootstrap keys that exist.
        present: Vec<String>,
        /// Bootstrap keys that do not.
        missing: Vec<String>,
    },
    /// Another process (or another open in this process) holds the embedded store directory.
    #[error("embedded metadata store {path:?} is in use by another process or handle")]
    StoreInUse {
        /// Lock file of the store.
        path: PathBuf,
    },
    /// A name cannot be used as a path component of a key.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// What kind of name (log, reader).
        what: &'static str,
        /// The offending name.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// The embedded store could not read or write a file.
    #[error("embedded metadata store I/O error on {path:?}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The embedded store refused work after an earlier failed write left it in an unknown state.
    #[error("embedded metadata store {path:?} is poisoned by an earlier write failure; reopen it")]
    Poisoned {
        /// Directory of the store.
        path: PathBuf,
    },
    /// A lease does not exist (expired or revoked).
    #[error("lease {lease:x} not found")]
    LeaseNotFound {
        /// Lease id.
        lease: i64,
    },
}

impl MetaError {
    /// Whether repeating the same call unchanged, after a backoff, may succeed.
    ///
    /// Only transient infrastructure failures are retryable. Conflicts, missing or existing
    /// keys, held or lost locks and corruption need the caller to re-read or decide first.
    pub fn is_retryable(&self) -> bool {
        matches!(self, MetaError::Unreachable { .. })
    }
}

/// Result alias of the metadata layer.
pub type MetaResult<T> = Result<T, MetaError>;
