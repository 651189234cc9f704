//! `woodpecker server` flags, each also read from an environment variable (flag wins), per CONTRACT.md.
//! Upstream's flags are accepted with the same names, so upstream's compose files and start scripts
//! work with this binary. `--config` and `--data-dir` are the `woodpecker` command's global options;
//! for the server they also read `CONFIG_FILE` and `DATA_DIR`.

use std::path::PathBuf;

use clap::Args;

/// Default main config of a server (the image's path).
pub const DEFAULT_CONFIG_FILE: &str = "/woodpecker/configs/woodpecker.yaml";

/// Flags of `woodpecker server`.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// gRPC LogStore service port.
    #[arg(long, env = "SERVICE_PORT", default_value_t = 18080)]
    pub service_port: u16,
    /// Gossip port (TCP and UDP).
    #[arg(long, env = "GOSSIP_PORT", default_value_t = 17946)]
    pub gossip_port: u16,
    /// Admin HTTP port: health, admin API, /metrics (upstream sets it by environment only).
    #[arg(long, env = "METRICS_PORT", default_value_t = 9091, hide = true)]
    pub metrics_port: u16,
    /// Unique, stable node name (the pod name); defaults to the host name.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Comma-separated gossip addresses (host:gossipPort) of nodes to join.
    #[arg(long, env = "SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// host:port peers dial for gossip (defaults to the bind address and --gossip-port).
    #[arg(long, env = "ADVERTISE_GOSSIP_ADDR")]
    pub advertise_gossip_addr: Option<String>,
    /// host:port clients dial; stored in segment metadata, so it must stay stable (the pod's FQDN).
    #[arg(long, env = "ADVERTISE_SERVICE_ADDR")]
    pub advertise_service_addr: Option<String>,
    /// Gossip cluster name; nodes of another cluster are not admitted.
    #[arg(long = "cluster", env = "CLUSTER_NAME", default_value = "woodpecker-cluster")]
    pub cluster: String,
    /// Region advertised in gossip metadata.
    #[arg(long, env = "REGION", default_value = "")]
    pub region: String,
    /// Availability zone advertised in gossip metadata.
    #[arg(long, env = "AVAILABILITY_ZONE", default_value = "")]
    pub availability_zone: String,
    /// Resource group advertised in gossip metadata.
    #[arg(long, env = "RESOURCE_GROUP", default_value = "default")]
    pub resource_group: String,
    /// Overlay YAML merged after the main file (how credentials stay out of ConfigMaps).
    #[arg(long, env = "EXTERNAL_USER_CONFIG_FILE", value_name = "PATH")]
    pub external_user_config: Option<PathBuf>,
    /// Overlay YAML merged after the main file and before the user overlay (upstream's flag).
    #[arg(long, env = "EXTERNAL_DEFAULT_CONFIG_FILE", value_name = "PATH")]
    pub external_default_config: Option<PathBuf>,
}

/// Where the server's main config comes from: `--config` / `WOODPECKER_CONFIG`, else `CONFIG_FILE`, else
/// the image's path.
pub fn config_file(global: Option<PathBuf>) -> PathBuf {
    global
        .or_else(|| std::env::var_os("CONFIG_FILE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE))
}

/// The data directory: `--data-dir` / `WOODPECKER_DATA_DIR`, else `DATA_DIR`, else `storage.rootPath`.
pub fn data_dir(global: Option<PathBuf>, root_path: &str) -> PathBuf {
    global.or_else(|| std::env::var_os("DATA_DIR").map(PathBuf::from)).unwrap_or_else(|| PathBuf::from(root_path))
}
