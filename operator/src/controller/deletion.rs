//! Deletion (§5.8). Owner references let the garbage collector remove every rendered object; the
//! finalizer exists only for `deletion.policy: DeleteAll`, whose PVCs are not owned by the cluster.
//! Deletion never blocks on the LogStore: PVC deletion is requested, not awaited.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use woodpecker_crds::{DeletionMode, FINALIZER, WoodpeckerCluster};

use super::{Context, Error, LABEL_CLUSTER};

fn has_finalizer(cr: &WoodpeckerCluster) -> bool {
    cr.finalizers().iter().any(|f| f == FINALIZER)
}

/// Add the finalizer when the policy needs it, drop it when it no longer does. No write otherwise.
pub async fn sync_finalizer(cr: &WoodpeckerCluster, ctx: &Context) -> Result<(), Error> {
    let wants = cr.spec.deletion.policy == DeletionMode::DeleteAll;
    if wants == has_finalizer(cr) {
        return Ok(());
    }
    let mut finalizers: Vec<String> = cr.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    if wants {
        finalizers.push(FINALIZER.to_string());
    }
    patch_finalizers(cr, ctx, finalizers).await
}

async fn patch_finalizers(cr: &WoodpeckerCluster, ctx: &Context, finalizers: Vec<String>) -> Result<(), Error> {
    let ns = cr.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<WoodpeckerCluster> = Api::namespaced(ctx.client.clone(), &ns);
    // The resourceVersion makes this a compare-and-swap against concurrent finalizer edits.
    let patch = json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": cr.resource_version() }
    });
    match api.patch(&cr.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            ctx.metrics.write("WoodpeckerCluster", "finalizer");
            Ok(())
        }
        // Already gone: the last finalizer was removed by an earlier pass.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube("patch finalizers of", "WoodpeckerCluster", &cr.name_any(), e)),
    }
}

/// Run on a cluster being deleted: for DeleteAll, delete StatefulSets and PVCs, then release.
pub async fn finalize(cr: &WoodpeckerCluster, ctx: &Context) -> Result<Action, Error> {
    if !has_finalizer(cr) {
        return Ok(Action::await_change());
    }
    let ns = cr.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = cr.name_any();
    if cr.spec.deletion.policy == DeletionMode::DeleteAll {
        let selector = format!("{LABEL_CLUSTER}={name}");
        let lp = ListParams::default().labels(&selector);
        let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
        // Delete the StatefulSets first so the pods release their PVCs; GC would do it only
        // after the cluster object is gone. One by one: the chart grants `delete`, not
        // `deletecollection`.
        for sts in super::reconcile::cluster_objects(&ctx.stores.stateful_sets, &ns, &name) {
            match sts_api.delete(&sts.name_any(), &DeleteParams::background()).await {
                Ok(_) => ctx.metrics.write("StatefulSet", "delete"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Error::kube("delete", "StatefulSet", &sts.name_any(), e)),
            }
        }
        let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        let pvcs = pvc_api.list(&lp).await.map_err(|e| Error::kube("list", "PersistentVolumeClaim", &selector, e))?;
        for pvc in &pvcs.items {
            match pvc_api.delete(&pvc.name_any(), &DeleteParams::background()).await {
                Ok(_) => ctx.metrics.write("PersistentVolumeClaim", "delete"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Error::kube("delete", "PersistentVolumeClaim", &pvc.name_any(), e)),
            }
        }
        let ev = Event {
            type_: EventType::Normal,
            reason: "DeletingData".into(),
            note: Some(format!(
                "deletion.policy DeleteAll: deleted the StatefulSets and {} PVC(s) labelled {selector}",
                pvcs.items.len()
            )),
            action: "Delete".into(),
            secondary: None,
        };
        ctx.publish(&ev, &cr.object_ref(&())).await;
    }
    let rest: Vec<String> = cr.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    patch_finalizers(cr, ctx, rest).await?;
    Ok(Action::await_change())
}
