//! Woodpecker's metadata: logs, segments, readers, cleanup records, the condition-write flag and
//! per-log writer locks, with upstream's etcd key layout and protobuf values.
//!
//! [`MetadataStore`] holds all the layout logic once, over the small [`KvBackend`] trait, which has
//! two implementations: [`EtcdKv`] (a real etcd cluster, for anything with more than one process)
//! and [`EmbeddedKv`] (a file-backed single-process store with the same revision semantics).

mod embedded_kv;
mod error;
mod etcd_kv;
mod journal;
pub mod keys;
mod kv;
mod reader;
mod session;
mod store;
mod writer_lock;

pub use embedded_kv::{COMPACT_JOURNAL_BYTES, EmbeddedKv};
pub use error::{BoxError, MetaError, MetaResult};
pub use etcd_kv::{EtcdKv, EtcdOptions};
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
pub use writer_lock::WriterLock;
