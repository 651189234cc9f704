//! Properties every render must keep, whatever the sample: seeds and hashes do not move when only
//! replicas change, rendering is deterministic, no credential reaches a ConfigMap, names fit.

#[path = "render_support.rs"]
mod support;

use k8s_openapi::ByteString;
use woodpecker_operator::render::names::{ANNOTATION_CONFIG_HASH, ANNOTATION_RESTART_TOKEN, MAX_NAME};
use woodpecker_operator::render::{RenderError, RenderedObject, render};

fn three_zones() -> woodpecker_crds::WoodpeckerCluster {
    let text = std::fs::read_to_string(support::samples_dir().join("three-zones-multi-az.yaml")).expect("sample");
    support::parse_cluster(&text)
}

fn pod_template_json(r: &woodpecker_operator::render::Rendered) -> Vec<serde_json::Value> {
    r.stateful_sets
        .iter()
        .map(|s| serde_json::to_value(&s.spec.as_ref().expect("spec").template).expect("json"))
        .collect()
}

#[test]
fn changing_replicas_changes_neither_seeds_nor_config_nor_pod_templates() {
    let base = three_zones();
    let before = render(&base, &support::inputs_for(&base)).expect("render");
    for replicas in [0, 1, 3, 7] {
        let mut scaled = base.clone();
        for g in &mut scaled.spec.buffer_pools[0].node_groups {
            g.replicas = replicas;
        }
        let after = render(&scaled, &support::inputs_for(&scaled)).expect("render");
        assert_eq!(before.plan.pools[0].gossip_seeds, after.plan.pools[0].gossip_seeds, "gossip seeds at {replicas}");
        assert_eq!(before.plan.pools[0].client_seeds, after.plan.pools[0].client_seeds, "client seeds at {replicas}");
        assert_eq!(before.server_config, after.server_config, "server ConfigMap at {replicas}");
        assert_eq!(before.client_bundle, after.client_bundle, "client bundle at {replicas}");
        assert_eq!(before.template_hash, after.template_hash, "template hash at {replicas}");
        assert_eq!(pod_template_json(&before), pod_template_json(&after), "pod templates at {replicas}");
        let replicas_seen: Vec<Option<i32>> =
            after.stateful_sets.iter().map(|s| s.spec.as_ref().and_then(|s| s.replicas)).collect();
        assert!(replicas_seen.iter().all(|r| *r == Some(replicas)));
    }
}

#[test]
fn single_group_pool_seeds_do_not_depend_on_replicas() {
    let text = std::fs::read_to_string(support::samples_dir().join("upstream-minimal.yaml")).expect("sample");
    let mut one = support::parse_cluster(&text);
    one.spec.replicas = Some(1);
    let mut five = one.clone();
    five.spec.replicas = Some(5);
    let a = render(&one, &support::inputs_for(&one)).expect("render");
    let b = render(&five, &support::inputs_for(&five)).expect("render");
    assert_eq!(a.plan.pools[0].gossip_seeds.len(), 3);
    assert_eq!(a.plan.pools[0].gossip_seeds, b.plan.pools[0].gossip_seeds);
    assert_eq!(pod_template_json(&a), pod_template_json(&b));
}

#[test]
fn rendering_twice_gives_identical_objects_and_hashes() {
    for (stem, cluster) in support::samples() {
        let a = render(&cluster, &support::inputs_for(&cluster)).expect("render");
        let b = render(&cluster, &support::inputs_for(&cluster)).expect("render");
        assert_eq!(a, b, "{stem} renders differently twice");
        assert_eq!(support::to_multi_doc_yaml(&a), support::to_multi_doc_yaml(&b), "{stem} YAML differs");
    }
}

#[test]
fn no_credential_value_appears_in_any_config_map() {
    for (stem, mut cluster) in support::samples() {
        // Also feed credentials through configRef, the way upstream users wrote them.
        cluster.spec.config_ref =
            Some(woodpecker_crds::ConfigRef { name: "legacy".to_string(), key: "woodpecker.yaml".to_string() });
        let mut inputs = support::inputs_for(&cluster);
        if let Some(cm) = inputs.config_maps.get_mut("legacy")
            && let Some(data) = cm.data.as_mut()
        {
            data.insert(
                "woodpecker.yaml".to_string(),
                format!(
                    "minio:\n  accessKeyID: legacy-id\n  secretAccessKey: legacy-secret\netcd:\n  auth:\n    password: {}\n",
                    support::SECRET_VALUES[3]
                ),
            );
        }
        let rendered = render(&cluster, &inputs).expect("render");
        let mut overlay_text = String::new();
        for obj in rendered.objects() {
            match obj {
                RenderedObject::ConfigMap(cm) => {
                    for (key, value) in cm.data.unwrap_or_default() {
                        for secret in support::SECRET_VALUES {
                            assert!(!value.contains(secret), "{stem}: ConfigMap key {key} contains a credential");
                        }
                        assert!(!value.contains("accessKeyID"), "{stem}: ConfigMap key {key} names accessKeyID");
                        assert!(!value.contains("legacy-secret"), "{stem}: ConfigMap key {key} has the configRef key");
                    }
                }
                RenderedObject::Secret(s) => {
                    for (_, ByteString(v)) in s.data.unwrap_or_default() {
                        overlay_text.push_str(&String::from_utf8_lossy(&v));
                    }
                }
                RenderedObject::StatefulSet(s) => {
                    let text = serde_json::to_string(&s).expect("json");
                    for secret in support::SECRET_VALUES {
                        assert!(!text.contains(secret), "{stem}: StatefulSet carries a credential");
                    }
                }
                _ => {}
            }
        }
        assert!(overlay_text.contains(support::SECRET_VALUES[3]), "{stem}: configRef credential moved to the overlay");
    }
}

#[test]
fn every_generated_name_and_label_fits_63_characters() {
    let mut cluster = three_zones();
    cluster.metadata.name = Some("a".repeat(40));
    cluster.spec.buffer_pools[0].name = "p".repeat(20);
    for (i, g) in cluster.spec.buffer_pools[0].node_groups.iter_mut().enumerate() {
        g.name = format!("{}{i}", "g".repeat(19));
        g.replicas = 120;
    }
    let mut all = support::samples();
    all.push(("long-names".to_string(), cluster));
    for (stem, cluster) in all {
        let rendered = render(&cluster, &support::inputs_for(&cluster)).expect("render");
        let mut names = Vec::new();
        for obj in rendered.objects() {
            let meta = obj.metadata();
            let name = meta.name.clone().unwrap_or_default();
            assert!(name.len() <= MAX_NAME, "{stem}: {} is {} chars", obj.id(), name.len());
            for (k, v) in meta.labels.clone().unwrap_or_default() {
                assert!(v.len() <= MAX_NAME, "{stem}: label {k}={v} too long");
            }
            names.push(obj.id());
        }
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{stem}: duplicate object names {names:?}");
        for sts in &rendered.stateful_sets {
            let name = sts.metadata.name.clone().unwrap_or_default();
            assert!(name.len() <= 52, "{stem}: StatefulSet {name} leaves no room for the revision label");
            let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let last_pod = format!("{name}-{}", replicas.max(1) - 1);
            assert!(last_pod.len() <= MAX_NAME, "{stem}: pod {last_pod} too long");
            let labels = sts.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.clone());
            for (k, v) in labels.unwrap_or_default() {
                assert!(v.len() <= MAX_NAME, "{stem}: pod label {k}={v} too long");
            }
        }
        for pool in &rendered.plan.pools {
            for seed in &pool.gossip_seeds {
                let host_label = seed.split('.').next().unwrap_or_default();
                assert!(host_label.len() <= MAX_NAME, "{stem}: seed label {host_label}");
            }
        }
    }
}

fn template_annotation(r: &woodpecker_operator::render::Rendered, key: &str) -> Option<String> {
    r.stateful_sets[0]
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(key).cloned())
}

#[test]
fn rotating_a_credential_or_ca_changes_the_pod_template_hash() {
    let text = std::fs::read_to_string(support::samples_dir().join("external-etcd-tls.yaml")).expect("sample");
    let cluster = support::parse_cluster(&text);
    let base_inputs = support::inputs_for(&cluster);
    let base = render(&cluster, &base_inputs).expect("render");

    let mut rotated = base_inputs.clone();
    if let Some(data) = rotated.secrets.get_mut("minio-creds").and_then(|s| s.data.as_mut()) {
        data.insert("secretkey".to_string(), ByteString(b"rotated".to_vec()));
    }
    let after = render(&cluster, &rotated).expect("render");
    assert_eq!(base.server_config, after.server_config, "the ConfigMap never holds the key");
    assert_ne!(
        base.credentials_overlay.as_ref().map(|s| &s.metadata.name),
        after.credentials_overlay.as_ref().map(|s| &s.metadata.name)
    );
    assert_ne!(template_annotation(&base, ANNOTATION_CONFIG_HASH), template_annotation(&after, ANNOTATION_CONFIG_HASH));

    let mut new_ca = base_inputs.clone();
    if let Some(data) = new_ca.secrets.get_mut("minio-ca").and_then(|s| s.data.as_mut()) {
        data.insert("ca.crt".to_string(), ByteString(b"another CA".to_vec()));
    }
    let after_ca = render(&cluster, &new_ca).expect("render");
    assert_ne!(base.template_hash, after_ca.template_hash);
}

#[test]
fn restart_token_lands_on_the_pod_template() {
    let mut cluster = three_zones();
    let before = render(&cluster, &support::inputs_for(&cluster)).expect("render");
    assert_eq!(template_annotation(&before, ANNOTATION_RESTART_TOKEN), None);
    cluster.spec.rollout_policy.restart_token = "2026-11-26T10:00".to_string();
    let after = render(&cluster, &support::inputs_for(&cluster)).expect("render");
    assert_eq!(template_annotation(&after, ANNOTATION_RESTART_TOKEN).as_deref(), Some("2026-11-26T10:00"));
    assert_eq!(before.server_config, after.server_config);
}

#[test]
fn a_missing_referenced_secret_is_an_error_naming_it() {
    let cluster = three_zones();
    let err = render(&cluster, &Default::default()).expect_err("secret missing");
    assert!(matches!(err, RenderError::MissingReference { ref name, .. } if name == "s3-creds"), "{err}");
}

#[test]
fn user_config_is_merged_but_operator_keys_win() {
    let mut cluster = three_zones();
    cluster.spec.config = Some(woodpecker_crds::ServerConfigSpec {
        log_level: None,
        raw_overrides: "woodpecker:\n  client:\n    quorum:\n      quorumBufferPools: []\n  logstore:\n    retentionPolicy:\n      ttl: 60\n".to_string(),
    });
    let rendered = render(&cluster, &support::inputs_for(&cluster)).expect("render");
    let text = rendered.server_config.data.as_ref().and_then(|d| d.get("woodpecker.yaml")).expect("config").clone();
    assert!(text.contains("ttl: 60"), "{text}");
    assert!(text.contains("wal-default-region-pool.milvus.svc.cluster.local:18080"), "{text}");
}

#[test]
fn pods_are_pinned_to_their_zone_and_run_hardened() {
    let cluster = three_zones();
    let rendered = render(&cluster, &support::inputs_for(&cluster)).expect("render");
    for (sts, zone) in rendered.stateful_sets.iter().zip(["us-east-1a", "us-east-1b", "us-east-1c"]) {
        let pod = sts.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec");
        let terms = pod
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
            .map(|r| r.node_selector_terms.clone())
            .expect("required node affinity");
        assert!(terms.iter().all(|t| {
            t.match_expressions
                .iter()
                .flatten()
                .any(|e| e.key == "topology.kubernetes.io/zone" && e.values.as_deref() == Some(&[zone.to_string()][..]))
        }));
        assert!(pod.termination_grace_period_seconds.unwrap_or(0) > 30);
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().expect("security context");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(pod.security_context.as_ref().and_then(|s| s.run_as_non_root), Some(true));
        let args = c.args.clone().unwrap_or_default();
        assert!(args.contains(&format!("--availability-zone={zone}")), "{args:?}");
        // The binary by absolute path (CONTRACT.md), not whatever PATH the image has.
        assert_eq!(c.command.as_deref(), Some(&["/usr/local/bin/woodpecker".to_string()][..]));
        assert_eq!(
            c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone()).as_deref(),
            Some("/readyz")
        );
        assert_eq!(
            c.liveness_probe.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone()).as_deref(),
            Some("/livez")
        );
        assert_eq!(
            c.startup_probe.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone()).as_deref(),
            Some("/healthz")
        );
        assert_eq!(pod.image_pull_secrets.as_ref().map(|s| s.len()), Some(1));
        let labels = sts
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        assert_eq!(labels.get("topology.kubernetes.io/zone").map(String::as_str), Some(zone));
        assert_eq!(labels.get("woodpecker.zilliz.io/zone").map(String::as_str), Some(zone));
    }
}

#[test]
fn a_config_the_server_would_refuse_is_a_render_error_without_secret_values() {
    let mut cluster = three_zones();
    cluster.spec.config = Some(woodpecker_crds::ServerConfigSpec {
        log_level: None,
        raw_overrides: "woodpecker:\n  logstore:\n    replicaCount: 3\n".to_string(),
    });
    let err = render(&cluster, &support::inputs_for(&cluster)).expect_err("unknown key");
    assert!(matches!(&err, RenderError::ServerConfig(m) if m.contains("replicaCount")), "{err}");

    // A credential of the wrong shape is reported by key only.
    let mut cluster = three_zones();
    cluster.spec.config_ref =
        Some(woodpecker_crds::ConfigRef { name: "legacy".to_string(), key: "woodpecker.yaml".to_string() });
    let mut inputs = support::inputs_for(&cluster);
    if let Some(data) = inputs.config_maps.get_mut("legacy").and_then(|c| c.data.as_mut()) {
        data.insert("woodpecker.yaml".to_string(), "etcd:\n  auth:\n    password: [sekrit-list-value]\n".to_string());
    }
    match render(&cluster, &inputs) {
        Err(RenderError::ServerConfig(m)) => assert!(!m.contains("sekrit-list-value"), "{m}"),
        other => panic!("expected ServerConfig error, got {other:?}"),
    }
}

#[test]
fn names_and_hashes_follow_secret_versions_not_secret_values() {
    let text = std::fs::read_to_string(support::samples_dir().join("external-etcd-tls.yaml")).expect("sample");
    let cluster = support::parse_cluster(&text);
    let mut inputs = support::inputs_for(&cluster);
    for s in inputs.secrets.values_mut() {
        s.metadata.resource_version = Some("100".to_string());
    }
    let base = render(&cluster, &inputs).expect("render");

    // Same resourceVersion, different bytes (an impossible cache state): nothing derived from the
    // value may move, which proves no published name or annotation hashes a credential.
    let mut same_version = inputs.clone();
    if let Some(data) = same_version.secrets.get_mut("minio-creds").and_then(|s| s.data.as_mut()) {
        data.insert("secretkey".to_string(), ByteString(b"guess-me".to_vec()));
    }
    let probe = render(&cluster, &same_version).expect("render");
    assert_eq!(base.template_hash, probe.template_hash);
    assert_eq!(
        base.credentials_overlay.as_ref().map(|s| &s.metadata.name),
        probe.credentials_overlay.as_ref().map(|s| &s.metadata.name)
    );

    // A rotation (new resourceVersion) rolls the pods onto a new overlay Secret.
    let mut rotated = inputs.clone();
    if let Some(s) = rotated.secrets.get_mut("minio-creds") {
        s.metadata.resource_version = Some("101".to_string());
    }
    let after = render(&cluster, &rotated).expect("render");
    assert_ne!(base.template_hash, after.template_hash);
    assert_ne!(
        base.credentials_overlay.as_ref().map(|s| &s.metadata.name),
        after.credentials_overlay.as_ref().map(|s| &s.metadata.name)
    );
    assert_eq!(base.server_config, after.server_config);
}

#[test]
fn liveness_checks_the_process_only_and_probe_timings_come_from_the_spec() {
    let mut cluster = three_zones();
    cluster.spec.probes = woodpecker_crds::ProbesSpec::default();
    let probes = |r: &woodpecker_operator::render::Rendered| -> Vec<serde_json::Value> {
        pod_template_json(r)
            .iter()
            .map(|t| {
                let c = &t["spec"]["containers"][0];
                serde_json::json!([c["startupProbe"], c["livenessProbe"], c["readinessProbe"]])
            })
            .collect()
    };
    let r = render(&cluster, &support::inputs_for(&cluster)).expect("render");
    for p in probes(&r) {
        // A partitioned pod still passes liveness: /livez depends on no peer, disk or etcd.
        assert_eq!(p[0]["httpGet"]["path"], "/healthz", "startup: {p}");
        assert_eq!(p[1]["httpGet"]["path"], "/livez", "liveness: {p}");
        assert_eq!(p[2]["httpGet"]["path"], "/readyz", "readiness: {p}");
        assert_eq!((p[1]["periodSeconds"].as_i64(), p[1]["failureThreshold"].as_i64()), (Some(10), Some(3)));
    }
    cluster.spec.probes.liveness = Some(woodpecker_crds::ProbeTiming {
        period_seconds: Some(30),
        failure_threshold: Some(6),
        ..Default::default()
    });
    cluster.spec.probes.startup =
        Some(woodpecker_crds::ProbeTiming { failure_threshold: Some(120), ..Default::default() });
    let r = render(&cluster, &support::inputs_for(&cluster)).expect("render");
    for p in probes(&r) {
        assert_eq!((p[1]["periodSeconds"].as_i64(), p[1]["failureThreshold"].as_i64()), (Some(30), Some(6)), "{p}");
        assert_eq!(p[1]["timeoutSeconds"].as_i64(), Some(3), "unset fields keep the default: {p}");
        assert_eq!((p[0]["periodSeconds"].as_i64(), p[0]["failureThreshold"].as_i64()), (Some(5), Some(120)), "{p}");
    }
}

#[test]
fn adding_a_node_group_restarts_no_existing_pod() {
    // 3 → 4 groups (the seed count used to follow the group count) and 1 → 2 → 3 groups.
    let base = three_zones();
    let mut sizes = Vec::new();
    for n in 1..=4 {
        let mut c = base.clone();
        let first = c.spec.buffer_pools[0].node_groups[0].clone();
        c.spec.buffer_pools[0].node_groups.truncate(n.min(3));
        if n == 4 {
            let mut extra = first;
            extra.name = "az-d".to_string();
            extra.zone = Some("us-east-1d".to_string());
            c.spec.buffer_pools[0].node_groups.push(extra);
        }
        sizes.push(render(&c, &support::inputs_for(&c)).expect("render"));
    }
    for pair in sizes.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        for (i, tmpl) in pod_template_json(before).iter().enumerate() {
            assert_eq!(
                Some(tmpl),
                pod_template_json(after).get(i),
                "group {i}'s pod template changed when a group was added"
            );
        }
        assert_ne!(
            before.gossip_seeds.data, after.gossip_seeds.data,
            "the seeds themselves may grow with the groups (in the ConfigMap)"
        );
    }
    // The pods read their pool's seeds from the seeds ConfigMap.
    let r = &sizes[3];
    let seeds = r.gossip_seeds.data.as_ref().and_then(|d| d.get("seeds.default-region-pool")).expect("pool seeds");
    assert_eq!(seeds, &r.plan.pools[0].gossip_seeds.join(","));
    let c = &pod_template_json(r)[0]["spec"]["containers"][0];
    let env = c["env"].as_array().expect("env");
    let seeds_env = env.iter().find(|e| e["name"] == "WOODPECKER_GOSSIP_SEEDS").expect("seeds env");
    assert_eq!(seeds_env["valueFrom"]["configMapKeyRef"]["key"], "seeds.default-region-pool");
    assert!(c["args"].as_array().expect("args").iter().any(|a| a == "--seeds=$(WOODPECKER_GOSSIP_SEEDS)"));
}

#[test]
fn with_the_stamp_key_hashes_follow_secret_data_not_versions_and_need_the_key() {
    let text = std::fs::read_to_string(support::samples_dir().join("external-etcd-tls.yaml")).expect("sample");
    let cluster = support::parse_cluster(&text);
    let mut inputs = support::inputs_for(&cluster);
    inputs.stamp_key = Some(b"k1-0123456789abcdef0123456789abcd".to_vec());
    for s in inputs.secrets.values_mut() {
        s.metadata.resource_version = Some("100".to_string());
    }
    let base = render(&cluster, &inputs).expect("render");
    let overlay =
        |r: &woodpecker_operator::render::Rendered| r.credentials_overlay.as_ref().map(|s| s.metadata.name.clone());

    // A label, an annotation or a restore of the same data: new resourceVersion, same data.
    let mut relabelled = inputs.clone();
    for s in relabelled.secrets.values_mut() {
        s.metadata.resource_version = Some("200".to_string());
        s.metadata.labels = Some([("backup".to_string(), "yes".to_string())].into());
    }
    let same = render(&cluster, &relabelled).expect("render");
    assert_eq!(base.template_hash, same.template_hash, "a metadata-only write must restart nothing");
    assert_eq!(overlay(&base), overlay(&same));

    // A change of data rolls the pods onto a new overlay.
    let mut rotated = inputs.clone();
    if let Some(data) = rotated.secrets.get_mut("minio-creds").and_then(|s| s.data.as_mut()) {
        data.insert("secretkey".to_string(), ByteString(b"rotated".to_vec()));
    }
    let after = render(&cluster, &rotated).expect("render");
    assert_ne!(base.template_hash, after.template_hash);
    assert_ne!(overlay(&base), overlay(&after));

    // Without the key the published hash cannot be recomputed from guessed data.
    let mut other_key = inputs.clone();
    other_key.stamp_key = Some(b"k2-0123456789abcdef0123456789abcd".to_vec());
    let other = render(&cluster, &other_key).expect("render");
    assert_ne!(base.template_hash, other.template_hash);
}
