//! One StatefulSet per node group: pinned to its zone, spread over hosts, probed on the admin port,
//! non-root with a read-only root filesystem, flags and env per the server contract.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapKeySelector, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, LocalObjectReference, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource,
    SecurityContext, TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use woodpecker_crds::{ProbeTiming, WoodpeckerClusterSpec};

use super::names::{
    self, ANNOTATION_CONFIG_HASH, ANNOTATION_RESTART_TOKEN, LABEL_NODE_GROUP, LABEL_POOL, LABEL_REGION,
    LABEL_RESOURCE_GROUP, LABEL_TOPOLOGY_ZONE, LABEL_ZONE, label_value,
};
use super::plan::GroupPlan;
use super::server_config::{CA_DIR, CA_FILE, CONFIG_DIR, CONFIG_KEY, DATA_DIR, USER_CONFIG_DIR, USER_CONFIG_KEY};

/// Seconds the kubelet waits after SIGTERM; the server finishes within 30 s.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;
/// UID/GID the server runs as (distroless `nonroot`).
pub const RUN_AS_USER: i64 = 65532;
/// Name of the server container.
pub const CONTAINER_NAME: &str = "woodpecker";
/// Name of the data volume claim template (PVCs are `data-<pod>`).
pub const DATA_VOLUME: &str = "data";
/// Container port name of the gRPC service.
pub const PORT_NAME_SERVICE: &str = "grpc";
/// Container port name of gossip over TCP.
pub const PORT_NAME_GOSSIP_TCP: &str = "gossip-tcp";
/// Container port name of gossip over UDP.
pub const PORT_NAME_GOSSIP_UDP: &str = "gossip-udp";
/// Container port name of the admin HTTP server.
pub const PORT_NAME_ADMIN: &str = "admin";

/// Everything a StatefulSet needs beyond the plan.
pub struct WorkloadInputs<'a> {
    /// The cluster spec.
    pub spec: &'a WoodpeckerClusterSpec,
    /// Namespace.
    pub namespace: &'a str,
    /// Cluster name.
    pub cluster: &'a str,
    /// Version label value.
    pub version: &'a str,
    /// ServiceAccount the pods run as.
    pub service_account: &'a str,
    /// Server ConfigMap name.
    pub config_map: &'a str,
    /// Overlay Secret name, when there is one.
    pub overlay_secret: Option<&'a str>,
    /// Pod-template hash annotation value.
    pub template_hash: &'a str,
    /// Owner reference to the cluster.
    pub owner: &'a OwnerReference,
    /// Extra pod labels from IAM settings.
    pub iam_pod_labels: &'a BTreeMap<String, String>,
    /// The ConfigMap holding every pool's gossip seeds.
    pub seeds_config_map: &'a str,
}

/// The server binary, by absolute path (CONTRACT.md: the image puts it in `/usr/local/bin`; the
/// image's PATH is not part of the contract).
pub const SERVER_BINARY: &str = "/usr/local/bin/woodpecker";

/// Env var carrying the pool's gossip seeds from the seeds ConfigMap into `--seeds`.
pub const SEEDS_ENV: &str = "WOODPECKER_GOSSIP_SEEDS";

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_string(), value: Some(value.into()), ..Default::default() }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.to_string(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An HTTP probe on the admin port: the defaults, overridden field by field by `timing`.
fn http_probe(path: &str, defaults: ProbeDefaults, timing: Option<&ProbeTiming>) -> Probe {
    let t = timing.cloned().unwrap_or_default();
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(PORT_NAME_ADMIN.to_string()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(t.initial_delay_seconds.unwrap_or(0)),
        period_seconds: Some(t.period_seconds.unwrap_or(defaults.period)),
        timeout_seconds: Some(t.timeout_seconds.unwrap_or(3)),
        failure_threshold: Some(t.failure_threshold.unwrap_or(defaults.failures)),
        success_threshold: Some(1),
        ..Default::default()
    }
}

/// Default period and failure threshold of a probe.
#[derive(Clone, Copy)]
struct ProbeDefaults {
    period: i32,
    failures: i32,
}

/// Startup on `/healthz` (gossip joined, data dir writable): up to 5 minutes to start.
const STARTUP_PROBE: ProbeDefaults = ProbeDefaults { period: 5, failures: 60 };
/// Liveness on `/livez` (the process answers): never depends on peers, disk or etcd, so a zone
/// partition does not make the kubelets restart the isolated pods (CONTRACT.md).
const LIVENESS_PROBE: ProbeDefaults = ProbeDefaults { period: 10, failures: 3 };
/// Readiness on `/readyz` (healthy and `active`): a decommissioning server leaves the Services.
const READINESS_PROBE: ProbeDefaults = ProbeDefaults { period: 5, failures: 3 };

/// Pod labels: user labels first, then the operator's (which always win).
pub fn pod_labels(w: &WorkloadInputs<'_>, g: &GroupPlan) -> BTreeMap<String, String> {
    let mut labels = w.spec.pod_labels.clone();
    labels.extend(w.iam_pod_labels.clone());
    labels.extend(names::common_labels(w.cluster, "server", w.version));
    labels.insert(LABEL_POOL.to_string(), label_value(&g.pool));
    labels.insert(LABEL_NODE_GROUP.to_string(), label_value(&g.name));
    labels.insert(LABEL_RESOURCE_GROUP.to_string(), label_value(&g.resource_group));
    if let Some(zone) = &g.zone {
        labels.insert(LABEL_ZONE.to_string(), label_value(zone));
        labels.insert(LABEL_TOPOLOGY_ZONE.to_string(), label_value(zone));
    }
    if let Some(region) = &g.region {
        labels.insert(LABEL_REGION.to_string(), label_value(region));
    }
    labels
}

/// The zone pin ANDed into every required node-selector term of the user's affinity.
fn pinned_affinity(base: Option<Affinity>, zone: Option<&str>) -> Option<Affinity> {
    let Some(zone) = zone else { return base };
    let requirement = NodeSelectorRequirement {
        key: LABEL_TOPOLOGY_ZONE.to_string(),
        operator: "In".to_string(),
        values: Some(vec![zone.to_string()]),
    };
    let mut affinity = base.unwrap_or_default();
    let mut node_affinity = affinity.node_affinity.take().unwrap_or_default();
    let mut required = node_affinity
        .required_during_scheduling_ignored_during_execution
        .take()
        .unwrap_or(NodeSelector { node_selector_terms: Vec::new() });
    if required.node_selector_terms.is_empty() {
        required.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        let exprs = term.match_expressions.get_or_insert_with(Vec::new);
        exprs.retain(|e| e.key != LABEL_TOPOLOGY_ZONE);
        exprs.push(requirement.clone());
    }
    node_affinity.required_during_scheduling_ignored_during_execution = Some(required);
    affinity.node_affinity = Some(NodeAffinity { ..node_affinity });
    Some(affinity)
}

/// User spread constraints plus defaults: pods of a pool spread over hosts, and over zones when the
/// group is not pinned. A user constraint on the same key replaces the default.
fn spread_constraints(w: &WorkloadInputs<'_>, g: &GroupPlan) -> Vec<TopologySpreadConstraint> {
    let mut out = g.topology_spread_constraints.clone();
    let selector = LabelSelector { match_labels: Some(names::pool_selector(w.cluster, &g.pool)), ..Default::default() };
    let mut defaults = vec![("kubernetes.io/hostname", "ScheduleAnyway")];
    if g.zone.is_none() {
        defaults.push((LABEL_TOPOLOGY_ZONE, "ScheduleAnyway"));
    }
    for (key, when) in defaults {
        if out.iter().any(|c| c.topology_key == key) {
            continue;
        }
        out.push(TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.to_string(),
            when_unsatisfiable: when.to_string(),
            label_selector: Some(selector.clone()),
            ..Default::default()
        });
    }
    out
}

/// Server flags (`woodpecker server …`), per CONTRACT.md.
pub fn server_args(w: &WorkloadInputs<'_>, g: &GroupPlan) -> Vec<String> {
    let spec = w.spec;
    let fqdn = format!("$(POD_NAME).{}.$(POD_NAMESPACE).svc.{}", g.headless_service, spec.cluster_domain);
    let mut args = vec!["server".to_string(), format!("--config={CONFIG_DIR}/{CONFIG_KEY}")];
    if w.overlay_secret.is_some() {
        args.push(format!("--external-user-config={USER_CONFIG_DIR}/{USER_CONFIG_KEY}"));
    }
    args.extend([
        format!("--service-port={}", spec.service_port),
        format!("--gossip-port={}", spec.gossip_port),
        "--node-name=$(POD_NAME)".to_string(),
        format!("--data-dir={DATA_DIR}"),
        // From a ConfigMap, not the template: adding a node group changes the seeds, and that must
        // restart nothing (seeds only matter when a server joins).
        format!("--seeds=$({SEEDS_ENV})"),
        format!("--advertise-gossip-addr={fqdn}:{}", spec.gossip_port),
        format!("--advertise-service-addr={fqdn}:{}", spec.service_port),
        format!("--cluster={}", w.cluster),
        format!("--resource-group={}", g.resource_group),
    ]);
    if let Some(region) = &g.region {
        args.push(format!("--region={region}"));
    }
    if let Some(zone) = &g.zone {
        args.push(format!("--availability-zone={zone}"));
    }
    args
}

/// The StatefulSet of node group `g`.
pub fn render_stateful_set(w: &WorkloadInputs<'_>, g: &GroupPlan) -> StatefulSet {
    let spec = w.spec;
    let labels = pod_labels(w, g);
    let mut annotations = spec.pod_annotations.clone();
    annotations.insert(ANNOTATION_CONFIG_HASH.to_string(), w.template_hash.to_string());
    if !spec.rollout_policy.restart_token.is_empty() {
        annotations.insert(ANNOTATION_RESTART_TOKEN.to_string(), spec.rollout_policy.restart_token.clone());
    }

    let mut env_vars = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        env("NODE_NAME", "$(POD_NAME)"),
        env("METRICS_PORT", spec.metrics_port.to_string()),
        env("CLUSTER_NAME", w.cluster),
        env("RESOURCE_GROUP", g.resource_group.clone()),
        EnvVar {
            name: SEEDS_ENV.to_string(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: w.seeds_config_map.to_string(),
                    key: names::gossip_seeds_key(&g.pool),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if let Some(zone) = &g.zone {
        env_vars.push(env("AVAILABILITY_ZONE", zone.clone()));
    }
    if let Some(region) = &g.region {
        env_vars.push(env("REGION", region.clone()));
    }

    let mut mounts = vec![
        VolumeMount { name: DATA_VOLUME.to_string(), mount_path: DATA_DIR.to_string(), ..Default::default() },
        VolumeMount {
            name: "config".to_string(),
            mount_path: CONFIG_DIR.to_string(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount { name: "tmp".to_string(), mount_path: "/tmp".to_string(), ..Default::default() },
    ];
    let mut volumes = vec![
        Volume {
            name: "config".to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: w.config_map.to_string(),
                items: Some(vec![KeyToPath { key: CONFIG_KEY.to_string(), path: CONFIG_KEY.to_string(), mode: None }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume { name: "tmp".to_string(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
    ];
    if let Some(secret) = w.overlay_secret {
        mounts.push(VolumeMount {
            name: "user-config".to_string(),
            mount_path: USER_CONFIG_DIR.to_string(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "user-config".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_string()),
                items: Some(vec![KeyToPath {
                    key: USER_CONFIG_KEY.to_string(),
                    path: USER_CONFIG_KEY.to_string(),
                    mode: None,
                }]),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(ca) = spec.object_storage.as_ref().and_then(|o| o.ca_secret_ref.as_ref()) {
        mounts.push(VolumeMount {
            name: "object-storage-ca".to_string(),
            mount_path: CA_DIR.to_string(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "object-storage-ca".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(ca.name.clone()),
                items: Some(vec![KeyToPath { key: ca.key.clone(), path: CA_FILE.to_string(), mode: None }]),
                default_mode: Some(0o444),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    let port = |name: &str, port: i32, protocol: &str| ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some(protocol.to_string()),
        ..Default::default()
    };
    let container = Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().to_string()),
        command: Some(vec![SERVER_BINARY.to_string()]),
        args: Some(server_args(w, g)),
        env: Some(env_vars),
        ports: Some(vec![
            port(PORT_NAME_SERVICE, spec.service_port, "TCP"),
            port(PORT_NAME_GOSSIP_TCP, spec.gossip_port, "TCP"),
            port(PORT_NAME_GOSSIP_UDP, spec.gossip_port, "UDP"),
            port(PORT_NAME_ADMIN, spec.metrics_port, "TCP"),
        ]),
        resources: g.resources.clone(),
        volume_mounts: Some(mounts),
        startup_probe: Some(http_probe("/healthz", STARTUP_PROBE, w.spec.probes.startup.as_ref())),
        liveness_probe: Some(http_probe("/livez", LIVENESS_PROBE, w.spec.probes.liveness.as_ref())),
        readiness_probe: Some(http_probe("/readyz", READINESS_PROBE, w.spec.probes.readiness.as_ref())),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_string()]), add: None }),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    };

    let pull_secrets: Vec<LocalObjectReference> = spec.image_pull_secrets.clone();
    let pod_spec = PodSpec {
        service_account_name: Some(w.service_account.to_string()),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        enable_service_links: Some(false),
        image_pull_secrets: if pull_secrets.is_empty() { None } else { Some(pull_secrets) },
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            fs_group: Some(RUN_AS_USER),
            fs_group_change_policy: Some("OnRootMismatch".to_string()),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_string(), localhost_profile: None }),
            ..Default::default()
        }),
        affinity: pinned_affinity(g.affinity.clone(), g.zone.as_deref()),
        node_selector: if g.node_selector.is_empty() { None } else { Some(g.node_selector.clone()) },
        tolerations: if g.tolerations.is_empty() { None } else { Some(g.tolerations.clone()) },
        topology_spread_constraints: Some(spread_constraints(w, g)),
        containers: vec![container],
        volumes: Some(volumes),
        ..Default::default()
    };

    let mut storage_requests = BTreeMap::new();
    storage_requests.insert("storage".to_string(), Quantity(g.storage_size.clone()));
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            labels: Some(names::group_selector(w.cluster, &g.pool, &g.name)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: g.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements { requests: Some(storage_requests), limits: None }),
            ..Default::default()
        }),
        ..Default::default()
    };

    let mut meta_labels = names::common_labels(w.cluster, "server", w.version);
    meta_labels.insert(LABEL_POOL.to_string(), label_value(&g.pool));
    meta_labels.insert(LABEL_NODE_GROUP.to_string(), label_value(&g.name));
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(g.stateful_set.clone()),
            namespace: Some(w.namespace.to_string()),
            labels: Some(meta_labels),
            owner_references: Some(vec![w.owner.clone()]),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(g.replicas),
            service_name: Some(g.headless_service.clone()),
            pod_management_policy: Some("Parallel".to_string()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_string()),
                rolling_update: None,
            }),
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Retain".to_string()),
                when_scaled: Some("Retain".to_string()),
            }),
            revision_history_limit: Some(10),
            selector: LabelSelector {
                match_labels: Some(names::group_selector(w.cluster, &g.pool, &g.name)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(pod_spec),
            },
            volume_claim_templates: Some(vec![claim]),
            ..Default::default()
        }),
        status: None,
    }
}
