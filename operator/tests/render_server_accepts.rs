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
