//! Against the real kube-apiserver: leader election over a coordination.k8s.io Lease — one
//! leader at a time, renewals keep it, a crashed leader's lease expires and is taken over, a
//! released lease is taken over at once, a leader whose renewal hangs stops within the renew
//! deadline, and clock skew between holder and candidate changes nothing.

mod apiserver_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiserver_support::stalling_proxy::StallingProxy;
use apiserver_support::{TestNamespace, client, config};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;
use woodpecker_operator::leader::{LeaderElector, LeaseConfig, LeaseState, Tenure};

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
    use kube::api::PostParams;
    use woodpecker_crds::WoodpeckerCluster;

    let client = client().await;
    apiserver_support::install_crd(&client).await;
    let ns = TestNamespace::new(&client, "ha").await;
    let kubeconfig = apiserver_support::kubeconfig_path();
    let spawn = |port: u16, id: &str| spawn_operator(&kubeconfig, &ns.name, port, id, ["4", "3", "1"]);
    let (pa, pb) = (free_port(), free_port());
    let mut a = Some(spawn(pa, "op-a"));
    let mut b = Some(spawn(pb, "op-b"));

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
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
    assert!(status.success());
    apiserver_support::wait_for("the Lease released on SIGTERM", Duration::from_secs(10), || async {
        let spec = leases.get("woodpecker-operator-leader").await.ok()?.spec?;
        spec.holder_identity.is_none().then_some(())
    })
    .await;
    drop((a, b));
}

/// What each candidate's work reports: (when, who, started or stopped).
type Timeline = Arc<Mutex<Vec<(Instant, &'static str, bool)>>>;

/// The work a leader runs: reports "started" when it runs and "stopped" when it is dropped or ends.
fn reporting_work(
    who: &'static str,
    timeline: Timeline,
) -> impl FnOnce(CancellationToken) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    struct Stopped(&'static str, Timeline);
    impl Drop for Stopped {
        fn drop(&mut self) {
            self.1.lock().expect("timeline").push((Instant::now(), self.0, false));
        }
    }
    move |stop| {
        Box::pin(async move {
            timeline.lock().expect("timeline").push((Instant::now(), who, true));
            let _stopped = Stopped(who, timeline);
            stop.cancelled().await;
        })
    }
}

fn event(timeline: &Timeline, who: &str, started: bool) -> Option<Instant> {
    timeline.lock().expect("timeline").iter().find(|e| e.1 == who && e.2 == started).map(|e| e.0)
}

/// A leader whose renewal hangs (a proxy stops forwarding without closing; the client has no
/// read timeout) stops its work within the renew deadline; the other candidate takes over only
/// after the lease duration, and at no instant do both report leading.
#[tokio::test]
async fn hung_renewal_stops_the_leader_within_the_renew_deadline_before_anyone_takes_over() {
    let admin = client().await;
    let ns = TestNamespace::new(&admin, "lease-hung").await;
    let (duration, deadline, retry) = (Duration::from_secs(4), Duration::from_secs(2), Duration::from_millis(250));
    let timings = |id: &str| LeaseConfig {
        lease_duration: duration,
        renew_deadline: deadline,
        retry_period: retry,
        ..LeaseConfig::new("hung", &ns.name, id)
    };

    // a reaches the apiserver only through the proxy.
    let mut via_proxy = config().await;
    let upstream = via_proxy.cluster_url.authority().expect("apiserver address").as_str().to_string();
    let upstream = tokio::net::lookup_host(&upstream).await.expect("resolving the apiserver").next().expect("address");
    let proxy = StallingProxy::start(upstream).await;
    via_proxy.cluster_url = format!("https://{}", proxy.addr).parse().expect("proxy url");
    let a = LeaderElector::new(kube::Client::try_from(via_proxy).expect("client via proxy"), timings("a"));
    let b = LeaderElector::new(admin.clone(), timings("b"));

    let timeline: Timeline = Arc::default();
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a_task = {
        let (w, stop) = (reporting_work("a", timeline.clone()), stop_a.clone());
        tokio::spawn(async move { a.lead(&stop, w).await })
    };
    apiserver_support::wait_for("a to lead", Duration::from_secs(10), || async { event(&timeline, "a", true) }).await;
    let b_task = {
        let (w, stop) = (reporting_work("b", timeline.clone()), stop_b.clone());
        tokio::spawn(async move { b.lead(&stop, w).await })
    };
    // a keeps renewing through the proxy: b stays a follower well past the lease duration.
    tokio::time::sleep(duration + Duration::from_secs(1)).await;
    assert!(event(&timeline, "b", true).is_none(), "b took over a lease that a kept renewing");

    let stalled_at = Instant::now();
    proxy.stall();
    let tenure = tokio::time::timeout(deadline + Duration::from_secs(2), a_task)
        .await
        .expect("a still leads long after its renewal hung")
        .expect("a's task");
    assert!(matches!(tenure, Tenure::Lost), "a's tenure ended as {tenure:?}, not Lost");
    let a_stopped = event(&timeline, "a", false).expect("a's work reported stopping");
    let a_after = a_stopped - stalled_at;
    assert!(
        a_after <= deadline + Duration::from_millis(500),
        "a stopped {a_after:?} after its renewals hung; the renew deadline is {deadline:?}"
    );

    let b_started = apiserver_support::wait_for("b to take over", Duration::from_secs(15), || async {
        event(&timeline, "b", true)
    })
    .await;
    // a's last renewal reached the apiserver at most one retry period (plus a round trip, allowed
    // generously for a loaded machine) before the stall; b times the lease from when it saw that
    // renewal. Taking over at the renew deadline (2 s) or at the first hang would fail this.
    let b_after = b_started - stalled_at;
    assert!(
        b_after >= duration - retry - Duration::from_millis(500),
        "b took over {b_after:?} after a's last renewals, before the {duration:?} lease could expire"
    );
    eprintln!("after the stall: a stopped leading at {a_after:?}, b took over at {b_after:?}");
    // Never two leaders: replay what each reported.
    let mut leading = 0;
    for (at, who, started) in timeline.lock().expect("timeline").iter() {
        leading += if *started { 1 } else { -1 };
        assert!(leading <= 1, "two candidates led at once ({who} started at {:?})", *at - stalled_at);
    }
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &ns.name);
    let spec = leases.get("hung").await.expect("lease").spec.expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));

    stop_b.cancel();
    let tenure = tokio::time::timeout(Duration::from_secs(10), b_task).await.expect("b stops").expect("b's task");
    assert!(matches!(tenure, Tenure::Finished(())), "b's tenure ended as {tenure:?}");
    drop(proxy);
}

/// One skewed-clock scenario: a holder whose `renewTime` is `skew` away from our clock.
async fn skewed_holder_is_kept_while_alive_and_taken_over_when_silent(client: kube::Client, ns: String, skew: i64) {
    let name = format!("skew-{}", if skew < 0 { "past" } else { "future" });
    let duration = Duration::from_secs(3);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let skewed_now = move || MicroTime(Timestamp::now() + SignedDuration::from_secs(skew));
    let lease = Lease {
        metadata: ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some("skewed".into()),
            lease_duration_seconds: Some(3),
            acquire_time: Some(skewed_now()),
            renew_time: Some(skewed_now()),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    };
    leases.create(&PostParams::default(), &lease).await.expect("creating the skewed lease");

    // The live holder renews every 500 ms, stamping its own (skewed) clock.
    let silent = CancellationToken::new();
    let last_write: Arc<Mutex<Instant>> = Arc::new(Mutex::new(Instant::now()));
    let keeper = {
        let (leases, name, silent, last_write) = (leases.clone(), name.clone(), silent.clone(), last_write.clone());
        tokio::spawn(async move {
            while !silent.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Ok(mut l) = leases.get(&name).await else { continue };
                if let Some(spec) = l.spec.as_mut() {
                    spec.renew_time = Some(skewed_now());
                }
                // Timed before sending: no candidate can see the write earlier than this.
                let sent = Instant::now();
                if leases.replace(&name, &PostParams::default(), &l).await.is_ok() {
                    *last_write.lock().expect("last write") = sent;
                }
            }
        })
    };
    let candidate = LeaderElector::new(
        client.clone(),
        LeaseConfig {
            lease_duration: duration,
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(200),
            ..LeaseConfig::new(&name, &ns, "candidate")
        },
    );
    let alive_until = Instant::now() + duration * 3;
    while Instant::now() < alive_until {
        let state = candidate.try_acquire_or_renew().await.expect("candidate tries");
        assert_eq!(
            state,
            LeaseState::Follower { holder: "skewed".into() },
            "a live holder whose clock is {skew} s off was taken over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    silent.cancel();
    keeper.await.expect("keeper");
    let last = *last_write.lock().expect("last write");
    let taken = loop {
        if candidate.try_acquire_or_renew().await.expect("candidate tries") == LeaseState::Leader {
            break last.elapsed();
        }
        assert!(last.elapsed() < duration * 4, "a silent holder whose clock is {skew} s off was never taken over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("holder {skew} s off: taken over {taken:?} after its last write");
    assert!(taken >= duration, "the silent holder ({skew} s skew) was taken over {taken:?} after its last renewal");
    assert!(
        taken <= duration + Duration::from_secs(1),
        "the silent holder ({skew} s skew) was taken over only {taken:?} after its last renewal"
    );
}

/// Expiry is decided on the candidate's own clock: a live holder whose timestamps are an hour in
/// the past is not taken over, and a silent holder whose timestamps are an hour in the future is
/// taken over one lease duration after its last write.
#[tokio::test]
async fn clock_skew_neither_expires_a_live_holder_nor_keeps_a_silent_one() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "lease-skew").await;
    tokio::join!(
        skewed_holder_is_kept_while_alive_and_taken_over_when_silent(client.clone(), ns.name.clone(), -3600),
        skewed_holder_is_kept_while_alive_and_taken_over_when_silent(client.clone(), ns.name.clone(), 3600),
    );
}

/// A `woodpecker-operator` child process, killed on drop.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `woodpecker-operator run --leader-elect` in `ns` against the apiserver of `kubeconfig`, metrics on
/// `port`; `lease` is (duration, renew deadline, retry) in seconds.
fn spawn_operator(kubeconfig: &str, ns: &str, port: u16, id: &str, lease: [&str; 3]) -> Proc {
    use std::process::{Command, Stdio};
    Proc(
        Command::new(env!("CARGO_BIN_EXE_woodpecker-operator"))
            .args(["run", "--leader-elect", "--namespace", ns])
            .args(["--lease-duration-seconds", lease[0], "--lease-renew-deadline-seconds", lease[1]])
            .args(["--lease-retry-seconds", lease[2], "--metrics-addr", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", id)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning woodpecker-operator"),
    )
}

/// The `woodpecker_operator_leader` gauge a process reports on its metrics port.
async fn gauge(port: u16) -> Option<u8> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    body.lines().find(|l| l.starts_with("woodpecker_operator_leader ")).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The real binary: a leader whose apiserver connection stalls (every call hangs, nothing is
/// closed) reports not leading and exits within the renew deadline; the other process reports
/// leading only after the lease expired; polled every 20 ms, the two gauges never both say 1.
#[tokio::test]
async fn operator_process_whose_renewals_hang_exits_before_the_other_leads() {
    let client = client().await;
    apiserver_support::install_crd(&client).await;
    let ns = TestNamespace::new(&client, "ha-hung").await;
    let (duration, deadline, retry) = (Duration::from_secs(4), Duration::from_secs(2), Duration::from_secs(1));
    let lease = ["4", "2", "1"];

    // a's kubeconfig points at the proxy; TLS still verifies 127.0.0.1.
    let direct = apiserver_support::kubeconfig_path();
    let upstream = config().await.cluster_url.authority().expect("apiserver address").as_str().to_string();
    let upstream = tokio::net::lookup_host(&upstream).await.expect("resolving the apiserver").next().expect("address");
    let proxy = StallingProxy::start(upstream).await;
    let text = std::fs::read_to_string(&direct).expect("reading the kubeconfig");
    let proxied = std::env::temp_dir().join(format!("{}-via-proxy.kubeconfig", ns.name));
    std::fs::write(&proxied, text.replace(&format!("https://{upstream}"), &format!("https://{}", proxy.addr)))
        .expect("writing the proxied kubeconfig");
    assert!(std::fs::read_to_string(&proxied).expect("kubeconfig").contains(&proxy.addr.to_string()));

    let (pa, pb) = (free_port(), free_port());
    let mut a = spawn_operator(proxied.to_str().expect("path"), &ns.name, pa, "op-a", lease);
    apiserver_support::wait_for("a to lead", Duration::from_secs(20), || async {
        (gauge(pa).await? == 1).then_some(())
    })
    .await;
    let _b = spawn_operator(&direct, &ns.name, pb, "op-b", lease);
    tokio::time::sleep(duration + Duration::from_secs(1)).await;
    assert_eq!(gauge(pb).await, Some(0), "b leads while a renews");

    let stalled_at = Instant::now();
    proxy.stall();
    let (mut a_exited, mut b_leads) = (None, None);
    while b_leads.is_none() {
        assert!(stalled_at.elapsed() < Duration::from_secs(20), "b never took over");
        let (ga, gb) = (gauge(pa).await, gauge(pb).await);
        assert!(!(ga == Some(1) && gb == Some(1)), "both processes report leading");
        if a_exited.is_none() && a.0.try_wait().expect("a's status").is_some() {
            a_exited = Some(stalled_at.elapsed());
        }
        if gb == Some(1) {
            b_leads = Some(stalled_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a_exited = a_exited.expect("a still runs while b leads");
    let b_leads = b_leads.expect("b leads");
    eprintln!("after the stall: a exited at {a_exited:?}, b reported leading at {b_leads:?}");
    assert!(a_exited <= deadline + Duration::from_secs(1), "a exited {a_exited:?} after its renewals hung");
    assert!(b_leads >= duration - retry - Duration::from_millis(500), "b led {b_leads:?} after the stall");
    let status = a.0.wait().expect("a's exit status");
    assert!(!status.success(), "a lost leadership but exited successfully");
    let _ = std::fs::remove_file(&proxied);
}
