//! Staged storage (service mode): a LogStore server's local copy of each segment it replicates, and
//! the compaction that moves a finalized copy to object storage.
//!
//! ```text
//! <dataDir>/<bucket>/<rootPath>/<logId>/<segId>/data.log     [Header][BlockHeader b0][Data…]…[Index…][Footer LAC]
//!                                               write.fence  persisted fence marker (survives restarts)
//!                                               data.durable fsynced length of data.log, for readers
//!                                               write.lock   flock'ed around every append, fence, finalize
//! object storage, bucket <bucket>:
//!   <rootPath>/<logId>/<segId>/m_<n>.blk   merged blocks, entries 0..=LAC only (m_0 starts with a compacted header)
//!   <rootPath>/<logId>/<segId>/footer.blk  uploaded last: the commit point of a compaction
//! ```
//!
//! The local files are upstream's staged layout (the `data.log` format of local mode, `LocalSegmentBackend`),
//! so a data directory written by upstream's server is recovered by ours. Differences, all compatible:
//! - `write.fence` is persisted before a fence answers, so a restarted node still refuses the old writer's
//!   appends (upstream keeps the fence in memory only and relies on recovery mode);
//! - the footer's LAC is the one `CompleteSegment` passes (the quorum's), not the last local entry;
//! - compaction copies entries up to the LAC only and refuses a copy that lacks some of them.
//!
//! `bucket` and `rootPath` come from each request. They become directory names, so [`StagedScope::new`]
//! refuses anything that could name a file outside the data directory.

pub mod compact;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use thiserror::Error;

use super::local::LocalSegmentBackend;

/// The tenant a request is scoped to: an object-storage bucket and a root path inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StagedScope {
    bucket: String,
    root_path: String,
}

/// A `bucket` or `rootPath` that cannot name a directory under the data directory.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ScopeError {
    /// The bucket name is not one path component.
    #[error("invalid bucket name {bucket:?}: {reason}")]
    InvalidBucket {
        /// What the request sent.
        bucket: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The root path is not a clean relative path.
    #[error("invalid root path {root_path:?}: {reason}")]
    InvalidRootPath {
        /// What the request sent.
        root_path: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

impl StagedScope {
    /// Checks and wraps a request's scope. The bucket is one non-empty component; the root path is empty
    /// or a clean relative path (`a/b`): no `..` or `.`, no leading or doubled `/`, no `\` or NUL.
    pub fn new(bucket: &str, root_path: &str) -> Result<Self, ScopeError> {
        let bad_bucket = |reason| ScopeError::InvalidBucket { bucket: bucket.to_owned(), reason };
        if bucket.is_empty() {
            return Err(bad_bucket("it is empty"));
        }
        if bucket.contains(['/', '\\', '\0']) {
            return Err(bad_bucket("it contains a path separator or NUL"));
        }
        if bucket == "." || bucket == ".." {
            return Err(bad_bucket("`.` and `..` are not bucket names"));
        }
        if bucket.len() > 255 {
            return Err(bad_bucket("it is longer than 255 bytes"));
        }
        if let Some(reason) = root_path_problem(root_path) {
            return Err(ScopeError::InvalidRootPath { root_path: root_path.to_owned(), reason });
        }
        Ok(Self { bucket: bucket.to_owned(), root_path: root_path.to_owned() })
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The root path inside the bucket (object keys start with it).
    pub fn root_path(&self) -> &str {
        &self.root_path
    }
}

/// Why `root_path` is not a clean relative path, if it is not.
fn root_path_problem(root_path: &str) -> Option<&'static str> {
    if root_path.is_empty() {
        return None;
    }
    if root_path.len() > 512 {
        return Some("it is longer than 512 bytes");
    }
    if root_path.starts_with('/') {
        return Some("absolute paths are not allowed");
    }
    if root_path.contains(['\\', '\0']) {
        return Some("backslashes and NUL are not allowed");
    }
    root_path.split('/').find_map(|part| match part {
        "" => Some("empty path component (`//` or a trailing `/`)"),
        "." | ".." => Some("`.` and `..` components are not allowed"),
        _ => None,
    })
}

/// The staged copies of every scope under one data directory.
#[derive(Debug)]
pub struct StagedStorage {
    data_dir: PathBuf,
    /// One local backend per scope, created on first use (each keeps its own block buffers).
    scopes: Mutex<HashMap<StagedScope, Arc<LocalSegmentBackend>>>,
}

impl StagedStorage {
    /// Staged storage under `data_dir` (upstream's `storage.rootPath`, the server's `--data-dir`).
    pub fn new(data_dir: PathBuf) -> Self {
        Self { data_dir, scopes: Mutex::new(HashMap::new()) }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The segments of `scope`: `<dataDir>/<bucket>/<rootPath>/<logId>/<segId>/`.
    pub fn scope(&self, scope: &StagedScope) -> Arc<LocalSegmentBackend> {
        let mut scopes = self.scopes.lock().unwrap_or_else(PoisonError::into_inner);
        scopes
            .entry(scope.clone())
            .or_insert_with(|| {
                Arc::new(LocalSegmentBackend::new(self.data_dir.join(&scope.bucket), scope.root_path.clone()))
            })
            .clone()
    }

    /// The directory of every segment of `log_id` in `scope`.
    pub fn log_dir(&self, scope: &StagedScope, log_id: woodpecker_core::ids::LogId) -> PathBuf {
        let dir = self.data_dir.join(&scope.bucket);
        let dir = if scope.root_path.is_empty() { dir } else { dir.join(&scope.root_path) };
        dir.join(log_id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_that_could_leave_the_data_directory_are_refused() {
        let table: &[(&str, &str, bool)] = &[
            ("woodpecker", "", true),
            ("woodpecker", "files", true),
            ("woodpecker", "milvus/wal", true),
            ("a-bucket.1", "a..b/c", true),
            ("", "files", false),
            ("..", "files", false),
            (".", "files", false),
            ("a/b", "files", false),
            ("a\\b", "files", false),
            ("woodpecker", "/etc", false),
            ("woodpecker", "../x", false),
            ("woodpecker", "a/../../x", false),
            ("woodpecker", "a/./b", false),
            ("woodpecker", "a//b", false),
            ("woodpecker", "a/", false),
            ("woodpecker", "a\0b", false),
        ];
        for (bucket, root, ok) in table {
            assert_eq!(StagedScope::new(bucket, root).is_ok(), *ok, "bucket {bucket:?} root {root:?}");
        }
        let e = StagedScope::new("woodpecker", "../x").unwrap_err();
        assert!(e.to_string().contains("\"../x\""), "the error names the path: {e}");
    }

    #[test]
    fn a_scope_maps_to_bucket_then_root_path_under_the_data_directory() {
        let staged = StagedStorage::new(PathBuf::from("/data"));
        let scope = StagedScope::new("b", "r/s").unwrap();
        let seg = crate::segment::SegmentRef { log_id: 3, segment_id: 1 };
        assert_eq!(staged.scope(&scope).segment_dir(seg), PathBuf::from("/data/b/r/s/3/1"));
        assert_eq!(staged.log_dir(&scope, 3), PathBuf::from("/data/b/r/s/3"));
        let empty = StagedScope::new("b", "").unwrap();
        assert_eq!(staged.scope(&empty).segment_dir(seg), PathBuf::from("/data/b/3/1"));
    }
}
