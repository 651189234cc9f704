//! Which configuration a command runs on, and opening the client with it.
//!
//! ```text
//! no --config  ──▶ Config::default() + storage.type=local + meta.type=embedded + rootPath=./woodpecker-data
//! --config F   ──▶ Config::load(F)
//! --data-dir D ──▶ rootPath = D (either way)
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use woodpecker_client::{Client, Config, WoodpeckerError};
use woodpecker_core::config::{MetaType, StorageType};
use woodpecker_core::keys;
use woodpecker_meta::MetaError;

use crate::args::GlobalArgs;

/// Data directory of the zero-setup default, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./woodpecker-data";

/// The zero-setup configuration: local segment files and embedded metadata under `data_dir`.
pub fn zero_setup_config(data_dir: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.woodpecker.storage.storage_type = StorageType::Local;
    cfg.woodpecker.meta.meta_type = MetaType::Embedded;
    cfg.woodpecker.storage.root_path = data_dir.display().to_string();
    cfg
}

/// The configuration the global options select.
pub fn resolve_config(global: &GlobalArgs) -> Result<Config> {
    let mut cfg = match &global.config {
        Some(path) => Config::load(path).with_context(|| format!("cannot load configuration {}", path.display()))?,
        None => zero_setup_config(Path::new(DEFAULT_DATA_DIR)),
    };
    if let Some(dir) = &global.data_dir {
        if dir.as_os_str().is_empty() {
            anyhow::bail!("--data-dir must not be empty");
        }
        cfg.woodpecker.storage.root_path = dir.display().to_string();
    }
    Ok(cfg)
}

/// Opens a client, naming the storage in the error when that fails.
pub async fn open_client(cfg: Config) -> Result<Client> {
    let what = describe_storage(&cfg);
    match Client::open(cfg).await {
        Ok(client) => Ok(client),
        Err(e @ WoodpeckerError::Meta(MetaError::StoreInUse { .. })) => Err(anyhow::Error::new(e).context(format!(
            "cannot open Woodpecker on {what} (the embedded store serves one process at a time; \
             use etcd metadata via --config to run a writer and a reader side by side)"
        ))),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot open Woodpecker on {what}"))),
    }
}

/// One line that says where data and metadata live.
pub fn describe_storage(cfg: &Config) -> String {
    let w = &cfg.woodpecker;
    let data = match w.storage.storage_type {
        StorageType::Local => format!("local files under {}", display_dir(&w.storage.root_path)),
        StorageType::Default | StorageType::Minio => format!(
            "object storage {}:{} bucket {:?} prefix {:?}",
            cfg.minio.address, cfg.minio.port, cfg.minio.bucket_name, cfg.minio.root_path
        ),
        StorageType::Service => "LogStore service".to_owned(),
    };
    let meta = match w.meta.meta_type {
        MetaType::Embedded => format!("embedded metadata in {}", display_dir(&meta_dir(cfg).display().to_string())),
        MetaType::Etcd => format!("etcd {:?}", cfg.etcd.endpoints),
    };
    format!("{data}, {meta}")
}

/// Directory of the embedded metadata store (the client keeps it under `storage.rootPath/meta`).
pub fn meta_dir(cfg: &Config) -> PathBuf {
    PathBuf::from(&cfg.woodpecker.storage.root_path).join("meta")
}

/// Directory holding one log's segment files with local storage: `<rootPath>/<minio.rootPath>/<logId>`.
pub fn local_log_dir(cfg: &Config, log_id: i64) -> PathBuf {
    PathBuf::from(&cfg.woodpecker.storage.root_path).join(keys::log_prefix(&cfg.minio.root_path, log_id))
}

/// Directory under which local storage keeps every log's segments.
pub fn local_segments_root(cfg: &Config) -> PathBuf {
    let base = PathBuf::from(&cfg.woodpecker.storage.root_path);
    let root = cfg.minio.root_path.trim_matches('/');
    if root.is_empty() { base } else { base.join(root) }
}

/// A directory shown absolute when it can be resolved (it may not exist yet).
pub fn display_dir(dir: &str) -> String {
    let p = Path::new(dir);
    match p.canonicalize() {
        Ok(abs) => abs.display().to_string(),
        Err(_) => match std::env::current_dir() {
            Ok(cwd) if p.is_relative() => {
                let joined: PathBuf = cwd.join(p).components().filter(|c| *c != std::path::Component::CurDir).collect();
                joined.display().to_string()
            }
            _ => dir.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_setup_is_local_and_embedded_and_valid() {
        let cfg = zero_setup_config(Path::new(DEFAULT_DATA_DIR));
        assert_eq!(cfg.woodpecker.storage.storage_type, StorageType::Local);
        assert_eq!(cfg.woodpecker.meta.meta_type, MetaType::Embedded);
        assert_eq!(cfg.woodpecker.storage.root_path, DEFAULT_DATA_DIR);
        cfg.validate().unwrap();
    }

    #[test]
    fn data_dir_overrides_the_default_root() {
        let global = GlobalArgs { config: None, data_dir: Some(PathBuf::from("/tmp/x")) };
        assert_eq!(resolve_config(&global).unwrap().woodpecker.storage.root_path, "/tmp/x");
    }

    #[test]
    fn a_missing_config_file_is_an_error_naming_it() {
        let global = GlobalArgs { config: Some(PathBuf::from("/nonexistent/woodpecker.yaml")), data_dir: None };
        let err = format!("{:#}", resolve_config(&global).unwrap_err());
        assert!(err.contains("/nonexistent/woodpecker.yaml"), "{err}");
    }
}
