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

/// The adapted sample running on the pod tier, Available with 3 zones.
struct SampleCluster {
    client: kube::Client,
    tier: PodTier,
    op: RunningOperator,
    clusters: Api<WoodpeckerCluster>,
    name: String,
    to_available: Duration,
    zones: usize,
    // Last: dropped after the tier, which removes the pods first.
    ns: TestNamespace,
}

impl SampleCluster {
    /// Namespace, pod tier, credentials, operator; apply the adapted sample and wait (150 s at most)
    /// until it is Available with 3 zones.
    async fn start(prefix: &str) -> Self {
        let client = client().await;
        install_crd(&client).await;
        let ns = TestNamespace::new(&client, prefix).await;
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
        Self { client, tier, op, clusters, name, to_available: started.elapsed(), zones, ns }
    }

    /// A client config file built from the published bundle, in `dir`.
    async fn client_config(&self, dir: &Path) -> (String, std::path::PathBuf) {
        let c = self.clusters.get(&self.name).await.expect("cluster");
        let (bundle, cfg) = client_config_from_bundle(&self.client, &self.ns.name, &c).await;
        let path = dir.join("woodpecker.yaml");
        std::fs::write(&path, cfg).expect("writing the client config");
        (bundle, path)
    }

    async fn stop(self) {
        self.op.stop().await;
        self.tier.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_zone_sample_runs_real_servers_becomes_available_and_its_client_bundle_writes_and_reads() {
    let cluster = SampleCluster::start("podtier").await;
    let (tier, clusters, name, zones) = (&cluster.tier, &cluster.clusters, &cluster.name, cluster.zones);
    let to_available = cluster.to_available;
    let stats = tier.stats();
    assert_eq!(stats.pods_started, 6, "six pods run, each once: {stats:?}");
    assert_eq!(
        stats.container_restarts,
        0,
        "no server crashed or failed a probe while forming: {stats:?}\n{}",
        tier.log_tails(15)
    );

    // The operator's own view: every pod's admin API answered with the zone its labels name.
    let c = clusters.get(name).await.expect("cluster");
    let st = c.status.clone().expect("status");
    let member_zones: std::collections::BTreeSet<String> = st.nodes.iter().filter_map(|n| n.zone.clone()).collect();
    assert_eq!(member_zones.len(), 3, "status.nodes names 3 zones: {:?}", st.nodes);

    // What `kubectl get woodpeckerclusters` shows: the apiserver's Table rendering of the printer columns.
    let table = kubectl_get_row(&cluster.client, &cluster.ns.name, name).await;
    println!("kubectl get woodpeckerclusters: {table:?}");
    assert_eq!(table.get("Available").map(String::as_str), Some("True"), "Available column: {table:?}");
    assert_eq!(table.get("Ready").map(String::as_str), Some("6/6"), "Ready column: {table:?}");

    // The client bundle, used as a user would: write with our client in service mode, read back.
    let dir = tempfile::tempdir().expect("client dir");
    let (bundle, cfg_path) = cluster.client_config(dir.path()).await;
    let count = 500usize;
    let payloads: Vec<String> = (0..count).map(|i| format!("pod-tier-{}-{i}", cluster.ns.name)).collect();
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
    cluster.stop().await;
}

/// The row `kubectl get woodpeckerclusters <name>` prints, by column name: the apiserver renders the
/// CRD's printer columns as a `meta.k8s.io/v1` Table when asked for one, as kubectl does.
async fn kubectl_get_row(client: &kube::Client, ns: &str, name: &str) -> std::collections::BTreeMap<String, String> {
    let uri = format!("/apis/woodpecker.zilliz.io/v1alpha1/namespaces/{ns}/woodpeckerclusters/{name}");
    let req = http::Request::get(uri)
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .expect("table request");
    let text = client.request_text(req).await.expect("the cluster as a Table");
    let table: Value = serde_json::from_str(&text).expect("Table json");
    let columns = table["columnDefinitions"].as_array().cloned().unwrap_or_default();
    let cells = table["rows"][0]["cells"].as_array().cloned().unwrap_or_default();
    columns
        .iter()
        .zip(cells)
        .map(|(c, v)| {
            (c["name"].as_str().unwrap_or("").to_string(), v.as_str().map_or_else(|| v.to_string(), str::to_string))
        })
        .collect()
}

/// `woodpecker <args>` fed `stdin`, bounded by `timeout`: stdout, or the reason it failed.
async fn try_woodpecker(config: &Path, args: &[&str], stdin: String, timeout: Duration) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(pod_tier::process_image::server_binary());
    cmd.arg("--config").arg(config).args(args).kill_on_drop(true);
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("starting woodpecker: {e}"))?;
    let mut input = child.stdin.take().ok_or("no stdin")?;
    input.write_all(stdin.as_bytes()).await.map_err(|e| format!("writing stdin: {e}"))?;
    drop(input);
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("did not finish within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("{}: {}", out.status, err.lines().last().unwrap_or("")))
    }
}

/// What the writer saw: payloads acknowledged (a `log write` that exited 0 acknowledged all of its
/// batch), and failed batches with when and why.
#[derive(Default)]
struct WriteLog {
    acked: Vec<String>,
    batches_ok: u32,
    ok_at: Vec<Instant>,
    failures: Vec<(Instant, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_change_then_restart_token_each_roll_one_pod_at_a_time_under_writes_and_lose_no_acknowledged_entry() {
    let cluster = SampleCluster::start("podroll").await;
    let config_change = json!({"spec": {"config": {"logLevel": "warn"}}});
    roll_under_workload(&cluster, "pod-tier-roll-config", "config change", config_change).await;
    let restart_token = json!({"spec": {"rolloutPolicy": {"restartToken": "pod-tier-1"}}});
    roll_under_workload(&cluster, "pod-tier-roll-token", "restart token", restart_token).await;
    cluster.stop().await;
}

/// Apply `change` (which must roll every pod) while a writer, a tailing reader and an availability
/// sampler run against log `log` through the client bundle; check the roll and print its figures.
async fn roll_under_workload(cluster: &SampleCluster, log: &str, what: &str, change: Value) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::ResourceExt;
    use kube::api::{Patch, PatchParams};
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};
    use woodpecker_operator::controller::observe::pod_ready;

    let dir = tempfile::tempdir().expect("client dir");
    let (_, cfg_path) = cluster.client_config(dir.path()).await;
    let stats_before = cluster.tier.stats();
    try_woodpecker(&cfg_path, &["log", "create", log], String::new(), Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("creating {log}: {e}"));

    // The tailing reader: `log tail` from the log's end, every entry it prints recorded with its time.
    let tailed = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
    let mut tail = tokio::process::Command::new(pod_tier::process_image::server_binary())
        .arg("--config")
        .arg(&cfg_path)
        .args(["log", "tail", log, "--format", "json"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting log tail");
    let tail_reader = {
        use tokio::io::AsyncBufReadExt;
        let out = tail.stdout.take().expect("tail stdout");
        let tailed = tailed.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if let Some(p) =
                    serde_json::from_str::<Value>(&l).ok().and_then(|v| v["payload"].as_str().map(str::to_string))
                {
                    tailed.lock().unwrap().push((Instant::now(), p));
                }
            }
        })
    };

    // The writer: batches of 50 entries, one `log write` each, 100 ms apart, until stopped.
    let writes = Arc::new(Mutex::new(WriteLog::default()));
    let stop_writer = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (writes, stop, cfg, log) = (writes.clone(), stop_writer.clone(), cfg_path.clone(), log.to_string());
        tokio::spawn(async move {
            let log = log.as_str();
            let mut batch = 0u32;
            while !stop.is_cancelled() {
                let payloads: Vec<String> = (0..50).map(|i| format!("roll-{batch}-{i}")).collect();
                let input: String = payloads.iter().map(|p| format!("{p}\n")).collect();
                let r = try_woodpecker(&cfg, &["log", "write", log, "--stdin"], input, Duration::from_secs(60)).await;
                {
                    let mut w = writes.lock().unwrap();
                    match r {
                        Ok(_) => {
                            w.acked.extend(payloads);
                            w.batches_ok += 1;
                            w.ok_at.push(Instant::now());
                        }
                        Err(e) => w.failures.push((Instant::now(), e)),
                    }
                }
                batch += 1;
                // A short pause: a process per batch back to back would take a core from the servers.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Availability sampler: a pod of the six is unavailable while it is missing, terminating or not Ready.
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.ns.name);
    let before: BTreeMap<String, String> = pods
        .list(&Default::default())
        .await
        .expect("pods")
        .items
        .iter()
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect();
    assert_eq!(before.len(), 6, "six pods before the roll: {before:?}");
    let max_unavailable = Arc::new(Mutex::new(0usize));
    let stop_sampler = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let (pods, max, stop, names) = (pods.clone(), max_unavailable.clone(), stop_sampler.clone(), before.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Ok(list) = pods.list(&Default::default()).await {
                    let available: BTreeSet<String> = list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
                        .map(|p| p.name_any())
                        .collect();
                    let unavailable = names.keys().filter(|n| !available.contains(*n)).count();
                    let mut m = max.lock().unwrap();
                    *m = (*m).max(unavailable);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // A marker in every claim, to check that the claims outlive their pods.
    const MARKER: &str = "pod-tier-claim-marker";
    let claims: Vec<std::path::PathBuf> = std::fs::read_dir(cluster.tier.root().join("claims"))
        .expect("the claims directory")
        .flatten()
        .map(|d| d.path())
        .collect();
    assert_eq!(claims.len(), 6, "one claim per pod: {claims:?}");
    for claim in &claims {
        std::fs::write(claim.join(MARKER), b"before the roll").expect("writing a marker into a claim");
    }

    // Let the workload run, then change the server config: the operator rolls every pod.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let roll_started = Instant::now();
    cluster
        .clusters
        .patch(&cluster.name, &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap_or_else(|e| panic!("applying the {what}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let list = pods.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
        let replaced = list
            .iter()
            .filter(|p| before.get(&p.name_any()).is_some_and(|u| Some(u) != p.uid().as_ref()))
            .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
            .count();
        let idle = cluster.clusters.get(&cluster.name).await.ok().and_then(|c| c.status).is_some_and(|st| {
            st.ready_replicas == 6 && st.rollout.as_ref().is_none_or(|r| r.state == woodpecker_crds::RolloutState::Idle)
        });
        if replaced == 6 && idle {
            break;
        }
        if Instant::now() > deadline {
            let state = apiserver_support::describe_namespace(&cluster.client, &cluster.ns.name).await;
            panic!("the roll did not finish in 180 s ({replaced}/6 replaced)\n{state}\n{}", cluster.tier.log_tails(15));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let roll_time = roll_started.elapsed();
    // A few more batches after the roll, then stop the writer and the sampler.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_writer.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(70), writer).await;
    stop_sampler.cancel();
    let _ = sampler.await;
    // Give the tail (at most 20 s) to print the last acknowledged batch; a tail that exited on its own failed.
    let acked_total = writes.lock().unwrap().acked.len();
    let tail_deadline = Instant::now() + Duration::from_secs(20);
    while tailed.lock().unwrap().len() < acked_total && Instant::now() < tail_deadline {
        if tail.try_wait().ok().flatten().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tail_exit = tail.try_wait().expect("polling log tail");
    let _ = tail.start_kill();
    let tail_err = match tail.wait_with_output().await {
        Ok(o) => String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("").to_string(),
        Err(e) => e.to_string(),
    };
    let _ = tail_reader.await;

    // Verify with a reader: every acknowledged entry is in the log.
    let read = try_woodpecker(
        &cfg_path,
        &["log", "read", log, "--format", "json", "--timeout-secs", "20"],
        String::new(),
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("reading {log} back: {e}"));
    let found: BTreeSet<String> = read
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["payload"].as_str().map(str::to_string))
        .collect();
    let w = std::mem::take(&mut *writes.lock().unwrap());
    let acknowledged = w.acked.len();
    let lost: Vec<&String> = w.acked.iter().filter(|p| !found.contains(*p)).collect();
    let verified = acknowledged - lost.len();
    let during_roll = w.ok_at.iter().filter(|t| **t >= roll_started && **t <= roll_started + roll_time).count();
    let tailed = std::mem::take(&mut *tailed.lock().unwrap());
    let tailed_in_roll = tailed.iter().filter(|(t, _)| *t >= roll_started && *t <= roll_started + roll_time).count();
    let tail_unknown = tailed.iter().filter(|(_, p)| !found.contains(p)).count();
    let tail_seen: BTreeSet<&String> = tailed.iter().map(|(_, p)| p).collect();
    let tail_missed = w.acked.iter().filter(|p| !tail_seen.contains(p)).count();
    let stats = cluster.tier.stats();
    let (stopped, sigkills) = (stats.pods_stopped - stats_before.pods_stopped, stats.sigkills - stats_before.sigkills);
    let max_unavailable = *max_unavailable.lock().unwrap();
    println!(
        "pod tier roll ({what}): pods restarted {}, max unavailable seen {max_unavailable}, roll {} ms, \
         entries acknowledged {acknowledged}, verified {verified}, lost {}; batches ok {} ({during_roll} during the roll), \
         failed {} {:?}; SIGTERMs {} (SIGKILL {})",
        stopped,
        roll_time.as_millis(),
        lost.len(),
        w.batches_ok,
        w.failures.len(),
        w.failures
            .iter()
            .map(|(t, e)| format!("+{}ms {e}", t.duration_since(roll_started).as_millis()))
            .collect::<Vec<_>>(),
        stopped,
        sigkills,
    );
    let max_ms = |v: &[Duration]| v.iter().max().map_or(0, |d| d.as_millis());
    println!(
        "pod tier roll ({what}): SIGTERM to exit max {} ms, stop to release (PDB wait) max {} ms",
        max_ms(&stats.stop_times[stats_before.stop_times.len()..]),
        max_ms(&stats.release_times[stats_before.release_times.len()..]),
    );
    println!(
        "pod tier roll ({what}): tailing reader saw {} entries ({tailed_in_roll} during the roll), {tail_missed} acknowledged \
         entries not seen, {tail_unknown} not in the log; still running at the end: {}",
        tailed.len(),
        tail_exit.is_none()
    );
    assert!(tail_exit.is_none(), "log tail exited during the roll ({tail_exit:?}): {tail_err}");
    assert_eq!(tail_unknown, 0, "the tail printed only entries that are in the log");
    assert_eq!(tail_missed, 0, "the tail saw every acknowledged entry");
    assert!(tailed_in_roll > 0, "the tail kept delivering during the roll");
    assert!(lost.is_empty(), "{} acknowledged entries lost, first {:?}", lost.len(), &lost[..lost.len().min(5)]);
    assert!(max_unavailable <= 1, "at most one pod may be unavailable at a time, saw {max_unavailable}");
    assert_eq!(stopped, 6, "each pod restarted exactly once: {stats:?}");
    assert_eq!(sigkills, 0, "every server stopped on SIGTERM within its grace period");
    // Each claim outlived its pod: the marker put in it before the roll is still there.
    for claim in &claims {
        assert!(claim.join(MARKER).is_file(), "{} lost its data across the pod's restart", claim.display());
    }
    assert!(w.failures.is_empty(), "every write batch succeeded through the roll: {} failed", w.failures.len());
    assert!(during_roll > 0, "writes kept succeeding during the roll");
}
