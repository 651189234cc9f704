//! The one error type of the object layer; every backend maps its foreign errors into it once.

use std::path::PathBuf;

/// Boxed cause kept for logs (`{:#}` / `source()` chains).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an object operation failed. Every variant names the key, bucket, path or endpoint involved.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The object does not exist.
    #[error("object `{key}` not found")]
    NotFound {
        /// Key that was looked up.
        key: String,
    },

    /// A create-if-absent hit an existing normal (non-fence) object.
    #[error("object `{key}` already exists")]
    AlreadyExists {
        /// Key that already exists.
        key: String,
    },

    /// A create-if-absent hit a fence object: the writer has been fenced off.
    #[error("object `{key}` is a fence object: the segment has been fenced")]
    Fenced {
        /// Key of the fence object.
        key: String,
    },

    /// Transient failures (network, timeouts, 5xx, throttling) persisted through every attempt.
    #[error("object storage {endpoint} unreachable after {attempts} attempt(s): {source}")]
    Unreachable {
        /// Endpoint (and bucket) that could not be reached.
        endpoint: String,
        /// Attempts made, first one included.
        attempts: u32,
        /// Last transport error, with its full context.
        source: BoxError,
    },

    /// The server rejected the credentials or the request's authorization.
    #[error("access denied by {endpoint} for {op}{}: {message}", quoted(key))]
    Denied {
        /// Endpoint (and bucket) that refused.
        endpoint: String,
        /// Operation that was refused (`put`, `get`, `head_bucket`, …).
        op: &'static str,
        /// Key involved, empty for bucket operations.
        key: String,
        /// Server's error code and message.
        message: String,
    },

    /// The configured bucket does not exist (and was not to be created).
    #[error("bucket `{bucket}` does not exist at {endpoint}")]
    BucketMissing {
        /// Missing bucket.
        bucket: String,
        /// Endpoint asked.
        endpoint: String,
    },

    /// A ranged read started at or past the end of the object, or the range was reversed.
    #[error("invalid range {start}..{end} for object `{key}`{}", size.map(|s| format!(" of {s} bytes")).unwrap_or_default())]
    InvalidRange {
        /// Key read.
        key: String,
        /// Requested start (inclusive).
        start: u64,
        /// Requested end (exclusive).
        end: u64,
        /// Object size, when the backend knows it.
        size: Option<u64>,
    },

    /// The key cannot be stored by this backend (empty, `..`, absolute path, reserved name).
    #[error("invalid object key `{key}`: {reason}")]
    InvalidKey {
        /// Offending key.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The TLS handshake with the endpoint failed: a CA that did not sign its certificate, or a
    /// certificate that does not name the host.
    #[error(
        "TLS handshake with object storage {endpoint} failed: {reason} (check minio.ssl.tlsCACert and that the certificate names this host)"
    )]
    Tls {
        /// Endpoint (and bucket) whose handshake failed.
        endpoint: String,
        /// The TLS library's reason.
        reason: String,
    },

    /// The backend options are unusable (unsupported provider, unreadable CA file, …).
    #[error("invalid object storage option `{field}`: {message}")]
    InvalidConfig {
        /// Option at fault, named as in `woodpecker.yaml` where there is one.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },

    /// A local file-system operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },

    /// Any other permanent failure, with the server's or the system's message.
    #[error("{op}{} failed: {message}", quoted(key))]
    Other {
        /// Operation that failed.
        op: &'static str,
        /// Key involved, empty for bucket-level operations.
        key: String,
        /// What went wrong.
        message: String,
    },
}

/// ` `key`` for messages, nothing for bucket-level operations that have no key.
fn quoted(key: &str) -> String {
    if key.is_empty() { String::new() } else { format!(" `{key}`") }
}

impl ObjectError {
    /// True when repeating the same call later may succeed without anything else changing.
    ///
    /// `Unreachable` (the backend was down or throttling) and transient local I/O errors are
    /// retryable; `AlreadyExists`, `Fenced`, `Denied`, `NotFound` and configuration errors are
    /// answers, not accidents, and repeating the call gives the same answer.
    pub fn is_retryable(&self) -> bool {
        match self {
            ObjectError::Unreachable { .. } => true,
            ObjectError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::ResourceBusy
            ),
            ObjectError::NotFound { .. }
            | ObjectError::AlreadyExists { .. }
            | ObjectError::Fenced { .. }
            | ObjectError::Denied { .. }
            | ObjectError::BucketMissing { .. }
            | ObjectError::InvalidRange { .. }
            | ObjectError::InvalidKey { .. }
            | ObjectError::InvalidConfig { .. }
            | ObjectError::Tls { .. }
            | ObjectError::Other { .. } => false,
        }
    }

    /// Builds an [`ObjectError::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ObjectError::Io { path: path.into(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retryable() {
        let unreachable = ObjectError::Unreachable {
            endpoint: "s3://b@http://127.0.0.1:1".into(),
            attempts: 3,
            source: "connection refused".into(),
        };
        assert!(unreachable.is_retryable());
        assert!(unreachable.to_string().contains("127.0.0.1:1"));
        assert!(unreachable.to_string().contains("3 attempt"));
        assert!(!ObjectError::Fenced { key: "k".into() }.is_retryable());
        assert!(!ObjectError::AlreadyExists { key: "k".into() }.is_retryable());
        assert!(!ObjectError::io("/x", std::io::Error::from(std::io::ErrorKind::NotFound)).is_retryable());
        assert!(ObjectError::io("/x", std::io::Error::from(std::io::ErrorKind::Interrupted)).is_retryable());
    }

    #[test]
    fn messages_name_the_object() {
        let e = ObjectError::InvalidRange { key: "a/0.blk".into(), start: 10, end: 20, size: Some(5) };
        assert_eq!(e.to_string(), "invalid range 10..20 for object `a/0.blk` of 5 bytes");
    }
}
