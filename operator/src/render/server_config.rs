//! The server's `woodpecker.yaml` (ConfigMap) and its credentials overlay (Secret, mounted as
//! `--external-user-config`). Credentials never enter the ConfigMap: credential keys found in a
//! user's `configRef` or `rawOverrides` are moved into the overlay.

use serde_json::{Map, Value, json};
use woodpecker_crds::{ObjectStorageSpec, WoodpeckerClusterSpec};

use super::RenderError;
use super::plan::ClusterPlan;

/// Where the server ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/woodpecker/configs";
/// Key of the server config inside its ConfigMap.
pub const CONFIG_KEY: &str = "woodpecker.yaml";
/// Where the credentials overlay Secret is mounted.
pub const USER_CONFIG_DIR: &str = "/woodpecker/user";
/// Key of the overlay inside its Secret.
pub const USER_CONFIG_KEY: &str = "user.yaml";
/// Where the object storage CA bundle is mounted.
pub const CA_DIR: &str = "/woodpecker/tls";
/// File name of the CA bundle.
pub const CA_FILE: &str = "ca.crt";
/// Local staging directory (the data PVC).
pub const DATA_DIR: &str = "/woodpecker/data";

/// Dotted paths whose values are credentials; they are only ever written to the overlay Secret.
pub const CREDENTIAL_PATHS: &[&[&str]] = &[
    &["minio", "accessKeyID"],
    &["minio", "secretAccessKey"],
    &["minio", "gcpCredentialJSON"],
    &["etcd", "auth", "password"],
    &["etcd", "auth", "userName"],
];

/// Credential values the controller read from the user's Secrets.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ObjectCredentials {
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// GCS service-account JSON.
    pub gcp_credential_json: Option<String>,
}

/// The rendered server config and overlay, as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfigText {
    /// `woodpecker.yaml` for the ConfigMap.
    pub config_yaml: String,
    /// `user.yaml` for the overlay Secret, when there is any credential.
    pub overlay_yaml: Option<String>,
}

/// `quorumBufferPools`: every pool with its client seeds.
pub fn buffer_pools_json(plan: &ClusterPlan) -> Value {
    Value::Array(plan.pools.iter().map(|p| json!({ "name": p.name, "seeds": p.client_seeds })).collect())
}

/// `quorumSelectStrategy`: ensemble size, strategy, affinity and custom placements.
pub fn select_strategy_json(spec: &WoodpeckerClusterSpec) -> Value {
    let mut strategy = json!({
        "affinityMode": spec.quorum.affinity_mode.as_str(),
        "replicas": spec.quorum.ensemble_size,
        "strategy": spec.quorum.strategy.as_str(),
    });
    if !spec.quorum.custom_placement.is_empty()
        && let Some(obj) = strategy.as_object_mut()
    {
        let placements: Vec<Value> = spec
            .quorum
            .custom_placement
            .iter()
            .map(|p| json!({ "name": p.name, "region": p.region, "az": p.az, "resourceGroup": p.resource_group }))
            .collect();
        obj.insert("customPlacement".to_string(), Value::Array(placements));
    }
    strategy
}

/// The `minio` block shared by servers and clients (no credentials). Servers additionally get
/// `createBucket: false` (service mode is multi-tenant) and the CA path.
pub fn minio_json(os: &ObjectStorageSpec, for_server: bool) -> Value {
    let mut minio = json!({
        "address": os.endpoint.address,
        "port": os.endpoint.port,
        "bucketName": os.bucket,
        "rootPath": os.root_path,
        "cloudProvider": os.provider.as_str(),
        "useIAM": os.credentials.as_ref().is_some_and(|c| c.iam.is_some()),
        "useSSL": os.endpoint.use_ssl,
        "region": os.endpoint.region,
        "useVirtualHost": os.endpoint.use_virtual_host,
    });
    if for_server && let Some(m) = minio.as_object_mut() {
        m.insert("createBucket".to_string(), json!(false));
        if os.ca_secret_ref.is_some() {
            m.insert("ssl".to_string(), json!({ "tlsCACert": format!("{CA_DIR}/{CA_FILE}") }));
        }
    }
    minio
}

/// Generated server config before user overrides.
fn generated(spec: &WoodpeckerClusterSpec, plan: &ClusterPlan) -> Value {
    let mut root = json!({
        "woodpecker": {
            "meta": { "type": "etcd", "prefix": "woodpecker" },
            "client": {
                "quorum": { "quorumBufferPools": buffer_pools_json(plan), "quorumSelectStrategy": select_strategy_json(spec) },
            },
            "storage": { "type": "service", "rootPath": DATA_DIR },
        },
        "log": { "level": spec.config.as_ref().and_then(|c| c.log_level).unwrap_or_default().as_str() },
    });
    if let Some(os) = &spec.object_storage
        && let Some(obj) = root.as_object_mut()
    {
        obj.insert("minio".to_string(), minio_json(os, true));
    }
    root
}

/// Deep-merge `over` into `base`: maps merge key by key, anything else replaces, and an empty
/// (null) value leaves the base alone — the same rule as the server's own overlay merge.
pub fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (_, Value::Null) => {}
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => deep_merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Parse user YAML (a mapping, or empty) into JSON.
pub fn parse_user_yaml(source: &'static str, text: &str) -> Result<Value, RenderError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let v: Value = serde_saphyr::from_str(text)
        .map_err(|e| RenderError::UserConfig { source_name: source, reason: e.to_string() })?;
    match v {
        Value::Object(_) => Ok(v),
        Value::Null => Ok(Value::Object(Map::new())),
        _ => Err(RenderError::UserConfig { source_name: source, reason: "top level must be a mapping".to_string() }),
    }
}

/// Remove the value at `path` from `v`, returning it.
fn take_path(v: &mut Value, path: &[&str]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut cur = v;
    for p in parents {
        cur = cur.as_object_mut()?.get_mut(*p)?;
    }
    cur.as_object_mut()?.remove(*last)
}

/// Set `value` at `path` in `v`, creating maps on the way.
fn put_path(v: &mut Value, path: &[&str], value: Value) {
    let mut cur = v;
    for p in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(map) = cur else { return };
        cur = map.entry(p.to_string()).or_insert(Value::Null);
    }
    *cur = value;
}

/// Credential paths present in a user YAML tree (used by validation to reject them in rawOverrides).
pub fn credential_paths_in(v: &Value) -> Vec<String> {
    CREDENTIAL_PATHS
        .iter()
        .filter(|path| {
            let mut cur = v;
            for p in path.iter() {
                match cur.get(*p) {
                    Some(next) => cur = next,
                    None => return false,
                }
            }
            !matches!(cur, Value::Null) && cur.as_str() != Some("")
        })
        .map(|p| p.join("."))
        .collect()
}

/// Render `woodpecker.yaml` and the overlay. `config_ref_yaml` is the user's configRef content.
pub fn render_server_config(
    spec: &WoodpeckerClusterSpec,
    plan: &ClusterPlan,
    config_ref_yaml: Option<&str>,
    credentials: &ObjectCredentials,
) -> Result<ServerConfigText, RenderError> {
    let mut config = generated(spec, plan);
    if let Some(text) = config_ref_yaml {
        deep_merge(&mut config, parse_user_yaml("configRef", text)?);
    }
    if let Some(raw) = spec.config.as_ref().map(|c| c.raw_overrides.as_str()) {
        deep_merge(&mut config, parse_user_yaml("config.rawOverrides", raw)?);
    }
    // Operator-owned keys win over user YAML: the seeds are what keep scaling restart-free.
    let pools: Vec<Value> = plan.pools.iter().map(|p| json!({ "name": p.name, "seeds": p.client_seeds })).collect();
    put_path(&mut config, &["woodpecker", "client", "quorum", "quorumBufferPools"], Value::Array(pools));
    put_path(&mut config, &["woodpecker", "storage", "type"], json!("service"));
    put_path(&mut config, &["woodpecker", "storage", "rootPath"], json!(DATA_DIR));

    let mut overlay = Value::Object(Map::new());
    for path in CREDENTIAL_PATHS {
        if let Some(v) = take_path(&mut config, path)
            && !matches!(v, Value::Null)
            && v.as_str() != Some("")
        {
            put_path(&mut overlay, path, v);
        }
    }
    if let Some(v) = &credentials.access_key_id {
        put_path(&mut overlay, &["minio", "accessKeyID"], json!(v));
    }
    if let Some(v) = &credentials.secret_access_key {
        put_path(&mut overlay, &["minio", "secretAccessKey"], json!(v));
    }
    if let Some(v) = &credentials.gcp_credential_json {
        put_path(&mut overlay, &["minio", "gcpCredentialJSON"], json!(v));
    }
    let config_yaml = to_yaml(&config)?;
    let overlay_yaml = match overlay.as_object() {
        Some(m) if !m.is_empty() => Some(to_yaml(&overlay)?),
        _ => None,
    };
    Ok(ServerConfigText { config_yaml, overlay_yaml })
}

/// Serialize a JSON tree as YAML.
pub fn to_yaml(v: &Value) -> Result<String, RenderError> {
    serde_saphyr::to_string(v).map_err(|e| RenderError::Yaml(e.to_string()))
}

/// Every string scalar in a YAML tree (used to redact credential values from error messages).
fn scalars(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|i| scalars(i, out)),
        Value::Object(map) => map.values().for_each(|i| scalars(i, out)),
        _ => {}
    }
}

/// Load the rendered config and overlay with the server's own loader (unknown keys, ranges,
/// service-mode rules), so a config the server would refuse never reaches a pod. The message
/// never repeats a credential value.
pub fn check_with_server_loader(text: &ServerConfigText) -> Result<(), RenderError> {
    let overlay = text.overlay_yaml.as_deref().unwrap_or("");
    let Err(e) = woodpecker_core::config::Config::from_yaml_with_overlay(&text.config_yaml, overlay) else {
        return Ok(());
    };
    let mut message = e.to_string();
    let mut secrets = Vec::new();
    if let Ok(tree) = serde_saphyr::from_str::<Value>(overlay) {
        scalars(&tree, &mut secrets);
    }
    if secrets.iter().any(|s| s.len() >= 3 && message.contains(s.as_str())) {
        message = match e.key() {
            Some(key) => format!("the server rejects the value of `{key}` (a credential; value not shown)"),
            None => "the server rejects the credentials overlay (value not shown)".to_string(),
        };
    }
    Err(RenderError::ServerConfig(message))
}
