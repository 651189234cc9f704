//! Server-side apply with one field manager, skipped when the live object was applied from the
//! same desired object.
//!
//! A no-change reconcile must issue no writes, and a removed field must reach the live object.
//! Both are decided on a hash of the desired object, stamped on it as the annotation
//! [`ANNOTATION_APPLIED_HASH`]: when the live copy (from the reflector cache) carries the same hash,
//! nothing is sent; otherwise the whole desired object is applied, and server-side apply removes
//! every field this field manager set before and no longer sets (a cleared restart token,
//! toleration, limit, nodeSelector entry or pod annotation). Comparing the desired fields with the
//! live ones instead never saw a removal, and never matched a value the API server normalises
//! (`cpu: 0.5` comes back as `500m`, `memory: 1024Mi` as `1Gi`), so it applied on every pass.
//!
//! A change made to the live object by another writer is not undone until the desired object
//! changes; the hash says what the operator asked for, not what the object holds now.

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Error;
use crate::metrics::Metrics;
use crate::render::names::short_hash;

/// The one field manager the operator applies with.
pub const FIELD_MANAGER: &str = "woodpecker-operator";

/// Annotation on every applied object: the hash of the desired object it was applied from.
pub const ANNOTATION_APPLIED_HASH: &str = "woodpecker.zilliz.io/applied-hash";

/// What [`apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The live object was applied from the same desired object; no request was sent.
    Unchanged,
    /// A server-side apply patch was sent.
    Patched,
}

/// The part of an object that SSA owns: no server-managed metadata, no `status`, no hash stamp.
fn desired_fields<K: Serialize>(obj: &K) -> Result<Value, serde_json::Error> {
    let mut v = serde_json::to_value(obj)?;
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for k in ["resourceVersion", "managedFields", "uid", "creationTimestamp", "generation"] {
                meta.remove(k);
            }
            if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
                ann.remove(ANNOTATION_APPLIED_HASH);
                if ann.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    Ok(v)
}

/// Hash of the desired object (everything [`apply`] would send, the stamp excluded).
pub fn desired_hash<K: Serialize>(desired: &K) -> Result<String, serde_json::Error> {
    let v = desired_fields(desired)?;
    Ok(short_hash(&serde_json::to_vec(&v)?, 16))
}

/// The [`ANNOTATION_APPLIED_HASH`] a live object carries.
pub fn applied_hash<K: Resource>(live: &K) -> Option<&str> {
    live.meta().annotations.as_ref()?.get(ANNOTATION_APPLIED_HASH).map(String::as_str)
}

/// `desired` stamped with its hash, and whether `live` was applied from the same desired object.
pub fn stamp<K: Resource + Serialize + Clone>(desired: &K, live: Option<&K>) -> Result<(K, bool), serde_json::Error> {
    let hash = desired_hash(desired)?;
    let same = live.and_then(applied_hash).is_some_and(|h| h == hash);
    let mut stamped = desired.clone();
    stamped.meta_mut().annotations.get_or_insert_with(Default::default).insert(ANNOTATION_APPLIED_HASH.into(), hash);
    Ok((stamped, same))
}

/// Server-side apply `desired` unless `live` was applied from the same desired object.
pub async fn apply<K>(api: &Api<K>, live: Option<&K>, desired: &K, metrics: &Metrics) -> Result<Applied, Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let name = desired.name_any();
    let (stamped, same) =
        stamp(desired, live).map_err(|e| Error::Serialize { kind: kind.clone(), name: name.clone(), source: e })?;
    if same {
        metrics.write(&kind, "skip");
        return Ok(Applied::Unchanged);
    }
    tracing::debug!(%kind, %name, live = live.is_some(), "desired object changed; applying");
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &pp, &Patch::Apply(&stamped)).await.map_err(|e| Error::kube("apply", &kind, &name, e))?;
    metrics.write(&kind, "apply");
    Ok(Applied::Patched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    fn cm(v: Value) -> ConfigMap {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn same_desired_object_is_not_applied_again() {
        let desired = cm(json!({"metadata": {"name": "x", "labels": {"a": "b"}}, "data": {"k": "v"}}));
        let (stamped, same) = stamp(&desired, None).unwrap();
        assert!(!same, "nothing live: apply");
        // The API server adds its own fields; only the stamp decides.
        let mut live = stamped.clone();
        live.metadata.resource_version = Some("42".into());
        live.metadata.uid = Some("u".into());
        let (_, same) = stamp(&desired, Some(&live)).unwrap();
        assert!(same, "live carries the hash of this desired object");
    }

    #[test]
    fn a_removed_or_normalised_field_is_a_change_only_when_the_desired_object_changes() {
        let with = cm(json!({"metadata": {"name": "x", "annotations": {"token": "one"}}, "data": {"k": "v"}}));
        let without = cm(json!({"metadata": {"name": "x"}, "data": {"k": "v"}}));
        let (live, _) = stamp(&with, None).unwrap();
        // desired ⊆ live held here, and the removal was never applied.
        let (_, same) = stamp(&without, Some(&live)).unwrap();
        assert!(!same, "removing a field must be applied");
        // A live value the API server rewrote (0.5 → 500m) does not matter: the hash is of the desired object.
        let mut normalised = live.clone();
        normalised.data = Some([("k".to_string(), "V".to_string())].into());
        let (_, same) = stamp(&with, Some(&normalised)).unwrap();
        assert!(same);
    }

    #[test]
    fn hash_ignores_server_metadata_and_its_own_stamp() {
        let a = cm(json!({"metadata": {"name": "x"}, "data": {"k": "v"}}));
        let mut b = a.clone();
        b.metadata.resource_version = Some("7".into());
        b.metadata.annotations = Some([(ANNOTATION_APPLIED_HASH.to_string(), "old".to_string())].into());
        assert_eq!(desired_hash(&a).unwrap(), desired_hash(&b).unwrap());
    }
}
