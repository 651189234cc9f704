//! Rules for log names.
//!
//! Names become etcd keys (`<prefix>/logs/<name>`) and CLI arguments, so a name that contains `/` would
//! alias another log's segment keys (upstream accepts it and breaks listing). We refuse such names up front.

use thiserror::Error;

/// Longest accepted log name, in bytes.
pub const MAX_LOG_NAME_BYTES: usize = 255;

/// Why a log name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidLogName {
    /// The name is empty.
    #[error("invalid log name: the name is empty")]
    Empty,
    /// The name is longer than [`MAX_LOG_NAME_BYTES`].
    #[error("invalid log name {name:?}: {len} bytes, the limit is {max}")]
    TooLong {
        /// The refused name (shortened for display).
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name contains a character that is not allowed.
    #[error("invalid log name {name:?}: {what} at byte {at} is not allowed")]
    BadCharacter {
        /// The refused name.
        name: String,
        /// What the character is.
        what: &'static str,
        /// Byte offset of the character.
        at: usize,
    },
    /// The name is `.` or `..`.
    #[error("invalid log name {name:?}: '.' and '..' are reserved")]
    Reserved {
        /// The refused name.
        name: String,
    },
}

/// Checks that `name` can be used as a log name: 1 to 255 bytes, no `/`, no control characters, not `.`/`..`.
pub fn validate_log_name(name: &str) -> Result<(), InvalidLogName> {
    if name.is_empty() {
        return Err(InvalidLogName::Empty);
    }
    if name.len() > MAX_LOG_NAME_BYTES {
        let shown: String = name.chars().take(32).collect();
        return Err(InvalidLogName::TooLong { name: format!("{shown}…"), len: name.len(), max: MAX_LOG_NAME_BYTES });
    }
    if name == "." || name == ".." {
        return Err(InvalidLogName::Reserved { name: name.to_string() });
    }
    for (at, c) in name.char_indices() {
        let what = match c {
            '/' => "'/'",
            '\\' => "'\\'",
            c if c.is_control() => "a control character",
            _ => continue,
        };
        return Err(InvalidLogName::BadCharacter { name: name.escape_debug().to_string(), what, at });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["a", "by-dev-rootcoord-dml_0", "日志", "x.y", &"n".repeat(255)] {
            assert_eq!(validate_log_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_names_that_break_key_layout() {
        assert_eq!(validate_log_name(""), Err(InvalidLogName::Empty));
        assert!(matches!(validate_log_name("a/b"), Err(InvalidLogName::BadCharacter { at: 1, .. })));
        assert!(matches!(validate_log_name("a\nb"), Err(InvalidLogName::BadCharacter { .. })));
        assert!(matches!(validate_log_name("a\u{7f}"), Err(InvalidLogName::BadCharacter { .. })));
        assert!(matches!(validate_log_name(".."), Err(InvalidLogName::Reserved { .. })));
        assert!(matches!(validate_log_name(&"n".repeat(256)), Err(InvalidLogName::TooLong { len: 256, .. })));
        let msg = validate_log_name("a/b").unwrap_err().to_string();
        assert!(msg.contains("'/'") && msg.contains("a/b"), "{msg}");
    }
}
