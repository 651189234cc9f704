//! Pure rendering of a WoodpeckerCluster into Kubernetes objects (operator-design §5.3).
//!
//! ```text
//!  WoodpeckerCluster ──plan()──▶ ClusterPlan (pools, groups, names, seeds)
//!         │                         │
//!         └──────── render(cluster, inputs) ──▶ Rendered { SA, Services, ConfigMaps, Secret,
//!                                                          PDB, StatefulSets, PodMonitor, hashes }
//! ```
//!
//! Nothing here does I/O: the controller resolves the referenced Secrets/ConfigMaps into
//! [`RenderInputs`] and applies what comes out. Rendering the same inputs twice gives identical
//! objects (hashes included), so server-side apply of an unchanged cluster is a no-op.
//!
//! Notes for the controller:
//! * The server ConfigMap and the overlay Secret are immutable and content-addressed: create them if
//!   absent, never update; garbage-collect old ones by [`names::LABEL_CONFIG_KIND`].
//! * StatefulSets use `OnDelete`; while a scale-down drains, keep `spec.replicas` at the larger of
//!   the old and new count (overwrite it on the rendered object before applying).
//! * `volumeClaimTemplates` are immutable in the API: when a group's storage grows, resize the PVCs
//!   and keep the existing template ([`GroupPlan::storage_size`] holds the wanted size).

pub mod client_bundle;
pub mod names;
pub mod plan;
pub mod server_config;
pub mod services;
pub mod statefulset;
pub mod validate;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;
use woodpecker_crds::WoodpeckerCluster;

pub use names::Names;
pub use plan::{ClusterPlan, GroupPlan, PoolPlan, plan};
pub use server_config::ObjectCredentials;
pub use validate::{TopologyIssue, ValidationError, check_topology, validate, validate_cluster};

/// Why a cluster could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The object lacks a field every stored object has.
    #[error("the WoodpeckerCluster has no {0}")]
    MissingMetadata(&'static str),
    /// A Secret or ConfigMap named by the spec was not passed in (or lacks the key).
    #[error("{kind} {name} (spec.{field}) is missing or has no key {key}")]
    MissingReference {
        /// `Secret` or `ConfigMap`.
        kind: &'static str,
        /// Object name.
        name: String,
        /// Key that was needed.
        key: String,
        /// Spec field naming it.
        field: &'static str,
    },
    /// User-supplied YAML (configRef or rawOverrides) is not a YAML mapping.
    #[error("{source_name} is not valid YAML: {reason}")]
    UserConfig {
        /// Where the YAML came from.
        source_name: &'static str,
        /// Parser message.
        reason: String,
    },
    /// The server's config loader rejects the rendered `woodpecker.yaml` (usually a bad key or
    /// value in `configRef` or `config.rawOverrides`).
    #[error("the server would refuse this config: {0}")]
    ServerConfig(String),
    /// Serializing generated YAML failed.
    #[error("serializing generated YAML: {0}")]
    Yaml(String),
}

/// The user objects the spec references, as the controller read them (keyed by name).
#[derive(Clone, Debug, Default)]
pub struct RenderInputs {
    /// Secrets named by `objectStorage.credentials` and `objectStorage.caSecretRef`.
    pub secrets: BTreeMap<String, Secret>,
    /// The ConfigMap named by `configRef`.
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// The cluster's stamp key (its `<cluster>-stamp-key` Secret): the contents of referenced
    /// objects are stamped with a digest keyed by it. `None` (inputs built by hand) stamps with
    /// the resourceVersion instead.
    pub stamp_key: Option<Vec<u8>>,
}

impl RenderInputs {
    fn secret_value(&self, name: &str, key: &str, field: &'static str) -> Result<Vec<u8>, RenderError> {
        let missing =
            || RenderError::MissingReference { kind: "Secret", name: name.to_string(), key: key.to_string(), field };
        let secret = self.secrets.get(name).ok_or_else(missing)?;
        if let Some(ByteString(v)) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return Ok(v.clone());
        }
        secret.string_data.as_ref().and_then(|d| d.get(key)).map(|s| s.as_bytes().to_vec()).ok_or_else(missing)
    }

    /// A version stamp of a referenced object, published in pod annotations and object names.
    ///
    /// With the stamp key it is a keyed digest of the object's contents: a label, an annotation or a
    /// backup restore of the same data (a new resourceVersion) restarts nothing, a change of data
    /// rolls the pods, and without the key nobody can test a guessed credential against it.
    /// Without the key it is the resourceVersion (or, for objects built in tests without one, a
    /// digest of the contents).
    fn version_of(
        &self,
        kind: &str,
        name: &str,
        resource_version: Option<&String>,
        content: impl FnOnce() -> Vec<u8>,
    ) -> String {
        match (&self.stamp_key, resource_version) {
            (Some(key), _) => format!("{kind}/{name}%{}", names::keyed_hash(key, &content(), 16)),
            (None, Some(rv)) => format!("{kind}/{name}@{rv}"),
            (None, None) => format!("{kind}/{name}#{}", names::short_hash(&content(), 16)),
        }
    }

    fn secret_version(&self, name: &str) -> String {
        let secret = self.secrets.get(name);
        self.version_of("Secret", name, secret.and_then(|s| s.metadata.resource_version.as_ref()), || {
            let mut bytes = Vec::new();
            for (k, ByteString(v)) in secret.and_then(|s| s.data.as_ref()).into_iter().flatten() {
                bytes.extend(k.as_bytes());
                bytes.push(0);
                bytes.extend(v);
                bytes.push(0);
            }
            for (k, v) in secret.and_then(|s| s.string_data.as_ref()).into_iter().flatten() {
                bytes.extend(k.as_bytes());
                bytes.push(0);
                bytes.extend(v.as_bytes());
                bytes.push(0);
            }
            bytes
        })
    }

    fn config_map_version(&self, name: &str) -> String {
        let cm = self.config_maps.get(name);
        self.version_of("ConfigMap", name, cm.and_then(|c| c.metadata.resource_version.as_ref()), || {
            let mut bytes = Vec::new();
            for (k, v) in cm.and_then(|c| c.data.as_ref()).into_iter().flatten() {
                bytes.extend(k.as_bytes());
                bytes.push(0);
                bytes.extend(v.as_bytes());
                bytes.push(0);
            }
            for (k, ByteString(v)) in cm.and_then(|c| c.binary_data.as_ref()).into_iter().flatten() {
                bytes.extend(k.as_bytes());
                bytes.push(0);
                bytes.extend(v);
                bytes.push(0);
            }
            bytes
        })
    }

    fn secret_string(&self, name: &str, key: &str, field: &'static str) -> Result<String, RenderError> {
        let bytes = self.secret_value(name, key, field)?;
        String::from_utf8(bytes).map_err(|_| RenderError::MissingReference {
            kind: "Secret",
            name: name.to_string(),
            key: format!("{key} (not UTF-8)"),
            field,
        })
    }
}

/// One rendered object, typed.
// Short-lived values handed straight to the API; boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum RenderedObject {
    /// ServiceAccount.
    ServiceAccount(ServiceAccount),
    /// Service.
    Service(Service),
    /// ConfigMap.
    ConfigMap(ConfigMap),
    /// Secret.
    Secret(Secret),
    /// PodDisruptionBudget.
    PodDisruptionBudget(PodDisruptionBudget),
    /// StatefulSet.
    StatefulSet(StatefulSet),
    /// `monitoring.coreos.com/v1` PodMonitor.
    PodMonitor(DynamicObject),
}

impl RenderedObject {
    /// `Kind/name`, for logs and tests.
    pub fn id(&self) -> String {
        let (kind, name) = match self {
            RenderedObject::ServiceAccount(o) => ("ServiceAccount", o.metadata.name.clone()),
            RenderedObject::Service(o) => ("Service", o.metadata.name.clone()),
            RenderedObject::ConfigMap(o) => ("ConfigMap", o.metadata.name.clone()),
            RenderedObject::Secret(o) => ("Secret", o.metadata.name.clone()),
            RenderedObject::PodDisruptionBudget(o) => ("PodDisruptionBudget", o.metadata.name.clone()),
            RenderedObject::StatefulSet(o) => ("StatefulSet", o.metadata.name.clone()),
            RenderedObject::PodMonitor(o) => ("PodMonitor", o.metadata.name.clone()),
        };
        format!("{kind}/{}", name.unwrap_or_default())
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            RenderedObject::ServiceAccount(o) => &o.metadata,
            RenderedObject::Service(o) => &o.metadata,
            RenderedObject::ConfigMap(o) => &o.metadata,
            RenderedObject::Secret(o) => &o.metadata,
            RenderedObject::PodDisruptionBudget(o) => &o.metadata,
            RenderedObject::StatefulSet(o) => &o.metadata,
            RenderedObject::PodMonitor(o) => &o.metadata,
        }
    }

    /// The object as JSON (with apiVersion and kind).
    pub fn to_json(&self) -> serde_json::Result<serde_json::Value> {
        match self {
            RenderedObject::ServiceAccount(o) => serde_json::to_value(o),
            RenderedObject::Service(o) => serde_json::to_value(o),
            RenderedObject::ConfigMap(o) => serde_json::to_value(o),
            RenderedObject::Secret(o) => serde_json::to_value(o),
            RenderedObject::PodDisruptionBudget(o) => serde_json::to_value(o),
            RenderedObject::StatefulSet(o) => serde_json::to_value(o),
            RenderedObject::PodMonitor(o) => serde_json::to_value(o),
        }
    }
}

/// Everything rendered for one cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// The defaulted shape (pools, groups, seeds) the objects came from.
    pub plan: ClusterPlan,
    /// ServiceAccount, unless `spec.serviceAccountName` names an existing one.
    pub service_account: Option<ServiceAccount>,
    /// Name of the ServiceAccount the pods use.
    pub service_account_name: String,
    /// Headless Service per local pool.
    pub headless_services: Vec<Service>,
    /// Seed Service per local pool.
    pub seed_services: Vec<Service>,
    /// Admin/metrics Service.
    pub admin_service: Service,
    /// Immutable, content-addressed server config.
    pub server_config: ConfigMap,
    /// Immutable, content-addressed credentials overlay, when there are credentials.
    pub credentials_overlay: Option<Secret>,
    /// Client bundle ConfigMap (its name goes into `status.clientConfigMap`).
    pub client_bundle: ConfigMap,
    /// Every pool's gossip seeds (`seeds.<pool>`), read by the pods through an env var so that a
    /// change of seeds restarts nothing.
    pub gossip_seeds: ConfigMap,
    /// PodDisruptionBudget, unless disabled or there are no local pods.
    pub pdb: Option<PodDisruptionBudget>,
    /// One StatefulSet per local node group, in spec order.
    pub stateful_sets: Vec<StatefulSet>,
    /// PodMonitor, when `monitoring.podMonitor`.
    pub pod_monitor: Option<DynamicObject>,
    /// Pod-template hash (server config + versions of the referenced Secrets/ConfigMap); the pods'
    /// config-hash annotation.
    pub template_hash: String,
}

impl Rendered {
    /// All objects in apply order: SA, config, Services, PDB, StatefulSets, PodMonitor.
    pub fn objects(&self) -> Vec<RenderedObject> {
        let mut out = Vec::new();
        if let Some(sa) = &self.service_account {
            out.push(RenderedObject::ServiceAccount(sa.clone()));
        }
        out.push(RenderedObject::ConfigMap(self.server_config.clone()));
        if let Some(s) = &self.credentials_overlay {
            out.push(RenderedObject::Secret(s.clone()));
        }
        out.push(RenderedObject::ConfigMap(self.client_bundle.clone()));
        out.push(RenderedObject::ConfigMap(self.gossip_seeds.clone()));
        out.extend(self.headless_services.iter().cloned().map(RenderedObject::Service));
        out.extend(self.seed_services.iter().cloned().map(RenderedObject::Service));
        out.push(RenderedObject::Service(self.admin_service.clone()));
        if let Some(p) = &self.pdb {
            out.push(RenderedObject::PodDisruptionBudget(p.clone()));
        }
        out.extend(self.stateful_sets.iter().cloned().map(RenderedObject::StatefulSet));
        if let Some(m) = &self.pod_monitor {
            out.push(RenderedObject::PodMonitor(m.clone()));
        }
        out
    }

    /// The client bundle ConfigMap name.
    pub fn client_config_map_name(&self) -> String {
        self.client_bundle.metadata.name.clone().unwrap_or_default()
    }
}

/// Owner reference making the cluster the controller of a rendered object.
pub fn owner_reference(cluster: &WoodpeckerCluster) -> Result<OwnerReference, RenderError> {
    let name = cluster.metadata.name.clone().ok_or(RenderError::MissingMetadata("metadata.name"))?;
    let uid = cluster.metadata.uid.clone().ok_or(RenderError::MissingMetadata("metadata.uid"))?;
    Ok(OwnerReference {
        api_version: WoodpeckerCluster::api_version(&()).into_owned(),
        kind: WoodpeckerCluster::kind(&()).into_owned(),
        name,
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// Metadata of a namespaced object owned by the cluster.
fn object_meta(name: String, namespace: &str, labels: BTreeMap<String, String>, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// Render every object of `cluster`. Pure and deterministic.
pub fn render(cluster: &WoodpeckerCluster, inputs: &RenderInputs) -> Result<Rendered, RenderError> {
    let plan = plan::plan(cluster)?;
    let owner = owner_reference(cluster)?;
    let spec = &cluster.spec;
    let ns = plan.namespace.as_str();
    let cr = plan.name.as_str();
    let version = names::image_version(&spec.image);

    // Credentials and user config, read from the resolved objects.
    let mut creds = ObjectCredentials::default();
    // Versions of every referenced object whose content reaches a pod without passing through the
    // (non-secret) server config: credentials, the CA, and configRef (credentials move out of it).
    let mut versions: Vec<String> = Vec::new();
    if let Some(os) = &spec.object_storage {
        if let Some(c) = &os.credentials {
            if let Some(r) = &c.secret_ref {
                creds.access_key_id =
                    Some(inputs.secret_string(&r.name, &r.access_key_id_key, "objectStorage.credentials.secretRef")?);
                creds.secret_access_key = Some(inputs.secret_string(
                    &r.name,
                    &r.secret_access_key_key,
                    "objectStorage.credentials.secretRef",
                )?);
            }
            if let Some(r) = &c.gcp_credentials_secret_ref {
                creds.gcp_credential_json =
                    Some(inputs.secret_string(&r.name, &r.key, "objectStorage.credentials.gcpCredentialsSecretRef")?);
            }
            for name in c.secret_ref.iter().map(|r| &r.name).chain(c.gcp_credentials_secret_ref.iter().map(|r| &r.name))
            {
                versions.push(inputs.secret_version(name));
            }
            // Which keys are read matters too (same Secret version, different key → other values).
            versions.push(serde_json::to_string(c).map_err(|e| RenderError::Yaml(e.to_string()))?);
        }
        if let Some(ca) = &os.ca_secret_ref {
            inputs.secret_value(&ca.name, &ca.key, "objectStorage.caSecretRef")?;
            versions.push(inputs.secret_version(&ca.name));
        }
    }
    let config_ref_yaml = match &spec.config_ref {
        Some(r) => {
            let text = inputs
                .config_maps
                .get(&r.name)
                .and_then(|cm| cm.data.as_ref())
                .and_then(|d| d.get(&r.key))
                .cloned()
                .ok_or_else(|| RenderError::MissingReference {
                    kind: "ConfigMap",
                    name: r.name.clone(),
                    key: r.key.clone(),
                    field: "configRef",
                })?;
            versions.push(inputs.config_map_version(&r.name));
            versions.push(format!("key={}", r.key));
            Some(text)
        }
        None => None,
    };

    if let Some(raw) = spec.config.as_ref().map(|c| c.raw_overrides.as_str()).filter(|r| !r.is_empty()) {
        // Part of the spec, so no secret to protect; it can feed the overlay (validate rejects that).
        versions.push(format!("rawOverrides#{}", names::short_hash(raw.as_bytes(), 16)));
    }
    let text = server_config::render_server_config(spec, &plan, config_ref_yaml.as_deref(), &creds)?;
    server_config::check_with_server_loader(&text)?;
    let config_hash8 = names::short_hash(text.config_yaml.as_bytes(), 8);
    let config_name = plan.names.server_config(&config_hash8);
    // Never hash credential values into names or annotations (pod readers could test guesses
    // against them): the overlay is identified by the versions of what it was built from.
    let versions_text = versions.join("\n");
    let mut hash_input = text.config_yaml.as_bytes().to_vec();
    hash_input.push(0);
    hash_input.extend(versions_text.as_bytes());
    let template_hash = names::short_hash(&hash_input, 16);

    let mut config_labels = names::common_labels(cr, "server-config", &version);
    config_labels.insert(names::LABEL_CONFIG_KIND.to_string(), "server".to_string());
    let server_config = ConfigMap {
        metadata: object_meta(config_name.clone(), ns, config_labels, &owner),
        data: Some(BTreeMap::from([(server_config::CONFIG_KEY.to_string(), text.config_yaml.clone())])),
        immutable: Some(true),
        ..Default::default()
    };
    let credentials_overlay = text.overlay_yaml.as_ref().map(|overlay| {
        let hash8 = names::short_hash(versions_text.as_bytes(), 8);
        let mut labels = names::common_labels(cr, "server-credentials", &version);
        labels.insert(names::LABEL_CONFIG_KIND.to_string(), "credentials".to_string());
        Secret {
            metadata: object_meta(plan.names.credentials_overlay(&hash8), ns, labels, &owner),
            data: Some(BTreeMap::from([(
                server_config::USER_CONFIG_KEY.to_string(),
                ByteString(overlay.as_bytes().to_vec()),
            )])),
            immutable: Some(true),
            type_: Some("Opaque".to_string()),
            ..Default::default()
        }
    });
    let overlay_name = credentials_overlay.as_ref().and_then(|s| s.metadata.name.clone());

    let client_bundle = ConfigMap {
        metadata: object_meta(
            plan.names.client_bundle(),
            ns,
            names::common_labels(cr, "client-bundle", &version),
            &owner,
        ),
        data: Some(client_bundle::render_client_bundle(spec, &plan)?),
        ..Default::default()
    };

    let seeds_name = plan.names.gossip_seeds();
    let gossip_seeds = ConfigMap {
        metadata: object_meta(seeds_name.clone(), ns, names::common_labels(cr, "gossip-seeds", &version), &owner),
        data: Some(
            plan.pools
                .iter()
                .filter(|p| !p.gossip_seeds.is_empty())
                .map(|p| (names::gossip_seeds_key(&p.name), p.gossip_seeds.join(",")))
                .collect(),
        ),
        ..Default::default()
    };

    let iam = spec.object_storage.as_ref().and_then(|o| o.credentials.as_ref()).and_then(|c| c.iam.clone());
    let (service_account, service_account_name) = match &spec.service_account_name {
        Some(name) => (None, name.clone()),
        None => {
            let name = plan.names.service_account();
            let mut meta = object_meta(name.clone(), ns, names::common_labels(cr, "server", &version), &owner);
            if let Some(iam) = &iam
                && !iam.service_account_annotations.is_empty()
            {
                meta.annotations = Some(iam.service_account_annotations.clone());
            }
            (
                Some(ServiceAccount {
                    metadata: meta,
                    automount_service_account_token: Some(false),
                    ..Default::default()
                }),
                name,
            )
        }
    };

    let mut headless_services = Vec::new();
    let mut seed_services = Vec::new();
    let mut stateful_sets = Vec::new();
    let iam_pod_labels = iam.map(|i| i.pod_labels).unwrap_or_default();
    let workload = statefulset::WorkloadInputs {
        spec,
        namespace: ns,
        cluster: cr,
        version: &version,
        service_account: &service_account_name,
        config_map: &config_name,
        overlay_secret: overlay_name.as_deref(),
        template_hash: &template_hash,
        owner: &owner,
        iam_pod_labels: &iam_pod_labels,
        seeds_config_map: &seeds_name,
    };
    let service_ctx = services::ServiceContext { spec, namespace: ns, cluster: cr, version: &version, owner: &owner };
    for pool in &plan.pools {
        let (Some(hs), Some(seed)) = (&pool.headless_service, &pool.seed_service) else { continue };
        headless_services.push(services::headless_service(&service_ctx, hs, &pool.name));
        seed_services.push(services::seed_service(&service_ctx, seed, &pool.name));
        for g in &pool.groups {
            stateful_sets.push(statefulset::render_stateful_set(&workload, g));
        }
    }
    let admin_service = services::admin_service(&service_ctx, &plan.names.admin_service());

    let pdb = (spec.pdb.enabled && !stateful_sets.is_empty()).then(|| PodDisruptionBudget {
        metadata: object_meta(plan.names.pdb(), ns, names::common_labels(cr, "server", &version), &owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(spec.rollout_policy.max_unavailable)),
            selector: Some(LabelSelector { match_labels: Some(names::cluster_selector(cr)), ..Default::default() }),
            // A pod that is already down may always be evicted: the roll replaces down pods first,
            // and that must not wait for a budget the down pod itself is using up.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_string()),
            ..Default::default()
        }),
        status: None,
    });

    let pod_monitor = spec.monitoring.pod_monitor.then(|| {
        let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PodMonitor");
        let ar = ApiResource::from_gvk(&gvk);
        let mut labels = names::common_labels(cr, "monitoring", &version);
        labels.extend(spec.monitoring.labels.clone());
        let mut obj = DynamicObject::new(&plan.names.pod_monitor(), &ar).within(ns).data(json!({
            "spec": {
                "selector": { "matchLabels": names::cluster_selector(cr) },
                "podMetricsEndpoints": [ { "port": statefulset::PORT_NAME_ADMIN, "path": "/metrics" } ],
            }
        }));
        obj.metadata.labels = Some(labels);
        obj.metadata.owner_references = Some(vec![owner.clone()]);
        obj
    });

    Ok(Rendered {
        plan,
        service_account,
        service_account_name,
        headless_services,
        seed_services,
        admin_service,
        server_config,
        credentials_overlay,
        client_bundle,
        gossip_seeds,
        pdb,
        stateful_sets,
        pod_monitor,
        template_hash,
    })
}
