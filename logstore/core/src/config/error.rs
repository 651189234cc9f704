//! Errors of loading and validating the configuration.

use std::path::PathBuf;

/// Why a configuration could not be loaded or is not valid. Every variant except `Read` and
/// `Syntax` names the offending key as a dotted path (`woodpecker.logstore.grpc.serverMaxRecvSize`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// File that failed.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The text is not valid YAML, or its top level is not a mapping.
    #[error("{origin}: invalid YAML: {message}")]
    Syntax {
        /// File (or `<yaml>`) that failed.
        origin: String,
        /// Parser message, with the location.
        message: String,
    },
    /// A key that the schema does not know.
    #[error("unknown config key `{key}` (known keys here: {known})")]
    UnknownKey {
        /// Dotted path of the unknown key.
        key: String,
        /// Keys accepted at that level.
        known: String,
    },
    /// A value of the wrong type or format (`maxFlushSize: big`).
    #[error("invalid value for `{key}`: {message}")]
    InvalidValue {
        /// Dotted path of the key.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// A well-formed value outside its allowed range, or inconsistent with another key.
    #[error("invalid value for `{key}`: {value} is not allowed; expected {allowed}")]
    OutOfRange {
        /// Dotted path of the key.
        key: String,
        /// The configured value.
        value: String,
        /// The allowed range or values.
        allowed: String,
    },
    /// The YAML rendering of a configuration failed (a schema bug, not a user error).
    #[error("cannot render config as YAML: {message}")]
    Render {
        /// What failed.
        message: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about, if it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::InvalidValue { key, .. }
            | ConfigError::OutOfRange { key, .. } => Some(key),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } | ConfigError::Render { .. } => None,
        }
    }
}
