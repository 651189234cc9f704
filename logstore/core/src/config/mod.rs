//! `woodpecker.yaml`: the configuration schema shared with upstream Woodpecker, its defaults,
//! loading (with an overlay file for credentials) and validation.
//!
//! YAML keys are exactly upstream's; defaults are upstream's shipped `config/woodpecker.yaml`
//! values except where noted "(ours)". Constants upstream hard-codes are exposed as extra keys
//! marked "(ours)" next to the settings they belong to. Unknown keys are errors that name the
//! key; values are validated once, with errors that name the key and the allowed range, and are
//! never clamped.
//!
//! ```text
//! file ──parse──▶ YAML tree ──merge overlay──▶ unknown-key check ──deserialize──▶ Config ──validate──▶ Ok
//! ```

mod client;
mod error;
mod external;
mod generate;
mod load;
mod logstore;
mod reference;
pub mod schema;
pub mod units;
mod validate;
mod woodpecker;

use std::path::Path;

pub use client::{
    AffinityMode, AuditorConfig, ClientConfig, CompletionConfig, CustomPlacement, DirectReadConfig, FenceConfig,
    HandleGcConfig, QuorumBufferPool, QuorumConfig, QuorumSelectStrategy, QuorumStrategy, ReaderConfig,
    SegmentAppendConfig, SegmentRollingPolicyConfig, SessionMonitorConfig,
};
pub use error::ConfigError;
pub use external::{
    EtcdAuthConfig, EtcdConfig, EtcdDataConfig, EtcdLogConfig, EtcdSslConfig, EtcdUseConfig, JaegerConfig, LogConfig,
    LogFileConfig, MinioConfig, MinioSslConfig, OtlpConfig, TraceConfig,
};
pub use logstore::{
    ConditionWrite, DiskWatermarkPolicyConfig, FencePolicyConfig, GrpcConfig, LogStoreConfig,
    MaintenanceStrategyConfig, NodeSelectionPolicyConfig, ProcessorCleanupPolicyConfig, RetentionPolicyConfig,
    SegmentCompactionPolicyConfig, SegmentReadPolicyConfig, SegmentSyncPolicyConfig,
};
pub use woodpecker::{
    MetaConfig, MetaType, OpRegistryConfig, RuntimeConfig, StorageConfig, StorageType, WoodpeckerConfig,
};

use schema::config_section;

config_section! {
    /// The whole `woodpecker.yaml`.
    pub struct Config {
        /// Woodpecker: metadata, client, LogStore and storage.
        #[key = "woodpecker"]
        pub woodpecker: WoodpeckerConfig = WoodpeckerConfig::default(),
        /// Process log output.
        #[key = "log"]
        pub log: LogConfig = LogConfig::default(),
        /// Tracing.
        #[key = "trace"]
        pub trace: TraceConfig = TraceConfig::default(),
        /// etcd, the metadata store when woodpecker.meta.type is etcd.
        #[key = "etcd"]
        pub etcd: EtcdConfig = EtcdConfig::default(),
        /// MinIO/S3-compatible object storage.
        #[key = "minio"]
        pub minio: MinioConfig = MinioConfig::default(),
    }
}

impl Config {
    /// Parses and validates a YAML document; missing keys keep their defaults.
    pub fn from_yaml_str(yaml: &str) -> Result<Config, ConfigError> {
        load::from_layers(&[("<yaml>", yaml)])
    }

    /// Reads, parses and validates a YAML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = load::read(path)?;
        load::from_layers(&[(&path.display().to_string(), &text)])
    }

    /// Reads `main`, merges the `overlay` file over it (mappings merge key by key, any other
    /// value replaces; an empty overlay value changes nothing), then parses and validates.
    /// This is how credentials stay out of the main file.
    pub fn load_with_overlay(main: &Path, overlay: Option<&Path>) -> Result<Config, ConfigError> {
        let main_text = load::read(main)?;
        let main_origin = main.display().to_string();
        match overlay {
            None => load::from_layers(&[(&main_origin, &main_text)]),
            Some(overlay) => {
                let overlay_text = load::read(overlay)?;
                load::from_layers(&[(&main_origin, &main_text), (&overlay.display().to_string(), &overlay_text)])
            }
        }
    }

    /// Reads `files` in order and merges each over the ones before (as [`Self::load_with_overlay`]), then
    /// parses and validates. The server's main file plus its external default and user overlays.
    pub fn load_layers(files: &[&Path]) -> Result<Config, ConfigError> {
        let mut texts = Vec::with_capacity(files.len());
        for f in files {
            texts.push((f.display().to_string(), load::read(f)?));
        }
        let layers: Vec<(&str, &str)> = texts.iter().map(|(o, t)| (o.as_str(), t.as_str())).collect();
        load::from_layers(&layers)
    }

    /// Merges the `overlay` YAML text over the `main` YAML text, then parses and validates.
    pub fn from_yaml_with_overlay(main: &str, overlay: &str) -> Result<Config, ConfigError> {
        load::from_layers(&[("<main yaml>", main), ("<overlay yaml>", overlay)])
    }

    /// Checks that the TLS files the configuration names (`etcd.ssl.tlsCACert`, `tlsCert`, `tlsKey` when
    /// etcd TLS is on; `minio.ssl.tlsCACert` for object storage over https) are readable PEM files of the
    /// right kind, naming the key and path otherwise. Separate from loading because a configuration may be
    /// validated where its files do not exist (the operator checks configs rendered for pods); the client
    /// and the server call it before using the configuration.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        validate::check_files(self)
    }

    /// Checks every value against its allowed range and the cross-key rules; the error names the
    /// key (dotted path) and the allowed range. Nothing is clamped.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(self)
    }

    /// Renders this configuration as YAML with a one-line comment on every key.
    pub fn to_commented_yaml(&self) -> Result<String, ConfigError> {
        generate::to_commented_yaml(self)
    }

    /// The checked-in `config/woodpecker.yaml`: the defaults, every key commented.
    pub fn default_yaml() -> Result<String, ConfigError> {
        generate::to_commented_yaml(&Config::default())
    }

    /// The configuration reference page of the book (`docs/src/reference/configuration.md`): every key
    /// with its type, default, allowed range and description.
    pub fn reference_markdown() -> Result<String, ConfigError> {
        reference::reference_markdown()
    }
}
