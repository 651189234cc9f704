//! Sealing segments: the writer's own seal after a roll, and the recovery of segments that a previous
//! writer left Active.
//!
//! ```text
//!  segment N: every block acknowledged ──▶ footer ──▶ Completed in metadata      (beside N+1 filling)
//!                                          └ retried with backoff until it succeeds, the writer is
//!                                            fenced, or the writer closes (then a few more attempts)
//! ```
//!
//! A seal that keeps failing leaves N Active while N+1 fills. Readers do not wait for it: a writer
//! creates N+1 only once every block of N is durable, so a reader that finds N+1 in the metadata
//! before it reads N's end knows that end is final (see `LogReader`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use woodpecker_core::ids::SegmentId;
use woodpecker_core::retry::RetryPolicy;
use woodpecker_meta::Versioned;
use woodpecker_proto::meta::{SegmentMetadata, SegmentState};
use woodpecker_storage::segment::{SegmentError, SegmentWriter};

use super::segment_meta;
use crate::error::{Result, WoodpeckerError};
use crate::handle::LogHandle;

/// Backoff between seal attempts: quick at first, then every few seconds for as long as it takes.
const SEAL_RETRY: RetryPolicy =
    RetryPolicy { max_attempts: u32::MAX, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(5) };

/// Attempts a seal still makes once the writer is closing (then the next writer's recovery seals it).
const ATTEMPTS_WHILE_CLOSING: u32 = 3;

/// A segment whose blocks are all acknowledged, ready to be sealed by its writer.
pub(crate) struct Sealable {
    pub id: SegmentId,
    pub meta: Versioned<SegmentMetadata>,
    pub writer: Arc<dyn SegmentWriter>,
    /// The last block of the segment.
    pub last_block: i64,
}

/// Why a writer's seal ended without completing the segment.
pub(crate) enum SealError {
    /// Another writer fenced or completed the segment: this writer is fenced.
    Fenced(WoodpeckerError),
    /// The writer closed (or the client shut down) while the seal kept failing; the segment stays
    /// Active for the next writer to seal.
    GaveUp(WoodpeckerError),
}

/// Seals `seg`: footer, then Completed in metadata, each retried until it succeeds. Stops early when
/// the segment turns out fenced, or a few attempts after `closing` is cancelled.
pub(crate) async fn seal_rolled(
    handle: LogHandle,
    seg: Sealable,
    closing: CancellationToken,
) -> (SegmentId, std::result::Result<(), SealError>) {
    let id = seg.id;
    let mut attempt = 0u32;
    let mut closing_attempts = 0u32;
    let mut should_retry = |attempt: u32, err: &dyn std::fmt::Display| {
        if closing.is_cancelled() {
            closing_attempts += 1;
            if closing_attempts >= ATTEMPTS_WHILE_CLOSING {
                return None;
            }
        }
        tracing::warn!(log = %handle.name, segment = id, attempt, error = %err, "sealing the segment failed; retrying");
        Some(SEAL_RETRY.delay(attempt))
    };
    let summary = loop {
        attempt += 1;
        match seg.writer.finalize(seg.last_block).await {
            Ok(s) => break s,
            Err(e) if e.is_not_writable() => return (id, Err(SealError::Fenced(e.into()))),
            Err(e) => match should_retry(attempt, &e) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return (id, Err(SealError::GaveUp(e.into()))),
            },
        }
    };
    let mut meta = seg.meta;
    loop {
        attempt += 1;
        match segment_meta::complete_segment(&handle, meta.clone(), summary.last_entry_id, summary.size, true).await {
            Ok(()) => return (id, Ok(())),
            Err(e @ WoodpeckerError::WriterFenced { .. }) => return (id, Err(SealError::Fenced(e))),
            Err(e) => match should_retry(attempt, &e) {
                Some(delay) => {
                    tokio::time::sleep(delay).await;
                    // The conflict may have been our own write: re-read before the next compare-and-swap.
                    if let Ok(fresh) = handle.shared.meta.get_segment(&handle.name, id).await {
                        meta = fresh;
                    }
                }
                None => return (id, Err(SealError::GaveUp(e))),
            },
        }
    }
}

/// Fences and completes every segment still marked Active; returns the id the new writer starts at.
///
/// With `takeover` (lock mode), an Active segment is fenced no earlier than that instant.
pub(crate) async fn recover_active_segments(
    handle: &LogHandle,
    takeover: Option<tokio::time::Instant>,
) -> Result<SegmentId> {
    let shared = &handle.shared;
    let segments = shared.meta.list_segments(&handle.name).await?;
    let next = segments.last().map(|s| s.value.seg_no + 1).unwrap_or(0);
    let active: Vec<_> = segments.into_iter().filter(|s| s.value.state() == SegmentState::Active).collect();
    if let (Some(at), false) = (takeover, active.is_empty()) {
        let wait = at.saturating_duration_since(tokio::time::Instant::now());
        tracing::info!(log = %handle.name, ?wait, "waiting out the previous lock holder's uploads before fencing");
        tokio::time::sleep_until(at).await;
    }
    for seg in active {
        let sref = handle.located(&seg.value);
        let last = shared.backend.fence(sref).await?;
        let summary = shared.backend.finalize(sref).await?;
        if last != summary.last_entry_id {
            return Err(WoodpeckerError::Segment(SegmentError::Missing {
                segment: sref,
                what: format!(
                    "a consistent end: the fence found entry {last}, the footer says {}",
                    summary.last_entry_id
                ),
            }));
        }
        segment_meta::complete_segment(handle, seg, summary.last_entry_id, summary.size, false).await?;
        tracing::info!(log = %handle.name, segment = sref.segment_id, last_entry = last, "recovered active segment");
    }
    Ok(next)
}
