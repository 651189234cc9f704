//! Observe: the cluster's pods from the cache plus what each running pod's admin API reports.
//!
//! Every Running pod with an IP is asked, Ready or not: a decommissioning server is NotReady by
//! contract (`/readyz` answers 503 unless `active`), and a scale-down or a cancel only finishes when
//! the operator keeps hearing from it. Ready stays what the roll gates on.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::admin::{AdminClient, DecommissionProgress, Member, NodeStatus};

/// One pod as the operator sees it in this pass.
#[derive(Clone, Debug)]
pub struct PodView {
    /// The pod object from the cache.
    pub pod: Arc<Pod>,
    /// Pod name.
    pub name: String,
    /// The Ready condition is True.
    pub ready: bool,
    /// The pod has a deletion timestamp.
    pub terminating: bool,
    /// Its server has started: Ready, a container running, or the admin API answered this pass.
    pub started: bool,
    /// `/admin/node/status`, when the pod runs and answered.
    pub status: Option<NodeStatus>,
    /// `/admin/memberlist`, when the pod runs and answered.
    pub members: Option<Vec<Member>>,
    /// `/admin/log-health` (`Some(false)` on 503), when asked and answered.
    pub log_healthy: Option<bool>,
    /// `/admin/node/decommission/progress`, for pods reporting `decommissioning`/`decommissioned`.
    pub decommission: Option<DecommissionProgress>,
    /// First admin error of this pass, for status and Events.
    pub admin_error: Option<String>,
}

/// True when the pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// True when the pod is in phase Running (its containers were started by the kubelet).
pub fn pod_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// True when one of the pod's containers is running right now (not waiting in a crash loop).
pub fn container_running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.state.as_ref().is_some_and(|st| st.running.is_some())))
}

/// The admin address of a pod: its IP and the cluster's metrics port.
pub fn admin_addr(pod: &Pod, port: u16) -> Option<SocketAddr> {
    let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Query the admin API of every Running pod with an IP concurrently (each call is bounded by the client's timeout).
pub async fn observe_pods(
    admin: &dyn AdminClient,
    pods: Vec<Arc<Pod>>,
    port: u16,
    want_log_health: bool,
) -> Vec<PodView> {
    let futs = pods.into_iter().map(|pod| async move {
        let name = pod.name_any();
        let ready = pod_ready(&pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let mut view = PodView {
            pod: pod.clone(),
            name,
            ready,
            terminating,
            started: ready || container_running(&pod),
            status: None,
            members: None,
            log_healthy: None,
            decommission: None,
            admin_error: None,
        };
        let Some(addr) = admin_addr(&pod, port).filter(|_| pod_running(&pod) && !terminating) else {
            return view;
        };
        let (status, members, health) = tokio::join!(admin.node_status(addr), admin.memberlist(addr), async {
            if want_log_health { Some(admin.log_healthy(addr).await) } else { None }
        });
        let mut note = |e: &dyn std::fmt::Display| {
            if view.admin_error.is_none() {
                view.admin_error = Some(e.to_string());
            }
        };
        let status = status.map_err(|e| note(&e)).ok();
        let members = members.map_err(|e| note(&e)).ok();
        let health = match health {
            Some(Ok(h)) => Some(h),
            Some(Err(e)) => {
                note(&e);
                None
            }
            None => None,
        };
        if status.as_ref().is_some_and(|s| s.state != "active") {
            match admin.decommission_progress(addr).await {
                Ok(p) => view.decommission = Some(p),
                Err(e) => note(&e),
            }
        }
        view.started |= status.is_some();
        view.status = status;
        view.members = members;
        view.log_healthy = health;
        view
    });
    join_all(futs).await
}
