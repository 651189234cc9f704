//! The small key-value interface every metadata backend implements.
//!
//! [`crate::MetadataStore`] holds all of Woodpecker's key layout and encodes every decision as
//! gets, prefix ranges and transactions over this trait, so the etcd backend and the embedded
//! backend behave the same by construction.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::MetaResult;

/// Identifier of a lease; `0` means "no lease".
pub type LeaseId = i64;

/// One stored key with etcd's revision bookkeeping.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// Full key.
    pub key: String,
    /// Raw value bytes.
    pub value: Vec<u8>,
    /// Revision of the transaction that created the key (since its last deletion).
    pub create_revision: i64,
    /// Revision of the transaction that last wrote the key.
    pub mod_revision: i64,
    /// Number of writes since creation, starting at 1.
    pub version: i64,
    /// Lease the key is attached to, 0 for none.
    pub lease: LeaseId,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .field("lease", &self.lease)
            .finish()
    }
}

/// Comparison operator of a transaction guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// Stored == given.
    Equal,
    /// Stored != given.
    NotEqual,
    /// Stored > given.
    Greater,
    /// Stored < given.
    Less,
}

/// What a transaction guard compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The value bytes. Like etcd, a value compare against a missing key is always false.
    Value(Vec<u8>),
    /// The create revision (0 when the key is missing).
    CreateRevision(i64),
    /// The mod revision (0 when the key is missing).
    ModRevision(i64),
}

/// One guard of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// Key compared.
    pub key: String,
    /// Operator.
    pub op: CompareOp,
    /// Compared attribute and operand.
    pub target: CompareTarget,
}

impl Compare {
    /// `value(key) == value`; false when the key is missing.
    pub fn value_eq(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into(), op: CompareOp::Equal, target: CompareTarget::Value(value.into()) }
    }
    /// The key does not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Self { key: key.into(), op: CompareOp::Equal, target: CompareTarget::CreateRevision(0) }
    }
    /// The key exists.
    pub fn present(key: impl Into<String>) -> Self {
        Self { key: key.into(), op: CompareOp::Greater, target: CompareTarget::CreateRevision(0) }
    }
    /// `mod_revision(key) == revision`.
    pub fn mod_revision_eq(key: impl Into<String>, revision: i64) -> Self {
        Self { key: key.into(), op: CompareOp::Equal, target: CompareTarget::ModRevision(revision) }
    }
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Write `value` at `key`, attached to `lease` when given.
    Put {
        /// Full key.
        key: String,
        /// Value bytes.
        value: Vec<u8>,
        /// Lease to attach the key to.
        lease: Option<LeaseId>,
    },
    /// Delete one key (no-op when missing).
    Delete {
        /// Full key.
        key: String,
    },
    /// Delete every key starting with `prefix`.
    DeletePrefix {
        /// Key prefix.
        prefix: String,
    },
    /// Read one key.
    Get {
        /// Full key.
        key: String,
    },
    /// Read keys starting with `prefix`, in key order, at most `limit` when given.
    GetPrefix {
        /// Key prefix.
        prefix: String,
        /// Maximum number of keys returned.
        limit: Option<usize>,
    },
}

impl TxnOp {
    /// A put without lease.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        TxnOp::Put { key: key.into(), value: value.into(), lease: None }
    }
    /// A single-key get.
    pub fn get(key: impl Into<String>) -> Self {
        TxnOp::Get { key: key.into() }
    }
    /// A single-key delete.
    pub fn delete(key: impl Into<String>) -> Self {
        TxnOp::Delete { key: key.into() }
    }
    /// A prefix delete.
    pub fn delete_prefix(prefix: impl Into<String>) -> Self {
        TxnOp::DeletePrefix { prefix: prefix.into() }
    }
    /// Whether the operation writes.
    pub fn is_write(&self) -> bool {
        matches!(self, TxnOp::Put { .. } | TxnOp::Delete { .. } | TxnOp::DeletePrefix { .. })
    }
}

/// An atomic "if all compares hold then `success` else `failure`" request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Guards; all must hold for the success branch.
    pub compares: Vec<Compare>,
    /// Operations applied when every guard holds.
    pub success: Vec<TxnOp>,
    /// Operations applied otherwise.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction (no guards, both branches empty).
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the guards.
    pub fn when(mut self, compares: Vec<Compare>) -> Self {
        self.compares = compares;
        self
    }
    /// Sets the success branch.
    pub fn and_then(mut self, ops: Vec<TxnOp>) -> Self {
        self.success = ops;
        self
    }
    /// Sets the failure branch.
    pub fn or_else(mut self, ops: Vec<TxnOp>) -> Self {
        self.failure = ops;
        self
    }
}

/// Result of one transaction operation, in the order of the executed branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResult {
    /// A put was applied.
    Put,
    /// A delete removed `deleted` keys.
    Delete {
        /// Number of keys removed.
        deleted: i64,
    },
    /// A get returned these keys (empty when none).
    Get(Vec<KeyValue>),
}

/// Outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every guard held (the success branch ran).
    pub succeeded: bool,
    /// Store revision after the transaction; the mod revision of every key it wrote.
    pub revision: i64,
    /// One result per executed operation.
    pub results: Vec<TxnOpResult>,
}

impl TxnResponse {
    /// The keys returned by the get at `index` of the executed branch (empty when it is not a get).
    pub fn get_result(&self, index: usize) -> &[KeyValue] {
        match self.results.get(index) {
            Some(TxnOpResult::Get(kvs)) => kvs,
            _ => &[],
        }
    }
}

/// Refreshes one lease; obtained from [`KvBackend::keep_alive`].
#[async_trait]
pub trait LeaseKeeper: Send {
    /// Sends one keep-alive and returns the remaining TTL in seconds; `<= 0` means the lease no
    /// longer exists (expired or revoked) and will never come back.
    async fn keep_alive_once(&mut self) -> MetaResult<i64>;
}

/// A transactional, revisioned key-value store with leases: etcd's model.
///
/// Invariants every implementation keeps:
/// * **Revisions.** A global revision counter increases by exactly one per transaction that
///   changes at least one key; every key written by that transaction gets it as `mod_revision`,
///   and `create_revision` when the key did not exist before. Read-only transactions and deletes
///   of missing keys do not change it. A missing key has create and mod revision 0.
/// * **Atomicity and isolation.** A transaction's guards and its executed branch are evaluated
///   and applied atomically with respect to every other request on the same store.
/// * **Durability.** When a write returns `Ok`, it survives a crash of this process (etcd: raft
///   commit; embedded: fsynced journal record).
/// * **Leases.** Keys put with a lease are deleted when the lease is revoked or expires; a lease
///   that no longer exists is never revived. Embedded leases never expire while the process runs
///   and do not survive a reopen.
/// * **Ordering.** `range` and prefix gets return keys in ascending byte order.
#[async_trait]
pub trait KvBackend: Send + Sync + fmt::Debug {
    /// Human-readable description for errors and logs (endpoints or directory).
    fn describe(&self) -> String;
    /// Reads one key.
    async fn get(&self, key: &str) -> MetaResult<Option<KeyValue>>;
    /// Reads every key starting with `prefix`, in key order.
    async fn range(&self, prefix: &str) -> MetaResult<Vec<KeyValue>>;
    /// Runs a transaction.
    async fn txn(&self, txn: Txn) -> MetaResult<TxnResponse>;
    /// Grants a lease with the given TTL (rounded up to whole seconds, at least 1 s).
    async fn grant_lease(&self, ttl: Duration) -> MetaResult<LeaseId>;
    /// Revokes a lease and deletes its keys; revoking a missing lease succeeds.
    async fn revoke_lease(&self, lease: LeaseId) -> MetaResult<()>;
    /// Returns a keeper that refreshes `lease`.
    async fn keep_alive(&self, lease: LeaseId) -> MetaResult<Box<dyn LeaseKeeper>>;
}

/// Rounds a TTL up to whole seconds, at least one (etcd leases have second granularity).
pub(crate) fn ttl_seconds(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}
