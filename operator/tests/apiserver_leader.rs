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

/// Two `woodpecker-operator run --leader-elect` processes: exactly one leads (metrics gauge and
/// the Lease agree); when the leader is killed the other takes over and reconciles.
#[tokio::test]
async fn two_operator_processes_elect_one_leader_and_fail_over() {
    use std::process::{Child, Command, Stdio};

    use kube::api::PostParams;
    use woodpecker_crds::WoodpeckerCluster;

    struct Proc(Child);
    impl Drop for Proc {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
    }
    let client = client().await;
    apiserver_support::install_crd(&client).await;
    let ns = TestNamespace::new(&client, "ha").await;
    let spawn = |port: u16, id: &str| {
        Proc(
            Command::new(env!("CARGO_BIN_EXE_woodpecker-operator"))
                .args(["run", "--leader-elect", "--namespace", &ns.name])
                .args(["--lease-duration-seconds", "4", "--lease-renew-deadline-seconds", "3"])
                .args(["--lease-retry-seconds", "1", "--metrics-addr", &format!("127.0.0.1:{port}")])
                .env("KUBECONFIG", apiserver_support::kubeconfig_path())
                .env("POD_NAME", id)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawning woodpecker-operator"),
        )
    };
    let (pa, pb) = (free_port(), free_port());
    let mut a = Some(spawn(pa, "op-a"));
    let mut b = Some(spawn(pb, "op-b"));

    async fn gauge(port: u16) -> Option<u8> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        body.lines()
            .find(|l| l.starts_with("woodpecker_operator_leader "))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let first = apiserver_support::wait_for("exactly one leader", Duration::from_secs(30), || async {
        let (ga, gb) = (gauge(pa).await?, gauge(pb).await?);
        let holder = leases.get("woodpecker-operator-leader").await.ok()?.spec?.holder_identity?;
        (ga + gb == 1).then_some((if ga == 1 { "op-a" } else { "op-b" }, holder))
    })
    .await;
    assert!(first.1.starts_with(first.0), "the Lease holder {} is the process reporting leader {}", first.1, first.0);

    // Kill the leader hard (no release): the follower takes over after expiry and reconciles.
    let (survivor_port, survivor) = if first.0 == "op-a" {
        drop(a.take());
        (pb, "op-b")
    } else {
        drop(b.take());
        (pa, "op-a")
    };
    apiserver_support::wait_for("the follower to take over", Duration::from_secs(30), || async {
        let holder = leases.get("woodpecker-operator-leader").await.ok()?.spec?.holder_identity?;
        (holder.starts_with(survivor) && gauge(survivor_port).await? == 1).then_some(())
    })
    .await;
    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    let cr: WoodpeckerCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "woodpecker.zilliz.io/v1alpha1", "kind": "WoodpeckerCluster",
        "metadata": {"name": "wal"}, "spec": {"replicas": 3},
    }))
    .expect("cluster");
    clusters.create(&PostParams::default(), &cr).await.expect("creating a cluster");
    apiserver_support::wait_for("the new leader to reconcile", Duration::from_secs(30), || async {
        clusters.get("wal").await.ok()?.status?.observed_generation.map(|_| ())
    })
    .await;

    // SIGTERM: the leader stops reconciling, then releases the Lease (no wait for expiry).
    let survivor_proc = if survivor == "op-a" { a.as_ref() } else { b.as_ref() };
    let pid = survivor_proc.expect("survivor process").0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
    assert!(status.success());
    apiserver_support::wait_for("the Lease released on SIGTERM", Duration::from_secs(10), || async {
        let spec = leases.get("woodpecker-operator-leader").await.ok()?.spec?;
        spec.holder_identity.is_none().then_some(())
    })
    .await;
    drop((a, b));
}
