//! Wiring: watches, reflector caches and the kube-runtime controller loop.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use woodpecker_crds::WoodpeckerCluster;

/// How long a reconcile waits for the watch caches before it is requeued.
const CACHE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

use super::load::UserObjects;
use super::{Context, Error, LABEL_CLUSTER, ReferenceIndex, reconcile};
use crate::admin::AdminClient;
use crate::metrics::{Metrics, Outcome, ReconcileLabels};

/// Controller settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace; `None` watches all namespaces.
    pub namespace: Option<String>,
    /// Clusters reconciled concurrently.
    pub concurrency: u16,
    /// Requeue interval while a roll, scale or decommission is in progress.
    pub busy_requeue: Duration,
    /// Resync interval when idle (notices gossip drift the watches cannot see).
    pub idle_requeue: Duration,
    /// Event reporter name.
    pub reporter: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            concurrency: 4,
            busy_requeue: Duration::from_secs(5),
            idle_requeue: Duration::from_secs(300),
            reporter: "woodpecker-operator".to_string(),
        }
    }
}

/// Reflector caches of everything the operator renders or observes.
#[derive(Clone)]
pub struct Stores {
    /// StatefulSets of the clusters.
    pub stateful_sets: Store<StatefulSet>,
    /// Services of the clusters.
    pub services: Store<Service>,
    /// ConfigMaps rendered by the operator.
    pub config_maps: Store<ConfigMap>,
    /// Secrets rendered by the operator.
    pub secrets: Store<Secret>,
    /// ServiceAccounts rendered by the operator.
    pub service_accounts: Store<ServiceAccount>,
    /// PodDisruptionBudgets.
    pub pdbs: Store<PodDisruptionBudget>,
    /// LogStore pods.
    pub pods: Store<Pod>,
    /// Data PVCs of the LogStore pods.
    pub pvcs: Store<PersistentVolumeClaim>,
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Annotation `kubectl apply` keeps a full copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drop what the operator never reads but would otherwise keep for every cached object (every
/// Secret and ConfigMap of the cluster for the metadata watches): `managedFields` and kubectl's
/// last-applied copy, often larger than the rest of the object.
pub fn slim<K: Resource>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    if let Some(ann) = obj.meta_mut().annotations.as_mut() {
        ann.remove(LAST_APPLIED);
    }
}

/// A watch whose objects are [`slim`]med before they reach a cache.
pub fn slim_watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, config).modify(slim::<K>)
}

fn referencing(index: &ReferenceIndex, kind: &str, meta: &ObjectMeta) -> Vec<ObjectRef<WoodpeckerCluster>> {
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else { return Vec::new() };
    index.clusters(kind, ns, name).iter().map(|c| ObjectRef::new(c).within(ns)).collect()
}

/// Run the controller until `shutdown` fires.
pub async fn run(
    client: Client,
    settings: Settings,
    admin: Arc<dyn AdminClient>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let ns = settings.namespace.as_deref();
    // Only objects carrying the cluster label are cached: the operator never reads others' objects
    // through the caches, and this bounds memory in busy namespaces.
    let wc = watcher::Config::default().labels(LABEL_CLUSTER).any_semantic();

    macro_rules! cached {
        ($ty:ty) => {{
            let (reader, writer) = reflector::store::<$ty>();
            let stream = reflector::reflector(writer, slim_watch(api::<$ty>(&client, ns), wc.clone()))
                .default_backoff()
                .touched_objects();
            (reader, stream)
        }};
    }
    let (sts_r, sts_s) = cached!(StatefulSet);
    let (svc_r, svc_s) = cached!(Service);
    let (cm_r, cm_s) = cached!(ConfigMap);
    let (sec_r, sec_s) = cached!(Secret);
    let (sa_r, sa_s) = cached!(ServiceAccount);
    let (pdb_r, pdb_s) = cached!(PodDisruptionBudget);
    let (pod_r, pod_s) = cached!(Pod);
    let (pvc_r, pvc_s) = cached!(PersistentVolumeClaim);

    // User Secrets/ConfigMaps named by a spec carry no operator label: watch their metadata only
    // and map a change to the clusters that reference them (credential rotation, a late Secret).
    let (secret_meta, secret_meta_w) = reflector::store::<PartialObjectMeta<Secret>>();
    let user_secrets = reflector::reflector(
        secret_meta_w,
        slim_watch(api::<PartialObjectMeta<Secret>>(&client, ns), watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .touched_objects();
    let (cm_meta, cm_meta_w) = reflector::store::<PartialObjectMeta<ConfigMap>>();
    let user_cms = reflector::reflector(
        cm_meta_w,
        slim_watch(api::<PartialObjectMeta<ConfigMap>>(&client, ns), watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .touched_objects();
    let stores = Stores {
        stateful_sets: sts_r,
        services: svc_r,
        config_maps: cm_r,
        secrets: sec_r,
        service_accounts: sa_r,
        pdbs: pdb_r,
        pods: pod_r,
        pvcs: pvc_r,
    };
    let references = Arc::new(ReferenceIndex::default());
    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: settings.reporter.clone(), instance: std::env::var("POD_NAME").ok() },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        admin,
        metrics: metrics.clone(),
        recorder,
        stores: stores.clone(),
        settings: settings.clone(),
        memory: Default::default(),
        references: references.clone(),
        users: Arc::new(UserObjects::new(secret_meta.clone(), cm_meta.clone())),
    });

    let clusters: Api<WoodpeckerCluster> = api(&client, ns);
    let (ri_s, ri_c) = (references.clone(), references.clone());
    // Pods are owned by StatefulSets, not by the cluster: map them back through the cluster label.
    fn by_label<K: Resource>(obj: K) -> Option<ObjectRef<WoodpeckerCluster>> {
        let ns = obj.meta().namespace.clone()?;
        let name = obj.meta().labels.as_ref()?.get(LABEL_CLUSTER)?.clone();
        Some(ObjectRef::<WoodpeckerCluster>::new(&name).within(&ns))
    }
    let controller = Controller::new(clusters, watcher::Config::default().any_semantic())
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.concurrency))
        .owns_stream(sts_s)
        .owns_stream(svc_s)
        .owns_stream(cm_s)
        .owns_stream(sec_s)
        .owns_stream(sa_s)
        .owns_stream(pdb_s)
        .watches_stream(pod_s, by_label::<Pod>)
        .watches_stream(pvc_s, by_label::<PersistentVolumeClaim>)
        .watches_stream(user_secrets, move |m: PartialObjectMeta<Secret>| referencing(&ri_s, "Secret", &m.metadata))
        .watches_stream(user_cms, move |m: PartialObjectMeta<ConfigMap>| referencing(&ri_c, "ConfigMap", &m.metadata))
        .graceful_shutdown_on(async move { shutdown.cancelled().await });
    controller
        .run(
            move |cr, ctx: Arc<Context>| async move {
                // Before the caches are filled every object would look missing and be re-applied. The wait is
                // bounded and retried: reconciles that started waiting at start-up were seen never to wake
                // although the caches filled (clusters created while the operator started stayed untouched).
                let s = &ctx.stores;
                let ready = tokio::time::timeout(CACHE_WAIT, async {
                    tokio::join!(
                        s.stateful_sets.wait_until_ready(),
                        s.services.wait_until_ready(),
                        s.config_maps.wait_until_ready(),
                        s.secrets.wait_until_ready(),
                        s.service_accounts.wait_until_ready(),
                        s.pdbs.wait_until_ready(),
                        s.pods.wait_until_ready(),
                        s.pvcs.wait_until_ready(),
                        ctx.users.secret_meta.wait_until_ready(),
                        ctx.users.config_map_meta.wait_until_ready(),
                    )
                })
                .await;
                if ready.is_err() {
                    tracing::debug!(cluster = %cr.name_any(), "caches not filled yet; reconcile requeued");
                    return Ok(Action::requeue(CACHE_WAIT));
                }
                let start = std::time::Instant::now();
                let res = reconcile::reconcile(cr, ctx.clone()).await;
                ctx.metrics.reconcile_duration.observe(start.elapsed().as_secs_f64());
                let outcome = if res.is_ok() { Outcome::Ok } else { Outcome::Error };
                ctx.metrics.reconciles.get_or_create(&ReconcileLabels { outcome }).inc();
                res
            },
            |_cr, err: &Error, _ctx| {
                tracing::warn!(error = %err, "reconcile failed; retrying");
                Action::requeue(Duration::from_secs(5))
            },
            ctx,
        )
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(cluster = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile loop error"),
            }
        })
        .await;
    Ok(())
}
