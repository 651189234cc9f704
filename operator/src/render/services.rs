//! Services: a headless Service per pool (stable pod FQDNs, published before Ready), a seed Service
//! per pool (the buffer-pool seed clients dial), and one admin/metrics Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use woodpecker_crds::WoodpeckerClusterSpec;

use super::names::{self, LABEL_POOL, label_value};
use super::statefulset::{PORT_NAME_ADMIN, PORT_NAME_GOSSIP_TCP, PORT_NAME_GOSSIP_UDP, PORT_NAME_SERVICE};

fn port(name: &str, port: i32, protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        protocol: Some(protocol.to_string()),
        target_port: Some(IntOrString::String(name.to_string())),
        ..Default::default()
    }
}

/// What every Service of a cluster shares.
pub struct ServiceContext<'a> {
    /// The cluster spec (ports).
    pub spec: &'a WoodpeckerClusterSpec,
    /// Namespace.
    pub namespace: &'a str,
    /// Cluster name.
    pub cluster: &'a str,
    /// Version label value.
    pub version: &'a str,
    /// Owner reference to the cluster.
    pub owner: &'a OwnerReference,
}

impl ServiceContext<'_> {
    fn service(&self, name: &str, component: &str, pool: Option<&str>, spec: ServiceSpec) -> Service {
        let mut labels = names::common_labels(self.cluster, component, self.version);
        if let Some(pool) = pool {
            labels.insert(LABEL_POOL.to_string(), label_value(pool));
        }
        Service {
            metadata: super::object_meta(name.to_string(), self.namespace, labels, self.owner),
            spec: Some(spec),
            status: None,
        }
    }
}

/// Headless Service of a pool; `publishNotReadyAddresses` so a pod's own name resolves before Ready.
pub fn headless_service(ctx: &ServiceContext<'_>, name: &str, pool: &str) -> Service {
    let spec = ctx.spec;
    ctx.service(
        name,
        "server",
        Some(pool),
        ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(names::pool_selector(ctx.cluster, pool)),
            ports: Some(vec![
                port(PORT_NAME_SERVICE, spec.service_port, "TCP"),
                port(PORT_NAME_GOSSIP_TCP, spec.gossip_port, "TCP"),
                port(PORT_NAME_GOSSIP_UDP, spec.gossip_port, "UDP"),
                port(PORT_NAME_ADMIN, spec.metrics_port, "TCP"),
            ]),
            ..Default::default()
        },
    )
}

/// Seed Service of a pool: a ClusterIP on the gRPC port over the pool's Ready pods.
pub fn seed_service(ctx: &ServiceContext<'_>, name: &str, pool: &str) -> Service {
    ctx.service(
        name,
        "seed",
        Some(pool),
        ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(names::pool_selector(ctx.cluster, pool)),
            ports: Some(vec![port(PORT_NAME_SERVICE, ctx.spec.service_port, "TCP")]),
            ..Default::default()
        },
    )
}

/// Admin/metrics Service over every server pod of the cluster.
pub fn admin_service(ctx: &ServiceContext<'_>, name: &str) -> Service {
    ctx.service(
        name,
        "admin",
        None,
        ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(names::cluster_selector(ctx.cluster)),
            ports: Some(vec![port(PORT_NAME_ADMIN, ctx.spec.metrics_port, "TCP")]),
            ..Default::default()
        },
    )
}
