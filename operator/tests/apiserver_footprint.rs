//! Against the real kube-apiserver: the `woodpecker-operator` binary managing 10 three-zone
//! clusters goes idle (no reconcile, no write) once they converge, and reports its resident memory.
//! The RSS ceiling is generous (debug build); the measured value is printed as a METRIC line.

mod apiserver_support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use apiserver_support::{FakeCluster, TestNamespace, client, install_crd, spawn_kubelet, wait_for};
use kube::api::{Api, PostParams};
use serde_json::json;
use woodpecker_crds::WoodpeckerCluster;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn metrics(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    Some(body)
}

/// Sum of every sample of the metric families starting with `prefix`.
fn total(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter(|l| !l.contains("action=\"skip\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn ten_converged_clusters_leave_the_operator_idle_and_small() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "footprint").await;
    let fake = FakeCluster::new().await;
    let kubelet = spawn_kubelet(client.clone(), &ns.name, fake.clone());
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let op = Proc(
        // WOODPECKER_OPERATOR_BIN=target/release/woodpecker-operator measures a release build.
        Command::new(
            std::env::var("WOODPECKER_OPERATOR_BIN")
                .unwrap_or_else(|_| env!("CARGO_BIN_EXE_woodpecker-operator").to_string()),
        )
        .args(["run", "--namespace", &ns.name, "--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", apiserver_support::kubeconfig_path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning woodpecker-operator"),
    );
    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    for i in 0..10 {
        let cr: WoodpeckerCluster = serde_json::from_value(json!({
            "apiVersion": "woodpecker.zilliz.io/v1alpha1",
            "kind": "WoodpeckerCluster",
            "metadata": {"name": format!("wal{i}")},
            "spec": {
                "metricsPort": fake.port,
                "quorum": {"ensembleSize": 3, "strategy": "multi-az-single-rg", "affinityMode": "hard"},
                "bufferPools": [{"name": "pool", "nodeGroups": [
                    {"name": "az-a", "zone": "zone-a", "replicas": 1},
                    {"name": "az-b", "zone": "zone-b", "replicas": 1},
                    {"name": "az-c", "zone": "zone-c", "replicas": 1},
                ]}],
            },
        }))
        .expect("cluster");
        clusters.create(&PostParams::default(), &cr).await.expect("creating a cluster");
    }
    // One fake membership answers for every pod; no roll runs here, so the gates do not matter.
    wait_for("10 clusters with 3/3 Ready", Duration::from_secs(120), || async {
        let list = clusters.list(&Default::default()).await.ok()?;
        let ready = list.items.iter().filter(|c| c.status.as_ref().is_some_and(|s| s.ready_replicas == 3)).count();
        (ready == 10).then_some(())
    })
    .await;
    // Idle: over 10 s (two busy requeue periods), no reconcile and no write (the idle resync is 5 minutes).
    let idle = wait_for("the operator to go idle", Duration::from_secs(90), || async {
        let a = metrics(port).await?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let b = metrics(port).await?;
        let busy =
            total(&b, "woodpecker_operator_reconciles_total") - total(&a, "woodpecker_operator_reconciles_total");
        let writes = total(&b, "woodpecker_operator_writes_total") - total(&a, "woodpecker_operator_writes_total");
        (busy == 0.0 && writes == 0.0).then_some(())
    })
    .await;
    let rss = rss_kib(op.0.id());
    println!(
        "METRIC idle_operator_rss_kib_10_clusters={rss} (binary: debug unless WOODPECKER_OPERATOR_BIN names another)"
    );
    assert!(rss < 200 * 1024, "idle RSS {rss} KiB with 10 clusters is above the 200 MiB ceiling");
    drop((idle, op));
    kubelet.abort();
}
