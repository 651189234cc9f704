//! The pod tier: a test kubelet that runs the pods of one namespace as real processes.
//!
//! The kube test bed has an apiserver and a controller-manager but no kubelet, so pods never run.
//! [`PodTier`] plays every node of the namespace's pods:
//!
//! - **Nodes**: one Node object per zone (`wp-pod-tier-<zone>`, labelled
//!   `topology.kubernetes.io/zone`), created when missing; each pod is bound (the `binding`
//!   subresource) to the node of its `topology.kubernetes.io/zone` label.
//! - **Process**: the first container's command (`/usr/local/bin/woodpecker` → the cargo-built
//!   binary, see `process_image`), args and env resolved as the kubelet does (`container_spec`),
//!   with a clean environment, as the pod's `runAsUser`, in the pod's directory.
//! - **Volumes**: ConfigMap and Secret items as files, emptyDir per pod, one directory per
//!   PersistentVolumeClaim that outlives the pod (`volumes`); mount paths rewritten to them.
//! - **Network**: each pod gets its own loopback address `127.0.<tier>.<n>` (stable per pod name);
//!   an `LD_PRELOAD` shim turns the server's `0.0.0.0` binds into that address, so every pod uses
//!   the same ports as in a cluster. Pod and Service DNS names resolve through a managed
//!   `/etc/hosts` block (`hosts_file`); ClusterIP Services are served by `service_proxy`.
//! - **Probes**: startup, then readiness and liveness HTTP probes with the pod's timings; status
//!   (phase, podIP, Ready/ContainersReady, container state and restart count) is patched as a kubelet
//!   reports it. A process that exits, or fails its liveness probe, is restarted (restartPolicy Always).
//! - **Deletion**: Ready goes False, SIGTERM, SIGKILL after the grace period, then the pod's
//!   finalizer is removed (once no PodDisruptionBudget lists it as disrupted) and the pod deleted
//!   with grace 0, as a kubelet confirms a stopped pod.

#![allow(dead_code)]

pub mod container_spec;
pub mod hosts_file;
pub mod probe;
pub mod process_image;
pub mod service_proxy;
pub mod volumes;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::apiserver_support::{hold_pod, release_pod};
use container_spec::{EnvSources, PathMap};
use hosts_file::HostsBlock;
use probe::HttpProbe;
use service_proxy::{Endpoint, Endpoints};

/// Label naming a node's (and a pod's) zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The address every pod reports as its host's.
pub const HOST_IP: &str = "127.0.0.1";

/// Next third octet of a pod tier's addresses, so two tiers of one process never share one.
static NEXT_TIER: AtomicU8 = AtomicU8::new(0);

/// What the pod tier did, for the tests' figures.
#[derive(Debug, Default, Clone)]
pub struct TierStats {
    /// Processes started (first starts and restarts).
    pub process_starts: u32,
    /// Distinct pods (by uid) whose process started.
    pub pods_started: u32,
    /// Restarts after an exit or a failed liveness probe.
    pub container_restarts: u32,
    /// Pods stopped because they were deleted.
    pub pods_stopped: u32,
    /// Of those, how many needed SIGKILL after the grace period.
    pub sigkills: u32,
    /// Time from SIGTERM to the process's exit, per stopped pod.
    pub stop_times: Vec<Duration>,
    /// Time from the process's stop to the pod's release (the PodDisruptionBudget wait), per pod.
    pub release_times: Vec<Duration>,
    /// When each pod (by name) first passed its readiness probe, per incarnation.
    pub ready_at: Vec<(String, Instant)>,
}

struct Shared {
    client: Client,
    ns: String,
    cluster_domain: String,
    root: PathBuf,
    tier: u8,
    hosts: HostsBlock,
    ips: Mutex<BTreeMap<String, Ipv4Addr>>,
    endpoints: Endpoints,
    stats: Mutex<TierStats>,
    /// Running workers by pod uid: their deletion token and their task.
    workers: Mutex<BTreeMap<String, (CancellationToken, tokio::task::JoinHandle<()>)>>,
    stop: CancellationToken,
}

/// The test kubelet of one namespace; see the module doc.
pub struct PodTier {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Shut down already (nothing left for `Drop`).
    done: bool,
    _root: Option<tempfile::TempDir>,
}

impl PodTier {
    /// Start playing kubelet (and kube-proxy) for the pods and Services of `ns`, whose cluster DNS
    /// domain is `cluster_domain`.
    pub async fn start(client: Client, ns: &str, cluster_domain: &str) -> Self {
        // Build both before any pod arrives, so the first start is not delayed by cargo.
        let _ = tokio::task::spawn_blocking(|| {
            process_image::server_binary();
            process_image::bind_shim();
        })
        .await;
        let root = tempfile::Builder::new().prefix("wp-pod-tier-").tempdir_in(volume_root()).expect("pod tier root");
        // The servers run as the pods' runAsUser: the tree must be traversable by it.
        std::fs::set_permissions(root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("pod tier root permissions");
        let tier = 101 + NEXT_TIER.fetch_add(1, Ordering::Relaxed) % 100;
        let shared = Arc::new(Shared {
            client: client.clone(),
            ns: ns.to_string(),
            cluster_domain: cluster_domain.to_string(),
            root: root.path().to_path_buf(),
            tier,
            hosts: HostsBlock::new(ns),
            ips: Default::default(),
            endpoints: Default::default(),
            stats: Default::default(),
            workers: Default::default(),
            stop: CancellationToken::new(),
        });
        let mut tasks = vec![tokio::spawn(watch_pods(shared.clone()))];
        let (alloc_shared, publish_shared) = (shared.clone(), shared.clone());
        tasks.push(service_proxy::spawn(
            client,
            ns.to_string(),
            cluster_domain.to_string(),
            shared.endpoints.clone(),
            move |svc| alloc_shared.ip_for(&format!("service/{svc}")),
            move |ip, names| publish_shared.hosts.set(ip, &names),
            shared.stop.clone(),
        ));
        let keep = std::env::var_os("WOODPECKER_TESTBED_KEEP").is_some();
        let root = if keep {
            eprintln!("pod tier: keeping {}", root.keep().display());
            None
        } else {
            Some(root)
        };
        Self { shared, tasks, done: false, _root: root }
    }

    /// What the tier did so far.
    pub fn stats(&self) -> TierStats {
        self.shared.stats.lock().unwrap().clone()
    }

    /// The pods' host directory (container logs are `pods/<pod>-<uid8>/container.log`).
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// The last `lines` lines of every pod's container log, for a failure message.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let Ok(dirs) = std::fs::read_dir(self.shared.root.join("pods")) else { return out };
        let mut dirs: Vec<PathBuf> = dirs.flatten().map(|d| d.path()).collect();
        dirs.sort();
        for d in dirs {
            let log = std::fs::read_to_string(d.join("container.log")).unwrap_or_default();
            let all: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- {} (last {lines} lines)\n", d.display()));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// The end of a test: stop every process (SIGKILL), then delete the namespace and remove its
    /// pods (see [`remove_namespace`]); the hosts block goes with the tier.
    pub async fn shutdown(mut self) {
        self.stop_all();
        if std::env::var_os("WOODPECKER_TESTBED_KEEP").is_none() {
            remove_namespace(self.shared.client.clone(), self.shared.ns.clone()).await;
        }
        self.done = true;
    }

    fn stop_all(&mut self) {
        self.shared.stop.cancel();
        for (_, (_, task)) in std::mem::take(&mut *self.shared.workers.lock().unwrap_or_else(|e| e.into_inner())) {
            // Dropping a worker kills its process (kill_on_drop).
            task.abort();
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for PodTier {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // A failing test: stop the processes and remove the pods from a thread with its own runtime
        // (the test's is shutting down), or the namespace would stay Terminating for good.
        self.stop_all();
        if std::env::var_os("WOODPECKER_TESTBED_KEEP").is_some() {
            return;
        }
        let ns = self.shared.ns.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let client = crate::apiserver_support::client().await;
                remove_namespace(client, ns).await;
            });
        })
        .join();
    }
}

/// Delete namespace `ns`, then release and delete its pods with grace 0 until none is left (at most
/// 20 s). Pods bound to a node wait for that node's kubelet to confirm them stopped, so without this
/// the namespace stays Terminating; once it is terminating the StatefulSets cannot recreate them.
async fn remove_namespace(client: Client, ns: String) {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Ok(list) = pods.list(&Default::default()).await else { return };
        if list.items.is_empty() {
            return;
        }
        for pod in list.items {
            release_and_remove(&pods, &pod.name_any(), &pod.uid().unwrap_or_default()).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where pod directories and claims live: `$WOODPECKER_POD_TIER_DIR`, else `/dev/shm` when it is a
/// directory, else the temp dir. A claim is a volume of its own in a cluster; on a shared host disk
/// the servers' disk watermark sees the host's usage instead (on the CI machines statvfs reports the
/// root file system ~90% used because of its reserve, past the hard watermark, and every append is
/// refused as disk pressure), so a tmpfs stands in for the volume.
fn volume_root() -> PathBuf {
    if let Some(d) = std::env::var_os("WOODPECKER_POD_TIER_DIR") {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
}

impl Shared {
    /// The stable address of `key` (a pod name, or `service/<name>`).
    fn ip_for(&self, key: &str) -> Ipv4Addr {
        let mut ips = self.ips.lock().unwrap();
        if let Some(ip) = ips.get(key) {
            return *ip;
        }
        let n = u8::try_from(ips.len() + 1).ok().filter(|n| *n < 255).expect("at most 254 addresses per pod tier");
        let ip = Ipv4Addr::new(127, 0, self.tier, n);
        ips.insert(key.to_string(), ip);
        ip
    }

    /// The DNS names of a pod: `<pod>.<subdomain>.<ns>.svc.<domain>` and its shorter forms with the
    /// namespace (names without it would clash between namespaces sharing the hosts file).
    fn pod_names(&self, pod: &Pod) -> Vec<String> {
        let name = pod.name_any();
        let Some(sub) = pod.spec.as_ref().and_then(|s| s.subdomain.clone()) else { return Vec::new() };
        let ns = &self.ns;
        vec![
            format!("{name}.{sub}.{ns}.svc.{}", self.cluster_domain),
            format!("{name}.{sub}.{ns}.svc"),
            format!("{name}.{sub}.{ns}"),
        ]
    }
}

async fn watch_pods(shared: Arc<Shared>) {
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &shared.ns);
    let mut stream = watcher(pods.clone(), watcher::Config::default()).default_backoff().boxed();
    while let Some(ev) = stream.next().await {
        let Ok(ev) = ev else { continue };
        let (pod, gone) = match ev {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
            watcher::Event::Delete(p) => (p, true),
            watcher::Event::Init | watcher::Event::InitDone => continue,
        };
        let uid = pod.uid().unwrap_or_default();
        let deleting = gone || pod.metadata.deletion_timestamp.is_some();
        let worker = shared.workers.lock().unwrap().get(&uid).map(|(t, _)| t.clone());
        match (worker, deleting) {
            (Some(token), true) => token.cancel(),
            (Some(_), false) => {}
            (None, true) => {
                if !gone {
                    // Never started here: nothing to stop.
                    let (pods, name) = (pods.clone(), pod.name_any());
                    tokio::spawn(async move { release_and_remove(&pods, &name, &uid).await });
                }
            }
            (None, false) => {
                if !hold_pod(&pods, &pod).await {
                    continue;
                }
                let token = CancellationToken::new();
                let task = tokio::spawn(run_pod(shared.clone(), pod, token.clone()));
                shared.workers.lock().unwrap().insert(uid, (token, task));
            }
        }
    }
}

/// Remove the kubelet finalizer of pod `name`/`uid` and delete it with grace 0.
async fn release_and_remove(pods: &Api<Pod>, name: &str, uid: &str) {
    release_pod(pods, name, uid).await;
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..Default::default()
    };
    let _ = pods.delete(name, &dp).await;
}

/// Create the Node of `zone` unless it exists; its name.
async fn zone_node(client: &Client, zone: &str) -> String {
    let name = if zone.is_empty() { "wp-pod-tier-default".to_string() } else { format!("wp-pod-tier-{zone}") };
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(&name).await.ok().flatten().is_none() {
        let mut labels = BTreeMap::from([("kubernetes.io/hostname".to_string(), name.clone())]);
        if !zone.is_empty() {
            labels.insert(ZONE_LABEL.to_string(), zone.to_string());
        }
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {},
        }))
        .expect("node object");
        let _ = nodes.create(&PostParams::default(), &node).await;
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": HOST_IP}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "PodTier", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        }});
        let _ = nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await;
    }
    name
}

/// ConfigMaps and Secrets of the namespace, decoded.
#[allow(clippy::type_complexity)]
async fn namespace_data(
    client: &Client,
    ns: &str,
) -> Result<(BTreeMap<String, BTreeMap<String, String>>, BTreeMap<String, BTreeMap<String, String>>), String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let cms = cms.list(&Default::default()).await.map_err(|e| format!("listing ConfigMaps: {e}"))?;
    let secrets = secrets.list(&Default::default()).await.map_err(|e| format!("listing Secrets: {e}"))?;
    let cms = cms.items.into_iter().map(|c| (c.name_any(), c.data.unwrap_or_default())).collect();
    let secrets = secrets
        .items
        .into_iter()
        .map(|s| {
            let name = s.name_any();
            let mut data: BTreeMap<String, String> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect();
            data.extend(s.string_data.unwrap_or_default());
            (name, data)
        })
        .collect();
    Ok((cms, secrets))
}

/// A container's state for the status report.
enum ContainerState {
    Waiting(&'static str, String),
    Running(String),
}

/// Patch the pod's status as a kubelet reports it.
async fn report(pods: &Api<Pod>, pod: &Pod, ip: Ipv4Addr, state: &ContainerState, ready: bool, restarts: u32) -> bool {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let start = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map_or(now.clone(), |t| t.0.to_string());
    let r = if ready { "True" } else { "False" };
    let c = pod.spec.as_ref().and_then(|s| s.containers.first());
    let (state_json, started) = match state {
        ContainerState::Waiting(reason, message) => (json!({"waiting": {"reason": reason, "message": message}}), false),
        ContainerState::Running(at) => (json!({"running": {"startedAt": at}}), true),
    };
    let patch = json!({"status": {
        "phase": "Running",
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "startTime": start,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": start},
            {"type": "Initialized", "status": "True", "lastTransitionTime": start},
            {"type": "ContainersReady", "status": r, "lastTransitionTime": now},
            {"type": "Ready", "status": r, "lastTransitionTime": now},
        ],
        "containerStatuses": [{
            "name": c.map(|c| c.name.clone()).unwrap_or_default(),
            "image": c.and_then(|c| c.image.clone()).unwrap_or_default(),
            "imageID": "",
            "ready": ready,
            "started": started,
            "restartCount": restarts,
            "state": state_json,
        }],
    }});
    pods.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok()
}

/// Everything needed to start the pod's process, or the reason it cannot start yet.
struct Prepared {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    tmp: Option<PathBuf>,
    run_as: Option<u32>,
}

async fn prepare(shared: &Shared, pod: &Pod, ip: Ipv4Addr, pod_dir: &Path) -> Result<Prepared, String> {
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    let c = spec.containers.first().ok_or("the pod has no container")?;
    let (cms, secrets) = namespace_data(&shared.client, &shared.ns).await?;
    let dirs = volumes::volume_dirs(&shared.root, pod_dir, pod);
    let mounts = volumes::mounts(pod, &dirs)?;
    let tmp = mounts.iter().find(|(m, _)| m == "/tmp").map(|(_, d)| d.clone());
    let paths = PathMap::new(mounts);
    let run_as = spec
        .containers
        .first()
        .and_then(|c| c.security_context.as_ref())
        .and_then(|s| s.run_as_user)
        .or_else(|| spec.security_context.as_ref().and_then(|s| s.run_as_user))
        .map(|u| u as u32);
    volumes::materialise(pod, &dirs, &paths, &cms, &secrets, run_as)?;
    let ip_s = ip.to_string();
    let src = EnvSources { pod, pod_ip: &ip_s, host_ip: HOST_IP, config_maps: &cms, secrets: &secrets };
    let env = container_spec::resolve_env(c, &src)?;
    let (command, args) = container_spec::expand_command(c, &env);
    let (program, mut args) = match command.split_first() {
        Some((p, rest)) => (p.clone(), [rest.to_vec(), args].concat()),
        None => return Err("the container has no command (the image's entrypoint is not known here)".into()),
    };
    let program = process_image::host_command(&program)?;
    args = args.iter().map(|a| paths.rewrite(a)).collect();
    let env = env.into_iter().map(|(k, v)| (k, paths.rewrite(&v))).collect();
    Ok(Prepared { program, args, env, tmp, run_as })
}

fn spawn_process(p: &Prepared, ip: Ipv4Addr, pod_dir: &Path) -> std::io::Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(pod_dir.join("container.log"))?;
    let mut cmd = tokio::process::Command::new(&p.program);
    cmd.args(&p.args)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(p.env.iter().cloned())
        .env("LD_PRELOAD", process_image::bind_shim())
        .env("WOODPECKER_POD_IP", ip.to_string())
        .current_dir(pod_dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true);
    // A debugging aid: the servers' log filter (their env is otherwise the pod's own).
    if let Some(filter) = std::env::var_os("WOODPECKER_POD_TIER_RUST_LOG") {
        cmd.env("RUST_LOG", filter);
    }
    if let Some(tmp) = &p.tmp {
        cmd.env("TMPDIR", tmp);
    }
    if let Some(uid) = p.run_as {
        cmd.uid(uid).gid(uid);
    }
    cmd.spawn()
}

fn signal(child: &tokio::process::Child, sig: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe {
            libc::kill(pid as i32, sig);
        }
    }
}

/// One pod, from binding to removal.
async fn run_pod(shared: Arc<Shared>, pod: Pod, deleted: CancellationToken) {
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &shared.ns);
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let zone = pod.labels().get(ZONE_LABEL).cloned().unwrap_or_default();
    let mut pod = pod;
    if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none() {
        let node = zone_node(&shared.client, &zone).await;
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        if let Err(e) = pods
            .create_subresource::<serde_json::Value, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            eprintln!("pod tier: binding {name} to {node}: {e}");
        }
        if let Ok(p) = pods.get(&name).await
            && p.uid().as_deref() == Some(uid.as_str())
        {
            pod = p;
        }
    }
    let ip = shared.ip_for(&name);
    shared.hosts.set(ip, &shared.pod_names(&pod));
    let c = pod.spec.as_ref().and_then(|s| s.containers.first()).cloned().unwrap_or_default();
    let ports: BTreeMap<String, u16> = c
        .ports
        .iter()
        .flatten()
        .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
        .collect();
    let set_endpoint = |ready: bool| {
        shared
            .endpoints
            .lock()
            .unwrap()
            .insert(name.clone(), Endpoint { ip, ready, labels: pod.labels().clone(), ports: ports.clone() });
    };
    set_endpoint(false);
    let pod_dir = shared.root.join("pods").join(format!("{name}-{}", &uid[..uid.len().min(8)]));
    let _ = std::fs::create_dir_all(&pod_dir);
    let probes = |p: Option<&k8s_openapi::api::core::v1::Probe>| p.map(|p| HttpProbe::from_spec(p, &c)).transpose();
    let (startup, readiness, liveness) =
        match (probes(c.startup_probe.as_ref()), probes(c.readiness_probe.as_ref()), probes(c.liveness_probe.as_ref()))
        {
            (Ok(s), Ok(r), Ok(l)) => (s, r, l),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                report(&pods, &pod, ip, &ContainerState::Waiting("CreateContainerConfigError", e), false, 0).await;
                deleted.cancelled().await;
                finish(&shared, &pods, &name, &uid).await;
                return;
            }
        };

    // Prepare (ConfigMaps or Secrets may not exist yet: retried, as a kubelet does).
    let prepared = loop {
        match prepare(&shared, &pod, ip, &pod_dir).await {
            Ok(p) => break Some(p),
            Err(e) => {
                report(&pods, &pod, ip, &ContainerState::Waiting("CreateContainerConfigError", e), false, 0).await;
                tokio::select! {
                    _ = deleted.cancelled() => break None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let Some(prepared) = prepared else {
        finish(&shared, &pods, &name, &uid).await;
        return;
    };
    shared.stats.lock().unwrap().pods_started += 1;

    let mut restarts = 0u32;
    let grace = |p: &Pod| {
        p.metadata
            .deletion_grace_period_seconds
            .or_else(|| p.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
    };
    'lifetime: loop {
        let mut child = match spawn_process(&prepared, ip, &pod_dir) {
            Ok(c) => c,
            Err(e) => {
                report(&pods, &pod, ip, &ContainerState::Waiting("RunContainerError", e.to_string()), false, restarts)
                    .await;
                tokio::select! {
                    _ = deleted.cancelled() => break 'lifetime,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue 'lifetime,
                }
            }
        };
        shared.stats.lock().unwrap().process_starts += 1;
        let started_at = k8s_openapi::jiff::Timestamp::now().to_string();
        let running = ContainerState::Running(started_at);
        report(&pods, &pod, ip, &running, false, restarts).await;
        let t0 = Instant::now();
        let mut started = startup.is_none();
        let mut ready = false;
        let (mut startup_failures, mut live_failures, mut ready_failures) = (0u32, 0u32, 0u32);
        let mut next_startup = t0 + startup.as_ref().map_or(Duration::ZERO, |p| p.initial_delay);
        let mut next_ready = t0 + readiness.as_ref().map_or(Duration::ZERO, |p| p.initial_delay);
        let mut next_live = t0 + liveness.as_ref().map_or(Duration::ZERO, |p| p.initial_delay);
        let restart = loop {
            let now = Instant::now();
            let mut wake = now + Duration::from_secs(1);
            if !started {
                if let Some(p) = &startup
                    && now >= next_startup
                {
                    if p.check(ip).await {
                        started = true;
                    } else {
                        startup_failures += 1;
                        if startup_failures >= p.failure_threshold {
                            break true;
                        }
                    }
                    next_startup = Instant::now() + p.period;
                }
                wake = wake.min(next_startup);
            } else {
                if let Some(p) = &readiness
                    && now >= next_ready
                {
                    let ok = p.check(ip).await;
                    ready_failures = if ok { 0 } else { ready_failures + 1 };
                    // Ready on the first success; not Ready after failureThreshold failures.
                    let want = if ok {
                        true
                    } else if ready_failures >= p.failure_threshold {
                        false
                    } else {
                        ready
                    };
                    if want != ready
                        && !deleted.is_cancelled()
                        && report(&pods, &pod, ip, &running, want, restarts).await
                    {
                        ready = want;
                        set_endpoint(ready);
                        if ready {
                            shared.stats.lock().unwrap().ready_at.push((name.clone(), Instant::now()));
                        }
                    }
                    next_ready = Instant::now() + p.period;
                }
                if readiness.is_none() && !ready && report(&pods, &pod, ip, &running, true, restarts).await {
                    ready = true;
                    set_endpoint(true);
                }
                if let Some(p) = &liveness
                    && now >= next_live
                {
                    live_failures = if p.check(ip).await { 0 } else { live_failures + 1 };
                    if live_failures >= p.failure_threshold {
                        break true;
                    }
                    next_live = Instant::now() + p.period;
                }
                wake = wake.min(next_ready).min(next_live);
            }
            tokio::select! {
                _ = deleted.cancelled() => break false,
                _ = child.wait() => break true,
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
        };
        set_endpoint(false);
        if !restart {
            // Deleted: Ready False, SIGTERM, SIGKILL after the grace period.
            let current = pods.get(&name).await.ok().filter(|p| p.uid().as_deref() == Some(uid.as_str()));
            let grace = current.as_ref().map_or(30, grace);
            report(&pods, current.as_ref().unwrap_or(&pod), ip, &running, false, restarts).await;
            let term_at = Instant::now();
            signal(&child, libc::SIGTERM);
            let stopped = tokio::time::timeout(Duration::from_secs(grace.max(0) as u64), child.wait()).await;
            {
                let mut stats = shared.stats.lock().unwrap();
                stats.pods_stopped += 1;
                stats.stop_times.push(term_at.elapsed());
                stats.sigkills += u32::from(stopped.is_err());
            }
            if stopped.is_err() {
                signal(&child, libc::SIGKILL);
                let _ = child.wait().await;
            }
            break 'lifetime;
        }
        // Exited or failed a probe: kill what is left and start again after a short back-off.
        signal(&child, libc::SIGKILL);
        let _ = child.wait().await;
        restarts += 1;
        shared.stats.lock().unwrap().container_restarts += 1;
        let why = format!("restart {restarts}: the process exited or failed its liveness or startup probe");
        report(&pods, &pod, ip, &ContainerState::Waiting("CrashLoopBackOff", why), false, restarts).await;
        tokio::select! {
            _ = deleted.cancelled() => break 'lifetime,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    finish(&shared, &pods, &name, &uid).await;
}

/// After the process stopped: wait (at most 30 s) until no PodDisruptionBudget lists the pod as
/// disrupted (see `apiserver_support::KUBELET_FINALIZER`), then release and remove it.
async fn finish(shared: &Shared, pods: &Api<Pod>, name: &str, uid: &str) {
    let started = Instant::now();
    shared.endpoints.lock().unwrap().remove(name);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(shared.client.clone(), &shared.ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let listed = match pdbs.list(&Default::default()).await {
            Ok(l) => l.items.iter().any(|p| {
                p.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()).is_some_and(|d| d.contains_key(name))
            }),
            Err(_) => true,
        };
        if !listed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    release_and_remove(pods, name, uid).await;
    shared.stats.lock().unwrap().release_times.push(started.elapsed());
    shared.workers.lock().unwrap().remove(uid);
}
