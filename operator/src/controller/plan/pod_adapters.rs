//! Pod adapters: Kubernetes pods and StatefulSets seen in the planners' terms (group keys, the
//! roll's observed pod, whether a pod or a StatefulSet template is current).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::controller::observe::PodView;
use crate::decide::{AdminView, MemberView, NodeState, ObservedPod};
use crate::render::ClusterPlan;
use crate::render::names::{ANNOTATION_CONFIG_HASH, ANNOTATION_RESTART_TOKEN, LABEL_NODE_GROUP, LABEL_POOL};

/// Group key of a pod: (pool, node group) labels.
pub(super) fn pod_group(pod: &Pod) -> (String, String) {
    let l = pod.labels();
    (l.get(LABEL_POOL).cloned().unwrap_or_default(), l.get(LABEL_NODE_GROUP).cloned().unwrap_or_default())
}

/// Whether the StatefulSet controller has yet to take up the target template of `sts`: the StatefulSet
/// seen (possibly from a cache behind our own apply) lacks the target config hash or restart token, or
/// its status was computed for an older generation.
pub(super) fn template_pending(sts: &StatefulSet, target_hash: &str, token: &str) -> bool {
    let ann = sts.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.annotations.as_ref());
    let get = |k: &str| ann.and_then(|a| a.get(k)).map(String::as_str).unwrap_or("");
    let observed = sts.status.as_ref().and_then(|s| s.observed_generation);
    get(ANNOTATION_CONFIG_HASH) != target_hash
        || get(ANNOTATION_RESTART_TOKEN) != token
        || observed.is_none_or(|o| Some(o) < sts.metadata.generation)
}

/// Whether a pod runs the target revision, config hash and restart token; `Err` names what differs
/// ([`crate::decide::rollout::outdated_reason`], the roll's own definition).
pub fn pod_is_current(pod: &Pod, sts: Option<&StatefulSet>, target_hash: &str, token: &str) -> Result<(), String> {
    let ann = pod.annotations();
    let update_rev = sts.and_then(|s| s.status.as_ref()).and_then(|s| s.update_revision.as_deref());
    match crate::decide::rollout::outdated_reason(
        pod.labels().get("controller-revision-hash").map(String::as_str),
        ann.get(ANNOTATION_CONFIG_HASH).map(String::as_str),
        ann.get(ANNOTATION_RESTART_TOKEN).map(String::as_str).unwrap_or(""),
        update_rev,
        target_hash,
        token,
    ) {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

/// Observed pod in the planners' terms.
pub(super) fn observed_pod(v: &PodView, plan: &ClusterPlan) -> ObservedPod {
    let (pool_label, group_label) = pod_group(&v.pod);
    let group = plan.pools.iter().flat_map(|p| p.groups.iter()).find(|g| {
        v.name.strip_prefix(g.stateful_set.as_str()).is_some_and(|rest| {
            rest.strip_prefix('-').is_some_and(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()))
        })
    });
    let ordinal = v.name.rsplit_once('-').and_then(|(_, o)| o.parse::<i32>().ok()).unwrap_or(-1);
    let is_seed = group.is_some_and(|g| {
        plan.pools
            .iter()
            .filter(|p| p.name == g.pool)
            .any(|p| p.gossip_seeds.iter().any(|s| s.starts_with(&format!("{}.", v.name))))
    });
    let ann = v.pod.annotations();
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let admin = v.status.as_ref().map(|s| AdminView {
        state: NodeState::parse(&s.state),
        member_count: i32::try_from(s.member_count).unwrap_or(i32::MAX),
        members: v
            .members
            .as_ref()
            .map(|ms| ms.iter().map(|m| MemberView { name: m.name.clone(), alive: m.alive }).collect())
            .unwrap_or_default(),
        zone: nonempty(&s.az),
        region: nonempty(&s.region),
        resource_group: nonempty(&s.resource_group),
        log_health_ok: v.log_healthy,
        disk_over_hard_watermark: s.disk_over_hard_watermark,
    });
    ObservedPod {
        name: v.name.clone(),
        pool: group.map(|g| g.pool.clone()).unwrap_or(pool_label),
        group: group.map(|g| g.name.clone()).unwrap_or(group_label),
        zone: group.and_then(|g| g.zone.clone()),
        ordinal,
        is_seed,
        ready: v.ready,
        terminating: v.terminating,
        revision: v.pod.labels().get("controller-revision-hash").cloned(),
        config_hash: ann.get(ANNOTATION_CONFIG_HASH).cloned(),
        restart_token: ann.get(ANNOTATION_RESTART_TOKEN).cloned().unwrap_or_default(),
        admin,
    }
}
