//! Writer-lock loss detection when keep-alives fail (the store becomes unreachable), driven by a
//! fault-injecting wrapper around the embedded backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use woodpecker_meta::{
    EmbeddedKv, KeyValue, KvBackend, LeaseId, LeaseKeeper, MetaError, MetaResult, MetadataStore, StoreOptions, Txn,
    TxnResponse,
};

/// Fails the next `fail_next` keep-alives as if etcd were unreachable.
#[derive(Debug)]
struct FlakyKeepAlive {
    inner: EmbeddedKv,
    fail_next: Arc<AtomicU32>,
    attempts: Arc<AtomicU32>,
}

struct FlakyKeeper {
    inner: Box<dyn LeaseKeeper>,
    fail_next: Arc<AtomicU32>,
    attempts: Arc<AtomicU32>,
}

#[async_trait]
impl LeaseKeeper for FlakyKeeper {
    async fn keep_alive_once(&mut self) -> MetaResult<i64> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let failing = self.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if failing {
            return Err(MetaError::Unreachable { endpoints: vec!["fault-injected".to_owned()], source: "down".into() });
        }
        self.inner.keep_alive_once().await
    }
}

#[async_trait]
impl KvBackend for FlakyKeepAlive {
    fn describe(&self) -> String {
        "flaky".to_owned()
    }
    async fn get(&self, key: &str) -> MetaResult<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn range(&self, prefix: &str) -> MetaResult<Vec<KeyValue>> {
        self.inner.range(prefix).await
    }
    async fn txn(&self, txn: Txn) -> MetaResult<TxnResponse> {
        self.inner.txn(txn).await
    }
    async fn grant_lease(&self, ttl: Duration) -> MetaResult<LeaseId> {
        self.inner.grant_lease(ttl).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> MetaResult<()> {
        self.inner.revoke_lease(lease).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> MetaResult<Box<dyn LeaseKeeper>> {
        Ok(Box::new(FlakyKeeper {
            inner: self.inner.keep_alive(lease).await?,
            fail_next: self.fail_next.clone(),
            attempts: self.attempts.clone(),
        }))
    }
}

struct Setup {
    store: MetadataStore,
    fail_next: Arc<AtomicU32>,
    attempts: Arc<AtomicU32>,
    _dir: tempfile::TempDir,
}

async fn setup(options: StoreOptions) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let fail_next = Arc::new(AtomicU32::new(0));
    let attempts = Arc::new(AtomicU32::new(0));
    let kv = FlakyKeepAlive {
        inner: EmbeddedKv::open(dir.path()).await.expect("open"),
        fail_next: fail_next.clone(),
        attempts: attempts.clone(),
    };
    let store =
        MetadataStore::with_backend(Arc::new(kv), "t", "woodpecker").await.expect("store").with_options(options);
    store.init_if_necessary().await.expect("init");
    store.create_log("l").await.expect("create");
    Setup { store, fail_next, attempts, _dir: dir }
}

async fn wait_attempts(counter: &AtomicU32, at_least: u32) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while counter.load(Ordering::SeqCst) < at_least {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("keep-alives keep being attempted");
}

#[tokio::test]
async fn fewer_failures_than_the_limit_keep_the_lock() {
    let s = setup(StoreOptions {
        lock_check_interval: Duration::from_millis(50),
        lock_max_failures: 5,
        ..StoreOptions::default()
    })
    .await;
    let lock = s.store.acquire_writer_lock("l").await.expect("lock");
    s.fail_next.store(4, Ordering::SeqCst);
    // Four failures, then at least two successes.
    wait_attempts(&s.attempts, 6).await;
    assert!(lock.is_valid(), "four failures in a row stay below the limit of five");
    lock.release().await.expect("release");
}

#[tokio::test]
async fn consecutive_keepalive_failures_lose_the_lock() {
    let s = setup(StoreOptions {
        lock_check_interval: Duration::from_millis(50),
        lock_max_failures: 5,
        ..StoreOptions::default()
    })
    .await;
    let lock = s.store.acquire_writer_lock("l").await.expect("lock");
    s.fail_next.store(u32::MAX, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), lock.lost()).await.expect("lost after five failures");
    assert!(s.attempts.load(Ordering::SeqCst) >= 5);
    assert!(matches!(lock.check(), Err(MetaError::LockLost { .. })));
}

#[tokio::test]
async fn no_successful_keepalive_for_a_whole_ttl_loses_the_lock() {
    let s = setup(StoreOptions {
        lock_session_ttl: Duration::from_secs(1),
        lock_check_interval: Duration::from_millis(100),
        lock_max_failures: u32::MAX,
        ..StoreOptions::default()
    })
    .await;
    let lock = s.store.acquire_writer_lock("l").await.expect("lock");
    s.fail_next.store(u32::MAX, Ordering::SeqCst);
    // The server may already have expired the lease: stop trusting it after one TTL.
    tokio::time::timeout(Duration::from_secs(5), lock.lost()).await.expect("lost after one TTL without refresh");
    assert!(!lock.is_valid());
}
