//! Which keys a backend accepts. Pure functions, table-tested.

use super::ObjectError;

/// Name prefix of the local backend's temporary files; keys may not use it for any component.
pub(crate) const LOCAL_TMP_PREFIX: &str = ".wp-tmp-";

/// Checks a key every backend must accept or reject alike: non-empty, at most 1024 bytes (S3's
/// limit), no NUL.
pub(crate) fn validate_key(key: &str) -> Result<(), ObjectError> {
    let reason = if key.is_empty() {
        "key is empty"
    } else if key.len() > 1024 {
        "key is longer than 1024 bytes"
    } else if key.contains('\0') {
        "key contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(ObjectError::InvalidKey { key: key.to_owned(), reason })
}

/// Checks a key for the local backend, where it becomes a path under the root directory: a clean
/// relative path, so no key can name a file outside the root or one of our temporary files.
pub(crate) fn validate_local_key(key: &str) -> Result<(), ObjectError> {
    validate_key(key)?;
    let reason = if key.starts_with('/') {
        Some("absolute paths are not allowed")
    } else if key.contains('\\') {
        Some("backslashes are not allowed")
    } else if key.ends_with('/') {
        Some("key ends with `/`")
    } else {
        key.split('/').find_map(|part| match part {
            "" => Some("empty path component (`//`)"),
            "." | ".." => Some("`.` and `..` components are not allowed"),
            p if p.starts_with(LOCAL_TMP_PREFIX) => Some("component uses the reserved `.wp-tmp-` prefix"),
            _ => None,
        })
    };
    match reason {
        Some(reason) => Err(ObjectError::InvalidKey { key: key.to_owned(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_keys_must_be_clean_relative_paths() {
        let table: &[(&str, bool)] = &[
            ("files/1/2/0.blk", true),
            ("a", true),
            ("a.b/..c/d", true),
            ("", false),
            ("/etc/passwd", false),
            ("../x", false),
            ("a/../../x", false),
            ("a/./b", false),
            ("a//b", false),
            ("a/", false),
            ("a\\..\\b", false),
            ("a/.wp-tmp-1", false),
            ("a\0b", false),
        ];
        for (key, ok) in table {
            assert_eq!(validate_local_key(key).is_ok(), *ok, "key {key:?}");
        }
    }

    #[test]
    fn generic_keys_only_need_to_be_non_empty_and_short() {
        assert!(validate_key("/leading/slash//is/fine/for/s3").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key(&"x".repeat(1025)).is_err());
    }
}
