//! A handle on one log: opens writers and readers, truncates, lists segments.

use std::sync::Arc;

use woodpecker_core::ids::{LogId, LogMessageId, SegmentId};
use woodpecker_meta::{MetaError, Versioned};
use woodpecker_proto::meta::{SegmentMetadata, SegmentState};
use woodpecker_storage::segment::SegmentRef;

use crate::client::Shared;
use crate::error::{Result, WoodpeckerError};
use crate::maintenance::{self, MaintenanceReport};
use crate::reader::LogReader;
use crate::writer::LogWriter;

/// What the metadata says about one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment id.
    pub id: SegmentId,
    /// Lifecycle state.
    pub state: SegmentState,
    /// Last entry id (-1 while active or empty).
    pub last_entry_id: i64,
    /// Stored size in bytes (as recorded at completion or compaction).
    pub size: i64,
    /// Creation time, unix milliseconds.
    pub create_time_ms: i64,
}

impl From<&SegmentMetadata> for SegmentInfo {
    fn from(m: &SegmentMetadata) -> Self {
        Self {
            id: m.seg_no,
            state: m.state(),
            last_entry_id: m.last_entry_id,
            size: m.size,
            create_time_ms: m.create_time,
        }
    }
}

/// A log opened by name. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) name: String,
    pub(crate) log_id: LogId,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

impl LogHandle {
    pub(crate) fn new(shared: Arc<Shared>, name: String, log_id: LogId) -> Self {
        Self { shared, name, log_id }
    }

    /// The log's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log's id.
    pub fn id(&self) -> LogId {
        self.log_id
    }

    pub(crate) fn seg_ref(&self, segment_id: SegmentId) -> SegmentRef {
        SegmentRef { log_id: self.log_id, segment_id }
    }

    /// The segment `meta` describes, after telling the backend what its metadata says (service mode:
    /// where its replicas are). Every backend call about a segment goes through here first.
    pub(crate) fn located(&self, meta: &woodpecker_proto::meta::SegmentMetadata) -> SegmentRef {
        let sref = self.seg_ref(meta.seg_no);
        self.shared.backend.locate(sref, meta);
        sref
    }

    /// All segments, in id order, fresh from the metadata store.
    pub async fn segments(&self) -> Result<Vec<SegmentInfo>> {
        self.shared.check_open()?;
        Ok(self.shared.meta.list_segments(&self.name).await?.iter().map(|v| SegmentInfo::from(&v.value)).collect())
    }

    /// Opens the log's writer. Recovers every segment a previous writer left active: fences it, so that
    /// writer cannot add to it any more, and completes it at its last durable entry.
    ///
    /// Without conditional writes on object storage the writer first takes the log's etcd lock; a second
    /// writer then fails here with `LockHeld`. Otherwise a second writer succeeds and the first one's next
    /// write fails with `WriterFenced`.
    pub async fn open_writer(&self) -> Result<LogWriter> {
        self.shared.check_open()?;
        LogWriter::open(self.clone()).await
    }

    /// Opens a reader at `from` (`LogMessageId::EARLIEST`, `LogMessageId::LATEST` or any position).
    ///
    /// From `EARLIEST` the reader starts after the truncation point, if there is one. `name` is recorded
    /// in the metadata store (with a lease kept alive while the reader is open) so that cleanup never
    /// deletes a segment the reader still needs.
    pub async fn open_reader(&self, from: LogMessageId, name: &str) -> Result<LogReader> {
        self.shared.check_open()?;
        LogReader::open(self.clone(), from, name).await
    }

    /// Marks every entry up to and including `upto` as truncated. Readers from `EARLIEST` start after it;
    /// cleanup later removes segments entirely below it once they are older than the retention TTL.
    ///
    /// A point behind the current one is a no-op. A point past the end of a completed segment is refused.
    pub async fn truncate(&self, upto: LogMessageId) -> Result<()> {
        self.shared.check_open()?;
        let invalid = |reason: &str| WoodpeckerError::InvalidPosition {
            log: self.name.clone(),
            position: upto,
            reason: reason.to_owned(),
        };
        if upto.segment_id < 0 || upto.entry_id < 0 || upto.is_latest() {
            return Err(invalid("segment and entry must be concrete, non-negative ids"));
        }
        let seg = match self.shared.meta.get_segment(&self.name, upto.segment_id).await {
            Ok(s) => s.value,
            Err(MetaError::SegmentNotFound { .. }) => return Err(invalid("the segment does not exist")),
            Err(e) => return Err(e.into()),
        };
        if seg.state() != SegmentState::Active && upto.entry_id > seg.last_entry_id {
            return Err(invalid(&format!("the segment ends at entry {}", seg.last_entry_id)));
        }
        if seg.state() == SegmentState::Active {
            // Truncating past what was written would hide entries written later, unread.
            let end = self.shared.backend.visible_end(self.located(&seg)).await?;
            if upto.entry_id > end {
                return Err(invalid(&format!("the segment holds entries up to {end} so far")));
            }
        }
        for _ in 0..10 {
            let Versioned { value: mut meta, revision, .. } = self.shared.meta.get_log(&self.name).await?;
            let current = LogMessageId::new(meta.truncated_segment_id, meta.truncated_entry_id);
            if meta.truncated_segment_id >= 0 && upto <= current {
                return Ok(());
            }
            meta.truncated_segment_id = upto.segment_id;
            meta.truncated_entry_id = upto.entry_id;
            meta.modification_timestamp = (now_ms() / 1000) as u64;
            match self.shared.meta.update_log(&self.name, &meta, revision).await {
                Ok(_) => return Ok(()),
                Err(MetaError::RevisionConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(WoodpeckerError::Meta(MetaError::RevisionConflict { key: format!("logs/{}", self.name) }))
    }

    /// The truncation point, or `None` when the log was never truncated.
    pub async fn truncated_position(&self) -> Result<Option<LogMessageId>> {
        self.shared.check_open()?;
        let meta = self.shared.meta.get_log(&self.name).await?.value;
        Ok((meta.truncated_segment_id >= 0)
            .then(|| LogMessageId::new(meta.truncated_segment_id, meta.truncated_entry_id)))
    }

    /// Runs one maintenance pass now: marks truncated segments, compacts completed ones (object storage),
    /// and deletes truncated segments older than `woodpecker.logstore.retentionPolicy.ttl` that no open
    /// reader needs. Writers run this periodically (`woodpecker.client.auditor.maxInterval`).
    pub async fn run_maintenance(&self) -> Result<MaintenanceReport> {
        self.shared.check_open()?;
        maintenance::run_once(self).await
    }
}
