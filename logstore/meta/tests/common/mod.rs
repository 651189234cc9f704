//! Behaviour shared by every backend: each scenario runs against etcd and the embedded store.
#![allow(dead_code)]

pub mod scenarios;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tempfile::TempDir;
use woodpecker_meta::{
    Compare, EmbeddedKv, EtcdKv, EtcdOptions, KeyValue, KvBackend, LeaseId, LeaseKeeper, MetaError, MetaResult,
    MetadataStore, StoreOptions, Txn, TxnOp, TxnOpResult, TxnResponse,
};

/// One backend plus a root path no other test uses.
pub struct Fixture {
    pub kv: Arc<dyn KvBackend>,
    pub root: String,
    /// Whether this test is the only writer of the backend (exact revision deltas hold).
    pub exclusive: bool,
    pub _dir: Option<TempDir>,
}

/// Options that make lock-loss detection fast enough for tests.
pub fn fast_options() -> StoreOptions {
    StoreOptions {
        lock_check_interval: Duration::from_millis(200),
        reader_lease_ttl: Duration::from_secs(2),
        ..StoreOptions::default()
    }
}

impl Fixture {
    /// A store under this fixture's root path with `meta.prefix = woodpecker`, not yet initialised.
    pub async fn raw_store(&self) -> MetadataStore {
        MetadataStore::with_backend(self.kv.clone(), &self.root, "woodpecker")
            .await
            .expect("open store")
            .with_options(fast_options())
    }

    /// An initialised store under this fixture's root path.
    pub async fn store(&self) -> MetadataStore {
        let store = self.raw_store().await;
        store.init_if_necessary().await.expect("init_if_necessary");
        store
    }
}

/// The etcd endpoints of the test bed; integration tests never skip silently.
pub fn etcd_endpoints() -> Vec<String> {
    let raw = std::env::var("WP_ETCD_ENDPOINTS").unwrap_or_else(|_| {
        panic!(
            "WP_ETCD_ENDPOINTS is not set: start the test bed (`scripts/testbed.sh start` then \
             `eval \"$(scripts/testbed.sh env)\"`) so these tests run against a real etcd"
        )
    });
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// A fresh etcd fixture with a unique root path.
pub async fn etcd_fixture() -> Fixture {
    let kv = EtcdKv::connect(&etcd_endpoints(), &EtcdOptions::default()).await.expect("connect to the test bed etcd");
    Fixture { kv: Arc::new(kv), root: format!("meta-test-{}", uuid::Uuid::new_v4()), exclusive: false, _dir: None }
}

/// A fresh embedded fixture in its own temporary directory.
pub async fn embedded_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = EmbeddedKv::open(dir.path()).await.expect("open embedded store");
    Fixture { kv: Arc::new(kv), root: format!("meta-test-{}", uuid::Uuid::new_v4()), exclusive: true, _dir: Some(dir) }
}

/// Polls `cond` every 50 ms until it holds, failing with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every key under `prefix`, for golden and cleanup checks.
pub async fn keys_under(kv: &Arc<dyn KvBackend>, prefix: &str) -> Vec<String> {
    kv.range(prefix).await.expect("range").into_iter().map(|kv| kv.key).collect()
}

/// A backend seen through a key namespace (like etcd's `namespace` package), so a test can
/// exercise absolute prefixes such as the legacy `woodpecker/` without touching other tests.
#[derive(Debug)]
pub struct NamespacedKv {
    pub inner: Arc<dyn KvBackend>,
    pub ns: String,
}

impl NamespacedKv {
    fn wrap(&self, key: &str) -> String {
        format!("{}{key}", self.ns)
    }
    fn unwrap_kv(&self, mut kv: KeyValue) -> KeyValue {
        kv.key = kv.key.strip_prefix(&self.ns).unwrap_or(&kv.key).to_owned();
        kv
    }
    fn wrap_op(&self, op: &TxnOp) -> TxnOp {
        match op {
            TxnOp::Put { key, value, lease } => TxnOp::Put { key: self.wrap(key), value: value.clone(), lease: *lease },
            TxnOp::Delete { key } => TxnOp::Delete { key: self.wrap(key) },
            TxnOp::DeletePrefix { prefix } => TxnOp::DeletePrefix { prefix: self.wrap(prefix) },
            TxnOp::Get { key } => TxnOp::Get { key: self.wrap(key) },
            TxnOp::GetPrefix { prefix, limit } => TxnOp::GetPrefix { prefix: self.wrap(prefix), limit: *limit },
        }
    }
}

#[async_trait]
impl KvBackend for NamespacedKv {
    fn describe(&self) -> String {
        format!("{} (namespace {})", self.inner.describe(), self.ns)
    }
    async fn get(&self, key: &str) -> MetaResult<Option<KeyValue>> {
        Ok(self.inner.get(&self.wrap(key)).await?.map(|kv| self.unwrap_kv(kv)))
    }
    async fn range(&self, prefix: &str) -> MetaResult<Vec<KeyValue>> {
        Ok(self.inner.range(&self.wrap(prefix)).await?.into_iter().map(|kv| self.unwrap_kv(kv)).collect())
    }
    async fn txn(&self, txn: Txn) -> MetaResult<TxnResponse> {
        let wrapped = Txn {
            compares: txn
                .compares
                .iter()
                .map(|c| Compare { key: self.wrap(&c.key), op: c.op, target: c.target.clone() })
                .collect(),
            success: txn.success.iter().map(|op| self.wrap_op(op)).collect(),
            failure: txn.failure.iter().map(|op| self.wrap_op(op)).collect(),
        };
        let mut resp = self.inner.txn(wrapped).await?;
        for r in &mut resp.results {
            if let TxnOpResult::Get(kvs) = r {
                *kvs = std::mem::take(kvs).into_iter().map(|kv| self.unwrap_kv(kv)).collect();
            }
        }
        Ok(resp)
    }
    async fn grant_lease(&self, ttl: Duration) -> MetaResult<LeaseId> {
        self.inner.grant_lease(ttl).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> MetaResult<()> {
        self.inner.revoke_lease(lease).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> MetaResult<Box<dyn LeaseKeeper>> {
        self.inner.keep_alive(lease).await
    }
}

/// A backend whose next transaction, once armed, is applied and then reported as failed with a
/// transient error: the reply lost after the write applied.
#[derive(Debug)]
pub struct ReplyLosingKv {
    pub inner: Arc<dyn KvBackend>,
    armed: std::sync::atomic::AtomicBool,
}

impl ReplyLosingKv {
    pub fn new(inner: Arc<dyn KvBackend>) -> Self {
        Self { inner, armed: std::sync::atomic::AtomicBool::new(false) }
    }
    /// The next transaction applies, and its caller is told it failed.
    pub fn lose_next_reply(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl KvBackend for ReplyLosingKv {
    fn describe(&self) -> String {
        format!("{} (losing replies)", self.inner.describe())
    }
    async fn get(&self, key: &str) -> MetaResult<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn range(&self, prefix: &str) -> MetaResult<Vec<KeyValue>> {
        self.inner.range(prefix).await
    }
    async fn txn(&self, txn: Txn) -> MetaResult<TxnResponse> {
        let resp = self.inner.txn(txn).await?;
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(MetaError::Unreachable {
                endpoints: vec![self.inner.describe()],
                source: "the reply was lost after the transaction applied (injected)".into(),
            });
        }
        Ok(resp)
    }
    async fn grant_lease(&self, ttl: Duration) -> MetaResult<LeaseId> {
        self.inner.grant_lease(ttl).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> MetaResult<()> {
        self.inner.revoke_lease(lease).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> MetaResult<Box<dyn LeaseKeeper>> {
        self.inner.keep_alive(lease).await
    }
}

/// Generates one `#[tokio::test]` per shared scenario for the fixture constructor `$make`.
#[macro_export]
macro_rules! backend_suite {
    ($make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $make().await;
                common::scenarios::$name(&fixture).await;
            }
        )*
    };
}

/// The list of shared scenarios, so both backends run exactly the same set.
#[macro_export]
macro_rules! all_scenarios {
    ($make:path) => {
        $crate::backend_suite!($make;
            create_exists_list_delete_log,
            concurrent_create_of_one_name_has_exactly_one_winner,
            log_ids_increase_from_one,
            missing_log_is_not_found_and_not_retryable,
            invalid_log_names_are_rejected,
            create_log_before_init_reports_not_initialised,
            init_is_idempotent_and_detects_partial_init,
            segment_create_conflicts_and_missing_log,
            segments_list_sorted_by_numeric_id,
            cas_updates_return_new_revision_and_detect_conflicts,
            delete_log_parks_copies_and_removes_everything,
            second_writer_lock_is_refused_until_release,
            dropped_writer_lock_becomes_acquirable,
            writer_lock_is_lost_when_its_lease_is_revoked,
            reader_registration_outlives_its_lease_ttl_while_held,
            condition_write_is_stored_once,
            cleanup_records_lifecycle,
            marking_records_use_revision_cas,
            legacy_prefix_wins_when_it_holds_data,
            golden_keys_for_a_log_with_two_segments,
            kv_revisions_follow_etcd_semantics,
            kv_txn_compares_choose_the_branch,
            kv_leases_bind_keys,
            a_later_writer_epoch_stops_segment_creation_by_earlier_writers,
            writes_whose_reply_was_lost_are_recognised_by_their_writer_on_retry,
        );
    };
}
