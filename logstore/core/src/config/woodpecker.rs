//! `woodpecker`: metadata, client, LogStore, storage and runtime sections.

use std::time::Duration;

use super::client::ClientConfig;
use super::logstore::LogStoreConfig;
use super::schema::{config_enum, config_section};

config_section! {
    /// `woodpecker`: everything specific to Woodpecker.
    pub struct WoodpeckerConfig {
        /// Where log and segment metadata lives.
        #[key = "meta"]
        pub meta: MetaConfig = MetaConfig::default(),
        /// Client (writer and reader) settings.
        #[key = "client"]
        pub client: ClientConfig = ClientConfig::default(),
        /// LogStore settings.
        #[key = "logstore"]
        pub logstore: LogStoreConfig = LogStoreConfig::default(),
        /// Where log data lives.
        #[key = "storage"]
        pub storage: StorageConfig = StorageConfig::default(),
        /// Server runtime bookkeeping.
        #[key = "runtime"]
        pub runtime: RuntimeConfig = RuntimeConfig::default(),
    }
}

config_enum! {
    /// Metadata store kind.
    pub enum MetaType {
        /// etcd (`etcd.*`); needed as soon as more than one process shares logs.
        Etcd = "etcd",
        /// In-process store under `storage.rootPath`; single process, zero setup (ours).
        Embedded = "embedded",
    }
}

config_section! {
    /// `woodpecker.meta`.
    pub struct MetaConfig {
        /// Metadata store: etcd or embedded (ours; upstream supports only etcd).
        #[key = "type"]
        pub meta_type: MetaType = MetaType::Embedded,
        /// Key prefix under etcd.rootPath where Woodpecker keeps its metadata.
        #[key = "prefix", with = "crate::config::units::lenient_string"]
        pub prefix: String = "woodpecker".to_owned(),
        /// Attempts of the CreateLog transaction when the log id counter races (ours).
        #[key = "createLogMaxRetries"]
        pub create_log_max_retries: u32 = 5,
        /// Wait between two CreateLog transaction attempts (ours; milliseconds).
        #[key = "createLogRetryInterval", with = "crate::config::units::millis"]
        pub create_log_retry_interval: Duration = Duration::from_millis(10),
    }
}

config_enum! {
    /// Storage backend kind.
    pub enum StorageType {
        /// Same as `minio`.
        Default = "default",
        /// Embedded LogStore writing to MinIO/S3-compatible object storage (`minio.*`).
        Minio = "minio",
        /// Embedded LogStore writing files under `storage.rootPath`.
        Local = "local",
        /// Remote LogStore nodes (quorum replication), found through `client.quorum` seeds.
        Service = "service",
    }
}

impl StorageType {
    /// Whether this process reads or writes object storage directly (`minio.*` is used).
    pub fn uses_object_storage(self) -> bool {
        matches!(self, Self::Default | Self::Minio | Self::Service)
    }

    /// Whether segments live on LogStore servers reached over gRPC.
    pub fn is_service(self) -> bool {
        self == Self::Service
    }

    /// Whether this is the embedded object-storage backend (`default` or `minio`).
    pub fn is_minio(self) -> bool {
        matches!(self, Self::Default | Self::Minio)
    }
}

config_section! {
    /// `woodpecker.storage`.
    pub struct StorageConfig {
        /// Storage backend: default, minio, local or service (ours defaults to local for zero setup).
        #[key = "type"]
        pub storage_type: StorageType = StorageType::Local,
        /// Local data directory: segment files (local), staging (service) and the embedded metadata store.
        #[key = "rootPath", with = "crate::config::units::lenient_string"]
        pub root_path: String = "/tmp/woodpecker".to_owned(),
    }
}

config_section! {
    /// `woodpecker.runtime`.
    pub struct RuntimeConfig {
        /// Registry of in-flight server operations.
        #[key = "opRegistry"]
        pub op_registry: OpRegistryConfig = OpRegistryConfig::default(),
    }
}

config_section! {
    /// `woodpecker.runtime.opRegistry`.
    pub struct OpRegistryConfig {
        /// Most in-flight operations tracked at once.
        #[key = "capacity"]
        pub capacity: u32 = 1024,
        /// Operations running longer than this are reported (seconds).
        #[key = "warnAge", with = "crate::config::units::seconds"]
        pub warn_age: Duration = Duration::from_secs(30),
    }
}
