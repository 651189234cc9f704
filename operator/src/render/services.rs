//! Services: a headless Service per pool (stable pod FQDNs, published before Ready), a seed Service
//! per pool (the buffer-pool seed clients dial), and one admin/metrics Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
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

fn meta(
    name: &str,
    namespace: &str,
    cluster: &str,
    component: &str,
    version: &str,
    owner: &OwnerReference,
    pool: Option<&str>,
) -> ObjectMeta {
    let mut labels = names::common_labels(cluster, component, version);
    if let Some(pool) = pool {
        labels.insert(LABEL_POOL.to_string(), label_value(pool));
    }
    super::object_meta(name.to_string(), namespace, labels, owner)
}

/// Headless Service of a pool; `publishNotReadyAddresses` so a pod's own name resolves before Ready.
#[allow(clippy::too_many_arguments)]
pub fn headless_service(
    spec: &WoodpeckerClusterSpec,
    name: &str,
    namespace: &str,
    cluster: &str,
    pool: &str,
    version: &str,
    owner: &OwnerReference,
) -> Service {
    Service {
        metadata: meta(name, namespace, cluster, "server", version, owner, Some(pool)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(names::pool_selector(cluster, pool)),
            ports: Some(vec![
                port(PORT_NAME_SERVICE, spec.service_port, "TCP"),
                port(PORT_NAME_GOSSIP_TCP, spec.gossip_port, "TCP"),
                port(PORT_NAME_GOSSIP_UDP, spec.gossip_port, "UDP"),
                port(PORT_NAME_ADMIN, spec.metrics_port, "TCP"),
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Seed Service of a pool: a ClusterIP on the gRPC port over the pool's Ready pods.
pub fn seed_service(
    spec: &WoodpeckerClusterSpec,
    name: &str,
    namespace: &str,
    cluster: &str,
    pool: &str,
    version: &str,
    owner: &OwnerReference,
) -> Service {
    Service {
        metadata: meta(name, namespace, cluster, "seed", version, owner, Some(pool)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(names::pool_selector(cluster, pool)),
            ports: Some(vec![port(PORT_NAME_SERVICE, spec.service_port, "TCP")]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Admin/metrics Service over every server pod of the cluster.
pub fn admin_service(
    spec: &WoodpeckerClusterSpec,
    name: &str,
    namespace: &str,
    cluster: &str,
    version: &str,
    owner: &OwnerReference,
) -> Service {
    Service {
        metadata: meta(name, namespace, cluster, "admin", version, owner, None),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(names::cluster_selector(cluster)),
            ports: Some(vec![port(PORT_NAME_ADMIN, spec.metrics_port, "TCP")]),
            ..Default::default()
        }),
        status: None,
    }
}
