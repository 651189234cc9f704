//! Against the real kube-apiserver: the CRD installs, CEL rejects invalid specs with clear
//! messages, and every sample in `config/samples` passes server-side dry-run.

mod apiserver_support;

use std::path::PathBuf;

use apiserver_support::{TestNamespace, client, install_crd};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use serde_json::{Value, json};
use woodpecker_crds::WoodpeckerCluster;

fn cluster(name: &str, spec: Value) -> WoodpeckerCluster {
    serde_json::from_value(json!({
        "apiVersion": "woodpecker.zilliz.io/v1alpha1",
        "kind": "WoodpeckerCluster",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("test spec for {name} does not deserialize: {e}"))
}

fn raw(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "woodpecker.zilliz.io/v1alpha1",
        "kind": "WoodpeckerCluster",
        "metadata": {"name": name},
        "spec": spec,
    })
}

async fn create_raw(api: &Api<DynamicObject>, obj: Value) -> Result<DynamicObject, kube::Error> {
    let obj: DynamicObject = serde_json::from_value(obj).expect("dynamic object");
    api.create(&PostParams::default(), &obj).await
}

fn wpc_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("woodpecker.zilliz.io", "v1alpha1", "WoodpeckerCluster"),
        "woodpeckerclusters",
    );
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn expect_rejected(res: Result<DynamicObject, kube::Error>, needle: &str) {
    match res {
        Ok(o) => panic!("expected rejection containing {needle:?}, but {:?} was accepted", o.metadata.name),
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "expected 422 Invalid, got {s:?}");
            assert!(s.message.contains(needle), "rejection message {:?} does not contain {needle:?}", s.message);
        }
        Err(e) => panic!("expected a 422 rejection containing {needle:?}, got {e}"),
    }
}

#[tokio::test]
async fn crd_installs_and_minimal_cluster_is_accepted_with_defaults() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "crd").await;
    let api: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    let created = api.create(&PostParams::default(), &cluster("minimal", json!({}))).await.expect("minimal cluster");
    // Defaults come from the CRD schema, applied by the API server.
    assert_eq!(created.spec.service_port, 18080);
    assert_eq!(created.spec.quorum.ensemble_size, 3);
    assert_eq!(created.spec.rollout_policy.max_unavailable, 1);
    // The image default is the API server's too (not only serde's): this project's image at the
    // operator's version.
    let raw_created =
        create_raw(&wpc_api(&client, &ns.name), raw("minimal-raw", json!({}))).await.expect("raw cluster");
    assert_eq!(raw_created.data["spec"]["image"], woodpecker_crds::DEFAULT_IMAGE);
    assert_eq!(woodpecker_crds::DEFAULT_IMAGE, concat!("zilliztech/woodpecker-rs:", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn cel_rejects_invalid_specs_with_clear_messages() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "cel").await;
    let api = wpc_api(&client, &ns.name);

    expect_rejected(
        create_raw(&api, raw("ports", json!({"servicePort": 9000, "gossipPort": 9000}))).await,
        "servicePort, gossipPort and metricsPort must be distinct",
    );
    expect_rejected(
        create_raw(&api, raw("budget", json!({"rolloutPolicy": {"maxUnavailable": 2}}))).await,
        "maxUnavailable must be at most ensembleSize - ackQuorum",
    );
    expect_rejected(
        create_raw(&api, raw("es", json!({"quorum": {"ensembleSize": 4}}))).await,
        "ensembleSize must be 3 or 5",
    );
    expect_rejected(
        create_raw(&api, raw("xregion", json!({"quorum": {"strategy": "cross-region"}}))).await,
        "cross-region needs at least 2 buffer pools",
    );
    expect_rejected(
        create_raw(
            &api,
            raw("adminpool", json!({"bufferPools": [{"name": "admin", "nodeGroups": [{"name": "a", "replicas": 3}]}]})),
        )
        .await,
        "cannot be named admin",
    );
    expect_rejected(
        create_raw(&api, raw("a-very-long-cluster-name-that-exceeds-the-forty-char-limit", json!({}))).await,
        "at most 40 characters",
    );

    // Transition rules: the cluster domain is immutable, storage may only grow.
    let pools = json!([{"name": "p", "nodeGroups": [
        {"name": "a", "zone": "z1", "replicas": 1, "storage": {"size": "10Gi"}}]}]);
    api.create(&PostParams::default(), &serde_json::from_value(raw("immut", json!({"bufferPools": pools}))).unwrap())
        .await
        .expect("valid cluster with one pool");
    let pp = PatchParams::default();
    let domain = api.patch("immut", &pp, &Patch::Merge(json!({"spec": {"clusterDomain": "other.local"}}))).await;
    expect_rejected(domain, "clusterDomain is immutable");
    let shrink_pools = json!([{"name": "p", "nodeGroups": [
        {"name": "a", "zone": "z1", "replicas": 1, "storage": {"size": "5Gi"}}]}]);
    let shrink = api.patch("immut", &pp, &Patch::Merge(json!({"spec": {"bufferPools": shrink_pools}}))).await;
    expect_rejected(shrink, "storage.size may only grow");
    let rezone_pools = json!([{"name": "p", "nodeGroups": [
        {"name": "a", "zone": "z2", "replicas": 1, "storage": {"size": "10Gi"}}]}]);
    let rezone = api.patch("immut", &pp, &Patch::Merge(json!({"spec": {"bufferPools": rezone_pools}}))).await;
    expect_rejected(rezone, "zone is immutable");
    // The cluster-wide StorageClass too (a change used to reach the StatefulSet as a 422 and halt
    // every pass): neither set, changed nor cleared.
    let set = api.patch("immut", &pp, &Patch::Merge(json!({"spec": {"storageClassName": "fast"}}))).await;
    expect_rejected(set, "storageClassName is immutable");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(raw("sc", json!({"storageClassName": "gp3", "bufferPools": pools}))).unwrap(),
    )
    .await
    .expect("valid cluster with a StorageClass");
    let change = api.patch("sc", &pp, &Patch::Merge(json!({"spec": {"storageClassName": "gp2"}}))).await;
    expect_rejected(change, "storageClassName is immutable");
    let clear = api.patch("sc", &pp, &Patch::Merge(json!({"spec": {"storageClassName": null}}))).await;
    expect_rejected(clear, "storageClassName is immutable");
    api.patch("sc", &pp, &Patch::Merge(json!({"spec": {"storageClassName": "gp3", "paused": true}})))
        .await
        .expect("other fields still change");
}

fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/samples")
}

/// Every YAML document in `config/samples/*.yaml`.
fn sample_documents() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let dir = samples_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else { return out };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if !matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
        for (i, doc) in docs.into_iter().enumerate() {
            if doc.is_null() {
                continue;
            }
            out.push((format!("{}#{i}", path.display()), doc));
        }
    }
    out
}

/// Server-side dry-run `obj` in `ns` through discovery; panics with the server's message on rejection.
pub async fn dry_run(client: &kube::Client, discovery: &Discovery, ns: &str, what: &str, mut obj: Value) {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.clone()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &kind);
    let (ar, caps): (ApiResource, ApiCapabilities) =
        discovery.resolve_gvk(&gvk).unwrap_or_else(|| panic!("{what}: the API server does not serve {gvk:?}"));
    let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
        obj["metadata"]["namespace"] = json!(ns);
        Api::namespaced_with(client.clone(), ns, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let pp = PatchParams::apply("woodpecker-tests").dry_run().force();
    if let Err(e) = api.patch(&name, &pp, &Patch::Apply(&obj)).await {
        panic!("{what}: server-side dry-run of {kind} {name} rejected: {e}");
    }
}

#[tokio::test]
async fn every_sample_passes_server_side_dry_run() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "samples").await;
    let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
    let docs = sample_documents();
    assert!(!docs.is_empty(), "no samples found in {}", samples_dir().display());
    for (what, doc) in docs {
        dry_run(&client, &discovery, &ns.name, &what, doc).await;
    }
}

/// Each sample cluster, created for real (so the server applies its defaults), rendered with
/// stand-ins for the Secrets/ConfigMaps it references, and every rendered object dry-run.
#[tokio::test]
async fn every_rendered_object_of_every_sample_passes_server_side_dry_run() {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use woodpecker_operator::controller::load;
    use woodpecker_operator::render::{self, RenderInputs, RenderedObject};

    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "render").await;
    let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
    let api: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    let mut rendered_objects = 0;
    for (i, (what, mut doc)) in sample_documents().into_iter().enumerate() {
        if doc["kind"] != "WoodpeckerCluster" {
            continue;
        }
        let name = format!("s{i}");
        doc["metadata"] = json!({"name": name, "namespace": ns.name});
        let cr: WoodpeckerCluster = serde_json::from_value(doc).unwrap_or_else(|e| panic!("{what}: {e}"));
        let created = api.create(&PostParams::default(), &cr).await.unwrap_or_else(|e| panic!("{what}: create: {e}"));
        let mut inputs = RenderInputs { secrets: BTreeMap::new(), config_maps: BTreeMap::new(), stamp_key: None };
        for r in load::references(&created) {
            let data: BTreeMap<String, String> = r
                .keys
                .iter()
                .map(|k| (k.clone(), if r.kind == "ConfigMap" { "{}".to_string() } else { "stand-in".to_string() }))
                .collect();
            if r.kind == "Secret" {
                let s: Secret = serde_json::from_value(json!({"metadata": {"name": r.name}, "stringData": data}))
                    .expect("stand-in secret");
                inputs.secrets.insert(r.name.clone(), s);
            } else {
                let c: ConfigMap = serde_json::from_value(json!({"metadata": {"name": r.name}, "data": data}))
                    .expect("stand-in configmap");
                inputs.config_maps.insert(r.name.clone(), c);
            }
        }
        let rendered = render::render(&created, &inputs).unwrap_or_else(|e| panic!("{what}: render: {e}"));
        for obj in rendered.objects() {
            // The Prometheus operator's CRDs are not installed in the test bed.
            if matches!(obj, RenderedObject::PodMonitor(_)) {
                continue;
            }
            let json = obj.to_json().expect("rendered object serializes");
            dry_run(&client, &discovery, &ns.name, &format!("{what} ({})", obj.id()), json).await;
            rendered_objects += 1;
        }
    }
    assert!(rendered_objects > 0, "no rendered objects were checked");
}
