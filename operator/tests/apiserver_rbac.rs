//! Against the real kube-apiserver with `--authorization-mode=RBAC`: the operator running as the
//! Helm chart's ServiceAccount, with exactly the chart's RBAC, reconciles a cluster, records
//! Events, patches status and holds the leader Lease without a single 403 — cluster-wide, and in
//! the chart's namespaced mode (`watchNamespace`: a Role, no ClusterRole), where the same
//! ServiceAccount is refused Secrets anywhere else.
//!
//! The chart is rendered with `helm template` when `WOODPECKER_TESTBED_HELM` names a helm binary
//! (scripts/kube-testbed.sh installs one); otherwise the RBAC documents of the chart's templates
//! that contain no template directives are used as they are (cluster-wide mode only).

mod apiserver_support;

use std::path::PathBuf;
use std::time::Duration;

use apiserver_support::{RunningOperator, TestNamespace, client, config, install_crd, wait_for};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kube::{Client, Config};
use serde_json::{Value, json};
use woodpecker_crds::WoodpeckerCluster;
use woodpecker_operator::leader::{LeaderElector, LeaseConfig, LeaseState};

const RBAC_KINDS: &[&str] = &["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/woodpecker-operator")
}

/// The chart's RBAC documents, rendered for `release` in `ns` with `values` (`--set` pairs; these
/// need helm).
fn chart_rbac(release: &str, ns: &str, values: &[&str]) -> Vec<Value> {
    let dir = chart_dir();
    assert!(dir.join("Chart.yaml").exists(), "chart not found at {}", dir.display());
    let helm = std::env::var("WOODPECKER_TESTBED_HELM").ok().filter(|h| !h.is_empty());
    assert!(helm.is_some() || values.is_empty(), "rendering the chart with {values:?} needs WOODPECKER_TESTBED_HELM");
    let text = match helm {
        Some(helm) => {
            let out = std::process::Command::new(&helm)
                .args(["template", release])
                .arg(&dir)
                .args(["--namespace", ns])
                .args(values.iter().flat_map(|v| ["--set", v]))
                .output()
                .unwrap_or_else(|e| panic!("running {helm} template: {e}"));
            assert!(out.status.success(), "helm template failed: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).expect("helm output is UTF-8")
        }
        None => {
            let mut text = String::new();
            let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("templates"))
                .expect("chart templates")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            paths.sort();
            for p in paths {
                let body = std::fs::read_to_string(&p).unwrap_or_default();
                if !body.contains("{{") {
                    text.push_str("\n---\n");
                    text.push_str(&body);
                }
            }
            text
        }
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("parsing the rendered chart");
    docs.into_iter().filter(|d| d["kind"].as_str().is_some_and(|k| RBAC_KINDS.contains(&k))).collect()
}

async fn apply_dynamic(client: &Client, discovery: &Discovery, ns: &str, mut obj: Value) {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let (group, version) = api_version
        .split_once('/')
        .map_or((String::new(), api_version.clone()), |(g, v)| (g.to_string(), v.to_string()));
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk(&group, &version, &kind))
        .unwrap_or_else(|| panic!("{kind} not served"));
    let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
        // The chart names the namespace of what belongs elsewhere (the watched namespace's Role).
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or(ns).to_string();
        obj["metadata"]["namespace"] = json!(ns);
        Api::namespaced_with(client.clone(), &ns, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    api.patch(&name, &PatchParams::apply("woodpecker-tests").force(), &Patch::Apply(&obj))
        .await
        .unwrap_or_else(|e| panic!("applying chart {kind} {name}: {e}"));
}

/// Apply the chart's RBAC for `release` in `release_ns`; returns the rendered documents and a client
/// configuration authenticated as the chart's ServiceAccount (a token, as the kubelet mounts it).
async fn install_chart_rbac(admin: &Client, release: &str, release_ns: &str, values: &[&str]) -> (Vec<Value>, Config) {
    let docs = chart_rbac(release, release_ns, values);
    assert!(
        docs.iter().any(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role"),
        "the chart renders no Role/ClusterRole"
    );
    let discovery = Discovery::new(admin.clone()).run().await.expect("discovery");
    for d in &docs {
        apply_dynamic(admin, &discovery, release_ns, d.clone()).await;
    }
    let sa_name = docs
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .and_then(|d| d["metadata"]["name"].as_str())
        .expect("the chart renders a ServiceAccount")
        .to_string();
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), release_ns);
    let tr: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}})).expect("token request");
    let tr = sas
        .create_token_request(&sa_name, &PostParams::default(), &tr)
        .await
        .expect("requesting a ServiceAccount token");
    let token = tr.status.expect("token status").token;
    let mut cfg = config().await;
    cfg.auth_info = kube::config::AuthInfo { token: Some(token.into()), ..Default::default() };
    (docs, cfg)
}

/// The operator as the ServiceAccount `cfg` holds the Lease in `lease_ns`, and in `ns` reconciles a
/// cluster, writes its status, rolls it through the Eviction API with Events, and releases its
/// DeleteAll finalizer — with no failed reconcile.
async fn operator_runs_a_cluster_lifecycle(admin: &Client, cfg: Config, ns: &str, lease_ns: &str) {
    let sa_client = Client::try_from(cfg.clone()).expect("service account client");
    let elector = LeaderElector::new(sa_client.clone(), LeaseConfig::new("woodpecker-operator-leader", lease_ns, "t"));
    assert_eq!(elector.try_acquire_or_renew().await.expect("lease as the chart's ServiceAccount"), LeaseState::Leader);

    let op = RunningOperator::start(cfg, ns);
    let clusters: Api<WoodpeckerCluster> = Api::namespaced(admin.clone(), ns);
    let cr: WoodpeckerCluster = serde_json::from_value(json!({
        "apiVersion": "woodpecker.zilliz.io/v1alpha1",
        "kind": "WoodpeckerCluster",
        "metadata": {"name": "wal"},
        "spec": {"replicas": 3, "deletion": {"policy": "DeleteAll"}},
    }))
    .expect("cluster");
    clusters.create(&PostParams::default(), &cr).await.expect("creating the cluster");
    let sts: Api<StatefulSet> = Api::namespaced(admin.clone(), ns);
    wait_for("the StatefulSet and a status written by the ServiceAccount", Duration::from_secs(60), || async {
        let has_sts = !sts.list(&ListParams::default()).await.ok()?.items.is_empty();
        let st = clusters.get("wal").await.ok()?.status?;
        (has_sts && st.observed_generation.is_some()).then_some(())
    })
    .await;
    let text = op.metrics.encode();
    let errors = text
        .lines()
        .find(|l| l.starts_with("woodpecker_operator_reconciles_total{outcome=\"Error\"}"))
        .map(|l| l.to_string());
    assert!(errors.is_none(), "reconciles failed as the chart's ServiceAccount: {errors:?}");

    // A restart goes through the Eviction API (pods/eviction) and records an Event.
    clusters
        .patch("wal", &PatchParams::default(), &Patch::Merge(json!({"spec": {"rolloutPolicy": {"restartToken": "x"}}})))
        .await
        .expect("setting a restart token");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(admin.clone(), ns);
    wait_for("a RestartingPod Event published by the ServiceAccount", Duration::from_secs(60), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.iter().any(|e| e.reason.as_deref() == Some("RestartingPod")).then_some(())
    })
    .await;
    let text = op.metrics.encode();
    let errors = text.lines().find(|l| l.starts_with("woodpecker_operator_reconciles_total{outcome=\"Error\"}"));
    assert!(errors.is_none(), "reconciles failed as the chart's ServiceAccount during the roll: {errors:?}");

    // The DeleteAll finalizer is released by the ServiceAccount, too.
    clusters.delete("wal", &Default::default()).await.expect("deleting the cluster");
    wait_for("the cluster to be gone (finalizer released)", Duration::from_secs(60), || async {
        clusters.get_opt("wal").await.ok()?.is_none().then_some(())
    })
    .await;
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(admin.clone(), ns);
    wait_for("DeleteAll to delete the data PVCs", Duration::from_secs(60), || async {
        let list = pvcs.list(&ListParams::default()).await.ok()?;
        list.items.iter().all(|p| p.metadata.deletion_timestamp.is_some()).then_some(())
    })
    .await;
    op.stop().await;
}

#[tokio::test]
async fn chart_rbac_suffices_for_the_operator_running_as_its_service_account() {
    let admin = client().await;
    install_crd(&admin).await;
    let ns = TestNamespace::new(&admin, "rbac").await;
    let release = format!("wpo-{}", apiserver_support::suffix());
    let (_, cfg) = install_chart_rbac(&admin, &release, &ns.name, &[]).await;
    operator_runs_a_cluster_lifecycle(&admin, cfg, &ns.name, &ns.name).await;
}

/// `watchNamespace` set: the operator in its own namespace, the clusters in another. The chart
/// renders Roles only, the operator still does all it must in the watched namespace, and its
/// ServiceAccount is refused Secrets in any other namespace and cluster-wide.
#[tokio::test]
async fn chart_namespaced_mode_suffices_in_the_watched_namespace_and_grants_nothing_outside() {
    let admin = client().await;
    install_crd(&admin).await;
    let home = TestNamespace::new(&admin, "rbac-op").await;
    let watched = TestNamespace::new(&admin, "rbac-wal").await;
    let release = format!("wpo-{}", apiserver_support::suffix());
    let watch = format!("watchNamespace={}", watched.name);
    let (docs, cfg) = install_chart_rbac(&admin, &release, &home.name, &[watch.as_str()]).await;
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert!(
        !kinds.contains(&"ClusterRole") && !kinds.contains(&"ClusterRoleBinding"),
        "namespaced mode renders cluster-wide RBAC: {kinds:?}"
    );
    assert!(
        docs.iter().any(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == watched.name.as_str()),
        "namespaced mode renders no Role in the watched namespace"
    );

    // Secrets: readable in the watched namespace only.
    let sa_client = Client::try_from(cfg.clone()).expect("service account client");
    let secrets_in = |ns: &str| Api::<Secret>::namespaced(sa_client.clone(), ns);
    secrets_in(&watched.name).list(&ListParams::default()).await.expect("Secrets in the watched namespace");
    for (what, res) in [
        ("the operator's own namespace", secrets_in(&home.name).list(&ListParams::default()).await),
        ("all namespaces", Api::<Secret>::all(sa_client.clone()).list(&ListParams::default()).await),
        ("kube-system", secrets_in("kube-system").list(&ListParams::default()).await),
    ] {
        match res {
            Err(kube::Error::Api(s)) if s.code == 403 => {}
            other => panic!("listing Secrets in {what} as the namespaced ServiceAccount: {other:?}, not 403"),
        }
    }

    operator_runs_a_cluster_lifecycle(&admin, cfg, &watched.name, &home.name).await;
}
