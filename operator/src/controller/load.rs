//! Load: resolve the Secrets and ConfigMaps a cluster references (§5.5 step 1).
//!
//! User-owned objects are read directly (they carry no operator label, so they are not cached);
//! a missing object or key makes the pass stop before any write, with `ConfigValid=False`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::Api;
use woodpecker_crds::WoodpeckerCluster;

use super::Error;

/// A reference from the spec to a user object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `Secret` or `ConfigMap`.
    pub kind: &'static str,
    /// Object name.
    pub name: String,
    /// Keys that must exist in it.
    pub keys: Vec<String>,
    /// Spec field that names it, for messages.
    pub field: &'static str,
}

/// Referenced objects that were found.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    /// Secrets by name.
    pub secrets: BTreeMap<String, Secret>,
    /// ConfigMaps by name.
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// One line per missing object or key; empty when everything resolved.
    pub missing: Vec<String>,
}

/// Every Secret and ConfigMap the spec names.
pub fn references(cr: &WoodpeckerCluster) -> Vec<Reference> {
    let mut out = Vec::new();
    let spec = &cr.spec;
    if let Some(c) = &spec.config_ref {
        out.push(Reference { kind: "ConfigMap", name: c.name.clone(), keys: vec![c.key.clone()], field: "configRef" });
    }
    if let Some(os) = &spec.object_storage {
        if let Some(creds) = &os.credentials {
            if let Some(s) = &creds.secret_ref {
                out.push(Reference {
                    kind: "Secret",
                    name: s.name.clone(),
                    keys: vec![s.access_key_id_key.clone(), s.secret_access_key_key.clone()],
                    field: "objectStorage.credentials.secretRef",
                });
            }
            if let Some(s) = &creds.gcp_credentials_secret_ref {
                out.push(Reference {
                    kind: "Secret",
                    name: s.name.clone(),
                    keys: vec![s.key.clone()],
                    field: "objectStorage.credentials.gcpCredentialsSecretRef",
                });
            }
        }
        if let Some(s) = &os.ca_secret_ref {
            out.push(Reference {
                kind: "Secret",
                name: s.name.clone(),
                keys: vec![s.key.clone()],
                field: "objectStorage.caSecretRef",
            });
        }
    }
    if let Some(etcd) = &spec.etcd {
        if let Some(s) = &etcd.tls_secret_ref {
            out.push(Reference { kind: "Secret", name: s.name.clone(), keys: vec![], field: "etcd.tlsSecretRef" });
        }
        if let Some(s) = &etcd.auth_secret_ref {
            out.push(Reference { kind: "Secret", name: s.name.clone(), keys: vec![], field: "etcd.authSecretRef" });
        }
    }
    out
}

fn has_key<'a>(mut keys: impl Iterator<Item = &'a String>, key: &str) -> bool {
    keys.any(|k| k == key)
}

/// GET every referenced object in `ns`; report what is missing instead of failing.
pub async fn resolve(client: &Client, ns: &str, refs: &[Reference]) -> Result<Resolved, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut out = Resolved::default();
    for r in refs {
        match r.kind {
            "Secret" => {
                let found = match out.secrets.get(&r.name) {
                    Some(s) => Some(s.clone()),
                    None => secrets.get_opt(&r.name).await.map_err(|e| Error::kube("get", "Secret", &r.name, e))?,
                };
                let Some(s) = found else {
                    out.missing.push(format!("Secret {} (named by spec.{}) not found", r.name, r.field));
                    continue;
                };
                for k in &r.keys {
                    let present = s.data.as_ref().is_some_and(|d| has_key(d.keys(), k))
                        || s.string_data.as_ref().is_some_and(|d| has_key(d.keys(), k));
                    if !present {
                        out.missing.push(format!("Secret {} has no key {k} (spec.{})", r.name, r.field));
                    }
                }
                out.secrets.insert(r.name.clone(), s);
            }
            _ => {
                let found = match out.config_maps.get(&r.name) {
                    Some(c) => Some(c.clone()),
                    None => cms.get_opt(&r.name).await.map_err(|e| Error::kube("get", "ConfigMap", &r.name, e))?,
                };
                let Some(c) = found else {
                    out.missing.push(format!("ConfigMap {} (named by spec.{}) not found", r.name, r.field));
                    continue;
                };
                for k in &r.keys {
                    if !c.data.as_ref().is_some_and(|d| has_key(d.keys(), k)) {
                        out.missing.push(format!("ConfigMap {} has no key {k} (spec.{})", r.name, r.field));
                    }
                }
                out.config_maps.insert(r.name.clone(), c);
            }
        }
    }
    Ok(out)
}
