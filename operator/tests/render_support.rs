//! Shared helpers for the render tests: load samples, fake the referenced Secrets, serialize output.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use woodpecker_crds::WoodpeckerCluster;
use woodpecker_operator::render::{RenderInputs, Rendered};

/// Values planted in the fake Secrets; none may ever appear in a ConfigMap.
pub const SECRET_VALUES: &[&str] = &[
    "AKIA-TEST-ACCESS-KEY",
    "test-secret-access-key-do-not-leak",
    "test-gcp-json-private-key",
    "test-configref-secret",
];

pub fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/samples")
}

pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Every sample as (file stem, cluster), sorted by name.
pub fn samples() -> Vec<(String, WoodpeckerCluster)> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(samples_dir())
        .expect("config/samples exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("read sample");
        let cluster = parse_cluster(&text);
        let stem = path.file_stem().expect("stem").to_string_lossy().to_string();
        out.push((stem, cluster));
    }
    out
}

/// Parse a WoodpeckerCluster and give it what a stored object has (namespace, uid, generation).
pub fn parse_cluster(text: &str) -> WoodpeckerCluster {
    let mut cluster: WoodpeckerCluster = serde_saphyr::from_str(text).expect("sample parses as a WoodpeckerCluster");
    if cluster.metadata.namespace.is_none() {
        cluster.metadata.namespace = Some("default".to_string());
    }
    cluster.metadata.uid = Some("2f7e4f4e-0000-4000-8000-000000000001".to_string());
    cluster
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(name.to_string()), ..Default::default() },
        data: Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()),
        ..Default::default()
    }
}

/// Fake every Secret/ConfigMap the spec references, with the planted values.
pub fn inputs_for(cluster: &WoodpeckerCluster) -> RenderInputs {
    let mut inputs = RenderInputs::default();
    if let Some(os) = &cluster.spec.object_storage {
        if let Some(c) = &os.credentials {
            if let Some(r) = &c.secret_ref {
                inputs.secrets.insert(
                    r.name.clone(),
                    secret(
                        &r.name,
                        &[(&r.access_key_id_key, SECRET_VALUES[0]), (&r.secret_access_key_key, SECRET_VALUES[1])],
                    ),
                );
            }
            if let Some(r) = &c.gcp_credentials_secret_ref {
                inputs.secrets.insert(r.name.clone(), secret(&r.name, &[(&r.key, SECRET_VALUES[2])]));
            }
        }
        if let Some(r) = &os.ca_secret_ref {
            inputs.secrets.insert(
                r.name.clone(),
                secret(&r.name, &[(&r.key, "-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n")]),
            );
        }
    }
    if let Some(r) = &cluster.spec.config_ref {
        inputs.config_maps.insert(
            r.name.clone(),
            ConfigMap {
                metadata: ObjectMeta { name: Some(r.name.clone()), ..Default::default() },
                data: Some(BTreeMap::from([(
                    r.key.clone(),
                    "woodpecker:\n  logstore:\n    retentionPolicy:\n      ttl: 3600\n".to_string(),
                )])),
                ..Default::default()
            },
        );
    }
    inputs
}

/// All rendered objects as one multi-document YAML.
pub fn to_multi_doc_yaml(rendered: &Rendered) -> String {
    let mut out = String::new();
    for obj in rendered.objects() {
        let value = obj.to_json().expect("object to JSON");
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&value).expect("object to YAML"));
    }
    out
}
