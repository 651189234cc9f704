//! Shared helpers for the tests that run against the real kube-apiserver + kube-controller-manager
//! of `scripts/kube-testbed.sh`.
//!
//! Every test gets its own namespace and runs its own controller scoped to that namespace, so the
//! tests run in parallel without seeing each other's objects.

#![allow(dead_code)]

pub mod stalling_proxy;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use woodpecker_operator::admin::{DecommissionProgress, HttpAdminClient, Member, NodeStatus};
use woodpecker_operator::controller::{self, Settings};
use woodpecker_operator::metrics::Metrics;

/// Env var naming the test bed's admin kubeconfig (set by `scripts/kube-testbed.sh env`).
pub const KUBECONFIG_ENV: &str = "WOODPECKER_TESTBED_KUBECONFIG";

/// The test bed kubeconfig path; panics with instructions when the test bed is not configured.
pub fn kubeconfig_path() -> String {
    match std::env::var(KUBECONFIG_ENV) {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "{KUBECONFIG_ENV} is not set: these tests need the real kube-apiserver test bed.\n\
             Run: scripts/kube-testbed.sh install && scripts/kube-testbed.sh start && \
             eval \"$(scripts/kube-testbed.sh env)\" && cargo test -p woodpecker-operator"
        ),
    }
}

/// Client configuration for the test bed admin.
pub async fn config() -> Config {
    let path = kubeconfig_path();
    let kc = Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("reading kubeconfig {path}: {e}"));
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("loading kubeconfig {path}: {e}"))
}

/// An admin client.
pub async fn client() -> Client {
    Client::try_from(config().await).expect("building the admin client")
}

/// One request the counting client sent.
#[derive(Clone, Debug)]
pub struct Request {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
}

impl Request {
    /// A long-running watch (not a per-reconcile request).
    pub fn is_watch(&self) -> bool {
        self.uri.contains("watch=true") || self.uri.contains("watch=1")
    }
    /// A write: anything but GET/HEAD.
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD")
    }
}

/// Log of requests sent through a counting client.
#[derive(Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<Request>>>);

impl RequestLog {
    /// Requests so far.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    /// Requests after index `from`, excluding watches.
    pub fn since(&self, from: usize) -> Vec<Request> {
        self.0.lock().unwrap()[from..].iter().filter(|r| !r.is_watch()).cloned().collect()
    }
}

/// A client (built from `cfg`) that logs every request it sends.
pub fn counting_client(cfg: Config) -> (Client, RequestLog) {
    let log = RequestLog::default();
    let l = log.clone();
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        l.0.lock().unwrap().push(Request {
            method: req.method().to_string(),
            uri: req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        });
        req
    });
    let client = ClientBuilder::try_from(cfg).expect("client builder").with_layer(&layer).build();
    (client, log)
}

/// Wait until `f` returns `Some`, polling every 100 ms; panic with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Install (or update) the WoodpeckerCluster CRD and wait until it is Established.
pub async fn install_crd(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = woodpecker_crds::crd();
    let name = crd.name_any();
    api.patch(&name, &PatchParams::apply("woodpecker-tests").force(), &Patch::Apply(&crd))
        .await
        .unwrap_or_else(|e| panic!("installing CRD {name}: {e}"));
    wait_for("the CRD to be Established", Duration::from_secs(30), || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let crd = api.get(&name).await.ok()?;
            let established = crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        }
    })
    .await;
}

/// A fresh namespace for one test, deleted on drop of the guard (best effort).
pub struct TestNamespace {
    /// Namespace name.
    pub name: String,
}

impl TestNamespace {
    /// Create `wp-<prefix>-<random>`.
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let name = format!("wp-{prefix}-{:x}", (nanos as u64) ^ u64::from(std::process::id()));
        let name: String = name.chars().take(63).collect();
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        api.create(&PostParams::default(), &ns).await.expect("creating the test namespace");
        // Pods need the default ServiceAccount only if admission checks it; the test bed does not.
        Self { name }
    }
}

impl TestNamespace {
    /// [`wait_for`], but a timeout panics with [`describe_namespace`] of this namespace.
    pub async fn wait_for<T, F, Fut>(&self, client: &Client, what: &str, timeout: Duration, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if Instant::now() > deadline {
                let state = describe_namespace(client, &self.name).await;
                panic!("timed out after {timeout:?} waiting for {what}\n{state}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var("WOODPECKER_TESTBED_KEEP").is_ok() {
            return;
        }
        // The test's runtime is shutting down: delete from a thread with its own runtime and a
        // fresh client, so namespaces do not pile up in the test bed.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let client = client().await;
                let api: Api<Namespace> = Api::all(client.clone());
                let _ = api.delete(&name, &DeleteParams::background()).await;
                // The fake kubelet is gone: release the pods it held, or the namespace never goes away.
                let pods: Api<Pod> = Api::namespaced(client, &name);
                if let Ok(list) = pods.list(&Default::default()).await {
                    for pod in list.items {
                        release_pod(&pods, &pod.name_any(), &pod.uid().unwrap_or_default()).await;
                    }
                }
            });
        })
        .join();
    }
}

/// The operator running in-process against the test bed, scoped to one namespace.
pub struct RunningOperator {
    /// Requests the operator's client sent.
    pub requests: RequestLog,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningOperator {
    /// Reconcile passes finished so far (every outcome), from the operator's metrics.
    pub fn reconciles(&self) -> f64 {
        self.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("woodpecker_operator_reconciles_total"))
            .map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
            .sum()
    }

    /// Start the controller for `namespace` with `cfg` as its identity.
    pub fn start(cfg: Config, namespace: &str) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,woodpecker_operator=info")),
            )
            .with_test_writer()
            .try_init();
        let (client, requests) = counting_client(cfg);
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let settings = Settings {
            namespace: Some(namespace.to_string()),
            busy_requeue: Duration::from_millis(500),
            ..Settings::default()
        };
        let admin = Arc::new(HttpAdminClient::new(Duration::from_secs(2)));
        let m = metrics.clone();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = controller::run(client, settings, admin, m, s).await {
                panic!("controller failed: {e}");
            }
        });
        Self { requests, metrics, stop, task }
    }

    /// Stop the controller and wait for it.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

// ------------------------------------------------------------------ fake kubelet + admin API

/// One fake LogStore node.
#[derive(Clone, Debug)]
pub struct FakeNode {
    /// Loopback IP the pod gets.
    pub ip: Ipv4Addr,
    /// Zone it advertises.
    pub az: String,
    /// `active`, `decommissioning`, `decommissioned`.
    pub state: String,
    /// Gossip sees it only from this instant (None: not joined).
    pub joined_at: Option<Instant>,
    /// Answer 503 on /admin/log-health.
    pub log_unhealthy: bool,
    /// Answer 500 on /admin/node/status.
    pub status_fails: bool,
}

/// The fake LogStore cluster behind every pod's admin port.
///
/// Each pod gets its own loopback address `127.0.0.N`; one listener per address on the same port
/// answers for that pod, so the operator's real HTTP admin client is exercised end to end.
#[derive(Clone)]
pub struct FakeCluster {
    /// Admin port every fake pod listens on.
    pub port: u16,
    /// Nodes by pod name.
    pub nodes: Arc<Mutex<BTreeMap<String, FakeNode>>>,
    ips: Arc<Mutex<HashMap<Ipv4Addr, String>>>,
    listeners: Arc<Mutex<HashMap<Ipv4Addr, tokio::task::JoinHandle<()>>>>,
    /// Decommission requests received, by pod.
    pub decommissions: Arc<Mutex<Vec<String>>>,
    /// Cancel requests received, by pod.
    pub cancels: Arc<Mutex<Vec<String>>>,
    /// Most pods draining at once (in gossip and not `active`), seen when a decommission arrives.
    pub max_draining: Arc<Mutex<usize>>,
    /// How a decommission drains.
    pub drain: Arc<Mutex<Drain>>,
    /// Pods the kubelet never starts (they stay Pending, as on a node that cannot run them).
    pub never_start: Arc<Mutex<std::collections::BTreeSet<String>>>,
    /// UIDs of the pods the kubelet started (a pod it already runs is not started again).
    started: Arc<Mutex<std::collections::BTreeSet<String>>>,
    next_ip: Arc<Mutex<u8>>,
}

/// How a fake node drains after `POST /admin/node/decommission`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    /// `decommissioned` at once.
    Instant,
    /// `decommissioning` for this long, then `decommissioned`.
    After(Duration),
    /// `decommissioning` until cancelled.
    Never,
}

impl FakeCluster {
    /// A fake cluster listening on a free port (found on 127.0.0.1).
    pub async fn new() -> Self {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        Self {
            port,
            nodes: Default::default(),
            ips: Default::default(),
            listeners: Default::default(),
            decommissions: Default::default(),
            cancels: Default::default(),
            max_draining: Default::default(),
            drain: Arc::new(Mutex::new(Drain::Instant)),
            never_start: Default::default(),
            started: Default::default(),
            next_ip: Arc::new(Mutex::new(10)),
        }
    }

    /// Register pod `name` (zone `az`) and start its listener; returns its IP.
    pub async fn add_pod(&self, name: &str, az: &str) -> Ipv4Addr {
        if let Some(n) = self.nodes.lock().unwrap().get(name) {
            return n.ip;
        }
        let ip = {
            let mut next = self.next_ip.lock().unwrap();
            let ip = Ipv4Addr::new(127, 0, 0, *next);
            *next += 1;
            ip
        };
        self.nodes.lock().unwrap().insert(
            name.to_string(),
            FakeNode {
                ip,
                az: az.to_string(),
                state: "active".into(),
                joined_at: None,
                log_unhealthy: false,
                status_fails: false,
            },
        );
        self.ips.lock().unwrap().insert(ip, name.to_string());
        let app = Router::new()
            .route("/admin/node/status", get(status_h))
            .route("/admin/memberlist", get(members_h))
            .route("/admin/log-health", get(health_h))
            .route("/admin/node/decommission", post(decom_h))
            .route("/admin/node/decommission/progress", get(progress_h))
            .route("/admin/node/decommission/cancel", post(cancel_h))
            .with_state((self.clone(), name.to_string()));
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), self.port))
            .await
            .unwrap_or_else(|e| panic!("binding fake admin on {ip}:{}: {e}", self.port));
        let h = tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service()).await;
        });
        self.listeners.lock().unwrap().insert(ip, h);
        ip
    }

    /// Make `name` visible in gossip from now on (or after `delay`).
    pub fn join(&self, name: &str, delay: Duration) {
        if let Some(n) = self.nodes.lock().unwrap().get_mut(name) {
            n.joined_at = Some(Instant::now() + delay);
        }
    }

    /// Drop `name` from gossip (its pod was deleted).
    pub fn leave(&self, name: &str) {
        if let Some(n) = self.nodes.lock().unwrap().get_mut(name) {
            n.joined_at = None;
        }
    }

    fn members(&self) -> Vec<Member> {
        let now = Instant::now();
        self.nodes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| n.joined_at.is_some_and(|t| t <= now))
            .map(|(name, n)| Member {
                name: name.clone(),
                gossip_addr: format!("{}:17946", n.ip),
                service_addr: format!("{}:18080", n.ip),
                region: String::new(),
                az: n.az.clone(),
                resource_group: "default".into(),
                state: n.state.clone(),
                alive: true,
            })
            .collect()
    }
}

type FakeState = State<(FakeCluster, String)>;

async fn status_h(State((c, name)): FakeState) -> impl IntoResponse {
    let members = c.members().len() as u32;
    let n = c.nodes.lock().unwrap().get(&name).cloned();
    match n {
        Some(n) if n.status_fails => (StatusCode::INTERNAL_SERVER_ERROR, "data dir not writable").into_response(),
        Some(n) => axum::Json(NodeStatus {
            node_name: name,
            state: n.state,
            member_count: members,
            region: String::new(),
            az: n.az,
            resource_group: "default".into(),
            version: "test".into(),
            started_at: 0,
            disk_over_hard_watermark: false,
        })
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn members_h(State((c, _)): FakeState) -> impl IntoResponse {
    axum::Json(c.members())
}

async fn health_h(State((c, name)): FakeState) -> impl IntoResponse {
    let bad = c.nodes.lock().unwrap().get(&name).is_some_and(|n| n.log_unhealthy);
    if bad { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }
}

async fn decom_h(State((c, name)): FakeState) -> impl IntoResponse {
    c.decommissions.lock().unwrap().push(name.clone());
    let drain = *c.drain.lock().unwrap();
    {
        let nodes = c.nodes.lock().unwrap();
        let others =
            nodes.iter().filter(|(n, node)| **n != name && node.joined_at.is_some() && node.state != "active").count();
        let mut max = c.max_draining.lock().unwrap();
        *max = (*max).max(others + 1);
    }
    if let Some(n) = c.nodes.lock().unwrap().get_mut(&name) {
        if n.state != "active" {
            return StatusCode::OK;
        }
        n.state = if drain == Drain::Instant { "decommissioned" } else { "decommissioning" }.into();
    }
    if let Drain::After(d) = drain {
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            if let Some(n) = c.nodes.lock().unwrap().get_mut(&name)
                && n.state == "decommissioning"
            {
                n.state = "decommissioned".into();
            }
        });
    }
    StatusCode::OK
}

async fn progress_h(State((c, name)): FakeState) -> impl IntoResponse {
    let done = c.nodes.lock().unwrap().get(&name).is_some_and(|n| n.state == "decommissioned");
    axum::Json(DecommissionProgress { remaining_segments: 0, has_local_data: !done, safe_to_terminate: done })
}

async fn cancel_h(State((c, name)): FakeState, _p: Option<Path<String>>) -> impl IntoResponse {
    c.cancels.lock().unwrap().push(name.clone());
    if let Some(n) = c.nodes.lock().unwrap().get_mut(&name) {
        n.state = "active".into();
    }
    StatusCode::OK
}

/// Set a pod Running + Ready (or not Ready) with IP `ip`, as a kubelet would.
pub async fn set_pod_ready(pods: &Api<Pod>, name: &str, ip: Ipv4Addr, ready: bool) -> bool {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = if ready { "True" } else { "False" };
    let patch = json!({
        "status": {
            "phase": "Running",
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "hostIP": "127.0.0.1",
            "startTime": now,
            "conditions": [
                {"type": "Ready", "status": status, "lastTransitionTime": now},
                {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            ],
        }
    });
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok()
}

/// The finalizer the fake kubelets hold every running pod with. A pod the test bed never schedules is
/// removed at once when it is deleted, so the StatefulSet controller could recreate it (same name) before
/// the disruption controller saw it go; the PodDisruptionBudget then kept the evicted name in
/// `disruptedPods` and refused every eviction for its 2-minute timeout (seen in CI as a roll that did
/// not finish). A real kubelet takes a while to stop a pod; this finalizer gives the test bed the same
/// "terminating" phase, ended by [`finish_termination`].
pub const KUBELET_FINALIZER: &str = "woodpecker.zilliz.io/test-kubelet";

/// Start running `pod`: hold it with [`KUBELET_FINALIZER`]. False when the pod changed since this copy
/// (the next watch event brings the change and another try) or is gone.
pub async fn hold_pod(pods: &Api<Pod>, pod: &Pod) -> bool {
    if pod.finalizers().iter().any(|f| f == KUBELET_FINALIZER) {
        return true;
    }
    let mut finalizers = pod.finalizers().to_vec();
    finalizers.push(KUBELET_FINALIZER.to_string());
    // The resourceVersion makes the patch conditional: it never lands on a newer pod of the same name.
    let patch = json!({"metadata": {"resourceVersion": pod.resource_version(), "finalizers": finalizers}});
    pods.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok()
}

/// Drop [`KUBELET_FINALIZER`] from the pod `name` with `uid` (a later pod of the same name keeps it).
pub async fn release_pod(pods: &Api<Pod>, name: &str, uid: &str) {
    for _ in 0..10 {
        let Ok(pod) = pods.get(name).await else { return };
        if pod.uid().as_deref() != Some(uid) || !pod.finalizers().iter().any(|f| f == KUBELET_FINALIZER) {
            return;
        }
        let rest: Vec<&String> = pod.finalizers().iter().filter(|f| *f != KUBELET_FINALIZER).collect();
        let patch = json!({"metadata": {"resourceVersion": pod.resource_version(), "finalizers": rest}});
        if pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
            return;
        }
    }
}

/// A pod marked for deletion stops as on a node: once no PodDisruptionBudget lists it among its
/// disrupted pods any more (the disruption controller saw it terminating; at most 30 s), its
/// finalizer goes and the apiserver removes it. Runs in the background; repeated calls are harmless.
pub fn finish_termination(pods: Api<Pod>, pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget>, pod: &Pod) {
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let listed = match pdbs.list(&Default::default()).await {
                Ok(l) => l.items.iter().any(|p| {
                    p.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()).is_some_and(|d| d.contains_key(&name))
                }),
                Err(_) => true,
            };
            if !listed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        release_pod(&pods, &name, &uid).await;
    });
}

/// Fixed-size lowercase suffix from the clock, for object names.
pub fn suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{:06x}", nanos & 0xff_ffff)
}

/// Plays kubelet: every new pod gets a loopback IP, a fake admin endpoint, Ready and a gossip
/// join; a deleted pod leaves gossip.
pub fn spawn_kubelet(client: Client, ns: &str, fake: FakeCluster) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pdbs = Api::namespaced(client, ns);
    tokio::spawn(async move {
        // A watch error (the apiserver under load, an expired resource version) is retried with backoff,
        // as a kubelet would: ending here left every later pod un-Ready and failed tests by timeout.
        let mut stream = watcher(pods.clone(), watcher::Config::default()).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { continue };
            let (pod, deleted) = match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
                watcher::Event::Delete(p) => (p, true),
                watcher::Event::Init | watcher::Event::InitDone => continue,
            };
            let name = pod.name_any();
            if deleted || pod.metadata.deletion_timestamp.is_some() {
                fake.leave(&name);
                if !deleted {
                    finish_termination(pods.clone(), pdbs.clone(), &pod);
                }
                continue;
            }
            let uid = pod.uid().unwrap_or_default();
            if woodpecker_operator::controller::observe::pod_ready(&pod)
                || fake.started.lock().unwrap().contains(&uid)
                || fake.never_start.lock().unwrap().contains(&name)
                || !hold_pod(&pods, &pod).await
            {
                continue;
            }
            let zone = pod.labels().get("woodpecker.zilliz.io/zone").cloned().unwrap_or_default();
            let ip = fake.add_pod(&name, &zone).await;
            if let Some(n) = fake.nodes.lock().unwrap().get_mut(&name) {
                // A recreated pod starts fresh.
                n.state = "active".into();
            }
            for attempt in 0..10 {
                if set_pod_ready(&pods, &name, ip, true).await {
                    fake.join(&name, Duration::ZERO);
                    fake.started.lock().unwrap().insert(uid.clone());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
            }
        }
    })
}

/// Plays the kubelet's readiness probe against `/readyz`: a started pod is Ready exactly while its
/// fake node is `active` (a decommissioning server answers 503 by contract). Checks every 200 ms.
pub fn spawn_readiness_prober(client: Client, ns: &str, fake: FakeCluster) -> tokio::task::JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(client, ns);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(list) = pods.list(&Default::default()).await else { continue };
            for pod in list.items {
                let uid = pod.uid().unwrap_or_default();
                if pod.metadata.deletion_timestamp.is_some() || !fake.started.lock().unwrap().contains(&uid) {
                    continue;
                }
                let name = pod.name_any();
                let node = fake.nodes.lock().unwrap().get(&name).cloned();
                let Some(node) = node else { continue };
                let want = node.state == "active";
                if woodpecker_operator::controller::observe::pod_ready(&pod) != want {
                    set_pod_ready(&pods, &name, node.ip, want).await;
                }
            }
        }
    })
}

/// A few lines per object of what the test's namespace holds: cluster status, StatefulSets, pods,
/// PodDisruptionBudgets and the latest Events. Printed when a wait times out, so a failure in CI
/// says where the roll or scale stood instead of only that it did not finish.
pub async fn describe_namespace(client: &Client, ns: &str) -> String {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::events::v1::Event;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use std::fmt::Write;
    let mut out = format!("--- namespace {ns} at {} ---\n", k8s_openapi::jiff::Timestamp::now());
    let lp = kube::api::ListParams::default();
    let clusters: Api<woodpecker_crds::WoodpeckerCluster> = Api::namespaced(client.clone(), ns);
    match clusters.list(&lp).await {
        Ok(l) => {
            for c in l.items {
                let status = serde_json::to_string(&c.status).unwrap_or_default();
                let _ = writeln!(out, "cluster {} generation {:?}: {status}", c.name_any(), c.metadata.generation);
            }
        }
        Err(e) => out.push_str(&format!("clusters: {e}\n")),
    }
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    match sts.list(&lp).await {
        Ok(l) => {
            for s in l.items {
                let st = s.status.clone().unwrap_or_default();
                let annotations = s
                    .spec
                    .as_ref()
                    .and_then(|sp| sp.template.metadata.as_ref())
                    .and_then(|m| m.annotations.clone())
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "statefulset {} generation {:?} observed {:?} replicas {:?} ready {:?} current {:?} update {:?} \
                     template annotations {annotations:?}",
                    s.name_any(),
                    s.metadata.generation,
                    st.observed_generation,
                    s.spec.as_ref().and_then(|sp| sp.replicas),
                    st.ready_replicas,
                    st.current_revision,
                    st.update_revision,
                );
            }
        }
        Err(e) => out.push_str(&format!("statefulsets: {e}\n")),
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    match pods.list(&lp).await {
        Ok(l) => {
            for p in l.items {
                let _ = writeln!(
                    out,
                    "pod {} uid {} ready {} deleting {:?} revision {:?} annotations {:?}",
                    p.name_any(),
                    p.uid().unwrap_or_default(),
                    woodpecker_operator::controller::observe::pod_ready(&p),
                    p.metadata.deletion_timestamp.as_ref().map(|t| t.0.to_string()),
                    p.labels().get("controller-revision-hash"),
                    p.annotations(),
                );
            }
        }
        Err(e) => out.push_str(&format!("pods: {e}\n")),
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    if let Ok(l) = pdbs.list(&lp).await {
        for p in l.items {
            let _ = writeln!(out, "pdb {}: {}", p.name_any(), serde_json::to_string(&p.status).unwrap_or_default());
        }
    }
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    if let Ok(l) = events.list(&lp).await {
        let mut items = l.items;
        items.sort_by_key(|e| e.metadata.creation_timestamp.as_ref().map(|t| t.0));
        // The endpoints controllers refuse the test bed's loopback pod IPs on every change: noise.
        items.retain(|e| !e.reason.as_deref().unwrap_or("").starts_with("FailedToUpdateEndpoint"));
        for e in items.iter().rev().take(40).rev() {
            let _ = writeln!(
                out,
                "event {:?} {} {}: {}",
                e.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
                e.reason.as_deref().unwrap_or(""),
                e.regarding.as_ref().and_then(|r| r.name.as_deref()).unwrap_or(""),
                e.note.as_deref().unwrap_or(""),
            );
        }
    }
    out
}
