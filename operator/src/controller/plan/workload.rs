//! Workload patch-up: the rendered StatefulSets adjusted to what is live (replicas held by a
//! draining scale-down or as this operator last applied them; the immutable claim template kept at
//! its live size), and the PVC expansions that a larger claim size asks for instead.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use super::ScaleStep;
use crate::controller::ClusterMemory;
use crate::render::Rendered;
use crate::render::statefulset::DATA_VOLUME;

/// Live StatefulSets by name.
pub(super) type LiveStatefulSets<'a> = BTreeMap<String, &'a StatefulSet>;

/// Requested storage of the `data` claim template.
fn claim_size(templates: Option<&[PersistentVolumeClaim]>) -> Option<String> {
    templates?
        .iter()
        .find(|t| t.metadata.name.as_deref() == Some(DATA_VOLUME))?
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

fn set_claim_size(templates: Option<&mut [PersistentVolumeClaim]>, size: &str) {
    let Some(templates) = templates else { return };
    for t in templates.iter_mut().filter(|t| t.metadata.name.as_deref() == Some(DATA_VOLUME)) {
        if let Some(req) = t.spec.as_mut().and_then(|s| s.resources.as_mut()).and_then(|r| r.requests.as_mut()) {
            req.insert("storage".to_string(), Quantity(size.to_string()));
        }
    }
}

/// Bytes of a storage quantity such as `50Gi`, `1.5T` or `1000`; `None` when unparsable.
pub fn quantity_bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    Some(n * mult)
}

/// The replicas the StatefulSet `name` runs with: what this operator last applied, else what the
/// cache shows. The cache may still show the count from before our own shrink (the pod it drained is
/// terminating, so the planner holds nothing): rendering from it would write the old count back and
/// recreate the drained pod.
pub(super) fn applied_replicas(memory: &ClusterMemory, name: &str, live: Option<&StatefulSet>) -> Option<i32> {
    memory.replicas_applied.get(name).copied().or_else(|| live.and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas))
}

/// The rendered StatefulSets as this pass applies them: replicas from `replicas_override` (the
/// scale plan holds them while a victim drains), else as last applied; the `data` claim template
/// at the live size, because volumeClaimTemplates are immutable ([`pvc_expansions`] grows the
/// PVCs themselves).
pub(super) fn stateful_sets_to_apply(
    rendered: &Rendered,
    live_sts: &LiveStatefulSets<'_>,
    replicas_override: &BTreeMap<String, i32>,
    memory: &ClusterMemory,
) -> Vec<StatefulSet> {
    rendered
        .stateful_sets
        .iter()
        .map(|s| {
            let mut s = s.clone();
            let name = s.name_any();
            let live = live_sts.get(&name).copied();
            let replicas = replicas_override.get(&name).copied().or_else(|| applied_replicas(memory, &name, live));
            if let Some(spec) = s.spec.as_mut() {
                if let Some(r) = replicas {
                    spec.replicas = Some(r);
                }
                let live_size =
                    live.and_then(|l| l.spec.as_ref()).and_then(|l| claim_size(l.volume_claim_templates.as_deref()));
                if let Some(live_size) = live_size {
                    set_claim_size(spec.volume_claim_templates.as_deref_mut(), &live_size);
                }
            }
            s
        })
        .collect()
}

/// PVCs to grow: for every rendered StatefulSet whose `data` claim size differs from the live
/// template's, each of its PVCs smaller than the rendered size (unless the API server already
/// refused that expansion). `pvcs`: PVC name → requested storage.
pub(super) fn pvc_expansions(
    rendered: &Rendered,
    live_sts: &LiveStatefulSets<'_>,
    pvcs: &BTreeMap<String, Option<String>>,
    memory: &ClusterMemory,
) -> Vec<ScaleStep> {
    let mut steps = Vec::new();
    for s in &rendered.stateful_sets {
        let name = s.name_any();
        let live = live_sts.get(&name).and_then(|l| l.spec.as_ref());
        let live_size = live.and_then(|l| claim_size(l.volume_claim_templates.as_deref()));
        let wanted = s.spec.as_ref().and_then(|spec| claim_size(spec.volume_claim_templates.as_deref()));
        let (Some(live_size), Some(wanted)) = (live_size, wanted) else { continue };
        if live_size == wanted {
            continue;
        }
        let prefix = format!("data-{name}-");
        for (pvc, size) in pvcs.iter().filter(|(n, _)| n.starts_with(&prefix)) {
            let smaller = match (size.as_deref().and_then(quantity_bytes), quantity_bytes(&wanted)) {
                (Some(have), Some(want)) => have < want,
                _ => false,
            };
            if smaller && !memory.expand_refused.contains(&(pvc.clone(), wanted.clone())) {
                steps.push(ScaleStep::ExpandPvc { name: pvc.clone(), size: wanted.clone() });
            }
        }
    }
    steps
}
