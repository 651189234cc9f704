//! Our client in service mode against real `woodpecker server` processes: entries replicated to three
//! nodes and acknowledged at two, read back through the replicas, a second writer fencing the first,
//! and a replica killed -9 mid-stream without a stall or a lost acknowledgement. Real etcd and MinIO.

mod cluster;

use std::time::{Duration, Instant};

use cluster::{Cluster, ClusterOptions};
use woodpecker_client::{Client, LogMessageId, LogReader, WriteMessage};
use woodpecker_core::config::Config;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the test bed (scripts/testbed.sh)"))
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("svc-{tag}-{}-{nanos}", std::process::id())
}

/// A service-mode client config for `cluster`, under its own etcd and object prefix.
fn service_config(cluster: &Cluster, root: &str, extra: &str) -> Config {
    Config::from_yaml_with_overlay(&service_yaml(cluster, root), extra).expect("service-mode config")
}

/// The YAML of [`service_config`] without overlay.
fn service_yaml(cluster: &Cluster, root: &str) -> String {
    let endpoint = env("WP_MINIO_ENDPOINT");
    let hostport = endpoint.trim_start_matches("http://").trim_start_matches("https://");
    let (host, port) = hostport.rsplit_once(':').expect("MinIO host:port");
    let seeds: Vec<String> = cluster.nodes.iter().map(|n| n.endpoint()).collect();
    format!(
        "woodpecker:\n  meta:\n    type: etcd\n  storage:\n    type: service\n  client:\n    quorum:\n      quorumBufferPools:\n        - name: default\n          seeds: [{seeds}]\n      quorumSelectStrategy:\n        replicas: 3\n\
         etcd:\n  endpoints: [{etcd}]\n  rootPath: {root}\n\
         minio:\n  address: {host}\n  port: {port}\n  accessKeyID: {ak}\n  secretAccessKey: {sk}\n  bucketName: {bucket}\n  rootPath: {root}\n",
        seeds = seeds.join(", "),
        etcd = env("WP_ETCD_ENDPOINTS"),
        ak = env("WP_MINIO_ACCESS_KEY"),
        sk = env("WP_MINIO_SECRET_KEY"),
        bucket = env("WP_MINIO_BUCKET"),
    )
}

async fn read_n(reader: &mut LogReader, n: usize, limit: Duration) -> Vec<(LogMessageId, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, reader.read_next()).await {
            Ok(Ok(m)) => out.push((m.id, m.payload.to_vec())),
            Ok(Err(e)) => panic!("read {} of {n}, then: {e}", out.len()),
            Err(_) => panic!("read only {} of {n} within {limit:?}", out.len()),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entries_are_replicated_read_back_and_a_second_writer_fences_the_first() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let cluster = Cluster::start(3, &ClusterOptions::default());
    let root = unique("basic");
    let client = Client::open(service_config(&cluster, &root, "")).await.expect("open a service-mode client");
    client.create_log("basic").await.unwrap();
    let log = client.open_log("basic").await.unwrap();
    let first = log.open_writer().await.unwrap();
    let mut acked = Vec::new();
    for i in 0..50 {
        let id = tokio::time::timeout(Duration::from_secs(20), first.write(WriteMessage::new(format!("a-{i}"))))
            .await
            .expect("an append within 20 s")
            .expect("append");
        acked.push((id, format!("a-{i}")));
    }
    let segments = log.segments().await.unwrap();
    assert_eq!(segments.len(), 1);

    // A second writer fences the first; the first's next write fails, and nothing it wrote is lost.
    let second = log.open_writer().await.expect("second writer");
    let late = first.write(WriteMessage::new("late")).await;
    assert!(late.is_err(), "the fenced writer's append must fail, got {late:?}");
    for i in 0..20 {
        let id = second.write(WriteMessage::new(format!("b-{i}"))).await.expect("append by the second writer");
        acked.push((id, format!("b-{i}")));
    }
    second.close().await.unwrap();
    let mut reader = log.open_reader(LogMessageId::EARLIEST, "all").await.unwrap();
    let got = read_n(&mut reader, acked.len(), Duration::from_secs(60)).await;
    for ((id, payload), (gid, gpayload)) in acked.iter().zip(&got) {
        assert_eq!(id, gid);
        assert_eq!(payload.as_bytes(), gpayload.as_slice(), "payload of {id:?}");
    }
    let more = tokio::time::timeout(Duration::from_secs(2), reader.read_next()).await;
    assert!(more.is_err(), "nothing past the acknowledged entries, got {more:?}");
    reader.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_stream_neither_stalls_writes_nor_loses_an_acknowledged_entry() {
    let mut cluster = Cluster::start(3, &ClusterOptions::default());
    let root = unique("kill");
    let client = Client::open(service_config(&cluster, &root, "")).await.expect("client");
    client.create_log("kill").await.unwrap();
    let log = client.open_log("kill").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    let mut acked = Vec::new();
    let mut longest = Duration::ZERO;
    for i in 0..400 {
        if i == 100 {
            cluster.nodes[1].kill();
        }
        let started = Instant::now();
        let id = tokio::time::timeout(Duration::from_secs(20), writer.write(WriteMessage::new(format!("e-{i}"))))
            .await
            .unwrap_or_else(|_| panic!("append {i} stalled"))
            .unwrap_or_else(|e| panic!("append {i}: {e}"));
        longest = longest.max(started.elapsed());
        acked.push((id, format!("e-{i}")));
    }
    let segments = log.segments().await.unwrap().len();
    println!("longest append with a replica killed: {longest:?}; segments: {segments}");
    // With no spare node the writer goes on with its segment at the ack quorum (degraded) instead of
    // rolling onto the dead node again and again.
    assert!(segments <= 2, "{segments} segments: the writer rolled onto the dead node repeatedly");
    assert!(longest < Duration::from_secs(5), "an append waited {longest:?}");
    writer.close().await.unwrap();
    let mut reader = log.open_reader(LogMessageId::EARLIEST, "all").await.unwrap();
    let got = read_n(&mut reader, acked.len(), Duration::from_secs(60)).await;
    for ((id, payload), (gid, gpayload)) in acked.iter().zip(&got) {
        assert_eq!(id, gid);
        assert_eq!(payload.as_bytes(), gpayload.as_slice());
    }
    reader.close().await.unwrap();
}

#[test]
fn cluster_status_lists_every_member_with_its_zone_and_state() {
    let cluster = Cluster::start(3, &ClusterOptions::default());
    let (code, _) = cluster.nodes[2].admin("POST", "/admin/node/decommission");
    assert_eq!(code, 200);
    let admin = format!("127.0.0.1:1,127.0.0.1:{}", cluster.nodes[0].admin_port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_woodpecker"))
            .args(["cluster", "status", "--admin", &admin])
            .output()
            .expect("run woodpecker cluster status");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
        let seen = text.contains("3 members (3 alive)")
            && text.lines().any(|l| l.starts_with("node-2") && l.contains("decommissioning") && l.contains("z2"))
            && text.lines().any(|l| l.starts_with("node-0") && l.contains("active") && l.contains("z0"));
        if seen {
            println!("{text}");
            break;
        }
        assert!(Instant::now() < deadline, "the status never showed the decommissioning node:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_woodpecker"))
        .args(["cluster", "status", "--admin", "127.0.0.1:1", "--timeout-secs", "1"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:1") && err.contains("no node answered"), "a clear error naming the node: {err}");
}

#[test]
fn bench_runs_against_a_service_cluster_beside_a_replicated_ceiling() {
    let cluster = Cluster::start(3, &ClusterOptions::default());
    let root = unique("bench");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svc.yaml");
    std::fs::write(&path, service_yaml(&cluster, &root)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_woodpecker"))
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["bench", "--duration", "1", "--entry-size", "4KiB", "--json"])
        .output()
        .expect("run woodpecker bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("bench JSON");
    assert_eq!(v["storage"], "service");
    assert_eq!(v["goal_ratio"], 0.8);
    let run = &v["results"][0];
    assert!(run["entries"].as_u64().unwrap() > 0, "{run}");
    assert!(run["ceiling"]["mb_per_s"].as_f64().unwrap() > 0.0, "{run}");
    assert!(run["ratio"].as_f64().is_some_and(|r| r > 0.0 && r.is_finite()), "{run}");
    let leftovers: Vec<_> = walk(dir.path()).into_iter().filter(|p| p.contains("bench-ceiling-")).collect();
    assert!(leftovers.is_empty(), "the ceiling's scratch files are removed: {leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p.display().to_string());
    }
    out
}

/// The segment's replica set as its metadata records it.
async fn ensemble(client_cfg: &Config, log: &str, segment: i64) -> Vec<String> {
    let store = woodpecker_meta::MetadataStore::open_etcd(
        &client_cfg.etcd.endpoints,
        &client_cfg.etcd.root_path,
        &client_cfg.woodpecker.meta.prefix,
        &woodpecker_meta::EtcdOptions::default(),
    )
    .await
    .expect("open the test's metadata");
    let seg = store.get_segment(log, segment).await.expect("segment metadata").value;
    seg.quorum.expect("a replica set").nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completed_segment_that_lost_a_replica_gets_a_new_one_and_survives_losing_a_second() {
    // The servers cannot reach object storage, so the segment stays Completed on its replicas (no
    // compaction to fall back on): only repair keeps it readable after two of its three nodes are gone.
    let opts = ClusterOptions { extra_yaml: "minio:\n  port: 1\n".into() };
    let mut cluster = Cluster::start(4, &opts);
    let root = unique("repair");
    let cfg = service_config(&cluster, &root, "woodpecker:\n  client:\n    quorum:\n      repairGracePeriod: 500\n");
    let client = Client::open(cfg.clone()).await.expect("client");
    client.create_log("repair").await.unwrap();
    let log = client.open_log("repair").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    let mut acked = Vec::new();
    for i in 0..60 {
        let id = writer.write(WriteMessage::new(format!("r-{i}"))).await.expect("append");
        acked.push((id, format!("r-{i}")));
    }
    writer.close().await.unwrap();
    let before = ensemble(&cfg, "repair", 0).await;
    assert_eq!(before.len(), 3);
    let by_endpoint =
        |c: &mut Cluster, e: &str| c.nodes.iter().position(|n| n.endpoint() == e).expect("a node of the cluster");
    let first = by_endpoint(&mut cluster, &before[0]);
    cluster.nodes[first].kill();
    // Passes until the dead node is replaced (it must stay silent for the 500 ms grace first).
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let report = log.run_maintenance().await;
        let now = ensemble(&cfg, "repair", 0).await;
        if !now.contains(&before[0]) {
            println!("replaced {} after maintenance: {report:?}; ensemble now {now:?}", before[0]);
            break now;
        }
        assert!(Instant::now() < deadline, "the dead replica {} was never replaced: {report:?}", before[0]);
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(after.len(), 3);
    assert!(after.contains(&before[1]) && after.contains(&before[2]), "only the lost replica changes: {after:?}");
    // A second original replica goes for good: the survivor and the new copy still hold everything.
    let second = by_endpoint(&mut cluster, &before[1]);
    cluster.nodes[second].kill();
    let mut reader = log.open_reader(LogMessageId::EARLIEST, "after-repair").await.unwrap();
    let got = read_n(&mut reader, acked.len(), Duration::from_secs(60)).await;
    for ((id, payload), (gid, gpayload)) in acked.iter().zip(&got) {
        assert_eq!(id, gid);
        assert_eq!(payload.as_bytes(), gpayload.as_slice());
    }
    reader.close().await.unwrap();
    // Reading from the new copy alone: the last original replica goes too.
    let third = by_endpoint(&mut cluster, &before[2]);
    cluster.nodes[third].kill();
    let mut reader = log.open_reader(LogMessageId::EARLIEST, "new-copy-only").await.unwrap();
    let got = read_n(&mut reader, acked.len(), Duration::from_secs(60)).await;
    assert_eq!(got.len(), acked.len());
    assert_eq!(got.last().map(|(id, _)| *id), acked.last().map(|(id, _)| *id));
    reader.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_replica_of_a_completed_segment_is_copied_again_in_place() {
    let opts = ClusterOptions { extra_yaml: "minio:\n  port: 1\n".into() };
    let mut cluster = Cluster::start(3, &opts);
    let root = unique("wipe");
    let cfg = service_config(&cluster, &root, "");
    let client = Client::open(cfg.clone()).await.expect("client");
    client.create_log("wipe").await.unwrap();
    let log = client.open_log("wipe").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    let mut acked = Vec::new();
    for i in 0..40 {
        acked.push(writer.write(WriteMessage::new(format!("w-{i}"))).await.expect("append"));
    }
    writer.close().await.unwrap();
    let before = ensemble(&cfg, "wipe", 0).await;
    let pos = |c: &Cluster, e: &str| c.nodes.iter().position(|n| n.endpoint() == e).expect("a node of the cluster");
    let wiped = pos(&cluster, &before[0]);
    cluster.nodes[wiped].restart(true);
    cluster.nodes[wiped].wait_ready(Duration::from_secs(60));
    let _ = log.run_maintenance().await;
    assert_eq!(ensemble(&cfg, "wipe", 0).await, before, "a wiped node is repaired in place, not replaced");
    // Only the wiped-and-repaired node is left: it holds every entry again.
    for other in &before[1..] {
        let i = pos(&cluster, other);
        cluster.nodes[i].kill();
    }
    let mut reader = log.open_reader(LogMessageId::EARLIEST, "repaired-only").await.unwrap();
    let got = read_n(&mut reader, acked.len(), Duration::from_secs(60)).await;
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), acked);
    reader.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_the_nodes_keep_refusing_fails_at_its_deadline_saying_why() {
    // Every node refuses appends for disk pressure (a retriable refusal the client resends until the
    // ack deadline): the write's error must carry the nodes' reason, not only that time ran out.
    let opts = ClusterOptions {
        extra_yaml: "woodpecker:\n  logstore:\n    diskWatermarkPolicy:\n      softThresholdRatio: 0.00001\n      hardThresholdRatio: 0.00001\n".into(),
    };
    let cluster = Cluster::start(3, &opts);
    let root = unique("refused");
    let cfg = service_config(&cluster, &root, "woodpecker:\n  client:\n    segmentAppend:\n      ackTimeout: 2\n");
    let client = Client::open(cfg).await.expect("client");
    client.create_log("refused").await.unwrap();
    let log = client.open_log("refused").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), writer.write(WriteMessage::new("x")))
        .await
        .expect("the write ends in bounded time")
        .expect_err("no node takes the append");
    let text = err.to_string();
    println!("after {:?}: {text}", started.elapsed());
    assert!(text.contains("2007") && text.contains("watermark"), "the disk-pressure refusal is named: {text}");
}
