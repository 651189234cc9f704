//! Against the real kube-apiserver: leader election over a coordination.k8s.io Lease — one
//! leader at a time, renewals keep it, a crashed leader's lease expires and is taken over, and a
//! released lease is taken over at once.

mod apiserver_support;

use std::time::{Duration, Instant};

use apiserver_support::{TestNamespace, client};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use woodpecker_operator::leader::{LeaderElector, LeaseConfig, LeaseState};

fn cfg(ns: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
        ..LeaseConfig::new("leader-test", ns, identity)
    }
}

#[tokio::test]
async fn one_leader_at_a_time_expired_lease_is_taken_over_released_lease_at_once() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "lease").await;
    let a = LeaderElector::new(client.clone(), cfg(&ns.name, "a"));
    let b = LeaderElector::new(client.clone(), cfg(&ns.name, "b"));

    assert_eq!(a.try_acquire_or_renew().await.expect("a acquires"), LeaseState::Leader);
    assert_eq!(
        b.try_acquire_or_renew().await.expect("b tries"),
        LeaseState::Follower { holder: "a".into() },
        "a valid lease must not be taken over"
    );
    // Renewal keeps the lease past its duration.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(a.try_acquire_or_renew().await.expect("a renews"), LeaseState::Leader);
        assert!(matches!(b.try_acquire_or_renew().await.expect("b tries"), LeaseState::Follower { .. }));
    }

    // a "crashes" (stops renewing): b takes over only after the lease expired.
    let crashed_at = Instant::now();
    let taken = loop {
        if b.try_acquire_or_renew().await.expect("b tries") == LeaseState::Leader {
            break crashed_at.elapsed();
        }
        assert!(crashed_at.elapsed() < Duration::from_secs(15), "b never took over the expired lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(taken >= Duration::from_secs(2), "b took over after {taken:?}, before the 3 s lease could expire");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let lease = leases.get("leader-test").await.expect("lease");
    let spec = lease.spec.expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    // The old leader learns it lost.
    assert_eq!(a.try_acquire_or_renew().await.expect("a tries"), LeaseState::Follower { holder: "b".into() });

    // A released lease is free at once.
    b.release().await.expect("b releases");
    let start = Instant::now();
    assert_eq!(a.try_acquire_or_renew().await.expect("a acquires"), LeaseState::Leader);
    assert!(start.elapsed() < Duration::from_secs(2));
}
