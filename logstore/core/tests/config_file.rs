//! The checked-in `config/woodpecker.yaml` is generated from the config types: it must be current
//! and must parse back to `Config::default()`.
//!
//! Regenerate with `UPDATE_CONFIG=1 cargo test -p woodpecker-core --test config_file` or
//! `cargo run -p woodpecker-core --example gen-config`.

use std::path::PathBuf;

use woodpecker_core::config::Config;

fn checked_in_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/woodpecker.yaml")
}

#[test]
fn checked_in_woodpecker_yaml_is_current() {
    let generated = Config::default_yaml().expect("defaults render");
    let path = checked_in_path();
    if std::env::var_os("UPDATE_CONFIG").is_some() {
        std::fs::write(&path, &generated).expect("write config/woodpecker.yaml");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).expect("read config/woodpecker.yaml");
    assert!(
        checked_in == generated,
        "config/woodpecker.yaml is stale; regenerate with `UPDATE_CONFIG=1 cargo test -p woodpecker-core --test \
         config_file` or `cargo run -p woodpecker-core --example gen-config`"
    );
}

#[test]
fn checked_in_woodpecker_yaml_parses_back_to_the_defaults() {
    let config = Config::load(&checked_in_path()).expect("config/woodpecker.yaml loads and validates");
    assert_eq!(config, Config::default());
}

#[test]
fn every_key_of_the_generated_file_has_a_comment() {
    let yaml = Config::default_yaml().expect("defaults render");
    for line in yaml.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("- localhost") {
            continue;
        }
        // Leaf keys carry an inline comment; section keys have a comment line right above.
        let commented_inline = line.contains(" # ");
        let is_section = trimmed.ends_with(':');
        assert!(commented_inline || is_section, "line without comment: {line:?}");
    }
    let sections_without_comment: Vec<_> = yaml
        .lines()
        .zip(yaml.lines().skip(1))
        .filter(|(above, line)| line.trim_end().ends_with(':') && !above.trim_start().starts_with('#'))
        .map(|(_, line)| line.to_owned())
        .collect();
    assert!(sections_without_comment.is_empty(), "sections without comment: {sections_without_comment:?}");
}

#[test]
fn a_non_default_config_round_trips_through_the_commented_yaml() {
    let mut config = Config::default();
    config.woodpecker.client.quorum.quorum_buffer_pools[0].seeds = vec!["a:17946".to_owned(), "b:17946".to_owned()];
    config.woodpecker.storage.storage_type = woodpecker_core::config::StorageType::Service;
    config.woodpecker.meta.meta_type = woodpecker_core::config::MetaType::Etcd;
    config.woodpecker.logstore.segment_sync_policy.max_interval = std::time::Duration::from_micros(1500);
    config.minio.region = "us-east-1".to_owned();
    config.minio.gcp_credential_json =
        "{\n  \"type\": \"service_account\",\n  key: value # not a comment\n}\n".to_owned();
    config.minio.root_path = "with: colon # and hash".to_owned();
    let yaml = config.to_commented_yaml().expect("renders");
    assert!(yaml.contains("maxInterval: 1ms 500us"), "sub-unit durations are written with units:\n{yaml}");
    assert_eq!(Config::from_yaml_str(&yaml).expect("parses"), config);
}

/// A list item with a line break renders as a block scalar (`- |-`); its body lines are text, also where they
/// look like `key:` (found by the config_yaml fuzz target).
#[test]
fn multi_line_list_items_round_trip_through_the_commented_yaml() {
    let mut config = Config::default();
    config.etcd.endpoints = vec!["e\nh:".to_owned(), "a:2379".to_owned(), "x\n  y: z\n- w".to_owned()];
    config.woodpecker.client.quorum.quorum_buffer_pools[0].seeds = vec!["s\nseeds:".to_owned()];
    let yaml = config.to_commented_yaml().expect("renders");
    assert_eq!(Config::from_yaml_str(&yaml).expect("parses"), config, "{yaml}");
}

/// The book's configuration reference is generated from the same key tables; CI fails when it is stale.
#[test]
fn configuration_reference_page_is_current() {
    let generated = Config::reference_markdown().expect("reference renders");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/src/reference/configuration.md");
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create docs/src/reference");
        std::fs::write(&path, &generated).expect("write docs/src/reference/configuration.md");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/src/reference/configuration.md is stale; regenerate with `UPDATE_DOCS=1 cargo test -p woodpecker-core \
         --test config_file`"
    );
}
