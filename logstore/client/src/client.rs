//! The client: one per process and configuration; opens logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use woodpecker_core::config::Config;
use woodpecker_core::names::validate_log_name;
use woodpecker_meta::{MetaError, MetadataStore};
use woodpecker_storage::segment::SegmentBackend;

use crate::backend::{open_meta, open_storage};
use crate::error::{Result, WoodpeckerError};
use crate::handle::LogHandle;

/// State shared by the client and every handle, writer and reader it opened.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: Config,
    pub meta: MetadataStore,
    pub backend: Arc<dyn SegmentBackend>,
    /// Storage fences writers by itself (conditional writes / file locks); otherwise writers take the etcd lock.
    pub self_fencing: bool,
    /// Whether compaction applies (object storage, and service mode where it moves segments into object
    /// storage; local segments are never merged, as upstream).
    pub compacts: bool,
    pub closed: AtomicBool,
    /// Cancelled on close: stops every background task of this client.
    pub shutdown: CancellationToken,
}

impl Shared {
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) { Err(WoodpeckerError::ClientClosed) } else { Ok(()) }
    }
}

/// An embedded Woodpecker client: creates, opens, lists and deletes logs.
///
/// Cheap to clone; all clones share one metadata connection and one storage backend.
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// Opens a client from a configuration (validated first, and its TLS files checked: [`Config::check_files`]).
    ///
    /// For object storage this connects to the bucket and resolves the condition-write mode (§9.2 of the
    /// spec): `auto` adopts a decision recorded in the metadata store or probes the backend.
    pub async fn open(cfg: Config) -> Result<Self> {
        cfg.validate()?;
        cfg.check_files()?;
        let meta = open_meta(&cfg).await?;
        let storage = open_storage(&cfg, &meta).await?;
        let st = cfg.woodpecker.storage.storage_type;
        let compacts = st.is_minio() || st == woodpecker_core::config::StorageType::Service;
        Ok(Self {
            shared: Arc::new(Shared {
                cfg,
                meta,
                backend: storage.backend,
                self_fencing: storage.self_fencing,
                compacts,
                closed: AtomicBool::new(false),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.shared.cfg
    }

    /// Whether writers are fenced by the storage itself (true) or by the etcd writer lock (false).
    pub fn uses_condition_write(&self) -> bool {
        self.shared.self_fencing
    }

    /// Creates a log. Fails with `Meta(LogAlreadyExists)` when the name is taken.
    pub async fn create_log(&self, name: &str) -> Result<()> {
        self.shared.check_open()?;
        validate_log_name(name)?;
        self.shared.meta.create_log(name).await?;
        Ok(())
    }

    /// Creates the log unless it exists.
    pub async fn create_log_if_absent(&self, name: &str) -> Result<()> {
        match self.create_log(name).await {
            Err(WoodpeckerError::Meta(MetaError::LogAlreadyExists { .. })) => Ok(()),
            other => other,
        }
    }

    /// Whether a log exists.
    pub async fn log_exists(&self, name: &str) -> Result<bool> {
        self.shared.check_open()?;
        validate_log_name(name)?;
        Ok(self.shared.meta.log_exists(name).await?)
    }

    /// Names of logs starting with `prefix` (all logs for "").
    pub async fn list_logs(&self, prefix: &str) -> Result<Vec<String>> {
        self.shared.check_open()?;
        Ok(self.shared.meta.list_logs(prefix).await?)
    }

    /// Opens an existing log. Fails with `Meta(LogNotFound)` when it does not exist.
    pub async fn open_log(&self, name: &str) -> Result<LogHandle> {
        self.shared.check_open()?;
        validate_log_name(name)?;
        let meta = self.shared.meta.get_log(name).await?;
        Ok(LogHandle::new(self.shared.clone(), name.to_owned(), meta.value.log_id))
    }

    /// Deletes a log: its stored data first, then its metadata. A missing log is not an error.
    ///
    /// Data goes first so that a failure leaves a log that still exists and can be deleted again, never
    /// orphaned objects (upstream never deletes object-storage data at all).
    pub async fn delete_log(&self, name: &str) -> Result<()> {
        self.shared.check_open()?;
        validate_log_name(name)?;
        let log_id = match self.shared.meta.get_log(name).await {
            Ok(m) => m.value.log_id,
            Err(MetaError::LogNotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // The backend learns where the log's segments live (service mode: which nodes to tell).
        let handle_segments = self.shared.meta.list_segments(name).await?;
        for s in &handle_segments {
            let sref = woodpecker_storage::segment::SegmentRef { log_id, segment_id: s.value.seg_no };
            self.shared.backend.locate(sref, &s.value);
        }
        self.shared.backend.delete_log(log_id).await?;
        match self.shared.meta.delete_log(name).await {
            Ok(()) | Err(MetaError::LogNotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Closes the client: background tasks stop and later calls fail with `ClientClosed`.
    ///
    /// Close writers first (`LogWriter::close`) to finalize their segments; a writer still open is
    /// recovered by the next writer of its log.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.shutdown.cancel();
    }
}
