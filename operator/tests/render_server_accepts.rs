//! The server's own config loader (woodpecker-core: unknown keys, ranges, service-mode rules)
//! accepts the `woodpecker.yaml` + credentials overlay the operator renders for every sample, and
//! reads back the seeds, ensemble size and credentials the operator meant.

#[path = "render_support.rs"]
mod support;

use k8s_openapi::ByteString;
use woodpecker_core::config::Config;
use woodpecker_operator::render::render;

#[test]
fn the_server_config_loader_accepts_every_rendered_config_and_overlay() {
    for (stem, cluster) in support::samples() {
        let rendered = render(&cluster, &support::inputs_for(&cluster)).expect("render");
        let main = rendered
            .server_config
            .data
            .as_ref()
            .and_then(|d| d.get("woodpecker.yaml"))
            .unwrap_or_else(|| panic!("{stem}: no woodpecker.yaml"))
            .clone();
        let overlay = rendered
            .credentials_overlay
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get("user.yaml"))
            .map(|ByteString(b)| String::from_utf8(b.clone()).expect("overlay is UTF-8"))
            .unwrap_or_default();
        let config = Config::from_yaml_with_overlay(&main, &overlay)
            .unwrap_or_else(|e| panic!("{stem}: the server rejects the rendered config: {e}\n{main}"));
        let as_json = serde_json::to_value(&config).expect("config to JSON");
        let pools = &as_json["woodpecker"]["client"]["quorum"]["quorumBufferPools"];
        for (i, pool) in rendered.plan.pools.iter().enumerate() {
            assert_eq!(pools[i]["name"], pool.name, "{stem}");
            assert_eq!(pools[i]["seeds"], serde_json::json!(pool.client_seeds), "{stem}");
        }
        assert_eq!(
            as_json["woodpecker"]["client"]["quorum"]["quorumSelectStrategy"]["replicas"],
            cluster.spec.quorum.ensemble_size,
            "{stem}"
        );
        if cluster
            .spec
            .object_storage
            .as_ref()
            .and_then(|o| o.credentials.as_ref())
            .and_then(|c| c.secret_ref.as_ref())
            .is_some()
        {
            assert_eq!(
                as_json["minio"]["secretAccessKey"],
                support::SECRET_VALUES[1],
                "{stem}: overlay carries the key"
            );
        }
    }
}

#[test]
fn every_enum_spelling_in_the_crd_is_one_the_server_accepts() {
    use woodpecker_crds::{AffinityMode, CloudProvider, CustomPlacement, LogLevel, QuorumStrategy, ServerConfigSpec};
    let text = std::fs::read_to_string(support::samples_dir().join("three-zones-multi-az.yaml")).expect("sample");
    let base = support::parse_cluster(&text);
    let load = |cluster: &woodpecker_crds::WoodpeckerCluster, what: &str| {
        let rendered = render(cluster, &support::inputs_for(cluster)).unwrap_or_else(|e| panic!("{what}: {e}"));
        let main = rendered.server_config.data.as_ref().and_then(|d| d.get("woodpecker.yaml")).expect("config");
        Config::from_yaml_str(main).unwrap_or_else(|e| panic!("{what}: server rejects: {e}"));
    };
    for provider in [
        CloudProvider::Aws,
        CloudProvider::Gcp,
        CloudProvider::GcpNative,
        CloudProvider::Aliyun,
        CloudProvider::Tencent,
        CloudProvider::Azure,
    ] {
        let mut c = base.clone();
        if let Some(os) = c.spec.object_storage.as_mut() {
            os.provider = provider;
        }
        load(&c, provider.as_str());
    }
    for level in [LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error] {
        let mut c = base.clone();
        c.spec.config = Some(ServerConfigSpec { log_level: Some(level), raw_overrides: String::new() });
        load(&c, level.as_str());
    }
    for mode in [AffinityMode::Soft, AffinityMode::Hard] {
        let mut c = base.clone();
        c.spec.quorum.affinity_mode = mode;
        load(&c, mode.as_str());
    }
    for strategy in [
        QuorumStrategy::Random,
        QuorumStrategy::RandomGroup,
        QuorumStrategy::SingleAzSingleRg,
        QuorumStrategy::SingleAzMultiRg,
        QuorumStrategy::MultiAzSingleRg,
        QuorumStrategy::MultiAzMultiRg,
        QuorumStrategy::CrossRegion,
        QuorumStrategy::Custom,
    ] {
        let mut c = base.clone();
        c.spec.quorum.strategy = strategy;
        if strategy == QuorumStrategy::CrossRegion {
            let mut remote = c.spec.buffer_pools[0].clone();
            remote.name = "dr-pool".to_string();
            remote.node_groups.clear();
            remote.external_seeds = vec!["wal.dr.example:18080".to_string()];
            c.spec.buffer_pools.push(remote);
        }
        if strategy == QuorumStrategy::Custom {
            c.spec.quorum.custom_placement = ["us-east-1a", "us-east-1b", "us-east-1c"]
                .iter()
                .enumerate()
                .map(|(i, az)| CustomPlacement {
                    name: format!("replica-{i}"),
                    region: "default-region-pool".to_string(),
                    az: az.to_string(),
                    resource_group: "default".to_string(),
                })
                .collect();
        }
        load(&c, strategy.as_str());
    }
}

#[test]
fn every_client_bundle_loads_with_the_shared_config_loader() {
    for (stem, cluster) in support::samples() {
        let rendered = render(&cluster, &support::inputs_for(&cluster)).expect("render");
        let bundle = rendered
            .client_bundle
            .data
            .as_ref()
            .and_then(|d| d.get("woodpecker.yaml"))
            .unwrap_or_else(|| panic!("{stem}: bundle has no woodpecker.yaml"))
            .clone();
        let config =
            Config::from_yaml_str(&bundle).unwrap_or_else(|e| panic!("{stem}: client bundle rejected: {e}\n{bundle}"));
        let json = serde_json::to_value(&config).expect("config to JSON");
        assert_eq!(json["woodpecker"]["storage"]["type"], "service", "{stem}");
        if let Some(etcd) = &cluster.spec.etcd {
            assert_eq!(json["etcd"]["endpoints"], serde_json::json!(etcd.endpoints), "{stem}");
            assert_eq!(json["etcd"]["rootPath"], etcd.root_path, "{stem}");
        }
    }
}

#[test]
fn gcs_service_account_json_reaches_the_server_only_through_the_overlay() {
    let text = std::fs::read_to_string(support::samples_dir().join("three-zones-multi-az.yaml")).expect("sample");
    let mut cluster = support::parse_cluster(&text);
    let os = cluster.spec.object_storage.as_mut().expect("object storage");
    os.provider = woodpecker_crds::CloudProvider::Gcp;
    os.credentials = Some(woodpecker_crds::ObjectStorageCredentials {
        secret_ref: None,
        iam: None,
        gcp_credentials_secret_ref: Some(woodpecker_crds::GcpCredentialsSecretRef {
            name: "gcs-sa".to_string(),
            key: "credentials.json".to_string(),
        }),
    });
    let rendered = render(&cluster, &support::inputs_for(&cluster)).expect("render");
    let main = rendered.server_config.data.as_ref().and_then(|d| d.get("woodpecker.yaml")).expect("config").clone();
    assert!(!main.contains(support::SECRET_VALUES[2]));
    let overlay = rendered
        .credentials_overlay
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get("user.yaml"))
        .map(|ByteString(b)| String::from_utf8(b.clone()).expect("UTF-8"))
        .expect("overlay");
    let config = Config::from_yaml_with_overlay(&main, &overlay).expect("server accepts");
    let json = serde_json::to_value(&config).expect("json");
    assert_eq!(json["minio"]["gcpCredentialJSON"], support::SECRET_VALUES[2]);
}
