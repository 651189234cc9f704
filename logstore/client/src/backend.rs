//! Builds the metadata store and the segment backend a config asks for.

use std::path::PathBuf;
use std::sync::Arc;

use woodpecker_core::config::{ConditionWrite, Config, EtcdSslConfig, MetaType, StorageType};
use woodpecker_meta::{EtcdOptions, EtcdTls, EtcdTlsVersion, MetadataStore, StoreOptions};
use woodpecker_storage::object::{ObjectStorage, S3ObjectStorage, S3Options, probe_condition_write};
use woodpecker_storage::segment::SegmentBackend;
use woodpecker_storage::segment::local::LocalSegmentBackend;
use woodpecker_storage::segment::object::{ObjectSegmentBackend, ObjectSegmentOptions};

use crate::error::{Result, WoodpeckerError};
use crate::service::ServiceSegmentBackend;

/// Directory of the embedded metadata store under `storage.rootPath`.
pub(crate) fn embedded_meta_dir(cfg: &Config) -> PathBuf {
    PathBuf::from(&cfg.woodpecker.storage.root_path).join("meta")
}

/// Opens the metadata store named by `woodpecker.meta.type`.
pub(crate) async fn open_meta(cfg: &Config) -> Result<MetadataStore> {
    let client = &cfg.woodpecker.client;
    let options = StoreOptions {
        lock_session_ttl: client.session_monitor.session_ttl,
        lock_check_interval: client.session_monitor.check_interval,
        lock_max_failures: client.session_monitor.max_failures,
        reader_lease_ttl: client.reader.lease_ttl,
        create_log_attempts: cfg.woodpecker.meta.create_log_max_retries.max(1),
        ..StoreOptions::default()
    };
    let store = match cfg.woodpecker.meta.meta_type {
        MetaType::Embedded => {
            let dir = embedded_meta_dir(cfg);
            std::fs::create_dir_all(&dir)
                .map_err(|source| woodpecker_meta::MetaError::Io { path: dir.clone(), source })?;
            MetadataStore::open_embedded(&dir).await?
        }
        MetaType::Etcd => {
            let etcd = &cfg.etcd;
            let opts = EtcdOptions {
                request_timeout: etcd.request_timeout,
                credentials: etcd.auth.enabled.then(|| (etcd.auth.user_name.clone(), etcd.auth.password.clone())),
                tls: etcd_tls(&etcd.ssl),
                ..EtcdOptions::default()
            };
            MetadataStore::open_etcd(&etcd.endpoints, &etcd.root_path, &cfg.woodpecker.meta.prefix, &opts).await?
        }
    };
    let store = store.with_options(options);
    store.init_if_necessary().await?;
    Ok(store)
}

/// The TLS settings `etcd.ssl` describes, `None` when it is off. A file key left empty or at the seed's
/// placeholder is unset: no CA file trusts the system roots, no tlsCert/tlsKey presents no client
/// certificate (config validation rejects one without the other).
fn etcd_tls(ssl: &EtcdSslConfig) -> Option<EtcdTls> {
    if !ssl.enabled {
        return None;
    }
    Some(EtcdTls {
        ca_cert: ssl.ca_cert_path().map(PathBuf::from),
        client_identity: ssl.cert_path().zip(ssl.key_path()).map(|(c, k)| (PathBuf::from(c), PathBuf::from(k))),
        min_version: EtcdTlsVersion::from_config(&ssl.tls_min_version),
    })
}

/// The segment backend plus whether fencing by conditional writes is trustworthy.
pub(crate) struct Storage {
    pub backend: Arc<dyn SegmentBackend>,
    /// True when a single writer is guaranteed by the storage itself (conditional writes or file locks);
    /// false means writers must hold the etcd lock.
    pub self_fencing: bool,
}

/// Opens the segment backend for `woodpecker.storage.type`, probing conditional writes for object storage.
pub(crate) async fn open_storage(cfg: &Config, meta: &MetadataStore) -> Result<Storage> {
    let st = cfg.woodpecker.storage.storage_type;
    match st {
        StorageType::Local => {
            let base = PathBuf::from(&cfg.woodpecker.storage.root_path);
            let backend = LocalSegmentBackend::new(base, cfg.minio.root_path.clone());
            Ok(Storage { backend: Arc::new(backend), self_fencing: true })
        }
        StorageType::Service => {
            // Sealed segments are read from the objects the servers compacted; the connection only reads
            // and deletes, so conditional writes do not matter here.
            let mut opts = s3_options(cfg)?;
            opts.condition_write = false;
            let store: Arc<dyn ObjectStorage> = Arc::new(S3ObjectStorage::connect(opts).await?);
            let direct = ObjectSegmentBackend::new(store, cfg.minio.root_path.clone(), object_options(cfg));
            let backend = ServiceSegmentBackend::new(cfg, Arc::new(direct));
            // Replicas fence themselves (FenceSegment) and segments are created in the writer's epoch.
            Ok(Storage { backend: Arc::new(backend), self_fencing: true })
        }
        StorageType::Default | StorageType::Minio => {
            let mode = cfg.woodpecker.logstore.fence_policy.condition_write;
            let mut opts = s3_options(cfg)?;
            opts.condition_write = mode != ConditionWrite::Disable;
            let m = &cfg.minio;
            let store: Arc<dyn ObjectStorage> = Arc::new(S3ObjectStorage::connect(opts).await?);
            let condition_write = resolve_condition_write(mode, meta, store.as_ref(), &m.root_path).await?;
            let options = object_options(cfg);
            let backend = ObjectSegmentBackend::new(store, m.root_path.clone(), options);
            Ok(Storage { backend: Arc::new(backend), self_fencing: condition_write })
        }
    }
}

/// How object segments are written, compacted and read, from `woodpecker.logstore`.
fn object_options(cfg: &Config) -> ObjectSegmentOptions {
    let sync = &cfg.woodpecker.logstore.segment_sync_policy;
    let compaction = &cfg.woodpecker.logstore.segment_compaction_policy;
    let read = &cfg.woodpecker.logstore.segment_read_policy;
    ObjectSegmentOptions {
        max_flush_threads: sync.max_flush_threads.max(1) as usize,
        max_flush_retries: sync.max_flush_retries.max(1),
        retry_interval: sync.retry_interval,
        compaction_max_bytes: compaction.max_bytes,
        compaction_max_parallel_uploads: compaction.max_parallel_uploads.max(1) as usize,
        compaction_max_parallel_reads: compaction.max_parallel_reads.max(1) as usize,
        read_max_fetch_threads: read.max_fetch_threads.max(1) as usize,
        ..ObjectSegmentOptions::default()
    }
}

/// The S3 connection options `cfg.minio` describes (with conditional writes on; callers may turn them off).
pub fn s3_options(cfg: &Config) -> Result<S3Options> {
    S3Options::from_config(&cfg.minio).map_err(WoodpeckerError::Unsupported)
}

/// Decides whether conditional writes are used (upstream §9.2), recording a verified `true` cluster-wide.
async fn resolve_condition_write(
    mode: ConditionWrite,
    meta: &MetadataStore,
    store: &dyn ObjectStorage,
    root_path: &str,
) -> Result<bool> {
    if mode == ConditionWrite::Disable {
        return Ok(false);
    }
    let stored = meta.get_condition_write().await?;
    match (mode, stored) {
        (ConditionWrite::Auto, Some(v)) => return Ok(v),
        (ConditionWrite::Enable, Some(true)) => return Ok(true),
        _ => {}
    }
    let supported = probe_condition_write(store, root_path).await?;
    if supported {
        meta.store_condition_write(true).await?;
        return Ok(true);
    }
    match mode {
        ConditionWrite::Enable => Err(WoodpeckerError::Unsupported(format!(
            "woodpecker.logstore.fencePolicy.conditionWrite is enable, but {} does not honour If-None-Match",
            store.describe()
        ))),
        // Auto: fall back to the etcd writer lock; nothing is persisted so a later, better backend can probe again.
        _ => Ok(false),
    }
}
