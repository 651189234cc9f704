//! The log reader: reads entries in order across segments and waits at the tail for new ones.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use woodpecker_core::ids::{EntryId, LogMessageId, SegmentId};
use woodpecker_meta::{MetaError, ReaderRegistration};
use woodpecker_proto::meta::{ReaderTempInfo, SegmentState};
use woodpecker_storage::segment::{SegmentError, SegmentReader};

use crate::error::{Result, WoodpeckerError};
use crate::handle::{LogHandle, now_ms};
use crate::message::{LogMessage, decode_entry};

/// Reads one log from a position onwards. Never returns "end of log": at the tail it waits.
#[derive(Debug)]
pub struct LogReader {
    handle: LogHandle,
    name: String,
    next: LogMessageId,
    current: Option<(SegmentId, Box<dyn SegmentReader>)>,
    buffer: VecDeque<(EntryId, Bytes)>,
    buffered_segment: SegmentId,
    /// The position at which the last read of an Active segment found nothing.
    empty_at: Option<LogMessageId>,
    registration: Option<ReaderRegistration>,
    info: ReaderTempInfo,
    last_info_update: Instant,
}

impl LogReader {
    pub(crate) async fn open(handle: LogHandle, from: LogMessageId, base: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = if base.is_empty() {
            format!("{}-r-{nanos}", handle.name)
        } else {
            format!("{}-r-{base}-{nanos}", handle.name)
        };
        let start = resolve_start(&handle, from).await?;
        let info = ReaderTempInfo {
            reader_name: name.clone(),
            open_timestamp: now_ms() as u64,
            log_id: handle.log_id,
            open_segment_id: start.segment_id,
            open_entry_id: start.entry_id,
            recent_read_segment_id: start.segment_id,
            recent_read_entry_id: start.entry_id,
            recent_read_timestamp: now_ms() as u64,
        };
        let registration = Some(handle.shared.meta.register_reader(handle.log_id, &info).await?);
        Ok(Self {
            handle,
            name,
            next: start,
            current: None,
            buffer: VecDeque::new(),
            buffered_segment: -1,
            empty_at: None,
            registration,
            info,
            last_info_update: Instant::now(),
        })
    }

    /// The reader's name as recorded in the metadata store.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The position the next `read_next` will return (or wait for).
    pub fn position(&self) -> LogMessageId {
        self.next
    }

    /// Returns the next entry, waiting for it if the reader is at the tail of the log.
    ///
    /// Cancel-safe: dropping the future (e.g. under `tokio::time::timeout`) loses nothing.
    pub async fn read_next(&mut self) -> Result<LogMessage> {
        if self.registration.is_none() {
            return Err(WoodpeckerError::ReaderClosed { reader: self.name.clone() });
        }
        let poll = self.handle.shared.cfg.woodpecker.client.reader.poll_interval;
        loop {
            self.handle.shared.check_open()?;
            if let Some((entry_id, bytes)) = self.buffer.front() {
                let id = LogMessageId::new(self.buffered_segment, *entry_id);
                // Decoded before it is taken: an undecodable entry stays next, so every later call reports
                // it again instead of skipping it.
                let (payload, properties) = decode_entry(bytes.clone()).map_err(|e| WoodpeckerError::BadEntry {
                    log: self.handle.name.clone(),
                    position: id,
                    reason: e.to_string(),
                })?;
                self.buffer.pop_front();
                self.next = LogMessageId::new(id.segment_id, id.entry_id + 1);
                self.note_progress(id).await;
                return Ok(LogMessage { id, payload, properties });
            }
            if !self.fill().await? {
                tokio::time::sleep(poll).await;
            }
        }
    }

    /// Tries to buffer more entries. `Ok(false)` means nothing is available yet.
    async fn fill(&mut self) -> Result<bool> {
        let shared = self.handle.shared.clone();
        let seg_id = self.next.segment_id;
        let meta = match shared.meta.get_segment(&self.handle.name, seg_id).await {
            Ok(m) => m.value,
            Err(MetaError::SegmentNotFound { .. }) => {
                // Segments are dense: a later one existing means this one was removed, which only cleanup
                // does, and only below the truncation point. Anything else is lost data, never skipped.
                let later = shared
                    .meta
                    .list_segments(&self.handle.name)
                    .await?
                    .into_iter()
                    .map(|s| s.value.seg_no)
                    .find(|id| *id > seg_id);
                let Some(later) = later else { return Ok(false) };
                let log = shared.meta.get_log(&self.handle.name).await?.value;
                if seg_id >= log.truncated_segment_id {
                    return Err(WoodpeckerError::Segment(SegmentError::Missing {
                        segment: self.handle.seg_ref(seg_id),
                        what: format!(
                            "the segment's metadata (segment {later} exists, and the log is truncated only up to \
                             segment {})",
                            log.truncated_segment_id
                        ),
                    }));
                }
                self.move_to(LogMessageId::new(later, 0));
                return Ok(true);
            }
            Err(e) => return Err(e.into()),
        };
        let sref = self.handle.located(&meta);
        let state = meta.state();
        let done = state != SegmentState::Active;
        // An Active segment whose successor exists is final: its writer created the successor only once
        // every block of this one was durable (its seal may still be running, or failing). Checked before
        // reading, so that "nothing more here" below really is the segment's end.
        // Only asked once a read of this segment came back empty (the reader is at its end so far).
        // Not where replicas learn the acknowledged end asynchronously (service mode): there an empty read
        // is not the end, and the reader waits for the segment to be Completed.
        let superseded = !done
            && shared.backend.active_reads_are_complete()
            && self.empty_at == Some(self.next)
            && self.successor_exists(seg_id).await?;
        if done && self.next.entry_id > meta.last_entry_id {
            self.move_to(LogMessageId::new(seg_id + 1, 0));
            return Ok(true);
        }
        let reader = match &mut self.current {
            Some((id, r)) if *id == seg_id => r,
            _ => {
                let r = shared.backend.open_reader(sref).await?;
                self.current = Some((seg_id, r));
                match &mut self.current {
                    Some((_, r)) => r,
                    None => return Ok(false),
                }
            }
        };
        let cfg = &shared.cfg.woodpecker;
        let batch = reader
            .read_batch(
                self.next.entry_id,
                cfg.client.reader.batch_entries.max(1) as usize,
                cfg.logstore.segment_read_policy.max_batch_size,
            )
            .await?;
        let from = self.next.entry_id;
        let mut expected = from;
        for (id, bytes) in batch.entries {
            if id < from {
                continue;
            }
            if done && id > meta.last_entry_id {
                break;
            }
            if id != expected {
                // A gap would silently lose entries: refuse to go on.
                return Err(WoodpeckerError::Segment(SegmentError::Missing {
                    segment: self.handle.seg_ref(seg_id),
                    what: format!("entry {expected} (the storage returned entry {id} next)"),
                }));
            }
            expected += 1;
            self.buffer.push_back((id, bytes));
        }
        self.buffered_segment = seg_id;
        if !self.buffer.is_empty() {
            self.empty_at = None;
            return Ok(true);
        }
        self.empty_at = Some(self.next);
        if batch.end_of_segment || superseded {
            if done && meta.last_entry_id >= from {
                return Err(WoodpeckerError::Segment(SegmentError::Missing {
                    segment: self.handle.seg_ref(seg_id),
                    what: format!("entries {from}..={} recorded in metadata", meta.last_entry_id),
                }));
            }
            self.move_to(LogMessageId::new(seg_id + 1, 0));
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether segment `seg_id + 1` exists in the metadata.
    async fn successor_exists(&self, seg_id: SegmentId) -> Result<bool> {
        match self.handle.shared.meta.get_segment(&self.handle.name, seg_id + 1).await {
            Ok(_) => Ok(true),
            Err(MetaError::SegmentNotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn move_to(&mut self, pos: LogMessageId) {
        self.next = pos;
        self.current = None;
        self.buffer.clear();
    }

    /// Records the reader's position so cleanup keeps the segments it still needs.
    async fn note_progress(&mut self, id: LogMessageId) {
        let refresh = self.handle.shared.cfg.woodpecker.client.reader.info_refresh_interval;
        let segment_changed = id.segment_id != self.info.recent_read_segment_id;
        self.info.recent_read_segment_id = id.segment_id;
        self.info.recent_read_entry_id = id.entry_id;
        if segment_changed || self.last_info_update.elapsed() >= refresh {
            self.info.recent_read_timestamp = now_ms() as u64;
            if let Some(reg) = &self.registration
                && let Err(e) = reg.update(&self.info).await
            {
                tracing::warn!(reader = %self.name, error = %e, "cannot record reader position");
            }
            self.last_info_update = Instant::now();
        }
    }

    /// Closes the reader and removes its registration.
    pub async fn close(&mut self) -> Result<()> {
        self.current = None;
        if let Some(reg) = self.registration.take() {
            reg.close().await?;
        }
        Ok(())
    }
}

/// Turns `EARLIEST` / `LATEST` / an explicit position into the first position to read.
async fn resolve_start(handle: &LogHandle, from: LogMessageId) -> Result<LogMessageId> {
    let shared = &handle.shared;
    if from == LogMessageId::EARLIEST {
        let meta = shared.meta.get_log(&handle.name).await?.value;
        if meta.truncated_segment_id >= 0 {
            return Ok(LogMessageId::new(meta.truncated_segment_id, meta.truncated_entry_id + 1));
        }
        return Ok(from);
    }
    if !from.is_latest() {
        if from.segment_id < 0 || from.entry_id < 0 {
            return Err(WoodpeckerError::InvalidPosition {
                log: handle.name.clone(),
                position: from,
                reason: "ids must not be negative".into(),
            });
        }
        return Ok(from);
    }
    let segments = shared.meta.list_segments(&handle.name).await?;
    let Some(last) = segments.last() else { return Ok(LogMessageId::EARLIEST) };
    let seg = &last.value;
    if seg.state() != SegmentState::Active {
        return Ok(LogMessageId::new(seg.seg_no + 1, 0));
    }
    // The newest segment is being written: its end is wherever its durable data ends now (headers only).
    let end = shared.backend.visible_end(handle.located(seg)).await?;
    Ok(LogMessageId::new(seg.seg_no, end + 1))
}

#[cfg(test)]
mod send_tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// Applications spawn readers on multi-threaded runtimes: the futures of a reader must be `Send`.
    #[allow(dead_code, clippy::diverging_sub_expression)]
    async fn reader_futures_are_send(reader: &mut LogReader) {
        {
            let read = reader.read_next();
            assert_send(&read);
        }
        let close = reader.close();
        assert_send(&close);
    }
}
