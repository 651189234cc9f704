//! Server-side apply with one field manager, skipped when the live object already matches.
//!
//! A no-change reconcile must issue no writes. Every desired object is compared with the live
//! copy from the reflector cache first: if every field we set already has our value, nothing is
//! sent. Server defaults (extra fields on the live side) do not count as a difference.

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Error;
use crate::metrics::Metrics;

/// The one field manager the operator applies with.
pub const FIELD_MANAGER: &str = "woodpecker-operator";

/// What [`apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The live object already matched; no request was sent.
    Unchanged,
    /// A server-side apply patch was sent.
    Patched,
}

/// True when every field present in `desired` has the same value in `live`.
///
/// Arrays must have the same length and match element-wise; an empty map or list, a zero, `false`
/// or `""` in `desired` matches an absent field (the API server drops empty and zero values of
/// `omitempty` fields).
pub fn is_subset(desired: &Value, live: Option<&Value>) -> bool {
    match (desired, live) {
        (Value::Null, None | Some(Value::Null)) => true,
        (Value::Object(d), None) => d.is_empty(),
        (Value::Array(d), None) => d.is_empty(),
        // Go's `omitempty` drops zero values: the server stores 0, false and "" as absent.
        (Value::Number(n), None) => n.as_f64() == Some(0.0),
        (Value::Bool(b), None) => !b,
        (Value::String(st), None) => st.is_empty(),
        (Value::Object(d), Some(Value::Object(l))) => d.iter().all(|(k, v)| is_subset(v, l.get(k))),
        (Value::Array(d), Some(Value::Array(l))) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, Some(lv)))
        }
        (Value::Number(d), Some(Value::Number(l))) => d.as_f64() == l.as_f64(),
        (d, Some(l)) => d == l,
    }
}

/// Path of the first field of `desired` whose value differs in `live` (for logs).
pub fn first_difference(desired: &Value, live: Option<&Value>, path: &str) -> Option<String> {
    if is_subset(desired, live) {
        return None;
    }
    match (desired, live) {
        (Value::Object(d), Some(Value::Object(l))) => {
            d.iter().find_map(|(k, v)| first_difference(v, l.get(k), &format!("{path}.{k}")))
        }
        (Value::Array(d), Some(Value::Array(l))) if d.len() == l.len() => d
            .iter()
            .zip(l)
            .enumerate()
            .find_map(|(i, (dv, lv))| first_difference(dv, Some(lv), &format!("{path}[{i}]"))),
        _ => Some(format!("{path}: want {desired}, have {}", live.map_or("nothing".to_string(), Value::to_string))),
    }
}

/// The part of an object that SSA owns: drop server-managed metadata and `status`.
fn desired_fields<K: Serialize>(obj: &K) -> Result<Value, serde_json::Error> {
    let mut v = serde_json::to_value(obj)?;
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for k in ["resourceVersion", "managedFields", "uid", "creationTimestamp", "generation"] {
                meta.remove(k);
            }
        }
    }
    Ok(v)
}

/// True when `live` already carries every field of `desired`.
pub fn matches_live<K: Serialize>(desired: &K, live: &K) -> Result<bool, serde_json::Error> {
    let d = desired_fields(desired)?;
    let l = serde_json::to_value(live)?;
    Ok(is_subset(&d, Some(&l)))
}

/// Server-side apply `desired` unless `live` already matches it.
pub async fn apply<K>(api: &Api<K>, live: Option<&K>, desired: &K, metrics: &Metrics) -> Result<Applied, Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let name = desired.name_any();
    if let Some(live) = live
        && matches_live(desired, live).map_err(|e| Error::Serialize {
            kind: kind.clone(),
            name: name.clone(),
            source: e,
        })?
    {
        metrics.write(&kind, "skip");
        return Ok(Applied::Unchanged);
    }
    if let Some(live) = live
        && let (Ok(d), Ok(l)) = (desired_fields(desired), serde_json::to_value(live))
    {
        let diff = first_difference(&d, Some(&l), "");
        tracing::debug!(%kind, %name, diff = diff.as_deref().unwrap_or(""), "live object differs; applying");
    }
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &pp, &Patch::Apply(desired)).await.map_err(|e| Error::kube("apply", &kind, &name, e))?;
    metrics.write(&kind, "apply");
    Ok(Applied::Patched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_defaults_do_not_count_as_a_difference() {
        let desired = json!({"spec": {"ports": [{"port": 80}], "selector": {"a": "b"}}});
        let live = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"a": "b"},
            "clusterIP": "10.0.0.1"}});
        assert!(is_subset(&desired, Some(&live)));
    }

    #[test]
    fn changed_or_missing_fields_are_a_difference() {
        let live = json!({"spec": {"replicas": 3, "ports": [{"port": 80}]}});
        assert!(!is_subset(&json!({"spec": {"replicas": 4}}), Some(&live)));
        assert!(!is_subset(&json!({"spec": {"paused": true}}), Some(&live)));
        assert!(!is_subset(&json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}}), Some(&live)));
    }

    #[test]
    fn empty_collections_match_absent_fields() {
        let live = json!({"metadata": {"name": "x"}});
        assert!(is_subset(&json!({"metadata": {"name": "x", "labels": {}}}), Some(&live)));
        assert!(is_subset(&json!({"metadata": {"name": "x", "finalizers": []}}), Some(&live)));
        assert!(is_subset(
            &json!({"probe": {"initialDelaySeconds": 0, "paused": false, "x": ""}}),
            Some(&json!({"probe": {}}))
        ));
        assert!(!is_subset(&json!({"probe": {"initialDelaySeconds": 5}}), Some(&json!({"probe": {}}))));
    }
}
