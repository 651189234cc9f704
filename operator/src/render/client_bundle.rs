//! The client bundle: the client half of `woodpecker.yaml` (etcd, object storage, pools with seeds,
//! quorum) that Milvus or our Rust client needs. Secret *names* only, never values.

use std::collections::BTreeMap;

use serde_json::json;
use woodpecker_crds::WoodpeckerClusterSpec;

use super::RenderError;
use super::plan::ClusterPlan;
use super::server_config::{buffer_pools_json, minio_json, select_strategy_json, to_yaml};

/// Key holding the client `woodpecker.yaml` fragment.
pub const BUNDLE_CONFIG_KEY: &str = "woodpecker.yaml";
/// Key naming the Secret with `ca.crt`/`tls.crt`/`tls.key` for etcd (when set).
pub const BUNDLE_ETCD_TLS_SECRET_KEY: &str = "etcdTLSSecret";
/// Key naming the Secret with etcd `username`/`password` (when set); clients overlay `etcd.auth` from it.
pub const BUNDLE_ETCD_AUTH_SECRET_KEY: &str = "etcdAuthSecret";
/// Key naming the Secret with object storage keys (when set).
pub const BUNDLE_OBJECT_STORAGE_SECRET_KEY: &str = "objectStorageSecret";
/// Where clients are expected to mount the etcd TLS Secret.
pub const CLIENT_ETCD_TLS_DIR: &str = "/woodpecker/etcd-tls";

/// Data of the client bundle ConfigMap.
pub fn render_client_bundle(
    spec: &WoodpeckerClusterSpec,
    plan: &ClusterPlan,
) -> Result<BTreeMap<String, String>, RenderError> {
    let mut root = json!({
        "woodpecker": {
            "meta": { "type": "etcd", "prefix": "woodpecker" },
            "client": {
                "quorum": { "quorumBufferPools": buffer_pools_json(plan), "quorumSelectStrategy": select_strategy_json(spec) },
            },
            "storage": { "type": "service" },
        },
    });
    let mut data = BTreeMap::new();
    let Some(obj) = root.as_object_mut() else {
        return Err(RenderError::Yaml("client bundle root is not a mapping".to_string()));
    };
    if let Some(etcd) = &spec.etcd {
        let mut e = json!({ "endpoints": etcd.endpoints, "rootPath": etcd.root_path });
        if let Some(tls) = &etcd.tls_secret_ref
            && let Some(m) = e.as_object_mut()
        {
            m.insert(
                "ssl".to_string(),
                json!({
                    "enabled": true,
                    "tlsCert": format!("{CLIENT_ETCD_TLS_DIR}/tls.crt"),
                    "tlsKey": format!("{CLIENT_ETCD_TLS_DIR}/tls.key"),
                    "tlsCACert": format!("{CLIENT_ETCD_TLS_DIR}/ca.crt"),
                }),
            );
            data.insert(BUNDLE_ETCD_TLS_SECRET_KEY.to_string(), tls.name.clone());
        }
        // `etcd.auth` (enabled, userName, password) comes from the named Secret as the client's
        // own overlay: the bundle stays loadable on its own and never carries a credential.
        if let Some(auth) = &etcd.auth_secret_ref {
            data.insert(BUNDLE_ETCD_AUTH_SECRET_KEY.to_string(), auth.name.clone());
        }
        obj.insert("etcd".to_string(), e);
    }
    if let Some(os) = &spec.object_storage {
        obj.insert("minio".to_string(), minio_json(os, false));
        if let Some(s) = os.credentials.as_ref().and_then(|c| c.secret_ref.as_ref()) {
            data.insert(BUNDLE_OBJECT_STORAGE_SECRET_KEY.to_string(), s.name.clone());
        }
    }
    data.insert(BUNDLE_CONFIG_KEY.to_string(), to_yaml(&root)?);
    Ok(data)
}
