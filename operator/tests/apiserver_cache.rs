//! Against the real kube-apiserver: what the operator's watches keep in memory. Every cached
//! object (and every Secret's and ConfigMap's metadata in the namespace) loses `managedFields` and
//! kubectl's last-applied copy on the watch stream, before it reaches a cache.

mod apiserver_support;

use std::time::Duration;

use apiserver_support::{TestNamespace, client};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use woodpecker_operator::controller::slim_watch;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[tokio::test]
async fn cached_objects_carry_no_managed_fields_and_no_last_applied_copy() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "slim").await;
    let big = "x".repeat(10_000);
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "labels": {"woodpecker.zilliz.io/cluster": "wal"},
            "annotations": {LAST_APPLIED: big, "keep": "me"}},
        "data": {"k": "v"},
    });
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "annotations": {LAST_APPLIED: big, "keep": "me"}},
        "stringData": {"k": "v"},
    });
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let pp = PatchParams::apply("someone-else");
    cms.patch("c", &pp, &Patch::Apply(&cm)).await.expect("applying the ConfigMap");
    secrets.patch("s", &pp, &Patch::Apply(&secret)).await.expect("applying the Secret");
    let live = cms.get("c").await.expect("get");
    assert!(!live.managed_fields().is_empty(), "the API server keeps managedFields (else this proves nothing)");

    // The operator's two kinds of watches: typed (its own objects) and metadata-only (user objects).
    let (typed, w) = reflector::store::<ConfigMap>();
    let typed_task = tokio::spawn(
        reflector::reflector(w, slim_watch(cms.clone(), watcher::Config::default())).for_each(|_| async {}),
    );
    let meta_api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), &ns.name);
    let (meta, w) = reflector::store::<PartialObjectMeta<Secret>>();
    let meta_task = tokio::spawn(
        reflector::reflector(w, slim_watch(meta_api, watcher::Config::default()))
            .default_backoff()
            .for_each(|_| async {}),
    );
    let c = ns
        .wait_for(&client, "the ConfigMap in the cache", Duration::from_secs(20), || async {
            typed.get(&ObjectRef::new("c").within(&ns.name))
        })
        .await;
    let s = ns
        .wait_for(&client, "the Secret's metadata in the cache", Duration::from_secs(20), || async {
            meta.get(&ObjectRef::new("s").within(&ns.name))
        })
        .await;
    for (what, obj_meta) in [("ConfigMap", &c.metadata), ("Secret metadata", &s.metadata)] {
        assert!(obj_meta.managed_fields.as_ref().is_none_or(|m| m.is_empty()), "{what} keeps managedFields");
        let ann = obj_meta.annotations.clone().unwrap_or_default();
        assert!(!ann.contains_key(LAST_APPLIED), "{what} keeps the last-applied copy");
        assert_eq!(ann.get("keep").map(String::as_str), Some("me"), "{what} lost another annotation");
    }
    assert_eq!(c.data.as_ref().and_then(|d| d.get("k")).map(String::as_str), Some("v"), "the data stays");
    typed_task.abort();
    meta_task.abort();
}
