//! The checked-in CRD YAML (and its copy in the Helm chart) must match what the types generate.
//! Regenerate with `UPDATE_CRD=1 cargo test -p woodpecker-crds`.

use std::path::PathBuf;

fn checked_in_paths() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    vec![
        root.join("woodpecker.zilliz.io_woodpeckerclusters.yaml"),
        root.join("../charts/woodpecker-operator/crds/woodpecker.zilliz.io_woodpeckerclusters.yaml"),
    ]
}

#[test]
fn checked_in_crd_yaml_is_up_to_date() {
    let generated = woodpecker_crds::try_crd_yaml().expect("CRD serializes");
    let update = std::env::var_os("UPDATE_CRD").is_some();
    for path in checked_in_paths() {
        if update {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).expect("create CRD directory");
            }
            std::fs::write(&path, &generated).expect("write CRD");
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("reading {}: {e}; run UPDATE_CRD=1 cargo test -p woodpecker-crds", path.display())
        });
        assert!(on_disk == generated, "{} is stale; run UPDATE_CRD=1 cargo test -p woodpecker-crds", path.display());
    }
}

#[test]
fn crd_yaml_round_trips_into_the_same_crd() {
    let yaml = woodpecker_crds::try_crd_yaml().expect("CRD serializes");
    let parsed: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_saphyr::from_str(&yaml).expect("CRD YAML parses");
    assert_eq!(parsed, woodpecker_crds::crd());
}

#[test]
fn crd_schema_is_structural_and_carries_cel_rules() {
    let crd = serde_json::to_value(woodpecker_crds::crd()).expect("CRD to JSON");
    let text = crd.to_string();
    assert!(!text.contains("$ref"), "schema must be fully inlined");
    assert!(!text.contains("\"anyOf\":[{\"type\":\"null\""), "no null branches");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object(), "status subresource");
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let rules = spec["x-kubernetes-validations"].as_array().expect("spec rules");
    let messages: Vec<&str> = rules.iter().filter_map(|r| r["message"].as_str()).collect();
    assert!(messages.iter().any(|m| m.contains("must be distinct")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("clusterDomain is immutable")), "{messages:?}");
    let pools = &spec["properties"]["bufferPools"];
    assert_eq!(pools["x-kubernetes-list-type"], "map");
    assert_eq!(pools["x-kubernetes-list-map-keys"][0], "name");
    let group = &pools["items"]["properties"]["nodeGroups"]["items"];
    let group_rules = group["x-kubernetes-validations"].to_string();
    assert!(group_rules.contains("zone is immutable"), "{group_rules}");
    let columns = version["additionalPrinterColumns"].to_string();
    for c in ["Phase", "Ready", "Available", "Progressing", "Version", "Age"] {
        assert!(columns.contains(c), "printer column {c} missing: {columns}");
    }
}

#[test]
fn every_upstream_spec_field_is_accepted() {
    let crd = serde_json::to_value(woodpecker_crds::crd()).expect("CRD to JSON");
    let props = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for field in [
        "image",
        "imagePullPolicy",
        "imagePullSecrets",
        "serviceAccountName",
        "replicas",
        "resources",
        "storageClassName",
        "storageSize",
        "servicePort",
        "gossipPort",
        "metricsPort",
        "configRef",
        "affinity",
        "tolerations",
        "nodeSelector",
        "topologySpreadConstraints",
        "podAnnotations",
        "podLabels",
        "paused",
    ] {
        assert!(props[field].is_object(), "upstream field {field} missing from the schema");
    }
}
