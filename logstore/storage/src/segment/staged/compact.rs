//! Compaction of a staged segment: its finalized local copy becomes merged blocks in object storage.
//!
//! ```text
//!  data.log  [H][b0][b1][b2][b3]…[Index][Footer LAC=k]      local, finalized by CompleteSegment(k)
//!               └──┬──┘ └──┬──┘
//!  objects      m_0.blk  m_1.blk  …  footer.blk            entries 0..=k only; footer.blk uploaded last
//! ```
//!
//! Rules, each one a way upstream v0.1.35 could seal a segment that readers cannot read:
//! - only a **finalized** copy is compacted, and only when its blocks hold every entry up to the footer's
//!   LAC; a replica that missed some refuses ([`CompactError::MissingEntries`]) so the client asks the next
//!   replica — never a success with nothing (or too little) uploaded;
//! - merged blocks stop at the LAC: entries past it were never acknowledged;
//! - `footer.blk` is uploaded after every `m_<n>.blk`: it is the commit point the direct reader trusts;
//! - an existing compacted `footer.blk` makes the call a no-op that reports the stored size (idempotent);
//! - an empty segment (LAC −1) becomes a footer-only object, so readers get end-of-segment;
//! - every source block's CRC is verified before its records are copied under a fresh block CRC.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use thiserror::Error;
use tracing::Instrument;
use woodpecker_core::codec::{DecodedBlock, FLAG_COMPACTED, IndexRecord};
use woodpecker_core::ids::EntryId;
use woodpecker_core::keys;

use crate::object::{ObjectError, ObjectStorage};
use crate::segment::SegmentError;
use crate::segment::SegmentRef;
use crate::segment::local::LocalSegmentBackend;
use crate::segment::object::{BlockMeta, decode_footer_object, encode_block_object, encode_footer_object};

/// How merged blocks are cut and uploaded (`woodpecker.logstore.segmentCompactionPolicy`).
#[derive(Debug, Clone, Copy)]
pub struct CompactOptions {
    /// Target size of a merged block (`maxBytes`): a group closes before it would reach it.
    pub max_bytes: u64,
    /// Merged blocks uploaded at once (`maxParallelUploads`).
    pub max_parallel_uploads: usize,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self { max_bytes: 2 * 1024 * 1024, max_parallel_uploads: 4 }
    }
}

/// What a compaction left in object storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Bytes of the merged blocks (the segment's size from now on).
    pub size: u64,
    /// Number of merged blocks.
    pub merged_blocks: usize,
    /// The LAC the footer records.
    pub lac: EntryId,
    /// A compacted footer was already there; nothing was uploaded.
    pub already: bool,
}

/// Why a staged segment was not compacted.
#[derive(Debug, Error)]
pub enum CompactError {
    /// This node has no `data.log` for the segment.
    #[error("{segment}: no local copy on this node")]
    NoLocalCopy {
        /// The segment.
        segment: SegmentRef,
    },
    /// The local copy has no footer yet (CompleteSegment has not run here).
    #[error("{segment}: the local copy is not finalized")]
    NotFinalized {
        /// The segment.
        segment: SegmentRef,
    },
    /// The local copy ends before the footer's LAC: another replica holds the rest.
    #[error("{segment}: the local copy ends at entry {local_last} but the LAC is {lac}")]
    MissingEntries {
        /// The segment.
        segment: SegmentRef,
        /// Footer LAC.
        lac: EntryId,
        /// Last entry held here.
        local_last: EntryId,
    },
    /// Reading the local copy failed (corruption included).
    #[error(transparent)]
    Local(#[from] SegmentError),
    /// Object storage failed.
    #[error("{segment}: uploading to {key}: {source}")]
    Upload {
        /// The segment.
        segment: SegmentRef,
        /// The object.
        key: String,
        /// The store's error.
        #[source]
        source: ObjectError,
    },
}

impl CompactError {
    /// Whether the same call may succeed later (transient storage failures).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Upload { source, .. } => source.is_retryable(),
            Self::Local(e) => e.is_retryable(),
            Self::NotFinalized { .. } => true,
            Self::NoLocalCopy { .. } | Self::MissingEntries { .. } => false,
        }
    }
}

/// Compacts `segment` of `local` into `store` under `root_path` (the request's; keys
/// `<root_path>/<logId>/<segId>/m_<n>.blk` and `footer.blk`).
pub async fn compact_segment(
    local: &LocalSegmentBackend,
    segment: SegmentRef,
    store: &dyn ObjectStorage,
    root_path: &str,
    opts: CompactOptions,
) -> Result<Compacted, CompactError> {
    let footer_key = keys::footer_key(root_path, segment.log_id, segment.segment_id);
    let upload_err = |key: &str| {
        let key = key.to_owned();
        move |source| CompactError::Upload { segment, key, source }
    };
    match store.get(&footer_key, None).await {
        Ok(body) => {
            let footer = decode_footer_object(&footer_key, &body)?;
            if footer.record.is_compacted() {
                return Ok(Compacted {
                    size: footer.record.total_size,
                    merged_blocks: footer.index.len(),
                    lac: footer.record.lac,
                    already: true,
                });
            }
            // An uncompacted footer is not ours to keep (embedded writers never share a staged log's keys).
        }
        Err(ObjectError::NotFound { .. }) => {}
        Err(e) => return Err(upload_err(&footer_key)(e)),
    }
    let Some((scanned, file)) = local.scan(segment).await? else {
        return Err(CompactError::NoLocalCopy { segment });
    };
    let Some(footer) = scanned.footer else {
        return Err(CompactError::NotFinalized { segment });
    };
    let lac = footer.lac;
    let local_last = scanned.last_entry_id();
    if lac > local_last {
        return Err(CompactError::MissingEntries { segment, lac, local_last });
    }
    let groups = plan_groups(&scanned.index, lac, opts.max_bytes);
    let merged: Vec<BlockMeta> = stream::iter(groups.into_iter().enumerate())
        .map(|(n, group)| {
            let file = file.clone();
            let empty = tracing::field::Empty;
            let span = tracing::debug_span!("upload_merged_block", %segment, block = n, first = empty, last = empty, bytes = empty);
            async move {
                let mut blocks: Vec<DecodedBlock> = Vec::with_capacity(group.len());
                for rec in group {
                    blocks.push(local.read_block(segment, Arc::clone(&file), rec).await?);
                }
                let first = blocks.first().map_or(0, |b| b.header.first_entry_id);
                let entries: Vec<Bytes> = blocks
                    .into_iter()
                    .flat_map(|b| {
                        let f = b.header.first_entry_id;
                        b.entries.into_iter().enumerate().map(move |(j, e)| (f + j as i64, e))
                    })
                    .filter(|(id, _)| *id <= lac)
                    .map(|(_, e)| e)
                    .collect();
                let body = encode_block_object(n as i64, first, &entries, FLAG_COMPACTED);
                let meta = BlockMeta {
                    first_entry_id: first,
                    last_entry_id: first + entries.len() as i64 - 1,
                    size: body.len() as u64,
                };
                let span = tracing::Span::current();
                span.record("first", meta.first_entry_id).record("last", meta.last_entry_id).record("bytes", meta.size);
                let key = keys::merged_block_key(root_path, segment.log_id, segment.segment_id, n as i64);
                // Plain put: an object left by an interrupted compaction is rebuilt from the same source.
                store.put(&key, body).await.map_err(upload_err(&key))?;
                Ok::<_, CompactError>(meta)
            }
            .instrument(span)
        })
        .buffered(opts.max_parallel_uploads.max(1))
        .try_collect()
        .await?;
    // Staged footers count entries, not blocks, in totalRecords (upstream's staged writer).
    let total_records = merged.last().map_or(0, |m| (m.last_entry_id + 1) as u32);
    let body = encode_footer_object(&merged, FLAG_COMPACTED, Some(total_records), lac);
    let span = tracing::debug_span!("upload_footer", %segment, lac, merged_blocks = merged.len(), bytes = body.len());
    store.put(&footer_key, body).instrument(span).await.map_err(upload_err(&footer_key))?;
    Ok(Compacted { size: merged.iter().map(|m| m.size).sum(), merged_blocks: merged.len(), lac, already: false })
}

/// Groups the local blocks holding entries `0..=lac` into merged blocks: a group closes when adding the
/// next block would reach `max_bytes` (upstream's plan), and every group holds at least one block.
fn plan_groups(index: &[IndexRecord], lac: EntryId, max_bytes: u64) -> Vec<Vec<IndexRecord>> {
    let mut groups: Vec<Vec<IndexRecord>> = Vec::new();
    let mut size = 0u64;
    for rec in index.iter().filter(|r| r.first_entry_id <= lac) {
        if let Some(g) = groups.last_mut()
            && size + u64::from(rec.block_size) < max_bytes
        {
            g.push(*rec);
            size += u64::from(rec.block_size);
            continue;
        }
        groups.push(vec![*rec]);
        size = u64::from(rec.block_size);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: i32, first: EntryId, last: EntryId, size: u32) -> IndexRecord {
        IndexRecord { block_number: n, start_offset: 0, block_size: size, first_entry_id: first, last_entry_id: last }
    }

    #[test]
    fn groups_close_before_reaching_the_target_and_stop_at_the_lac() {
        let index = [rec(0, 0, 9, 400), rec(1, 10, 19, 400), rec(2, 20, 29, 400), rec(3, 30, 39, 400)];
        let sizes = |g: &Vec<Vec<IndexRecord>>| g.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(&plan_groups(&index, 39, 1000)), vec![2, 2]);
        assert_eq!(sizes(&plan_groups(&index, 39, 801)), vec![2, 2]);
        assert_eq!(sizes(&plan_groups(&index, 39, 800)), vec![1, 1, 1, 1], "800 would reach the target");
        assert_eq!(sizes(&plan_groups(&index, 25, 10_000)), vec![3], "block 3 starts past the LAC");
        assert!(plan_groups(&index, -1, 10_000).is_empty(), "an empty segment has no merged block");
        assert_eq!(sizes(&plan_groups(&[rec(0, 0, 0, 5000)], 0, 100)), vec![1], "a huge block is a group alone");
    }
}
