//! One reconcile pass of a WoodpeckerCluster (§5.5).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, EvictParams, GroupVersionKind, Patch, PatchParams, Preconditions,
};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use woodpecker_crds::{
    CONDITION_CONFIG_VALID, CONDITION_MONITORING_UNAVAILABLE, CONDITION_RECONCILE_FAILED, ClusterPhase,
    WoodpeckerCluster, WoodpeckerClusterStatus,
};

use super::apply::{Applied, FIELD_MANAGER, apply, stamp};
use super::observe::{PodView, observe_pods};
use super::plan::{self, Desired, Plan, RollStep, ScaleStep};
use super::{Context, Error, LABEL_CLUSTER, conditions, deletion, load};
use crate::render::names::LABEL_CONFIG_KIND;

/// Reconcile one cluster.
pub async fn reconcile(cr: Arc<WoodpeckerCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    match reconcile_pass(cr.clone(), ctx.clone()).await {
        // The API server refused a rendered object (422/400): retrying cannot help until the
        // spec changes, so say why in the status instead of only in the operator's log.
        Err(Error::Kube { action, kind, name, source }) if is_invalid(&source) => {
            let previous = cr.status.clone().unwrap_or_default();
            let message = format!("the API server rejected {action} of {kind} {name}: {source}");
            invalid(&cr, &ctx, &previous, "RenderedObjectRejected", &message).await
        }
        // Any other API error (403 exceeded quota or forbidden, 404, 409, 5xx): say so in the
        // status, then retry with backoff. A pass that gets through clears it.
        Err(e @ Error::Kube { .. }) => {
            let previous = cr.status.clone().unwrap_or_default();
            let mut status = previous.clone();
            let message = truncate(&e.to_string(), 1000);
            conditions::set(
                &mut status.conditions,
                &previous.conditions,
                CONDITION_RECONCILE_FAILED,
                true,
                "APIError",
                &message,
                cr.metadata.generation,
            );
            if let Err(status_err) = patch_status(&cr, &ctx, &previous, status).await {
                tracing::warn!(error = %status_err, "reporting a failed pass in status failed too");
            }
            Err(e)
        }
        other => other,
    }
}

fn is_invalid(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 422 || s.code == 400)
}

async fn reconcile_pass(cr: Arc<WoodpeckerCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = cr.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = cr.name_any();
    if cr.metadata.deletion_timestamp.is_some() {
        return deletion::finalize(&cr, &ctx).await;
    }
    // `spec.paused` stops reconciling: no apply, decommission, eviction, PVC deletion or status
    // write until it is cleared (deletion still runs, so a paused cluster can be removed).
    if cr.spec.paused {
        tracing::debug!(%ns, %name, "spec.paused: not reconciling");
        return Ok(Action::requeue(ctx.settings.idle_requeue));
    }
    deletion::sync_finalizer(&cr, &ctx).await?;
    let key = format!("{ns}/{name}");
    let previous = cr.status.clone().unwrap_or_default();

    // 1. Load.
    let refs = load::references(&cr);
    let named: Vec<(String, String)> = refs.iter().map(|r| (r.kind.to_string(), r.name.clone())).collect();
    ctx.references.set(&ns, &name, &named);
    let mut resolved = load::resolve(&ctx.client, &ctx.users, &ns, &refs).await?;
    if !resolved.missing.is_empty() {
        let message = resolved.missing.join("; ");
        return invalid(&cr, &ctx, &previous, "MissingReference", &message).await;
    }
    if !refs.is_empty() {
        resolved.stamp_key = Some(stamp_key(&cr, &ctx, &ns).await?);
    }

    // 2. Render (pure).
    let desired = match plan::render(&cr, &resolved) {
        Ok(d) => d,
        Err(message) => return invalid(&cr, &ctx, &previous, "InvalidSpec", &message).await,
    };

    // 3 + 4. Apply everything but the workloads, then the StatefulSets.
    let owner = owner_reference(&cr)?;
    let mut writes = 0usize;
    writes += apply_all(&ctx, &ns, &ctx.stores.service_accounts, &desired.service_accounts, &owner).await?;
    writes += apply_all(&ctx, &ns, &ctx.stores.services, &desired.services, &owner).await?;
    writes += apply_all(&ctx, &ns, &ctx.stores.config_maps, &desired.config_maps, &owner).await?;
    writes += apply_all(&ctx, &ns, &ctx.stores.secrets, &desired.secrets, &owner).await?;
    writes += apply_all(&ctx, &ns, &ctx.stores.pdbs, &desired.pdbs, &owner).await?;

    // 5. Observe.
    let pods = cluster_objects(&ctx.stores.pods, &ns, &name);
    let sts_live = cluster_objects(&ctx.stores.stateful_sets, &ns, &name);
    let pvcs: BTreeMap<String, Option<String>> = cluster_objects(&ctx.stores.pvcs, &ns, &name)
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let size = p
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map(|q| q.0.clone());
            (p.name_any(), size)
        })
        .collect();
    let views =
        observe_pods(ctx.admin.as_ref(), pods, desired.admin_port, cr.spec.rollout_policy.gates.log_health).await;

    // Plan scale and roll purely from what was observed.
    let memory = ctx.with_memory(&key, |m| m.clone());
    let observed = plan::Observed { stateful_sets: &sts_live, pods: &views, pvcs: &pvcs, previous: &previous };
    let plan: Plan = plan::plan(&cr, &desired, &observed, &memory, Timestamp::now());

    // StatefulSets: replicas held at max(old, new) while a scale-down drains (the plan decides).
    writes += apply_all(&ctx, &ns, &ctx.stores.stateful_sets, &plan.stateful_sets, &owner).await?;
    ctx.with_memory(&key, |m| {
        for s in &plan.stateful_sets {
            if let (Some(name), Some(r)) = (s.metadata.name.clone(), s.spec.as_ref().and_then(|s| s.replicas)) {
                m.replicas_applied.insert(name, r);
            }
        }
    });
    writes += collect_old_configs(&ctx, &ns, &name, &desired, &views).await?;
    // Objects the render no longer contains (pdb.enabled false, a removed pool's Services, a
    // ServiceAccount the spec now names itself). Removed groups' StatefulSets drain first (scale).
    writes += delete_unwanted(&ctx, &cr, &ctx.stores.services, &desired.services).await?;
    writes += delete_unwanted(&ctx, &cr, &ctx.stores.pdbs, &desired.pdbs).await?;
    writes += delete_unwanted(&ctx, &cr, &ctx.stores.service_accounts, &desired.service_accounts).await?;

    // 6. Scale steps.
    for step in &plan.scale {
        execute_scale(&cr, &ctx, &ns, &key, &views, step).await?;
    }
    // 7. Roll.
    let evicted = execute_roll(&cr, &ctx, &ns, &key, &plan.roll).await?;
    ctx.with_memory(&key, |m| plan::remember(m, &plan, evicted));

    // Optional monitoring objects last: a missing Prometheus operator must not hold the cluster.
    let (monitoring, monitoring_writes) = sync_pod_monitor(&ctx, &ns, &desired, &owner, &previous).await;
    writes += monitoring_writes;

    // 8. Status.
    let mut status = plan.status.clone();
    status.observed_generation = cr.metadata.generation;
    let mut conds: Vec<Condition> = Vec::new();
    for c in &plan.conditions {
        conditions::set(
            &mut conds,
            &previous.conditions,
            &c.type_,
            c.status,
            &c.reason,
            &c.message,
            cr.metadata.generation,
        );
    }
    conditions::set(
        &mut conds,
        &previous.conditions,
        CONDITION_CONFIG_VALID,
        true,
        "Valid",
        "",
        cr.metadata.generation,
    );
    conditions::set(
        &mut conds,
        &previous.conditions,
        CONDITION_RECONCILE_FAILED,
        false,
        "Reconciled",
        "",
        cr.metadata.generation,
    );
    conditions::set(
        &mut conds,
        &previous.conditions,
        CONDITION_MONITORING_UNAVAILABLE,
        monitoring.unavailable,
        monitoring.reason,
        &monitoring.message,
        cr.metadata.generation,
    );
    status.conditions = conds;
    patch_status(&cr, &ctx, &previous, status).await?;

    let busy = plan.busy || writes > 0;
    Ok(if busy { Action::requeue(ctx.settings.busy_requeue) } else { Action::requeue(ctx.settings.idle_requeue) })
}

/// Data key of the stamp key Secret.
const STAMP_KEY: &str = "key";

/// The cluster's stamp key: read from its `<cluster>-stamp-key` Secret (cached), created with 32
/// random bytes the first time. Owned by the cluster, so it goes with it.
async fn stamp_key(cr: &WoodpeckerCluster, ctx: &Context, ns: &str) -> Result<Vec<u8>, Error> {
    let plan_names = crate::render::names::Names::new(&cr.name_any());
    let name = plan_names.stamp_key();
    let key_of =
        |s: &Secret| s.data.as_ref().and_then(|d| d.get(STAMP_KEY)).map(|b| b.0.clone()).filter(|k| !k.is_empty());
    if let Some(k) = ctx.stores.secrets.get(&ObjectRef::new(&name).within(ns)).as_deref().and_then(key_of) {
        return Ok(k);
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut labels = crate::render::names::common_labels(&cr.name_any(), "stamp-key", "");
    labels.retain(|_, v| !v.is_empty());
    let key: [u8; 32] = rand::random();
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.to_string()),
            labels: Some(labels),
            owner_references: Some(vec![owner_reference(cr)?]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(STAMP_KEY.to_string(), k8s_openapi::ByteString(key.to_vec()))])),
        immutable: Some(true),
        type_: Some("Opaque".to_string()),
        ..Default::default()
    };
    match api.create(&kube::api::PostParams::default(), &secret).await {
        Ok(_) => {
            ctx.metrics.write("Secret", "create");
            Ok(key.to_vec())
        }
        // Created by an earlier pass the cache has not seen yet.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let live = api.get(&name).await.map_err(|e| Error::kube("get", "Secret", &name, e))?;
            key_of(&live).ok_or_else(|| Error::Render(format!("Secret {name} has no {STAMP_KEY:?} key")))
        }
        Err(e) => Err(Error::kube("create", "Secret", &name, e)),
    }
}

/// Stop before any write: ConfigValid=False, a Warning Event, and a slow requeue.
async fn invalid(
    cr: &WoodpeckerCluster,
    ctx: &Context,
    previous: &WoodpeckerClusterStatus,
    reason: &str,
    message: &str,
) -> Result<Action, Error> {
    let mut status = previous.clone();
    status.phase = Some(ClusterPhase::Failed);
    let mut conds = previous.conditions.clone();
    conditions::set(
        &mut conds,
        &previous.conditions,
        CONDITION_CONFIG_VALID,
        false,
        reason,
        message,
        cr.metadata.generation,
    );
    status.conditions = conds;
    let already = conditions::get(&previous.conditions, CONDITION_CONFIG_VALID)
        .is_some_and(|c| c.status == "False" && c.message == message);
    if !already {
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.to_string(),
            note: Some(truncate(message, 1000)),
            action: "Validate".into(),
            secondary: None,
        };
        ctx.publish(&ev, &cr.object_ref(&())).await;
    }
    patch_status(cr, ctx, previous, status).await?;
    // Referenced user objects are not watched; look again soon.
    Ok(Action::requeue(Duration::from_secs(15)))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn owner_reference(cr: &WoodpeckerCluster) -> Result<OwnerReference, Error> {
    cr.controller_owner_ref(&()).ok_or(Error::MissingMetadata("uid"))
}

/// Objects of cluster `name` in `ns` from a cache.
pub fn cluster_objects<K>(store: &Store<K>, ns: &str, name: &str) -> Vec<Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut out: Vec<Arc<K>> = store
        .state()
        .into_iter()
        .filter(|o| {
            o.meta().namespace.as_deref() == Some(ns)
                && o.meta().labels.as_ref().and_then(|l| l.get(LABEL_CLUSTER)).map(String::as_str) == Some(name)
        })
        .collect();
    out.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    out
}

/// Apply `objects` (with the owner reference set) unless the cache shows them unchanged.
async fn apply_all<K>(
    ctx: &Context,
    ns: &str,
    store: &Store<K>,
    objects: &[K],
    owner: &OwnerReference,
) -> Result<usize, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let mut writes = 0;
    for obj in objects {
        let mut obj = obj.clone();
        let meta = obj.meta_mut();
        meta.namespace = Some(ns.to_string());
        let refs = meta.owner_references.get_or_insert_with(Vec::new);
        if !refs.iter().any(|r| r.uid == owner.uid) {
            refs.push(owner.clone());
        }
        let oref = ObjectRef::<K>::new(&obj.name_any()).within(ns);
        let live = store.get(&oref);
        if apply(&api, live.as_deref(), &obj, &ctx.metrics).await? == Applied::Patched {
            writes += 1;
        }
    }
    Ok(writes)
}

async fn patch_status(
    cr: &WoodpeckerCluster,
    ctx: &Context,
    previous: &WoodpeckerClusterStatus,
    status: WoodpeckerClusterStatus,
) -> Result<(), Error> {
    if &status == previous {
        return Ok(());
    }
    let ns = cr.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<WoodpeckerCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": "woodpecker.zilliz.io/v1alpha1",
        "kind": "WoodpeckerCluster",
        "status": status,
    });
    match api.patch_status(&cr.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await {
        Ok(_) => {
            ctx.metrics.write("WoodpeckerCluster", "status");
            Ok(())
        }
        // Deleted while this pass ran: nothing left to report on.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube("patch status of", "WoodpeckerCluster", &cr.name_any(), e)),
    }
}

fn event(type_: EventType, reason: &str, action: &str, note: String, pod: Option<&Pod>) -> Event {
    Event {
        type_,
        reason: reason.to_string(),
        note: Some(truncate(&note, 1000)),
        action: action.to_string(),
        secondary: pod.map(|p| p.object_ref(&())),
    }
}

async fn execute_roll(
    cr: &WoodpeckerCluster,
    ctx: &Context,
    ns: &str,
    key: &str,
    step: &RollStep,
) -> Result<bool, Error> {
    let cref = cr.object_ref(&());
    match step {
        RollStep::Idle | RollStep::Wait { .. } => {
            if let RollStep::Wait { reason, .. } = step {
                tracing::debug!(cluster = %key, %reason, "roll waits");
            }
            ctx.with_memory(key, |m| m.last_block_reason = None);
            Ok(false)
        }
        RollStep::Blocked { reason, pod } => {
            let first = ctx.with_memory(key, |m| {
                let first = m.last_block_reason.as_deref() != Some(reason.as_str());
                m.last_block_reason = Some(reason.clone());
                first
            });
            if first {
                let note = match pod {
                    Some(p) => format!("rolling restart blocked at pod {p}: {reason}"),
                    None => format!("rolling restart blocked: {reason}"),
                };
                ctx.publish(&event(EventType::Warning, "RolloutBlocked", "Roll", note, None), &cref).await;
            }
            Ok(false)
        }
        RollStep::Evict { pod, reason } => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
            // The decision was taken on the cached pod; evict exactly that one. A cache that has not yet seen
            // the previous eviction would otherwise evict the replacement of the same name (a pod restarted
            // twice was seen in the rollout test): the UID precondition turns that into a 409.
            let cached = ctx.stores.pods.get(&ObjectRef::new(pod).within(ns));
            let params = EvictParams {
                delete_options: Some(DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: cached.as_ref().and_then(|p| p.uid()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                }),
                ..EvictParams::default()
            };
            match api.evict(pod, &params).await {
                Ok(_) => {
                    ctx.metrics.write("Pod", "evict");
                    ctx.metrics.restarts.inc();
                    ctx.with_memory(key, |m| m.last_block_reason = None);
                    tracing::info!(cluster = %key, %pod, %reason, "pod evicted for the rolling restart");
                    let note = format!("restarting pod {pod} through the Eviction API: {reason}");
                    ctx.publish(&event(EventType::Normal, "RestartingPod", "Evict", note, cached.as_deref()), &cref)
                        .await;
                    Ok(true)
                }
                // 409: the pod of that name is not the one the decision was taken on; decide again.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                // 429: the PDB refuses right now (for example a node drain runs); try again later.
                Err(kube::Error::Api(s)) if s.code == 429 => {
                    // One Event per refused victim, not one per pass while the PDB says no.
                    let reason = format!("eviction of {pod} refused");
                    let first = ctx.with_memory(key, |m| {
                        let first = m.last_block_reason.as_deref() != Some(reason.as_str());
                        m.last_block_reason = Some(reason);
                        first
                    });
                    tracing::info!(cluster = %key, %pod, "eviction refused by the PodDisruptionBudget (429); retrying");
                    if first {
                        let note = format!("eviction of pod {pod} refused by the PodDisruptionBudget; retrying");
                        ctx.publish(&event(EventType::Normal, "EvictionDeferred", "Evict", note, None), &cref).await;
                    }
                    Ok(false)
                }
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
                Err(e) => Err(Error::kube("evict", "Pod", pod, e)),
            }
        }
    }
}

async fn execute_scale(
    cr: &WoodpeckerCluster,
    ctx: &Context,
    ns: &str,
    key: &str,
    views: &[PodView],
    step: &ScaleStep,
) -> Result<(), Error> {
    let cref = cr.object_ref(&());
    let find = |pod: &str| views.iter().find(|v| v.name == pod);
    let port = plan::admin_port(cr);
    match step {
        ScaleStep::Decommission { pod } => {
            let Some(addr) = find(pod).and_then(|v| super::observe::admin_addr(&v.pod, port)) else {
                return Ok(());
            };
            match ctx.admin.decommission(addr).await {
                Ok(()) => {
                    let note = format!("decommissioning pod {pod} before scale-down");
                    let p = find(pod).map(|v| v.pod.as_ref());
                    ctx.publish(&event(EventType::Normal, "Decommissioning", "Decommission", note, p), &cref).await;
                }
                Err(e) => tracing::warn!(error = %e, %pod, "decommission request failed; retrying"),
            }
            Ok(())
        }
        ScaleStep::Cancel { pod } => {
            let Some(addr) = find(pod).and_then(|v| super::observe::admin_addr(&v.pod, port)) else {
                return Ok(());
            };
            match ctx.admin.cancel_decommission(addr).await {
                Ok(()) => {
                    let note = format!("cancelling the decommission of pod {pod}: it is no longer a scale-down victim");
                    let p = find(pod).map(|v| v.pod.as_ref());
                    ctx.publish(&event(EventType::Normal, "DecommissionCancelled", "Decommission", note, p), &cref)
                        .await;
                }
                Err(e) => tracing::warn!(error = %e, %pod, "decommission cancel failed; retrying"),
            }
            Ok(())
        }
        ScaleStep::Decommissioned { pod } => {
            let note = format!("pod {pod} is decommissioned and safe to terminate; shrinking its StatefulSet");
            ctx.publish(&event(EventType::Normal, "Decommissioned", "Decommission", note, None), &cref).await;
            Ok(())
        }
        ScaleStep::Stalled { pod, reason } => {
            let note = format!("decommission of pod {pod} stalled: {reason}; still waiting (never forced)");
            ctx.publish(&event(EventType::Warning, "DecommissionStalled", "Decommission", note, None), &cref).await;
            Ok(())
        }
        ScaleStep::DeleteStatefulSet { name, pvcs } => {
            let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
            if delete_quietly(&api, name, ctx, "StatefulSet").await? == 1 {
                let note = format!("deleted StatefulSet {name}: its node group was removed and its pods are drained");
                ctx.publish(&event(EventType::Normal, "DeletedStatefulSet", "Delete", note, None), &cref).await;
            }
            let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
            for pvc in pvcs {
                if delete_quietly(&api, pvc, ctx, "PersistentVolumeClaim").await? == 1 {
                    let note = format!("deleted PVC {pvc} of removed StatefulSet {name} (scaleDown.pvcPolicy Delete)");
                    ctx.publish(&event(EventType::Normal, "DeletedPVC", "Delete", note, None), &cref).await;
                }
            }
            Ok(())
        }
        ScaleStep::ExpandPvc { name, size } => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
            let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": size}}}});
            match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    ctx.metrics.write("PersistentVolumeClaim", "expand");
                    let note = format!("expanding PVC {name} to {size} (storage.size grew)");
                    ctx.publish(&event(EventType::Normal, "ExpandingPVC", "Expand", note, None), &cref).await;
                    Ok(())
                }
                // The StorageClass may not allow expansion: report and keep the pods running.
                Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => {
                    ctx.with_memory(key, |m| m.expand_refused.insert((name.clone(), size.clone())));
                    let note = format!("cannot expand PVC {name} to {size}: {}", s.message);
                    ctx.publish(&event(EventType::Warning, "ExpandPVCFailed", "Expand", note, None), &cref).await;
                    Ok(())
                }
                Err(e) => Err(Error::kube("expand", "PersistentVolumeClaim", name, e)),
            }
        }
        ScaleStep::DeletePvc { name } => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => {
                    ctx.metrics.write("PersistentVolumeClaim", "delete");
                    let note = format!("deleted PVC {name} of a decommissioned pod (scaleDown.pvcPolicy Delete)");
                    ctx.publish(&event(EventType::Normal, "DeletedPVC", "Delete", note, None), &cref).await;
                    Ok(())
                }
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(Error::kube("delete", "PersistentVolumeClaim", name, e)),
            }
        }
    }
}

/// The MonitoringUnavailable condition of a pass.
struct Monitoring {
    unavailable: bool,
    reason: &'static str,
    message: String,
}

/// Reason of MonitoringUnavailable=False once the PodMonitor is applied; also how a later pass
/// knows there is a PodMonitor to delete when `monitoring.podMonitor` is switched off.
const POD_MONITOR_APPLIED: &str = "PodMonitorApplied";

fn pod_monitor_api(ctx: &Context, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PodMonitor");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "podmonitors");
    Api::namespaced_with(ctx.client.clone(), ns, &ar)
}

/// Apply the PodMonitor when requested, delete it when no longer requested. Never fails the pass:
/// a missing CRD (404) or a refusal becomes MonitoringUnavailable=True with the API server's words.
async fn sync_pod_monitor(
    ctx: &Context,
    ns: &str,
    desired: &Desired,
    owner: &OwnerReference,
    previous: &WoodpeckerClusterStatus,
) -> (Monitoring, usize) {
    let Some(pm) = &desired.rendered.pod_monitor else {
        let was_applied = conditions::get(&previous.conditions, CONDITION_MONITORING_UNAVAILABLE)
            .is_some_and(|c| c.reason == POD_MONITOR_APPLIED);
        let mut writes = 0;
        if was_applied {
            let name = desired.rendered.plan.names.pod_monitor();
            match pod_monitor_api(ctx, ns).delete(&name, &DeleteParams::background()).await {
                Ok(_) => {
                    ctx.metrics.write("PodMonitor", "delete");
                    writes = 1;
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    let message = format!("deleting PodMonitor {name} failed: {e}");
                    return (Monitoring { unavailable: true, reason: "DeleteFailed", message }, 0);
                }
            }
        }
        return (Monitoring { unavailable: false, reason: "NotRequested", message: String::new() }, writes);
    };
    match apply_pod_monitor(ctx, ns, pm, owner).await {
        Ok(writes) => (Monitoring { unavailable: false, reason: POD_MONITOR_APPLIED, message: String::new() }, writes),
        Err(e) => {
            let missing = matches!(&e, Error::Kube { source, .. } if matches!(source.as_ref(), kube::Error::Api(s) if s.code == 404));
            let (reason, message) = if missing {
                (
                    "PodMonitorCRDMissing",
                    format!(
                        "monitoring.podMonitor is set but the API server does not serve monitoring.coreos.com/v1 \
                         PodMonitor (is the Prometheus operator installed?): {e}"
                    ),
                )
            } else {
                ("PodMonitorApplyFailed", e.to_string())
            };
            tracing::warn!(%ns, error = %e, "PodMonitor not applied; the rest of the cluster is reconciled");
            (Monitoring { unavailable: true, reason, message: truncate(&message, 1000) }, 0)
        }
    }
}

/// Apply the PodMonitor (a CRD of the Prometheus operator, so not cached: read, compare, apply).
async fn apply_pod_monitor(
    ctx: &Context,
    ns: &str,
    pm: &DynamicObject,
    owner: &OwnerReference,
) -> Result<usize, Error> {
    let api = pod_monitor_api(ctx, ns);
    let mut pm = pm.clone();
    pm.metadata.namespace = Some(ns.to_string());
    let refs = pm.metadata.owner_references.get_or_insert_with(Vec::new);
    if !refs.iter().any(|r| r.uid == owner.uid) {
        refs.push(owner.clone());
    }
    let name = pm.name_any();
    let live = api.get_opt(&name).await.map_err(|e| Error::kube("get", "PodMonitor", &name, e))?;
    let (stamped, same) = stamp(&pm, live.as_ref()).map_err(|e| Error::Serialize {
        kind: "PodMonitor".into(),
        name: name.clone(),
        source: e,
    })?;
    if same {
        ctx.metrics.write("PodMonitor", "skip");
        return Ok(0);
    }
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&stamped))
        .await
        .map_err(|e| Error::kube("apply", "PodMonitor", &name, e))?;
    ctx.metrics.write("PodMonitor", "apply");
    Ok(1)
}

/// How many superseded hashed configs to keep for rollback (§5.5 step 3).
const KEEP_OLD_CONFIGS: usize = 3;

/// Delete hashed server ConfigMaps / overlay Secrets beyond the newest few that no pod uses.
async fn collect_old_configs(
    ctx: &Context,
    ns: &str,
    name: &str,
    desired: &Desired,
    views: &[super::observe::PodView],
) -> Result<usize, Error> {
    let mut in_use: BTreeSet<String> = BTreeSet::new();
    for v in views {
        for vol in v.pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
            if let Some(cm) = &vol.config_map {
                in_use.insert(cm.name.clone());
            }
            if let Some(sec) = vol.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                in_use.insert(sec);
            }
        }
    }
    for c in &desired.config_maps {
        in_use.insert(c.name_any());
    }
    for s in &desired.secrets {
        in_use.insert(s.name_any());
    }
    let mut deleted = 0;
    let cms = cluster_objects(&ctx.stores.config_maps, ns, name);
    for victim in stale(&cms, &in_use) {
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        deleted += delete_quietly(&api, &victim, ctx, "ConfigMap").await?;
    }
    let secrets = cluster_objects(&ctx.stores.secrets, ns, name);
    for victim in stale(&secrets, &in_use) {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        deleted += delete_quietly(&api, &victim, ctx, "Secret").await?;
    }
    Ok(deleted)
}

/// Hashed config objects not in use, oldest first, beyond the newest [`KEEP_OLD_CONFIGS`].
fn stale<K: Resource>(objects: &[Arc<K>], in_use: &BTreeSet<String>) -> Vec<String> {
    let mut hashed: Vec<&Arc<K>> = objects
        .iter()
        .filter(|o| o.meta().labels.as_ref().is_some_and(|l| l.contains_key(LABEL_CONFIG_KIND)))
        .filter(|o| !o.meta().name.as_ref().is_some_and(|n| in_use.contains(n)))
        .collect();
    hashed.sort_by(|a, b| {
        let ta = a.meta().creation_timestamp.as_ref().map(|t| t.0);
        let tb = b.meta().creation_timestamp.as_ref().map(|t| t.0);
        tb.cmp(&ta).then_with(|| a.meta().name.cmp(&b.meta().name))
    });
    hashed.into_iter().skip(KEEP_OLD_CONFIGS).filter_map(|o| o.meta().name.clone()).collect()
}

async fn delete_quietly<K>(api: &Api<K>, name: &str, ctx: &Context, kind: &str) -> Result<usize, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {
            ctx.metrics.write(kind, "delete");
            Ok(1)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(0),
        Err(e) => Err(Error::kube("delete", kind, name, e)),
    }
}

/// Delete the objects of one kind the cluster controls (cluster label and controller owner reference)
/// that are not among `wanted`.
async fn delete_unwanted<K>(
    ctx: &Context,
    cr: &WoodpeckerCluster,
    store: &Store<K>,
    wanted: &[K],
) -> Result<usize, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let ns = cr.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let wanted: BTreeSet<String> = wanted.iter().map(|o| o.name_any()).collect();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let mut deleted = 0;
    for obj in cluster_objects(store, &ns, &cr.name_any()) {
        let name = obj.name_any();
        if wanted.contains(&name) || obj.meta().deletion_timestamp.is_some() || !plan::controlled_by(obj.meta(), cr) {
            continue;
        }
        if delete_quietly(&api, &name, ctx, &kind).await? == 1 {
            tracing::info!(%ns, %kind, %name, "deleted an object the cluster no longer renders");
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Kinds rendered by the operator, for documentation and the RBAC test.
pub const RENDERED_KINDS: &[&str] =
    &["ServiceAccount", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "StatefulSet"];
