//! `MetadataStore`: Woodpecker's metadata operations over any [`KvBackend`].

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use woodpecker_proto::meta::{
    LogMeta, ReaderTempInfo, SegmentCleanupStatus, SegmentCompactedNotifyStatus, SegmentMetadata, Version,
};

use woodpecker_core::retry::RetryPolicy;

use crate::embedded_kv::EmbeddedKv;
use crate::error::{MetaError, MetaResult};
use crate::etcd_kv::{EtcdKv, EtcdOptions};
use crate::keys::{self, KeyLayout, LEGACY_PREFIX, validate_name};
use crate::kv::{Compare, KeyValue, KvBackend, Txn, TxnOp};
use crate::reader::ReaderRegistration;
use crate::session::KeepAlivePolicy;
use crate::writer_epoch::WriterEpoch;
use crate::writer_lock::WriterLock;

/// Metadata schema version written by `init_if_necessary`.
pub const META_VERSION: Version = Version { major: 1, minor: 0, patch: 0 };

/// `LogMeta.max_segment_roll_time_seconds` written at creation (never read, §2.3).
pub const DEFAULT_MAX_SEGMENT_ROLL_TIME_SECONDS: i64 = 60;
/// `LogMeta.max_segment_roll_size_bytes` written at creation.
pub const DEFAULT_MAX_SEGMENT_ROLL_SIZE_BYTES: i64 = 256 * 1024 * 1024;
/// `LogMeta.compaction_buffer_size_bytes` written at creation.
pub const DEFAULT_COMPACTION_BUFFER_SIZE_BYTES: i64 = 128 * 1024 * 1024;
/// `LogMeta.max_compaction_file_count` written at creation.
pub const DEFAULT_MAX_COMPACTION_FILE_COUNT: i64 = 600;

/// Backoff when the log id generator moved under a `create_log` (another process created a log).
const CREATE_LOG_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    base_delay: Duration::from_millis(10),
    max_delay: Duration::from_millis(200),
};

/// etcd allows 128 operations per transaction; parked copies are written in chunks below that.
const PARK_CHUNK_OPS: usize = 120;

/// A decoded value with the revisions of its key.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The decoded value.
    pub value: T,
    /// Mod revision of the key: pass it back as the expected revision of the next update.
    pub revision: i64,
    /// Create revision of the key.
    pub create_revision: i64,
}

/// Tunables of sessions and retries; defaults follow upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Writer-lock session TTL (upstream 15 s).
    pub lock_session_ttl: Duration,
    /// Interval between writer-lock keep-alives (`client.sessionMonitor.checkInterval`, 3 s).
    pub lock_check_interval: Duration,
    /// Consecutive failed keep-alives that invalidate the lock (`client.sessionMonitor.maxFailures`, 5).
    pub lock_max_failures: u32,
    /// Reader registration lease TTL (upstream 60 s); kept alive every third of it.
    pub reader_lease_ttl: Duration,
    /// Attempts of `create_log` when the id generator moved concurrently (upstream 5).
    pub create_log_attempts: u32,
    /// Attempts of `delete_log` when the log key changed concurrently.
    pub delete_log_attempts: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            lock_session_ttl: Duration::from_secs(15),
            lock_check_interval: Duration::from_secs(3),
            lock_max_failures: 5,
            reader_lease_ttl: Duration::from_secs(60),
            create_log_attempts: 5,
            delete_log_attempts: 5,
        }
    }
}

/// Woodpecker's metadata: logs, segments, readers, cleanup records, the condition-write flag and
/// writer locks, stored under one effective prefix `P` with upstream's keys and protobuf values.
///
/// Every multi-key decision is one transaction, so concurrent stores on the same backend (other
/// processes, or Go clients on the same etcd) never see a half-applied change.
#[derive(Debug, Clone)]
pub struct MetadataStore {
    kv: Arc<dyn KvBackend>,
    keys: KeyLayout,
    options: StoreOptions,
}

impl MetadataStore {
    /// Connects to etcd and resolves the prefix from `etcd.rootPath` and `woodpecker.meta.prefix`.
    pub async fn open_etcd<E: AsRef<str>>(
        endpoints: &[E],
        root_path: &str,
        meta_prefix: &str,
        options: &EtcdOptions,
    ) -> MetaResult<Self> {
        let kv = EtcdKv::connect(endpoints, options).await?;
        Self::with_backend(Arc::new(kv), root_path, meta_prefix).await
    }

    /// Opens (or creates) the embedded store in `dir` with upstream's default prefix.
    pub async fn open_embedded(dir: impl AsRef<Path>) -> MetaResult<Self> {
        let kv = EmbeddedKv::open(dir.as_ref()).await?;
        Self::with_backend(Arc::new(kv), LEGACY_PREFIX, LEGACY_PREFIX).await
    }

    /// Builds a store over any backend: the effective prefix is `path.Join(root_path, meta_prefix)`
    /// unless the legacy prefix `woodpecker` already holds Woodpecker data (one read-only probe).
    pub async fn with_backend(kv: Arc<dyn KvBackend>, root_path: &str, meta_prefix: &str) -> MetaResult<Self> {
        let configured = keys::configured_prefix(root_path, meta_prefix);
        let prefix = if configured != LEGACY_PREFIX && legacy_prefix_in_use(kv.as_ref()).await? {
            tracing::info!(configured, legacy = LEGACY_PREFIX, "legacy metadata prefix holds data; using it");
            LEGACY_PREFIX.to_owned()
        } else {
            configured
        };
        Ok(Self { kv, keys: KeyLayout::new(prefix), options: StoreOptions::default() })
    }

    /// Replaces the session and retry tunables.
    pub fn with_options(mut self, options: StoreOptions) -> Self {
        self.options = options;
        self
    }

    /// The effective key prefix `P`.
    pub fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// The key layout under `P`.
    pub fn keys(&self) -> &KeyLayout {
        &self.keys
    }

    /// The underlying key-value backend.
    pub fn backend(&self) -> &Arc<dyn KvBackend> {
        &self.kv
    }

    /// The session and retry tunables in use.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    // ---- bootstrap -------------------------------------------------------------------------

    /// Writes `instance`, `version`, `logidgen` and `quorumidgen` when none exists (all in one
    /// transaction); does nothing when all exist; `PartiallyInitialised` when only some do.
    pub async fn init_if_necessary(&self) -> MetaResult<()> {
        let names = [self.keys.instance(), self.keys.version(), self.keys.log_id_gen(), self.keys.quorum_id_gen()];
        for _ in 0..2 {
            let read = self.kv.txn(Txn::new().and_then(names.iter().map(TxnOp::get).collect())).await?;
            let (present, missing): (Vec<_>, Vec<_>) =
                names.iter().enumerate().partition(|(i, _)| !read.get_result(*i).is_empty());
            if missing.is_empty() {
                return Ok(());
            }
            if !present.is_empty() {
                return Err(MetaError::PartiallyInitialised {
                    prefix: self.prefix().to_owned(),
                    present: present.into_iter().map(|(_, k)| k.clone()).collect(),
                    missing: missing.into_iter().map(|(_, k)| k.clone()).collect(),
                });
            }
            let init = Txn::new().when(names.iter().map(Compare::absent).collect()).and_then(vec![
                TxnOp::put(&names[0], uuid::Uuid::new_v4().to_string()),
                TxnOp::put(&names[1], META_VERSION.encode_to_vec()),
                TxnOp::put(&names[2], "0"),
                TxnOp::put(&names[3], "0"),
            ]);
            if self.kv.txn(init).await?.succeeded {
                tracing::info!(prefix = self.prefix(), "metadata initialised");
                return Ok(());
            }
            // Somebody initialised concurrently: re-read and verify.
        }
        Err(MetaError::RevisionConflict { key: self.keys.instance() })
    }

    /// The instance id written by `init_if_necessary`.
    pub async fn instance_id(&self) -> MetaResult<String> {
        let key = self.keys.instance();
        let kv = self.kv.get(&key).await?.ok_or_else(|| self.not_initialised(&key))?;
        String::from_utf8(kv.value).map_err(|e| MetaError::Corrupt { key, reason: format!("not UTF-8: {e}") })
    }

    /// The metadata schema version.
    pub async fn version(&self) -> MetaResult<Version> {
        let key = self.keys.version();
        let kv = self.kv.get(&key).await?.ok_or_else(|| self.not_initialised(&key))?;
        decode(&kv)
    }

    // ---- logs ------------------------------------------------------------------------------

    /// Creates a log with the next id from `logidgen` (one transaction guarded by the counter's
    /// value and the log key's absence); `LogAlreadyExists` when the name is taken.
    pub async fn create_log(&self, name: &str) -> MetaResult<Versioned<LogMeta>> {
        validate_name("log", name)?;
        let idgen_key = self.keys.log_id_gen();
        let log_key = self.keys.log(name);
        let attempts = self.options.create_log_attempts.max(1);
        for attempt in 0..attempts {
            let idgen = self.kv.get(&idgen_key).await?.ok_or_else(|| self.not_initialised(&idgen_key))?;
            let current = parse_counter(&idgen)?;
            let next = current + 1;
            let now = unix_seconds();
            let meta = LogMeta {
                log_id: next,
                max_segment_roll_time_seconds: DEFAULT_MAX_SEGMENT_ROLL_TIME_SECONDS,
                max_segment_roll_size_bytes: DEFAULT_MAX_SEGMENT_ROLL_SIZE_BYTES,
                compaction_buffer_size_bytes: DEFAULT_COMPACTION_BUFFER_SIZE_BYTES,
                max_compaction_file_count: DEFAULT_MAX_COMPACTION_FILE_COUNT,
                creation_timestamp: now,
                modification_timestamp: now,
                truncated_segment_id: -1,
                truncated_entry_id: -1,
            };
            let txn = Txn::new()
                .when(vec![Compare::value_eq(&idgen_key, idgen.value.clone()), Compare::absent(&log_key)])
                .and_then(vec![TxnOp::put(&log_key, meta.encode_to_vec()), TxnOp::put(&idgen_key, next.to_string())])
                .or_else(vec![TxnOp::get(&log_key)]);
            let resp = self.kv.txn(txn).await?;
            if resp.succeeded {
                tracing::info!(log = name, log_id = next, "log created");
                return Ok(Versioned { value: meta, revision: resp.revision, create_revision: resp.revision });
            }
            if !resp.get_result(0).is_empty() {
                return Err(MetaError::LogAlreadyExists { name: name.to_owned() });
            }
            // The id generator moved under us: back off a little (with jitter) and retry.
            tokio::time::sleep(CREATE_LOG_RETRY.delay(attempt + 1)).await;
        }
        Err(MetaError::RevisionConflict { key: idgen_key })
    }

    /// Reads a log's metadata; `LogNotFound` (not retryable) when missing.
    pub async fn get_log(&self, name: &str) -> MetaResult<Versioned<LogMeta>> {
        validate_name("log", name)?;
        let kv = self.kv.get(&self.keys.log(name)).await?.ok_or_else(|| log_not_found(name))?;
        versioned(&kv)
    }

    /// Whether the log exists.
    pub async fn log_exists(&self, name: &str) -> MetaResult<bool> {
        validate_name("log", name)?;
        Ok(self.kv.get(&self.keys.log(name)).await?.is_some())
    }

    /// Names of logs starting with `name_prefix` (empty for all), sorted and deduplicated.
    pub async fn list_logs(&self, name_prefix: &str) -> MetaResult<Vec<String>> {
        let range = format!("{}{name_prefix}", self.keys.logs_prefix());
        let kvs = self.kv.range(&range).await?;
        let names: BTreeSet<&str> = kvs.iter().filter_map(|kv| self.keys.log_name_of(&kv.key)).collect();
        Ok(names.into_iter().map(str::to_owned).collect())
    }

    /// Replaces a log's metadata if its key still has `expected_revision`; returns the new revision.
    pub async fn update_log(&self, name: &str, meta: &LogMeta, expected_revision: i64) -> MetaResult<i64> {
        validate_name("log", name)?;
        let key = self.keys.log(name);
        let txn = Txn::new()
            .when(vec![Compare::mod_revision_eq(&key, expected_revision)])
            .and_then(vec![TxnOp::put(&key, meta.encode_to_vec())])
            .or_else(vec![TxnOp::get(&key)]);
        let resp = self.kv.txn(txn).await?;
        if resp.succeeded {
            Ok(resp.revision)
        } else if resp.get_result(0).is_empty() {
            Err(log_not_found(name))
        } else {
            Err(MetaError::RevisionConflict { key })
        }
    }

    /// Deletes a log: parks copies of its `LogMeta` and segments under `logs-deleted/<name>-<nanos>`,
    /// then removes in one transaction (guarded by the log key's revision) the log key, its lock
    /// keys, its segments, its `readers/`, `cleaning/` and `marking/` records and its writer epoch.
    pub async fn delete_log(&self, name: &str) -> MetaResult<()> {
        validate_name("log", name)?;
        let key = self.keys.log(name);
        let attempts = self.options.delete_log_attempts.max(1);
        let mut seen_log = false;
        for _ in 0..attempts {
            let Some(log_kv) = self.kv.get(&key).await? else {
                // Gone: either never there, or a concurrent delete finished the job.
                return if seen_log { Ok(()) } else { Err(log_not_found(name)) };
            };
            seen_log = true;
            let meta: LogMeta = decode(&log_kv)?;
            let segments = self.kv.range(&self.keys.segments_prefix(name)).await?;
            let deleted_at = unix_nanos();
            let mut parked = vec![TxnOp::put(self.keys.parked_log(name, deleted_at), log_kv.value.clone())];
            for seg in &segments {
                let id = KeyLayout::trailing_id(&seg.key)?;
                parked.push(TxnOp::put(self.keys.parked_segment(name, deleted_at, id), seg.value.clone()));
            }
            for chunk in parked.chunks(PARK_CHUNK_OPS) {
                self.kv.txn(Txn::new().and_then(chunk.to_vec())).await?;
            }
            let txn = Txn::new().when(vec![Compare::mod_revision_eq(&key, log_kv.mod_revision)]).and_then(vec![
                TxnOp::delete(&key),
                // Upstream deleted only this exact key; mutex keys live below it (§14.8).
                TxnOp::delete(self.keys.lock_key_upstream(name)),
                TxnOp::delete_prefix(self.keys.lock_prefix(name)),
                TxnOp::delete_prefix(self.keys.segments_prefix(name)),
                TxnOp::delete_prefix(self.keys.readers_prefix(meta.log_id)),
                TxnOp::delete_prefix(self.keys.cleaning_prefix(meta.log_id)),
                TxnOp::delete_prefix(self.keys.marking_prefix(meta.log_id)),
                TxnOp::delete(self.keys.writer_epoch(meta.log_id)),
            ]);
            if self.kv.txn(txn).await?.succeeded {
                tracing::info!(log = name, log_id = meta.log_id, deleted_at, "log deleted");
                return Ok(());
            }
        }
        Err(MetaError::RevisionConflict { key })
    }

    // ---- segments --------------------------------------------------------------------------

    /// Creates a segment's metadata if the log exists and the segment does not
    /// (`SegmentAlreadyExists` signals that another writer took over).
    pub async fn create_segment(&self, log: &str, meta: &SegmentMetadata) -> MetaResult<Versioned<SegmentMetadata>> {
        validate_name("log", log)?;
        let log_key = self.keys.log(log);
        let key = self.keys.segment(log, meta.seg_no);
        let txn = Txn::new()
            .when(vec![Compare::present(&log_key), Compare::absent(&key)])
            .and_then(vec![TxnOp::put(&key, meta.encode_to_vec())])
            .or_else(vec![TxnOp::get(&log_key)]);
        let resp = self.kv.txn(txn).await?;
        if resp.succeeded {
            Ok(Versioned { value: meta.clone(), revision: resp.revision, create_revision: resp.revision })
        } else if resp.get_result(0).is_empty() {
            Err(log_not_found(log))
        } else {
            Err(MetaError::SegmentAlreadyExists { log: log.to_owned(), segment: meta.seg_no })
        }
    }

    /// Opens a new writer epoch on the log (see [`WriterEpoch`]): from now on no writer with an earlier
    /// epoch can create a segment. `holder` says who opened it (stored for people, never compared).
    pub async fn open_writer_epoch(&self, log: &str, log_id: i64, holder: &str) -> MetaResult<WriterEpoch> {
        validate_name("log", log)?;
        let log_key = self.keys.log(log);
        let key = self.keys.writer_epoch(log_id);
        let txn = Txn::new()
            .when(vec![Compare::present(&log_key)])
            .and_then(vec![TxnOp::put(&key, holder.as_bytes().to_vec())]);
        // A put that applied but whose reply was lost is harmless to repeat: the later revision wins.
        let resp = self.kv.txn(txn).await?;
        if !resp.succeeded {
            return Err(log_not_found(log));
        }
        Ok(WriterEpoch { log: log.to_owned(), key, revision: resp.revision })
    }

    /// Creates a segment for the writer holding `epoch`, if the log exists, the segment does not, and no
    /// later writer opened the log (`EpochSuperseded` otherwise).
    ///
    /// Idempotent for its own creator: when the segment exists with exactly the bytes given here (an
    /// earlier call of this writer applied, and its reply was lost), it is returned as created.
    pub async fn create_segment_in_epoch(
        &self,
        log: &str,
        meta: &SegmentMetadata,
        epoch: &WriterEpoch,
    ) -> MetaResult<Versioned<SegmentMetadata>> {
        validate_name("log", log)?;
        let log_key = self.keys.log(log);
        let key = self.keys.segment(log, meta.seg_no);
        let bytes = meta.encode_to_vec();
        let txn = Txn::new()
            .when(vec![Compare::present(&log_key), Compare::absent(&key), epoch.still_current()])
            .and_then(vec![TxnOp::put(&key, bytes.clone())])
            .or_else(vec![TxnOp::get(&log_key), TxnOp::get(&key), TxnOp::get(&epoch.key)]);
        let resp = self.kv.txn(txn).await?;
        if resp.succeeded {
            return Ok(Versioned { value: meta.clone(), revision: resp.revision, create_revision: resp.revision });
        }
        if resp.get_result(0).is_empty() {
            return Err(log_not_found(log));
        }
        if let Some(existing) = resp.get_result(1).first() {
            if existing.value == bytes {
                return versioned(existing);
            }
            return Err(MetaError::SegmentAlreadyExists { log: log.to_owned(), segment: meta.seg_no });
        }
        let current = resp.get_result(2).first().map(|kv| kv.mod_revision).unwrap_or(0);
        Err(MetaError::EpochSuperseded { log: log.to_owned(), mine: epoch.revision, current })
    }

    /// Reads one segment's metadata.
    pub async fn get_segment(&self, log: &str, segment: i64) -> MetaResult<Versioned<SegmentMetadata>> {
        validate_name("log", log)?;
        let kv = self
            .kv
            .get(&self.keys.segment(log, segment))
            .await?
            .ok_or_else(|| MetaError::SegmentNotFound { log: log.to_owned(), segment })?;
        versioned(&kv)
    }

    /// Every segment of the log, sorted by segment id (empty when the log has none or does not exist).
    pub async fn list_segments(&self, log: &str) -> MetaResult<Vec<Versioned<SegmentMetadata>>> {
        validate_name("log", log)?;
        let kvs = self.kv.range(&self.keys.segments_prefix(log)).await?;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            let id = KeyLayout::trailing_id(&kv.key)?;
            let seg: Versioned<SegmentMetadata> = versioned(kv)?;
            if seg.value.seg_no != id {
                return Err(MetaError::Corrupt {
                    key: kv.key.clone(),
                    reason: format!("segNo {} does not match the key", seg.value.seg_no),
                });
            }
            out.push(seg);
        }
        out.sort_by_key(|s| s.value.seg_no);
        Ok(out)
    }

    /// Replaces a segment's metadata if its key still has `expected_revision`; returns the new
    /// revision, which the caller must use for its next update (fixes upstream §14.7).
    ///
    /// When the key already holds exactly `meta` (this caller's earlier attempt applied and its reply
    /// was lost, or another party made the same change), the update has happened: its revision is
    /// returned instead of a conflict, so a retry never mistakes its own write for someone else's.
    pub async fn update_segment(&self, log: &str, meta: &SegmentMetadata, expected_revision: i64) -> MetaResult<i64> {
        validate_name("log", log)?;
        let key = self.keys.segment(log, meta.seg_no);
        let bytes = meta.encode_to_vec();
        let txn = Txn::new()
            .when(vec![Compare::mod_revision_eq(&key, expected_revision)])
            .and_then(vec![TxnOp::put(&key, bytes.clone())])
            .or_else(vec![TxnOp::get(&key)]);
        let resp = self.kv.txn(txn).await?;
        if resp.succeeded {
            return Ok(resp.revision);
        }
        match resp.get_result(0).first() {
            None => Err(MetaError::SegmentNotFound { log: log.to_owned(), segment: meta.seg_no }),
            Some(stored) if stored.value == bytes => Ok(stored.mod_revision),
            Some(_) => Err(MetaError::RevisionConflict { key }),
        }
    }

    /// Deletes a segment's metadata; `SegmentNotFound` when it does not exist.
    pub async fn delete_segment(&self, log: &str, segment: i64) -> MetaResult<()> {
        validate_name("log", log)?;
        let key = self.keys.segment(log, segment);
        let txn = Txn::new().when(vec![Compare::present(&key)]).and_then(vec![TxnOp::delete(&key)]);
        if self.kv.txn(txn).await?.succeeded {
            Ok(())
        } else {
            Err(MetaError::SegmentNotFound { log: log.to_owned(), segment })
        }
    }

    // ---- writer lock -----------------------------------------------------------------------

    /// Takes the writer lock of an existing log at once, or fails with `LockHeld`. The lock is
    /// kept alive in the background and reports loss through [`WriterLock::lost`].
    pub async fn acquire_writer_lock(&self, log: &str) -> MetaResult<WriterLock> {
        validate_name("log", log)?;
        if !self.log_exists(log).await? {
            return Err(log_not_found(log));
        }
        let policy = KeepAlivePolicy {
            ttl: self.options.lock_session_ttl,
            interval: self.options.lock_check_interval,
            max_failures: self.options.lock_max_failures.max(1),
        };
        WriterLock::acquire(self.kv.clone(), &self.keys, log, policy).await
    }

    // ---- readers ---------------------------------------------------------------------------

    /// Registers a reader at `P/readers/<logId>/<reader_name>` under a lease that is kept alive
    /// until the registration is closed or dropped.
    pub async fn register_reader(&self, log_id: i64, info: &ReaderTempInfo) -> MetaResult<ReaderRegistration> {
        validate_name("reader", &info.reader_name)?;
        let ttl = self.options.reader_lease_ttl;
        let policy =
            KeepAlivePolicy { ttl, interval: (ttl / 3).max(Duration::from_millis(100)), max_failures: u32::MAX };
        ReaderRegistration::register(self.kv.clone(), self.keys.reader(log_id, &info.reader_name), info, policy).await
    }

    /// Every registered reader of the log.
    pub async fn list_readers(&self, log_id: i64) -> MetaResult<Vec<ReaderTempInfo>> {
        let kvs = self.kv.range(&self.keys.readers_prefix(log_id)).await?;
        kvs.iter().map(decode).collect()
    }

    // ---- truncation cleanup records --------------------------------------------------------

    /// Reads the cleanup record of a segment, if any.
    pub async fn get_cleanup_status(
        &self,
        log_id: i64,
        segment: i64,
    ) -> MetaResult<Option<Versioned<SegmentCleanupStatus>>> {
        self.kv.get(&self.keys.cleaning(log_id, segment)).await?.as_ref().map(versioned).transpose()
    }

    /// Creates a cleanup record; `KeyAlreadyExists` when one exists.
    pub async fn create_cleanup_status(
        &self,
        status: &SegmentCleanupStatus,
    ) -> MetaResult<Versioned<SegmentCleanupStatus>> {
        self.create_record(self.keys.cleaning(status.log_id, status.segment_id), status).await
    }

    /// Replaces an existing cleanup record (no content CAS, like upstream); returns the new revision.
    pub async fn update_cleanup_status(&self, status: &SegmentCleanupStatus) -> MetaResult<i64> {
        let key = self.keys.cleaning(status.log_id, status.segment_id);
        let txn =
            Txn::new().when(vec![Compare::present(&key)]).and_then(vec![TxnOp::put(&key, status.encode_to_vec())]);
        let resp = self.kv.txn(txn).await?;
        if resp.succeeded { Ok(resp.revision) } else { Err(MetaError::KeyNotFound { key }) }
    }

    /// Deletes a cleanup record (no-op when missing).
    pub async fn delete_cleanup_status(&self, log_id: i64, segment: i64) -> MetaResult<()> {
        self.kv.txn(Txn::new().and_then(vec![TxnOp::delete(self.keys.cleaning(log_id, segment))])).await?;
        Ok(())
    }

    /// Every cleanup record of the log, in key order.
    pub async fn list_cleanup_statuses(&self, log_id: i64) -> MetaResult<Vec<Versioned<SegmentCleanupStatus>>> {
        let kvs = self.kv.range(&self.keys.cleaning_prefix(log_id)).await?;
        kvs.iter().map(versioned).collect()
    }

    // ---- compacted-mark distribution records -----------------------------------------------

    /// Reads the compacted-mark distribution record of a segment, if any.
    pub async fn get_marking_status(
        &self,
        log_id: i64,
        segment: i64,
    ) -> MetaResult<Option<Versioned<SegmentCompactedNotifyStatus>>> {
        self.kv.get(&self.keys.marking(log_id, segment)).await?.as_ref().map(versioned).transpose()
    }

    /// Creates a marking record; `KeyAlreadyExists` when one exists.
    pub async fn create_marking_status(
        &self,
        status: &SegmentCompactedNotifyStatus,
    ) -> MetaResult<Versioned<SegmentCompactedNotifyStatus>> {
        self.create_record(self.keys.marking(status.log_id, status.segment_id), status).await
    }

    /// Writes `value` at `key` only if the key is absent; `KeyAlreadyExists` otherwise.
    async fn create_record<M: Message + Clone>(&self, key: String, value: &M) -> MetaResult<Versioned<M>> {
        let txn = Txn::new().when(vec![Compare::absent(&key)]).and_then(vec![TxnOp::put(&key, value.encode_to_vec())]);
        let resp = self.kv.txn(txn).await?;
        if resp.succeeded {
            Ok(Versioned { value: value.clone(), revision: resp.revision, create_revision: resp.revision })
        } else {
            Err(MetaError::KeyAlreadyExists { key })
        }
    }

    /// Replaces a marking record if it still has `expected_revision` (so an operator's confirmation
    /// is never clobbered); returns the new revision. `KeyNotFound` when it was deleted.
    pub async fn update_marking_status(
        &self,
        status: &SegmentCompactedNotifyStatus,
        expected_revision: i64,
    ) -> MetaResult<i64> {
        let key = self.keys.marking(status.log_id, status.segment_id);
        let txn = Txn::new()
            .when(vec![Compare::mod_revision_eq(&key, expected_revision)])
            .and_then(vec![TxnOp::put(&key, status.encode_to_vec())])
            .or_else(vec![TxnOp::get(&key)]);
        let resp = self.kv.txn(txn).await?;
        if resp.succeeded {
            Ok(resp.revision)
        } else if resp.get_result(0).is_empty() {
            Err(MetaError::KeyNotFound { key })
        } else {
            Err(MetaError::RevisionConflict { key })
        }
    }

    /// Deletes a marking record (no-op when missing).
    pub async fn delete_marking_status(&self, log_id: i64, segment: i64) -> MetaResult<()> {
        self.kv.txn(Txn::new().and_then(vec![TxnOp::delete(self.keys.marking(log_id, segment))])).await?;
        Ok(())
    }

    /// Every marking record of the log, in key order.
    pub async fn list_marking_statuses(&self, log_id: i64) -> MetaResult<Vec<Versioned<SegmentCompactedNotifyStatus>>> {
        let kvs = self.kv.range(&self.keys.marking_prefix(log_id)).await?;
        kvs.iter().map(versioned).collect()
    }

    // ---- condition write -------------------------------------------------------------------

    /// The stored condition-write decision, if any.
    pub async fn get_condition_write(&self) -> MetaResult<Option<bool>> {
        let key = self.keys.condition_write();
        self.kv.get(&key).await?.map(|kv| parse_bool(&kv)).transpose()
    }

    /// Stores `enabled` unless a decision is already stored; returns the stored decision.
    pub async fn store_condition_write_if_absent(&self, enabled: bool) -> MetaResult<bool> {
        let key = self.keys.condition_write();
        let txn = Txn::new()
            .when(vec![Compare::absent(&key)])
            .and_then(vec![TxnOp::put(&key, bool_text(enabled))])
            .or_else(vec![TxnOp::get(&key)]);
        let resp = self.kv.txn(txn).await?;
        if resp.succeeded {
            return Ok(enabled);
        }
        match resp.get_result(0).first() {
            Some(kv) => parse_bool(kv),
            None => Err(MetaError::KeyNotFound { key }),
        }
    }

    /// Stores `enabled` unconditionally (upstream only ever stores `true` this way).
    pub async fn store_condition_write(&self, enabled: bool) -> MetaResult<()> {
        let key = self.keys.condition_write();
        self.kv.txn(Txn::new().and_then(vec![TxnOp::put(key, bool_text(enabled))])).await?;
        Ok(())
    }

    fn not_initialised(&self, key: &str) -> MetaError {
        MetaError::NotInitialised { prefix: self.prefix().to_owned(), key: key.to_owned() }
    }
}

/// One read-only transaction: does anything exist under the legacy prefix?
async fn legacy_prefix_in_use(kv: &dyn KvBackend) -> MetaResult<bool> {
    let (keys, prefixes) = keys::legacy_probe();
    let mut ops: Vec<TxnOp> = keys.into_iter().map(TxnOp::get).collect();
    ops.extend(prefixes.into_iter().map(|prefix| TxnOp::GetPrefix { prefix, limit: Some(1) }));
    let n = ops.len();
    let resp = kv.txn(Txn::new().and_then(ops)).await?;
    Ok((0..n).any(|i| !resp.get_result(i).is_empty()))
}

fn log_not_found(name: &str) -> MetaError {
    MetaError::LogNotFound { name: name.to_owned() }
}

fn decode<M: Message + Default>(kv: &KeyValue) -> MetaResult<M> {
    M::decode(kv.value.as_slice()).map_err(|e| MetaError::Corrupt {
        key: kv.key.clone(),
        reason: format!("cannot decode {}: {e}", std::any::type_name::<M>()),
    })
}

fn versioned<M: Message + Default>(kv: &KeyValue) -> MetaResult<Versioned<M>> {
    Ok(Versioned { value: decode(kv)?, revision: kv.mod_revision, create_revision: kv.create_revision })
}

fn parse_counter(kv: &KeyValue) -> MetaResult<i64> {
    std::str::from_utf8(&kv.value).ok().and_then(|s| s.trim().parse::<i64>().ok()).ok_or_else(|| MetaError::Corrupt {
        key: kv.key.clone(),
        reason: format!("counter is not decimal text: {:?}", String::from_utf8_lossy(&kv.value)),
    })
}

fn parse_bool(kv: &KeyValue) -> MetaResult<bool> {
    match kv.value.as_slice() {
        b"true" => Ok(true),
        b"false" => Ok(false),
        other => Err(MetaError::Corrupt {
            key: kv.key.clone(),
            reason: format!("expected \"true\" or \"false\", found {:?}", String::from_utf8_lossy(other)),
        }),
    }
}

fn bool_text(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn unix_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
