//! Woodpecker's metadata: logs, segments, readers, cleanup and marking records, the
//! condition-write flag and per-log writer locks, with upstream's etcd key layout and protobuf
//! values (`spec/woodpecker-core.md` §2), so a Go client and this crate can share one etcd.
//!
//! [`MetadataStore`] holds all the layout logic once, over the small [`KvBackend`] trait, which has
//! two implementations:
//!
//! * [`EtcdKv`]: a real etcd cluster, for anything with more than one process. Requests have a
//!   timeout; reads and connecting are retried a bounded number of times, then fail with
//!   [`MetaError::Unreachable`] naming the endpoints.
//! * [`EmbeddedKv`]: one process, one directory, the same revision semantics; every write is
//!   fsynced before it returns. A second open of the directory fails with
//!   [`MetaError::StoreInUse`]; share one store by cloning [`MetadataStore`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), woodpecker_meta::MetaError> {
//! use woodpecker_meta::{EtcdOptions, MetadataStore};
//! use woodpecker_proto::meta::{SegmentMetadata, SegmentState};
//!
//! let store = MetadataStore::open_etcd(&["127.0.0.1:2379"], "by-dev", "woodpecker", &EtcdOptions::default()).await?;
//! store.init_if_necessary().await?;
//! let log = store.create_log("orders").await?;
//! let lock = store.acquire_writer_lock("orders").await?; // LockHeld if another writer has it
//! let seg = SegmentMetadata { seg_no: 0, state: SegmentState::Active as i32, last_entry_id: -1, ..Default::default() };
//! let created = store.create_segment("orders", &seg).await?; // SegmentAlreadyExists = fenced out
//! let mut done = created.value.clone();
//! done.state = SegmentState::Completed as i32;
//! let _next_revision = store.update_segment("orders", &done, created.revision).await?;
//! tokio::select! {
//!     () = lock.lost() => { /* stop writing: another writer may take over */ }
//!     () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
//! }
//! lock.release().await?;
//! # let _ = log;
//! # Ok(())
//! # }
//! ```

mod embedded_kv;
mod error;
mod etcd_kv;
mod etcd_tls;
mod journal;
pub mod keys;
mod kv;
mod reader;
mod session;
mod store;
mod writer_epoch;
mod writer_lock;

pub use embedded_kv::{COMPACT_JOURNAL_BYTES, EmbeddedKv};
pub use error::{BoxError, MetaError, MetaResult};
pub use etcd_kv::{EtcdKv, EtcdOptions};
pub use etcd_tls::{EtcdTls, EtcdTlsVersion};
pub use keys::KeyLayout;
pub use kv::{
    Compare, CompareOp, CompareTarget, KeyValue, KvBackend, LeaseId, LeaseKeeper, Txn, TxnOp, TxnOpResult, TxnResponse,
};
pub use reader::ReaderRegistration;
pub use session::KeepAlivePolicy;
pub use store::{
    DEFAULT_COMPACTION_BUFFER_SIZE_BYTES, DEFAULT_MAX_COMPACTION_FILE_COUNT, DEFAULT_MAX_SEGMENT_ROLL_SIZE_BYTES,
    DEFAULT_MAX_SEGMENT_ROLL_TIME_SECONDS, META_VERSION, MetadataStore, StoreOptions, Versioned,
};
pub use writer_epoch::WriterEpoch;
pub use writer_lock::WriterLock;
