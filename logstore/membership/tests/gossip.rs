//! Gossip membership over real UDP/TCP sockets on 127.0.0.1 (ephemeral ports).
//!
//! Every wait polls a condition with a bounded deadline and names what it waited for.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use woodpecker_membership::{Gossip, GossipConfig, GossipTimings, Member, Membership, MembershipError};
use woodpecker_proto::logstore::NodeMeta;

const CLUSTER: &str = "woodpecker-test";

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn node_meta(name: &str, az: &str) -> NodeMeta {
    NodeMeta {
        node_id: name.to_owned(),
        resource_group: "default".to_owned(),
        az: az.to_owned(),
        endpoint: format!("{name}.logstore.test:18080"),
        tags: BTreeMap::from([
            ("role".to_owned(), "logstore".to_owned()),
            ("admin_port".to_owned(), "9091".to_owned()),
            ("status".to_owned(), "active".to_owned()),
        ]),
        version: 1,
        region: "region-1".to_owned(),
        ..Default::default()
    }
}

fn config(name: &str, seeds: &[String]) -> GossipConfig {
    GossipConfig {
        node_name: name.to_owned(),
        bind_addr: "127.0.0.1:0".parse().expect("literal address"),
        advertise_addr: None,
        seeds: seeds.to_vec(),
        cluster_name: CLUSTER.to_owned(),
        meta: node_meta(name, &format!("az-{name}")),
        timings: GossipTimings::default(),
    }
}

async fn start(config: GossipConfig) -> Gossip {
    let name = config.node_name.clone();
    Gossip::start(config, CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("gossip node `{name}` does not start: {e}"))
}

fn seed_of(node: &Gossip) -> String {
    node.gossip_addr().to_string()
}

fn live_names(node: &Gossip) -> Vec<String> {
    let mut names: Vec<String> = node.live_nodes().into_iter().map(|m| m.node_id).collect();
    names.sort();
    names
}

fn live_member<'a>(members: &'a [Member], name: &str) -> Option<&'a Member> {
    members.iter().find(|m| m.alive && m.name == name)
}

/// Polls `cond` every 50 ms until it holds; panics after `deadline` with `what` and `state()`.
async fn eventually(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool, state: impl Fn() -> String) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > deadline {
            panic!("{what}: not true after {deadline:?}; state: {}", state());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that `cond` holds on every poll for `window`.
async fn stays(what: &str, window: Duration, mut cond: impl FnMut() -> bool, state: impl Fn() -> String) {
    let start = Instant::now();
    while start.elapsed() < window {
        assert!(cond(), "{what}: broken after {:?}; state: {}", start.elapsed(), state());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn views(nodes: &[&Gossip]) -> String {
    nodes
        .iter()
        .map(|n| {
            let members: Vec<String> = n
                .members()
                .iter()
                .map(|m| format!("{}@{}{}", m.name, m.gossip_addr, if m.alive { "" } else { "(gone)" }))
                .collect();
            format!("{} sees [{}]", n.name(), members.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Starts `a` (no seeds) and `b`, `c` joining through `a` (`c` names it `localhost:port`), and waits
/// until every node sees all three.
async fn three_node_cluster() -> (Gossip, Gossip, Gossip) {
    let a = start(config("a", &[])).await;
    let b = start(config("b", &[seed_of(&a)])).await;
    let c = start(config("c", &[format!("localhost:{}", a.gossip_addr().port())])).await;
    let all = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
    eventually(
        "every node sees a, b and c",
        Duration::from_secs(10),
        || [&a, &b, &c].iter().all(|n| live_names(n) == all),
        || views(&[&a, &b, &c]),
    )
    .await;
    (a, b, c)
}

/// A port that is free for both TCP and UDP on 127.0.0.1 right now.
fn free_port() -> u16 {
    for _ in 0..20 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral TCP port");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_through_one_seed_and_each_sees_all_with_their_meta() {
    init_tracing();
    let (a, b, c) = three_node_cluster().await;
    for observer in [&a, &b, &c] {
        assert!(observer.joined(), "{} should count as joined", observer.name());
        let members = observer.members();
        for subject in [&a, &b, &c] {
            let seen = live_member(&members, subject.name())
                .unwrap_or_else(|| panic!("{} does not see {}", observer.name(), subject.name()));
            assert_eq!(seen.meta, subject.local(), "{} sees stale meta of {}", observer.name(), subject.name());
            assert_eq!(seen.gossip_addr, subject.gossip_addr());
            assert_eq!(seen.meta.cluster_name, CLUSTER);
            assert_eq!(seen.meta.az, format!("az-{}", subject.name()));
            assert_eq!(seen.meta.tags.get("status").map(String::as_str), Some("active"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommissioning_status_set_by_update_local_is_seen_by_the_others() {
    init_tracing();
    let (a, b, c) = three_node_cluster().await;
    let version_before = b.local().version;
    b.update_local(Box::new(|m: &mut NodeMeta| {
        m.tags.insert("status".to_owned(), "decommissioning".to_owned());
    }))
    .await
    .expect("update_local");
    let local = b.local();
    assert_eq!(local.version, version_before + 1, "update_local bumps the version");
    assert_eq!(local.tags.get("status").map(String::as_str), Some("decommissioning"));
    eventually(
        "a and c see b decommissioning with the bumped version",
        Duration::from_secs(5),
        || {
            [&a, &c].iter().all(|n| {
                live_member(&n.members(), "b").is_some_and(|m| {
                    m.meta.tags.get("status").map(String::as_str) == Some("decommissioning")
                        && m.meta.version == local.version
                })
            })
        },
        || views(&[&a, &b, &c]),
    )
    .await;
    // Still live: decommissioning nodes are filtered by SelectNodes, not by membership.
    assert_eq!(live_names(&a), ["a", "b", "c"]);

    let err = b
        .update_local(Box::new(|m: &mut NodeMeta| m.cluster_name = "other".to_owned()))
        .await
        .expect_err("cluster_name cannot change");
    assert!(matches!(err, MembershipError::ImmutableField("cluster_name")), "{err}");
    assert_eq!(b.local(), local, "a refused update changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leave_removes_the_node_from_the_others_within_a_second() {
    init_tracing();
    let (a, b, c) = three_node_cluster().await;
    let started = Instant::now();
    c.leave(Duration::from_secs(5)).await.expect("leave");
    eventually(
        "a and b drop c after its leave",
        Duration::from_secs(1),
        || live_names(&a) == ["a", "b"] && live_names(&b) == ["a", "b"],
        || views(&[&a, &b]),
    )
    .await;
    let took = started.elapsed();
    assert!(c.live_nodes().is_empty(), "a node that left knows no live nodes");
    assert!(!c.joined());
    c.leave(Duration::from_secs(5)).await.expect("leave is idempotent");
    assert!(
        a.members().iter().any(|m| m.name == "c" && !m.alive),
        "a still lists c as gone for a while: {}",
        views(&[&a])
    );
    eprintln!("leave seen by peers after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_stopped_without_leave_is_gone_from_the_others_within_five_seconds() {
    init_tracing();
    let (a, b, c) = three_node_cluster().await;
    let started = Instant::now();
    c.shutdown().await;
    eventually(
        "a and b drop the crashed c",
        Duration::from_secs(5),
        || live_names(&a) == ["a", "b"] && live_names(&b) == ["a", "b"],
        || views(&[&a, &b]),
    )
    .await;
    eprintln!("crash detected by peers after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_owners_token_stops_gossip_like_a_crash() {
    init_tracing();
    let a = start(config("a", &[])).await;
    let token = CancellationToken::new();
    let b = Gossip::start(config("b", &[seed_of(&a)]), token.clone()).await.expect("start b");
    eventually("a sees b", Duration::from_secs(5), || live_names(&a) == ["a", "b"], || views(&[&a, &b])).await;
    token.cancel();
    eventually("a drops b", Duration::from_secs(5), || live_names(&a) == ["a"], || views(&[&a])).await;
    assert!(b.live_nodes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_of_another_cluster_is_not_admitted() {
    init_tracing();
    let a = start(config("a", &[])).await;
    let mut foreign = config("x", &[seed_of(&a)]);
    foreign.cluster_name = "other-cluster".to_owned();
    foreign.meta.cluster_name = String::new();
    let x = start(foreign).await;
    // A node of our cluster joining after x shows that a's gossip works meanwhile.
    let b = start(config("b", &[seed_of(&a)])).await;
    eventually("a sees b", Duration::from_secs(5), || live_names(&a) == ["a", "b"], || views(&[&a, &b, &x])).await;
    stays(
        "x and the cluster stay apart while x keeps retrying its seed",
        Duration::from_secs(2),
        || live_names(&a) == ["a", "b"] && live_names(&b) == ["a", "b"] && live_names(&x) == ["x"],
        || views(&[&a, &b, &x]),
    )
    .await;
    assert!(!x.joined(), "x never joined its seed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_meta_is_an_error_at_start_and_at_update_not_a_panic() {
    init_tracing();
    let mut big = config("big", &[]);
    big.meta.tags.insert("blob".to_owned(), "x".repeat(600));
    match Gossip::start(big, CancellationToken::new()).await {
        Err(MembershipError::MetaTooLarge { size, limit }) => assert!(size > limit, "{size} <= {limit}"),
        Err(e) => panic!("expected MetaTooLarge, got {e}"),
        Ok(_) => panic!("a 600-byte tag must not start"),
    }

    let a = start(config("a", &[])).await;
    let before = a.local();
    let err = a
        .update_local(Box::new(|m: &mut NodeMeta| {
            m.tags.insert("blob".to_owned(), "x".repeat(600));
        }))
        .await
        .expect_err("an oversized update is refused");
    assert!(matches!(err, MembershipError::MetaTooLarge { .. }), "{err}");
    assert_eq!(a.local(), before, "the refused update left the metadata as it was");
    a.update_local(Box::new(|m: &mut NodeMeta| {
        m.tags.insert("note".to_owned(), "small".to_owned());
    }))
    .await
    .expect("a node that refused an oversized update still takes a small one");
    eventually(
        "a's own view carries the small update",
        Duration::from_secs(2),
        || live_member(&a.members(), "a").is_some_and(|m| m.meta.tags.contains_key("note")),
        || views(&[&a]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_started_before_its_seed_joins_once_the_seed_comes_up() {
    init_tracing();
    let port = free_port();
    let b = start(config("b", &[format!("127.0.0.1:{port}")])).await;
    assert!(!b.joined(), "b has no seed to join yet");
    // Let b's first join attempts fail and its backoff grow; there is no condition to await here.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(live_names(&b), ["b"]);

    let mut seed = config("a", &[]);
    seed.bind_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let a = start(seed).await;
    eventually(
        "b joins a once a is up",
        Duration::from_secs(8),
        || live_names(&a) == ["a", "b"] && live_names(&b) == ["a", "b"],
        || views(&[&a, &b]),
    )
    .await;
    assert!(b.joined());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_node_restarted_under_its_name_on_a_new_port_is_live_and_its_old_incarnation_is_not() {
    init_tracing();
    let (a, b, c) = three_node_cluster().await;
    let old_addr = c.gossip_addr();
    c.shutdown().await;
    let c2 = start(config("c", &[seed_of(&a)])).await;
    let new_addr = c2.gossip_addr();
    assert_ne!(old_addr, new_addr);
    let at_new_addr = |n: &Gossip| {
        let members = n.members();
        live_member(&members, "c").is_some_and(|m| m.gossip_addr == new_addr)
            && members.iter().filter(|m| m.name == "c").count() == 1
    };
    eventually(
        "a and b see c alive at its new address only (crash detection + reclaim time + a pull)",
        Duration::from_secs(10),
        || at_new_addr(&a) && at_new_addr(&b) && live_names(&c2) == ["a", "b", "c"],
        || views(&[&a, &b, &c2]),
    )
    .await;
    stays(
        "news about c's old incarnation does not take the new one down",
        Duration::from_secs(2),
        || at_new_addr(&a) && at_new_addr(&b),
        || views(&[&a, &b, &c2]),
    )
    .await;
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_that_left_and_restarted_on_a_new_port_is_live_again_at_once() {
    init_tracing();
    let (a, b, c) = three_node_cluster().await;
    c.leave(Duration::from_secs(5)).await.expect("leave");
    eventually(
        "a and b drop c",
        Duration::from_secs(2),
        || live_names(&a) == ["a", "b"] && live_names(&b) == ["a", "b"],
        || views(&[&a, &b]),
    )
    .await;
    let c2 = start(config("c", &[seed_of(&b)])).await;
    let new_addr = c2.gossip_addr();
    let at_new_addr = |n: &Gossip| live_member(&n.members(), "c").is_some_and(|m| m.gossip_addr == new_addr);
    eventually(
        "a and b see the restarted c",
        Duration::from_secs(3),
        || at_new_addr(&a) && at_new_addr(&b),
        || views(&[&a, &b, &c2]),
    )
    .await;
    stays(
        "the old incarnation's leave does not remove the new one",
        Duration::from_secs(2),
        || at_new_addr(&a) && at_new_addr(&b),
        || views(&[&a, &b, &c2]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_load_reaches_peers_through_push_pull() {
    init_tracing();
    let fast = |mut c: GossipConfig| {
        c.timings.push_pull_interval = Duration::from_millis(300);
        c
    };
    let a = start(fast(config("a", &[]))).await;
    let b = start(fast(config("b", &[seed_of(&a)]))).await;
    eventually("a sees b", Duration::from_secs(5), || live_names(&a) == ["a", "b"], || views(&[&a, &b])).await;
    b.report_load(0.75).expect("report_load");
    assert!(b.report_load(1.5).is_err(), "a load outside 0..=1 is refused");
    eventually(
        "a learns b's load without a metadata update",
        Duration::from_secs(5),
        || live_member(&a.members(), "b").is_some_and(|m| m.meta.load_factor == 0.75 && m.meta.load_updated_at > 0),
        || format!("{:?}", a.members()),
    )
    .await;
    assert_eq!(b.local().version, 1, "load reports do not bump the version");
}
