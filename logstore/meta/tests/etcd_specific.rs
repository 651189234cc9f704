//! etcd-only behaviour: unreachable clusters, leases revoked by another client, and interop with
//! etcd's own lock service (the same mutex scheme Go's `concurrency.Mutex` uses).

mod common;

use std::time::{Duration, Instant};

use etcd_client::{Client, LockOptions};
use woodpecker_meta::{EtcdOptions, MetaError, MetadataStore};

#[tokio::test]
async fn unreachable_etcd_fails_within_bounded_time_naming_the_endpoint() {
    let options = EtcdOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        max_attempts: 2,
        retry_backoff: Duration::from_millis(100),
        credentials: None,
        tls: None,
    };
    let started = Instant::now();
    let err = MetadataStore::open_etcd(&["127.0.0.1:1"], "by-dev", "woodpecker", &options)
        .await
        .expect_err("nothing listens on port 1");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(10), "gave up after {elapsed:?}");
    assert!(matches!(&err, MetaError::Unreachable { endpoints, .. } if endpoints == &["127.0.0.1:1"]), "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_is_lost_when_another_client_revokes_the_session() {
    let f = common::etcd_fixture().await;
    let store = f.store().await;
    store.create_log("l").await.expect("create");
    let lock = store.acquire_writer_lock("l").await.expect("lock");
    let mut other = Client::connect(common::etcd_endpoints(), None).await.expect("second client");
    other.lease_revoke(lock.lease_id()).await.expect("revoke from another client");
    tokio::time::timeout(Duration::from_secs(10), lock.lost()).await.expect("lost() must fire");
    assert!(!lock.is_valid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_held_through_etcd_lock_service_is_respected() {
    let f = common::etcd_fixture().await;
    let store = f.store().await;
    store.create_log("l").await.expect("create");
    let mut other = Client::connect(common::etcd_endpoints(), None).await.expect("second client");
    let lease = other.lease_grant(30, None).await.expect("lease").id();
    // etcd's lock service names keys `<name>/<leaseHex>`, exactly like concurrency.Mutex.
    let name = store.keys().lock_key_upstream("l");
    let held = other.lock(name.as_str(), Some(LockOptions::new().with_lease(lease))).await.expect("lock");
    assert_eq!(String::from_utf8_lossy(held.key()), store.keys().lock_key("l", lease));
    assert!(matches!(store.acquire_writer_lock("l").await, Err(MetaError::LockHeld { .. })));
    other.lease_revoke(lease).await.expect("revoke");
    let ours = store.acquire_writer_lock("l").await.expect("free after the other holder left");
    ours.release().await.expect("release");
}
