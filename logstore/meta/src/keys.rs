//! Woodpecker's etcd key layout (`spec/woodpecker-core.md` §2.1–2.2) as pure functions.
//!
//! ```text
//! P/instance  P/version  P/logidgen  P/quorumidgen  P/conditionwrite
//! P/logs/<log>                       LogMeta
//! P/logs/<log>/segments/<segId>      SegmentMetadata
//! P/logs/<log>/lock/<leaseHex>       writer mutex key (lease-bound)
//! P/readers/<logId>/<reader>         ReaderTempInfo (lease-bound)
//! P/writer-epoch/<logId>             who opened the last writer; its mod revision is the epoch (ours only)
//! P/cleaning/<logId>/<segId>         SegmentCleanupStatus
//! P/marking/<logId>/<segId>          SegmentCompactedNotifyStatus
//! P/logs-deleted/<log>-<unixNanos>[/segments/<segId>]   parked copies
//! ```

use crate::error::{MetaError, MetaResult};

/// The historical fixed prefix; used when it already holds data, or when the configured prefix is empty.
pub const LEGACY_PREFIX: &str = "woodpecker";

/// Joins and cleans path elements exactly like Go's `path.Join` (empty elements are skipped).
pub fn go_path_join(elems: &[&str]) -> String {
    let joined = elems.iter().filter(|e| !e.is_empty()).copied().collect::<Vec<_>>().join("/");
    if joined.is_empty() {
        return String::new();
    }
    go_path_clean(&joined)
}

/// Cleans a slash-separated path like Go's `path.Clean`.
pub fn go_path_clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_owned(),
        (false, false) => body,
    }
}

/// The prefix Woodpecker is configured with: `path.Join(etcd.rootPath, meta.prefix)`, with an empty
/// or `.` result mapped to [`LEGACY_PREFIX`].
pub fn configured_prefix(root_path: &str, meta_prefix: &str) -> String {
    let joined = go_path_join(&[root_path, meta_prefix]);
    if joined.is_empty() || joined == "." { LEGACY_PREFIX.to_owned() } else { joined }
}

/// Rejects names that would break the key layout (a `/` makes listing ambiguous, §14.22).
pub fn validate_name(what: &'static str, name: &str) -> MetaResult<()> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.contains('/') {
        "must not contain '/'"
    } else if name.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(MetaError::InvalidName { what, name: name.to_owned(), reason })
}

/// Builds every key under one effective prefix `P`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

impl KeyLayout {
    /// A layout rooted at the effective prefix `P` (already resolved, see [`configured_prefix`]).
    pub fn new(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let prefix = if prefix.is_empty() || prefix == "." { LEGACY_PREFIX.to_owned() } else { prefix };
        Self { prefix }
    }
    /// The effective prefix `P`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// `P/instance`.
    pub fn instance(&self) -> String {
        format!("{}/instance", self.prefix)
    }
    /// `P/version`.
    pub fn version(&self) -> String {
        format!("{}/version", self.prefix)
    }
    /// `P/logidgen`.
    pub fn log_id_gen(&self) -> String {
        format!("{}/logidgen", self.prefix)
    }
    /// `P/quorumidgen`.
    pub fn quorum_id_gen(&self) -> String {
        format!("{}/quorumidgen", self.prefix)
    }
    /// `P/conditionwrite`.
    pub fn condition_write(&self) -> String {
        format!("{}/conditionwrite", self.prefix)
    }
    /// `P/logs/` (with the trailing slash: does not match `logs-deleted`).
    pub fn logs_prefix(&self) -> String {
        format!("{}/logs/", self.prefix)
    }
    /// `P/logs/<log>`.
    pub fn log(&self, log: &str) -> String {
        format!("{}/logs/{log}", self.prefix)
    }
    /// `P/logs/<log>/segments/`.
    pub fn segments_prefix(&self, log: &str) -> String {
        format!("{}/logs/{log}/segments/", self.prefix)
    }
    /// `P/logs/<log>/segments/<segId>`.
    pub fn segment(&self, log: &str, segment: i64) -> String {
        format!("{}/logs/{log}/segments/{segment}", self.prefix)
    }
    /// `P/logs/<log>/lock`: upstream's mutex prefix (and the exact key its delete targets).
    pub fn lock_key_upstream(&self, log: &str) -> String {
        format!("{}/logs/{log}/lock", self.prefix)
    }
    /// `P/logs/<log>/lock/`: every mutex key of the log lives below it.
    pub fn lock_prefix(&self, log: &str) -> String {
        format!("{}/logs/{log}/lock/", self.prefix)
    }
    /// `P/logs/<log>/lock/<leaseHex>`: the mutex key of one session, as etcd's `concurrency.Mutex` names it.
    pub fn lock_key(&self, log: &str, lease: i64) -> String {
        format!("{}/logs/{log}/lock/{lease:x}", self.prefix)
    }
    /// `P/writer-epoch/<logId>`: the log's writer epoch (see [`crate::WriterEpoch`]).
    pub fn writer_epoch(&self, log_id: i64) -> String {
        format!("{}/writer-epoch/{log_id}", self.prefix)
    }
    /// `P/readers/<logId>/`.
    pub fn readers_prefix(&self, log_id: i64) -> String {
        format!("{}/readers/{log_id}/", self.prefix)
    }
    /// `P/readers/<logId>/<reader>`.
    pub fn reader(&self, log_id: i64, reader: &str) -> String {
        format!("{}/readers/{log_id}/{reader}", self.prefix)
    }
    /// `P/cleaning/<logId>/`.
    pub fn cleaning_prefix(&self, log_id: i64) -> String {
        format!("{}/cleaning/{log_id}/", self.prefix)
    }
    /// `P/cleaning/<logId>/<segId>`.
    pub fn cleaning(&self, log_id: i64, segment: i64) -> String {
        format!("{}/cleaning/{log_id}/{segment}", self.prefix)
    }
    /// `P/marking/<logId>/`.
    pub fn marking_prefix(&self, log_id: i64) -> String {
        format!("{}/marking/{log_id}/", self.prefix)
    }
    /// `P/marking/<logId>/<segId>`.
    pub fn marking(&self, log_id: i64, segment: i64) -> String {
        format!("{}/marking/{log_id}/{segment}", self.prefix)
    }
    /// `P/logs-deleted/<log>-<unixNanos>`.
    pub fn parked_log(&self, log: &str, deleted_at_nanos: i64) -> String {
        format!("{}/logs-deleted/{log}-{deleted_at_nanos}", self.prefix)
    }
    /// `P/logs-deleted/<log>-<unixNanos>/segments/<segId>`.
    pub fn parked_segment(&self, log: &str, deleted_at_nanos: i64, segment: i64) -> String {
        format!("{}/logs-deleted/{log}-{deleted_at_nanos}/segments/{segment}", self.prefix)
    }
    /// The log name of a key under `P/logs/` (its first path component), if it is one.
    pub fn log_name_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix("/logs/")?;
        let name = rest.split('/').next()?;
        (!name.is_empty()).then_some(name)
    }
    /// The trailing numeric component of a key (segment ids under `segments/`, `cleaning/`).
    pub fn trailing_id(key: &str) -> MetaResult<i64> {
        let last = key.rsplit('/').next().unwrap_or_default();
        last.parse::<i64>().map_err(|_| MetaError::Corrupt {
            key: key.to_owned(),
            reason: format!("last path component {last:?} is not a decimal id"),
        })
    }
}

/// Keys and prefixes probed under [`LEGACY_PREFIX`] to decide whether it holds data.
pub fn legacy_probe() -> (Vec<String>, Vec<String>) {
    let keys = ["instance", "version", "logidgen", "quorumidgen", "conditionwrite"];
    let prefixes = ["logs/", "quorums/", "logstores/", "readers/", "cleaning/"];
    (
        keys.iter().map(|k| format!("{LEGACY_PREFIX}/{k}")).collect(),
        prefixes.iter().map(|p| format!("{LEGACY_PREFIX}/{p}")).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_prefix_follows_go_path_join() {
        let cases = [
            ("woodpecker", "woodpecker", "woodpecker/woodpecker"),
            ("by-dev", "woodpecker", "by-dev/woodpecker"),
            ("", "woodpecker", "woodpecker"),
            ("", "", "woodpecker"),
            (".", "", "woodpecker"),
            ("/by-dev/", "woodpecker/", "/by-dev/woodpecker"),
            ("a//b", "./c", "a/b/c"),
            ("a/b", "../c", "a/c"),
        ];
        for (root, prefix, want) in cases {
            assert_eq!(configured_prefix(root, prefix), want, "root={root:?} prefix={prefix:?}");
        }
    }

    #[test]
    fn keys_match_upstream_layout() {
        let k = KeyLayout::new("by-dev/woodpecker");
        assert_eq!(k.log("l"), "by-dev/woodpecker/logs/l");
        assert_eq!(k.segment("l", 7), "by-dev/woodpecker/logs/l/segments/7");
        assert_eq!(k.lock_key("l", 0x694d7c3a1b2c3d4e), "by-dev/woodpecker/logs/l/lock/694d7c3a1b2c3d4e");
        assert_eq!(k.reader(3, "r"), "by-dev/woodpecker/readers/3/r");
        assert_eq!(k.cleaning(3, 4), "by-dev/woodpecker/cleaning/3/4");
        assert_eq!(k.parked_segment("l", 5, 1), "by-dev/woodpecker/logs-deleted/l-5/segments/1");
        assert_eq!(k.log_name_of("by-dev/woodpecker/logs/l/segments/1"), Some("l"));
        assert_eq!(k.log_name_of("by-dev/woodpecker/logs-deleted/l-5"), None);
        assert_eq!(KeyLayout::trailing_id("x/segments/12").ok(), Some(12));
        assert!(KeyLayout::trailing_id("x/segments/a").is_err());
    }

    #[test]
    fn names_with_slashes_are_rejected() {
        assert!(validate_name("log", "a/b").is_err());
        assert!(validate_name("log", "").is_err());
        assert!(validate_name("log", "ok-name_1").is_ok());
    }
}
