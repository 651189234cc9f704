//! The top-level Dockerfile against what the rest of the project assumes of the image: the version
//! label is the workspace version, both binaries sit at the absolute paths the operator renders
//! (CONTRACT.md "Server binary"), it runs as 65532, and it exposes the server's default ports. The
//! image itself is built and run in CI by `scripts/image.sh`; this catches drift without a builder.

use std::path::{Path, PathBuf};

use clap::{Args, Command};
use woodpecker_server::args::ServerArgs;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("read Dockerfile");
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(part) = t.strip_suffix('\\') {
            cur.push_str(part);
            cur.push(' ');
        } else {
            cur.push_str(t);
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

/// The instructions of the last stage (the runtime image).
fn runtime_stage() -> Vec<String> {
    let all = instructions();
    let last_from = all.iter().rposition(|i| i.starts_with("FROM ")).expect("a FROM");
    all[last_from..].to_vec()
}

fn one(stage: &[String], keyword: &str) -> String {
    let found: Vec<&String> = stage.iter().filter(|i| i.starts_with(keyword)).collect();
    assert_eq!(found.len(), 1, "exactly one {keyword}in the runtime stage: {found:?}");
    found[0].clone()
}

fn default_of(args: &Command, id: &str) -> String {
    let arg = args.get_arguments().find(|a| a.get_id() == id).unwrap_or_else(|| panic!("no server flag {id}"));
    arg.get_default_values()[0].to_string_lossy().into_owned()
}

#[test]
fn version_label_defaults_to_the_workspace_version() {
    let runtime = runtime_stage();
    assert_eq!(one(&runtime, "ARG VERSION="), format!("ARG VERSION={}", env!("CARGO_PKG_VERSION")));
    let label = one(&runtime, "LABEL ");
    assert!(label.contains("org.opencontainers.image.version=\"${VERSION}\""), "{label}");
    for key in ["title", "description", "version", "source", "licenses"] {
        assert!(label.contains(&format!("org.opencontainers.image.{key}=")), "label {key} missing: {label}");
    }
    assert!(label.contains("org.opencontainers.image.licenses=\"Apache-2.0\""), "{label}");
    let chart = std::fs::read_to_string(repo_root().join("charts/woodpecker-operator/Chart.yaml")).expect("Chart.yaml");
    let home = chart.lines().find_map(|l| l.strip_prefix("home: ")).expect("Chart.yaml home");
    assert_eq!(one(&runtime, "ARG SOURCE="), format!("ARG SOURCE={home}"), "the source label is the chart's home");
}

#[test]
fn both_binaries_are_built_and_installed_where_the_operator_runs_them() {
    let all = instructions();
    let build =
        all.iter().find(|i| i.starts_with("RUN ") && i.contains("cargo build")).expect("the builder's cargo build");
    let operator_toml = std::fs::read_to_string(repo_root().join("operator/Cargo.toml")).expect("operator Cargo.toml");
    assert!(operator_toml.contains("name = \"woodpecker-operator\""), "operator package/binary renamed?");
    assert!(
        build.contains(&format!("--release --locked -p {} -p woodpecker-operator", env!("CARGO_PKG_NAME"))),
        "{build}"
    );
    let runtime = runtime_stage();
    assert_eq!(
        one(&runtime, "COPY "),
        "COPY --from=binaries /out/woodpecker /out/woodpecker-operator /usr/local/bin/",
        "CONTRACT.md: /usr/local/bin/woodpecker and /usr/local/bin/woodpecker-operator"
    );
    assert_eq!(one(&runtime, "ENTRYPOINT "), "ENTRYPOINT [\"/usr/local/bin/woodpecker\"]");
    assert_eq!(one(&runtime, "USER "), "USER 65532:65532");
    // Nothing in the runtime stage may need a writable or root-owned step at run time.
    assert!(runtime.iter().all(|i| !i.starts_with("RUN ") && !i.starts_with("VOLUME ")), "{runtime:?}");
}

#[test]
fn exposed_ports_are_the_servers_defaults() {
    let server = ServerArgs::augment_args(Command::new("server"));
    let (svc, gossip, metrics) =
        (default_of(&server, "service_port"), default_of(&server, "gossip_port"), default_of(&server, "metrics_port"));
    assert_eq!(one(&runtime_stage(), "EXPOSE "), format!("EXPOSE {svc} {gossip}/tcp {gossip}/udp {metrics}"));
}

#[test]
fn build_context_leaves_out_build_output_and_git() {
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).expect("read .dockerignore");
    let lines: Vec<&str> = ignore.lines().map(str::trim).collect();
    for needed in ["target/", ".git"] {
        assert!(lines.contains(&needed), ".dockerignore lacks {needed}");
    }
}

#[test]
fn operator_chart_runs_the_operator_binary_by_path_not_the_entrypoint() {
    let deployment = std::fs::read_to_string(repo_root().join("charts/woodpecker-operator/templates/deployment.yaml"))
        .expect("chart deployment template");
    assert!(
        deployment.lines().any(|l| l.trim() == "command: [\"/usr/local/bin/woodpecker-operator\"]"),
        "the image's ENTRYPOINT is `woodpecker`; the chart must name the operator binary"
    );
}
