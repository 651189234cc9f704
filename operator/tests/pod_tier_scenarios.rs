//! Scenarios on the pod tier: the operator against the real kube-apiserver + controller-manager,
//! and every pod it renders run as a real `woodpecker server` process by the test kubelet of
//! `pod_tier/` (etcd and MinIO from `scripts/testbed.sh`).
//!
//! Needs root (the pod tier manages a block of /etc/hosts and runs the servers as the pods'
//! runAsUser), `WOODPECKER_TESTBED_KUBECONFIG` and the `WP_*` variables of `scripts/testbed.sh env`.
//! The `woodpecker` binary is `$WOODPECKER_SERVER_BIN`, else built with `cargo build -p woodpecker-cli`.

mod apiserver_support;
mod pod_tier;

use std::path::Path;
use std::time::{Duration, Instant};

use apiserver_support::{RunningOperator, TestNamespace, client, config, install_crd};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use pod_tier::PodTier;
use serde_json::{Value, json};
use woodpecker_crds::WoodpeckerCluster;

/// A test bed variable from `scripts/testbed.sh env`, or a panic saying how to set it.
fn bed(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run `eval \"$(scripts/testbed.sh env)\"` (etcd + MinIO test bed) first")
    })
}

/// A port free on loopback now (the servers bind it on their own pod addresses).
fn free_port() -> i64 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    i64::from(l.local_addr().expect("its address").port())
}

/// `config/samples/three-zones-multi-az.yaml` adapted for the pod tier, and nothing more: the test
/// namespace, the test bed's etcd and MinIO (credentials through the sample's Secret name), a
/// fresh etcd root and object prefix, ports nobody else on the machine uses, 1 s probe periods and
/// a short settle time so the scenario fits in CI.
fn adapted_sample(ns: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/samples/three-zones-multi-az.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut cr: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let minio = bed("WP_MINIO_ENDPOINT");
    let hostport = minio.trim_start_matches("http://");
    let (host, port) = hostport.rsplit_once(':').expect("WP_MINIO_ENDPOINT is http://host:port");
    cr["metadata"]["namespace"] = json!(ns);
    let spec = &mut cr["spec"];
    spec["objectStorage"]["endpoint"] = json!({
        "address": host, "port": port.parse::<i64>().expect("MinIO port"), "useSSL": false,
        "region": bed("WP_MINIO_REGION"),
    });
    spec["objectStorage"]["bucket"] = json!(bed("WP_MINIO_BUCKET"));
    spec["objectStorage"]["rootPath"] = json!(format!("pod-tier/{ns}"));
    spec["etcd"] = json!({"endpoints": bed("WP_ETCD_ENDPOINTS").split(',').collect::<Vec<_>>(), "rootPath": format!("pod-tier-{ns}")});
    spec["servicePort"] = json!(free_port());
    spec["gossipPort"] = json!(free_port());
    spec["metricsPort"] = json!(free_port());
    spec["probes"]["startup"] = json!({"periodSeconds": 1, "failureThreshold": 120});
    spec["probes"]["readiness"] = json!({"periodSeconds": 1, "failureThreshold": 2});
    spec["rolloutPolicy"]["settleTimeSeconds"] = json!(2);
    cr
}

/// The sample's object storage Secret, with the test bed's MinIO keys.
async fn create_credentials(client: &kube::Client, ns: &str, cr: &Value) {
    let name = cr["spec"]["objectStorage"]["credentials"]["secretRef"]["name"].as_str().expect("secretRef name");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {
            "AWS_ACCESS_KEY_ID": bed("WP_MINIO_ACCESS_KEY"),
            "AWS_SECRET_ACCESS_KEY": bed("WP_MINIO_SECRET_KEY"),
        },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the credentials Secret");
}

/// Available with every node group Ready, counting the distinct zones of Ready groups.
fn available_zones(c: &WoodpeckerCluster, replicas: i32) -> Option<usize> {
    let st = c.status.as_ref()?;
    let available = st.conditions.iter().any(|c| c.type_ == "Available" && c.status == "True");
    let zones: std::collections::BTreeSet<&str> = st
        .node_groups
        .iter()
        .filter(|g| g.ready == g.replicas && g.replicas > 0)
        .filter_map(|g| g.zone.as_deref())
        .collect();
    (available && st.ready_replicas == replicas).then_some(zones.len())
}

/// The client configuration a user builds from the bundle the operator published: the bundle's
/// `woodpecker.yaml` as is, plus the object storage keys from the Secret the bundle names (the
/// bundle carries Secret names, never values).
async fn client_config_from_bundle(client: &kube::Client, ns: &str, c: &WoodpeckerCluster) -> (String, String) {
    let cm_name = c.status.as_ref().and_then(|s| s.client_config_map.clone()).expect("status names the client bundle");
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns).get(&cm_name).await.expect("the client bundle ConfigMap");
    let data = cm.data.unwrap_or_default();
    let yaml = data.get("woodpecker.yaml").expect("bundle key woodpecker.yaml").clone();
    let mut cfg: Value = serde_saphyr::from_str(&yaml).expect("the bundle's woodpecker.yaml parses");
    if let Some(secret) = data.get("objectStorageSecret") {
        let s = Api::<Secret>::namespaced(client.clone(), ns)
            .get(secret)
            .await
            .expect("the bundle's object storage Secret");
        let d = s.data.unwrap_or_default();
        let key = |k: &str| {
            String::from_utf8_lossy(&d.get(k).unwrap_or_else(|| panic!("{secret} has no {k}")).0).into_owned()
        };
        cfg["minio"]["accessKeyID"] = json!(key("AWS_ACCESS_KEY_ID"));
        cfg["minio"]["secretAccessKey"] = json!(key("AWS_SECRET_ACCESS_KEY"));
    }
    (cm_name, serde_saphyr::to_string(&cfg).expect("client config yaml"))
}

/// Run `woodpecker <args>` with the client config, bounded by `timeout`; stdout, or a panic with both streams.
async fn woodpecker(config: &Path, args: &[&str], stdin: Option<String>, timeout: Duration) -> String {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(pod_tier::process_image::server_binary());
    cmd.arg("--config").arg(config).args(args).kill_on_drop(true);
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("starting woodpecker");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.expect("writing entries to woodpecker's stdin");
    }
    drop(input);
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("woodpecker {args:?} did not finish within {timeout:?}"))
        .expect("woodpecker output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "woodpecker {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_zone_sample_runs_real_servers_becomes_available_and_its_client_bundle_writes_and_reads() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "podtier").await;
    let cr = adapted_sample(&ns.name);
    let domain = cr["spec"]["clusterDomain"].as_str().unwrap_or("cluster.local").to_string();
    let tier = PodTier::start(client.clone(), &ns.name, &domain).await;
    create_credentials(&client, &ns.name, &cr).await;
    let op = RunningOperator::start(config().await, &ns.name);

    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    let cluster: WoodpeckerCluster = serde_json::from_value(cr).expect("the adapted sample is a WoodpeckerCluster");
    let name = cluster.metadata.name.clone().expect("sample name");
    let started = Instant::now();
    clusters.create(&PostParams::default(), &cluster).await.expect("applying the adapted sample");
    let deadline = Instant::now() + Duration::from_secs(150);
    let zones = loop {
        if let Ok(c) = clusters.get(&name).await
            && let Some(z) = available_zones(&c, 6)
            && z == 3
        {
            break z;
        }
        if Instant::now() > deadline {
            let state = apiserver_support::describe_namespace(&client, &ns.name).await;
            panic!("the cluster did not become Available with 3 zones in 150 s\n{state}\n{}", tier.log_tails(15));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let to_available = started.elapsed();
    let stats = tier.stats();
    assert_eq!(stats.pods_started, 6, "six pods run, each once: {stats:?}");
    assert_eq!(
        stats.container_restarts,
        0,
        "no server crashed or failed a probe while forming: {stats:?}\n{}",
        tier.log_tails(15)
    );

    // The operator's own view: every pod's admin API answered with the zone its labels name.
    let c = clusters.get(&name).await.expect("cluster");
    let st = c.status.clone().expect("status");
    let member_zones: std::collections::BTreeSet<String> = st.nodes.iter().filter_map(|n| n.zone.clone()).collect();
    assert_eq!(member_zones.len(), 3, "status.nodes names 3 zones: {:?}", st.nodes);

    // The client bundle, used as a user would: write with our client in service mode, read back.
    let (bundle, cfg) = client_config_from_bundle(&client, &ns.name, &c).await;
    let dir = tempfile::tempdir().expect("client dir");
    let cfg_path = dir.path().join("woodpecker.yaml");
    std::fs::write(&cfg_path, cfg).expect("writing the client config");
    let count = 500usize;
    let payloads: Vec<String> = (0..count).map(|i| format!("pod-tier-{}-{i}", ns.name)).collect();
    let t = Instant::now();
    let out = woodpecker(
        &cfg_path,
        &["log", "write", "pod-tier-check", "--create", "--stdin"],
        Some(payloads.iter().map(|p| format!("{p}\n")).collect()),
        Duration::from_secs(60),
    )
    .await;
    let write_time = t.elapsed();
    let read = woodpecker(
        &cfg_path,
        &["log", "read", "pod-tier-check", "--count", &count.to_string(), "--format", "json", "--timeout-secs", "20"],
        None,
        Duration::from_secs(60),
    )
    .await;
    let got: Vec<String> = read
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("read output line {l:?}: {e}")))
        .map(|v| v["payload"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(got.len(), count, "read back every entry written (write said: {out})");
    let verified = got.iter().zip(&payloads).filter(|(a, b)| a == b).count();
    assert_eq!(verified, count, "entries read back in order with their payloads");

    println!(
        "pod tier: pods started {}, processes started {}, time to Available with {zones} zones {} ms, \
         client bundle {bundle}: entries written {count} in {} ms, verified {verified}",
        stats.pods_started,
        stats.process_starts,
        to_available.as_millis(),
        write_time.as_millis()
    );
    println!("METRIC pod_tier_time_to_available_ms={}", to_available.as_millis());
    op.stop().await;
    tier.shutdown().await;
}
