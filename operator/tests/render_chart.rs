//! The Helm chart, rendered by the real `helm`: it lints, runs the operator with leader election,
//! and its RBAC grants what the renderer's objects need — and nothing with wildcards.
//!
//! Needs helm: `$WOODPECKER_TESTBED_HELM`, the test-bed cache, or `helm` on PATH
//! (`scripts/kube-testbed.sh install` provides it).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn helm() -> PathBuf {
    if let Some(p) = std::env::var_os("WOODPECKER_TESTBED_HELM") {
        return PathBuf::from(p);
    }
    let cached = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/woodpecker-testbed/helm-v3.19.0/bin/helm"))
        .filter(|p| p.exists());
    cached.unwrap_or_else(|| PathBuf::from("helm"))
}

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/woodpecker-operator")
}

fn run_helm(args: &[&str]) -> String {
    let out = Command::new(helm()).args(args).output().unwrap_or_else(|e| {
        panic!("running {}: {e}; install helm with scripts/kube-testbed.sh install", helm().display())
    });
    assert!(out.status.success(), "helm {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("helm output is UTF-8")
}

fn template(extra: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let chart = chart.to_str().expect("chart path");
    let mut args = vec!["template", "wp", chart, "--namespace", "wp-system"];
    args.extend_from_slice(extra);
    let text = run_helm(&args);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("helm output parses");
    docs.into_iter().filter(|d| d.is_object()).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn grants(rules: &[Value], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        let has =
            |field: &str, want: &str| r[field].as_array().is_some_and(|a| a.iter().any(|v| v.as_str() == Some(want)));
        has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
    })
}

#[test]
fn chart_lints_clean() {
    let chart = chart_dir();
    run_helm(&["lint", "--strict", chart.to_str().expect("chart path")]);
}

#[test]
fn deployment_runs_the_operator_with_leader_election_and_probes() {
    let docs = template(&[]);
    let deploy = find(&docs, "Deployment");
    assert_eq!(deploy.len(), 1);
    let container = &deploy[0]["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--leader-elect"), "{args:?}");
    assert!(args.contains(&"--lease-namespace=wp-system"), "{args:?}");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(find(&docs, "ServiceMonitor").is_empty(), "ServiceMonitor is opt-in");
    let with_monitor = template(&["--set", "metrics.serviceMonitor.enabled=true"]);
    assert_eq!(find(&with_monitor, "ServiceMonitor").len(), 1);
}

#[test]
fn rbac_covers_every_rendered_kind_without_wildcards() {
    let docs = template(&[]);
    let roles = find(&docs, "ClusterRole");
    assert_eq!(roles.len(), 1);
    let rules = roles[0]["rules"].as_array().expect("rules").clone();
    for r in &rules {
        for field in ["apiGroups", "resources", "verbs"] {
            assert!(
                !r[field].as_array().is_some_and(|a| a.iter().any(|v| v == "*")),
                "wildcard in ClusterRole rule {r}"
            );
        }
    }
    for (group, resource) in [
        ("", "serviceaccounts"),
        ("", "services"),
        ("", "configmaps"),
        ("", "secrets"),
        ("apps", "statefulsets"),
        ("policy", "poddisruptionbudgets"),
        ("monitoring.coreos.com", "podmonitors"),
    ] {
        for verb in ["get", "list", "watch", "create", "patch", "delete"] {
            assert!(grants(&rules, group, resource, verb), "ClusterRole lacks {verb} on {group}/{resource}");
        }
    }
    assert!(!grants(&rules, "", "secrets", "update"), "secrets are immutable; update is not needed");
    for verb in ["get", "list", "watch"] {
        assert!(grants(&rules, "", "pods", verb));
    }
    assert!(!grants(&rules, "", "pods", "delete"), "pods are restarted through evictions only");
    assert!(grants(&rules, "", "pods/eviction", "create"));
    assert!(grants(&rules, "", "persistentvolumeclaims", "list"));
    assert!(grants(&rules, "", "persistentvolumeclaims", "delete"));
    assert!(grants(&rules, "woodpecker.zilliz.io", "woodpeckerclusters", "watch"));
    assert!(grants(&rules, "woodpecker.zilliz.io", "woodpeckerclusters/status", "patch"));
    assert!(grants(&rules, "woodpecker.zilliz.io", "woodpeckerclusters/finalizers", "update"));
    assert!(grants(&rules, "", "events", "create"));
    assert!(!grants(&rules, "coordination.k8s.io", "leases", "create"), "leases belong in the namespaced Role");
    let role = find(&docs, "Role");
    assert_eq!(role.len(), 1);
    assert_eq!(role[0]["metadata"]["namespace"], "wp-system");
    let role_rules = role[0]["rules"].as_array().expect("rules").clone();
    assert!(grants(&role_rules, "coordination.k8s.io", "leases", "update"));
}

#[test]
fn namespaced_mode_grants_a_role_in_the_watched_namespace_and_nothing_cluster_wide() {
    let docs = template(&["--set", "watchNamespace=wal"]);
    assert!(find(&docs, "ClusterRole").is_empty(), "no ClusterRole in namespaced mode");
    assert!(find(&docs, "ClusterRoleBinding").is_empty(), "no ClusterRoleBinding in namespaced mode");
    let roles = find(&docs, "Role");
    let main = roles.iter().find(|r| r["metadata"]["namespace"] == "wal").expect("a Role in the watched namespace");
    let rules = main["rules"].as_array().expect("rules").clone();
    for verb in ["get", "list", "watch", "create", "delete"] {
        assert!(grants(&rules, "", "secrets", verb), "Role lacks {verb} on secrets");
    }
    assert!(grants(&rules, "apps", "statefulsets", "patch"));
    let bindings = find(&docs, "RoleBinding");
    let binding =
        bindings.iter().find(|b| b["metadata"]["namespace"] == "wal").expect("a RoleBinding in the watched namespace");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["subjects"][0]["namespace"], "wp-system", "bound to the operator's ServiceAccount");
    let deployment = find(&docs, "Deployment")[0];
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].as_array().expect("args").clone();
    assert!(args.iter().any(|a| a == "--namespace=wal"), "{args:?}");
    // Leader election keeps its Role in the release namespace.
    assert!(roles.iter().any(|r| r["metadata"]["namespace"] == "wp-system"));
}

#[test]
fn chart_crd_is_the_generated_crd() {
    let on_disk = std::fs::read_to_string(chart_dir().join("crds/woodpecker.zilliz.io_woodpeckerclusters.yaml"))
        .expect("chart CRD");
    assert_eq!(on_disk, woodpecker_crds::crd_yaml(), "run UPDATE_CRD=1 cargo test -p woodpecker-crds");
}

/// One image holds both binaries, tagged with the workspace version: the chart's appVersion, the
/// tag its Deployment defaults to, and the CRD's default server image all name the same one.
#[test]
fn chart_and_crd_default_to_the_one_image_at_the_workspace_version() {
    let version = env!("CARGO_PKG_VERSION");
    let chart: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("reading Chart.yaml"))
            .expect("Chart.yaml parses");
    assert_eq!(chart["appVersion"], version, "Chart.yaml appVersion is not the workspace version");
    assert_eq!(woodpecker_crds::IMAGE_TAG, version, "the operator's default image tag is not the workspace version");
    let image = format!("{}:{version}", woodpecker_crds::IMAGE_REPOSITORY);
    assert_eq!(woodpecker_crds::DEFAULT_IMAGE, image);

    let docs = template(&[]);
    let container = &find(&docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], image.as_str(), "the chart's operator image");
    assert_eq!(container["command"], serde_json::json!(["/usr/local/bin/woodpecker-operator"]));

    // The chart's CRD (what the API server applies) defaults spec.image to the same image.
    let text = std::fs::read_to_string(chart_dir().join("crds/woodpecker.zilliz.io_woodpeckerclusters.yaml"))
        .expect("reading the chart's CRD");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("the chart's CRD parses");
    let crd = docs.iter().find(|d| d.is_object()).expect("a CRD document");
    let spec_schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec_schema["properties"]["image"]["default"], image.as_str(), "the CRD's default server image");
}
