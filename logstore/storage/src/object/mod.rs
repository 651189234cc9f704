//! Object storage: the one trait every segment format writes through, and its backends.
//!
//! ```text
//!                    Arc<dyn ObjectStorage>
//!        ┌──────────────────┼───────────────────────┐
//!  S3ObjectStorage   LocalObjectStorage    MemoryObjectStorage
//!  (aws-sdk-s3: MinIO, (a directory,       (a map; unit tests
//!   AWS, GCS XML,      link(2)/symlink(2)   of logic only)
//!   Aliyun, Tencent)   for conditions)
//! ```
//!
//! Errors from the SDK or the file system are mapped once, in the backend, into [`ObjectError`];
//! nothing above this module sees an `aws_sdk_s3` or `std::io` error.

mod error;
mod keys;
mod local;
mod memory;
mod probe;
#[cfg(feature = "s3")]
mod s3;

#[cfg(test)]
mod conformance;

pub use error::ObjectError;
pub use local::LocalObjectStorage;
pub use memory::MemoryObjectStorage;
pub use probe::probe_condition_write;
#[cfg(feature = "s3")]
pub use s3::{CloudProvider, DEFAULT_REGION, S3ObjectStorage, S3Options};
pub use woodpecker_core::retry::RetryPolicy;

use std::ops::Range;

use bytes::Bytes;

/// Body of a fence object (upstream writes the single byte `F`).
pub const FENCE_BODY: &[u8] = b"F";

/// User-metadata key that marks a fence object (`x-amz-meta-fenced: true` on S3).
pub const FENCE_METADATA_KEY: &str = "fenced";

/// What [`ObjectStorage::stat`] and [`ObjectStorage::list`] report about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full key, relative to the bucket (or the local root directory).
    pub key: String,
    /// Size of the object body in bytes.
    pub size: u64,
    /// True when the object is a fence object written by [`ObjectStorage::put_fence`].
    pub fenced: bool,
}

/// A flat key → bytes store with create-if-absent and fence objects.
///
/// Keys are `/`-separated strings such as `files/7/3/0.blk`. The store has no directories: a
/// "prefix" is only a string prefix.
///
/// # Invariants every implementation keeps
///
/// * **Durability.** When a write (`put`, `put_if_absent`, `put_fence`) returns `Ok`, the object
///   survives a process crash (local: file and directory fsynced; S3: the server acknowledged it).
///   A write that returns `Err` may or may not have happened, except `AlreadyExists` and `Fenced`,
///   which guarantee that *this* call wrote nothing.
/// * **Atomic visibility.** Readers see either the whole old body or the whole new body, never a
///   prefix; an object never exists without its fence flag.
/// * **Create-if-absent is linearizable.** Of N concurrent `put_if_absent`/`put_fence` calls on one
///   absent key, exactly one creates it; the others fail (or, for a second fence, succeed without
///   writing). This is what fencing rests on, so a backend that cannot honour it must say so via
///   [`probe_condition_write`] returning `false`.
/// * **Idempotence.** `remove` of an absent key is `Ok`; `put_fence` on an existing fence is `Ok`;
///   `put_if_absent` is *not* idempotent by itself: a retry after a lost reply sees
///   `AlreadyExists`, which callers writing immutable blocks treat as success.
///
/// # Fences
///
/// ```text
///  segment objects:  0.blk  1.blk  2.blk  [3.blk = fence "F", fenced=true]
///                                          ▲
///  new writer: put_fence("…/3.blk") ───────┘   -> Ok (also Ok when repeated)
///  old writer: put_if_absent("…/3.blk", block) -> Err(Fenced)      (it must stop writing)
///  fencer hits a real block instead:           -> Err(AlreadyExists) (re-list, fence further on)
/// ```
///
/// An unconditional `put` overwrites anything, a fence included (as S3 does); only condition
/// writes respect fences.
#[async_trait::async_trait]
pub trait ObjectStorage: Send + Sync + std::fmt::Debug {
    /// Human-readable description for errors/logs, e.g. "s3://bucket@http://127.0.0.1:9900" or "file:///path".
    fn describe(&self) -> String;

    /// Whole object, or the byte range `[start, end)` when `range` is `Some`.
    ///
    /// `end` is clamped to the object size (as S3 does); an empty range returns empty bytes once
    /// the object is known to exist; `start >= size` on a non-empty range is `InvalidRange`.
    /// `NotFound` if absent.
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, ObjectError>;

    /// Unconditional put: creates or overwrites (a fence object included).
    async fn put(&self, key: &str, body: Bytes) -> Result<(), ObjectError>;

    /// Create only if absent (S3 `If-None-Match: *`; Aliyun `x-oss-forbid-overwrite: true`;
    /// Tencent `x-cos-forbid-overwrite: true`).
    ///
    /// Existing fence object at key → `Err(Fenced)`; existing normal object → `Err(AlreadyExists)`.
    /// When the backend was configured with condition writes disabled, this is a plain PUT that
    /// only HEADs on error (upstream §9.3), so it silently overwrites.
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), ObjectError>;

    /// [`put_if_absent`](Self::put_if_absent) of a body whose SHA-256 the caller computed (while the bytes
    /// were still in the CPU cache): a backend that signs payloads sends it instead of hashing the body
    /// again. `sha256` must be the body's digest; a backend that verifies it rejects a mismatch.
    async fn put_if_absent_hashed(&self, key: &str, body: Bytes, sha256: [u8; 32]) -> Result<(), ObjectError> {
        let _ = sha256;
        self.put_if_absent(key, body).await
    }

    /// Fence object: 1-byte body `F`, user metadata `fenced: true` (S3 header
    /// `x-amz-meta-fenced: true`), created if absent.
    ///
    /// Existing fence → `Ok` (idempotent); existing normal object → `Err(AlreadyExists)`.
    async fn put_fence(&self, key: &str) -> Result<(), ObjectError>;

    /// Size and fence flag (always accurate); `NotFound` if absent.
    async fn stat(&self, key: &str) -> Result<ObjectInfo, ObjectError>;

    /// All objects whose key starts with `prefix` (recursive), sorted by key, paginated internally.
    ///
    /// `fenced` is accurate in every backend here; the S3 backend gets it with one HEAD per
    /// 1-byte object (a fence is always exactly one byte, real blocks never are).
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError>;

    /// Remove one object; absent is `Ok` (idempotent).
    async fn remove(&self, key: &str) -> Result<(), ObjectError>;

    /// Remove every object under `prefix`; returns how many this call removed.
    async fn remove_prefix(&self, prefix: &str) -> Result<usize, ObjectError>;
}

/// Resolves `range` against an object of `size` bytes: clamps the end, rejects a start past the end.
///
/// Shared by the backends that hold the whole object (memory, local) so they agree with S3.
pub(crate) fn resolve_range(key: &str, size: u64, range: Option<Range<u64>>) -> Result<Range<u64>, ObjectError> {
    let Some(range) = range else {
        return Ok(0..size);
    };
    if range.start > range.end {
        return Err(ObjectError::InvalidRange {
            key: key.to_owned(),
            start: range.start,
            end: range.end,
            size: Some(size),
        });
    }
    if range.start == range.end {
        return Ok(range.start.min(size)..range.start.min(size));
    }
    if range.start >= size {
        return Err(ObjectError::InvalidRange {
            key: key.to_owned(),
            start: range.start,
            end: range.end,
            size: Some(size),
        });
    }
    Ok(range.start..range.end.min(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_range_clamps_end_and_rejects_start_past_size() {
        assert_eq!(resolve_range("k", 10, None).ok(), Some(0..10));
        assert_eq!(resolve_range("k", 10, Some(2..5)).ok(), Some(2..5));
        assert_eq!(resolve_range("k", 10, Some(8..50)).ok(), Some(8..10));
        assert_eq!(resolve_range("k", 10, Some(4..4)).ok(), Some(4..4));
        assert_eq!(resolve_range("k", 10, Some(40..40)).ok(), Some(10..10));
        assert!(matches!(resolve_range("k", 10, Some(10..11)), Err(ObjectError::InvalidRange { .. })));
        assert!(matches!(
            resolve_range("k", 10, Some(Range { start: 5, end: 3 })),
            Err(ObjectError::InvalidRange { .. })
        ));
    }
}
