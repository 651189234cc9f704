//! Load: resolve the Secrets and ConfigMaps a cluster references (§5.5 step 1).
//!
//! User-owned objects carry no operator label: their metadata is cached by a metadata-only watch,
//! their contents are read once per resourceVersion. A missing object or key makes the pass stop
//! before any write, with `ConfigValid=False`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
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
    /// The cluster's stamp key, when it references objects (see `RenderInputs::stamp_key`).
    pub stamp_key: Option<Vec<u8>>,
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

/// Contents by `(namespace, name)`, with the resourceVersion they were read at.
type ContentCache<K> = Mutex<HashMap<(String, String), (String, K)>>;

/// Referenced user objects: a metadata-only cache of every Secret/ConfigMap in scope plus their
/// contents, fetched once per resourceVersion. A pass whose references did not change sends no
/// request; a missing object is known from the cache without asking.
pub struct UserObjects {
    /// Metadata of the Secrets in scope.
    pub secret_meta: Store<PartialObjectMeta<Secret>>,
    /// Metadata of the ConfigMaps in scope.
    pub config_map_meta: Store<PartialObjectMeta<ConfigMap>>,
    secrets: ContentCache<Secret>,
    config_maps: ContentCache<ConfigMap>,
}

impl UserObjects {
    /// Contents cache over the two metadata stores.
    pub fn new(
        secret_meta: Store<PartialObjectMeta<Secret>>,
        config_map_meta: Store<PartialObjectMeta<ConfigMap>>,
    ) -> Self {
        Self { secret_meta, config_map_meta, secrets: Mutex::default(), config_maps: Mutex::default() }
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The object `ns/name` at the resourceVersion the metadata cache shows; `None` when absent.
async fn fetch<K>(
    client: &Client,
    ns: &str,
    name: &str,
    meta: &Store<PartialObjectMeta<K>>,
    cache: &ContentCache<K>,
) -> Result<Option<K>, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let Some(m) = meta.get(&ObjectRef::new(name).within(ns)) else { return Ok(None) };
    let rv = m.metadata.resource_version.clone().unwrap_or_default();
    let key = (ns.to_string(), name.to_string());
    if let Some((cached_rv, obj)) = locked(cache).get(&key)
        && *cached_rv == rv
    {
        return Ok(Some(obj.clone()));
    }
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let kind = K::kind(&()).to_string();
    let got = api.get_opt(name).await.map_err(|e| Error::kube("get", &kind, name, e))?;
    match &got {
        Some(obj) => {
            let rv = obj.meta().resource_version.clone().unwrap_or_default();
            locked(cache).insert(key, (rv, obj.clone()));
        }
        None => {
            locked(cache).remove(&key);
        }
    }
    Ok(got)
}

/// Resolve every referenced object in `ns`; report what is missing instead of failing.
pub async fn resolve(client: &Client, users: &UserObjects, ns: &str, refs: &[Reference]) -> Result<Resolved, Error> {
    let mut out = Resolved::default();
    for r in refs {
        match r.kind {
            "Secret" => {
                let found = match out.secrets.get(&r.name) {
                    Some(s) => Some(s.clone()),
                    None => fetch(client, ns, &r.name, &users.secret_meta, &users.secrets).await?,
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
                    None => fetch(client, ns, &r.name, &users.config_map_meta, &users.config_maps).await?,
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
