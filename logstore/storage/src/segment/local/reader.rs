//! The `data.log` reader: follows a file while it is written, serves a finalized one from its index.

use std::fs::File;
use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use woodpecker_core::codec::{DecodedBlock, HEADER_RECORD_LEN, IndexRecord};
use woodpecker_core::ids::EntryId;

use super::format::{self, HeaderState, Step};
use super::{Flock, SegmentPaths, blocking};
use crate::segment::{ReadBatch, SegmentError, SegmentReader};

/// Reads one local segment incrementally; never takes the writer's lock while the writer may append.
#[derive(Debug)]
pub struct LocalSegmentReader {
    paths: Arc<SegmentPaths>,
    /// `None` only while a read runs on the blocking pool (or after that task died).
    state: Option<Box<ReaderState>>,
}

#[derive(Debug, Default)]
struct ReaderState {
    file: Option<Arc<File>>,
    /// Complete, verified blocks known so far, in order.
    blocks: Vec<IndexRecord>,
    /// Where the next block starts (0: the file header has not been seen yet).
    scan_off: u64,
    /// File length at the last footer probe; an unchanged length cannot have gained a footer.
    probed_len: Option<u64>,
    /// A footer was read: `blocks` is the whole segment.
    finalized: bool,
    /// The segment is fenced and was rescanned under the lock: `blocks` is the whole segment.
    ended: bool,
}

/// Soft limits of one batch.
struct Limits {
    entries: usize,
    bytes: u64,
}

/// Entries gathered for a batch.
#[derive(Default)]
struct Batch {
    entries: Vec<(EntryId, Bytes)>,
    bytes: u64,
}

impl Batch {
    fn full(&self, l: &Limits) -> bool {
        !self.entries.is_empty() && (self.entries.len() >= l.entries || self.bytes >= l.bytes)
    }

    /// Adds the entries of `block` that are `>= from`.
    fn add(&mut self, block: &DecodedBlock, from: EntryId) {
        for (i, e) in block.entries.iter().enumerate() {
            let id = block.header.first_entry_id + i as i64;
            if id >= from {
                self.bytes += e.len() as u64;
                self.entries.push((id, e.clone()));
            }
        }
    }
}

/// Why block discovery stopped.
#[derive(PartialEq, Eq)]
enum Stop {
    /// The batch is full; more blocks may follow.
    Full,
    /// No further complete block in the file (yet).
    Tail,
}

impl LocalSegmentReader {
    /// A reader that has looked at nothing yet; the file need not exist.
    pub(super) fn new(paths: Arc<SegmentPaths>) -> Self {
        Self { paths, state: Some(Box::default()) }
    }
}

impl ReaderState {
    fn read(&mut self, p: &SegmentPaths, from: EntryId, limits: &Limits) -> Result<ReadBatch, SegmentError> {
        let mut batch = Batch::default();
        let file = match self.open(p)? {
            Some(f) => f,
            // No file yet: the writer has not created it.
            None if !p.is_fenced()? => return Ok(ReadBatch::default()),
            // Fenced: look once more, the file may have been written between the open and the fence
            // check. If it is still missing, no writer can add it any entry now.
            None => match self.open(p)? {
                Some(f) => f,
                None => return Ok(ReadBatch { entries: Vec::new(), end_of_segment: true }),
            },
        };
        let len = file.metadata().map_err(p.io("stat", &p.data))?.len();
        self.probe_footer(p, &file, len)?;
        self.read_known(p, &file, from, limits, &mut batch)?;
        if !self.finalized && !self.ended && !batch.full(limits) {
            // Lock-free discovery stops at what the writer published as fsynced.
            let visible = match p.durable_length()? {
                Some(durable) => len.min(durable),
                None => len,
            };
            let stop = self.discover(p, &file, visible, from, limits, &mut batch)?;
            if stop == Stop::Tail && p.is_fenced()? {
                self.confirm_fenced_end(p, &file, from, limits, &mut batch)?;
            }
        }
        let last = self.blocks.last().map_or(-1, |r| r.last_entry_id);
        let next = batch.entries.last().map_or(from, |(id, _)| id + 1);
        Ok(ReadBatch { entries: batch.entries, end_of_segment: (self.finalized || self.ended) && next > last })
    }

    fn open(&mut self, p: &SegmentPaths) -> Result<Option<Arc<File>>, SegmentError> {
        if let Some(f) = &self.file {
            return Ok(Some(f.clone()));
        }
        match File::open(&p.data) {
            Ok(f) => {
                let f = Arc::new(f);
                self.file = Some(f.clone());
                Ok(Some(f))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(p.io("open", &p.data)(e)),
        }
    }

    /// Switches to the footer's index once the file ends with one.
    fn probe_footer(&mut self, p: &SegmentPaths, file: &File, len: u64) -> Result<(), SegmentError> {
        if self.finalized || self.probed_len == Some(len) {
            return Ok(());
        }
        self.probed_len = Some(len);
        if let Some(footer) = format::read_footer(file, len).map_err(|e| p.scan_err(e))? {
            // Blocks already returned are a prefix of the index: both describe the same bytes.
            self.blocks = footer.index;
            self.finalized = true;
        }
        Ok(())
    }

    /// Adds entries `>= from` from blocks already known, reading and verifying each again.
    fn read_known(
        &self,
        p: &SegmentPaths,
        file: &File,
        from: EntryId,
        limits: &Limits,
        batch: &mut Batch,
    ) -> Result<(), SegmentError> {
        let first = self.blocks.partition_point(|r| r.last_entry_id < from);
        for r in &self.blocks[first..] {
            if batch.full(limits) {
                break;
            }
            let block = format::read_indexed_block(file, r).map_err(|e| p.scan_err(e))?;
            batch.add(&block, from);
        }
        Ok(())
    }

    /// Verifies blocks after the known ones, remembering them and adding entries `>= from`.
    fn discover(
        &mut self,
        p: &SegmentPaths,
        file: &File,
        len: u64,
        from: EntryId,
        limits: &Limits,
        batch: &mut Batch,
    ) -> Result<Stop, SegmentError> {
        if self.scan_off == 0 {
            match format::read_header(file, len).map_err(|e| p.scan_err(e))? {
                HeaderState::Absent => return Ok(Stop::Tail),
                HeaderState::Present => self.scan_off = HEADER_RECORD_LEN as u64,
            }
        }
        loop {
            if batch.full(limits) {
                return Ok(Stop::Full);
            }
            let next_block = self.blocks.len() as i64;
            let next_entry = self.blocks.last().map_or(0, |r| r.last_entry_id + 1);
            match format::next_block(file, len, self.scan_off, next_block, next_entry).map_err(|e| p.scan_err(e))? {
                Step::Block(block, index) => {
                    self.scan_off += u64::from(index.block_size);
                    self.blocks.push(index);
                    if index.last_entry_id >= from {
                        batch.add(&block, from);
                    }
                }
                // The index of a finalize in progress: its footer shows up on a later read.
                Step::Tail | Step::IndexStart => return Ok(Stop::Tail),
            }
        }
    }

    /// The segment is fenced: wait out an append that passed its fence check before the flag appeared
    /// (a shared flock, held only for this one rescan), then treat the file's complete blocks as final.
    fn confirm_fenced_end(
        &mut self,
        p: &SegmentPaths,
        file: &File,
        from: EntryId,
        limits: &Limits,
        batch: &mut Batch,
    ) -> Result<(), SegmentError> {
        let lock = match File::open(&p.lock) {
            Ok(l) => Some(l),
            // No lock file: no writer ever appended.
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(p.io("open", &p.lock)(e)),
        };
        let _guard = match &lock {
            Some(l) => Some(Flock::shared(l).map_err(p.io("lock", &p.lock))?),
            None => None,
        };
        let len = file.metadata().map_err(p.io("stat", &p.data))?.len();
        // A finalize may have replaced a torn tail with index + footer of the same length.
        self.probed_len = None;
        self.probe_footer(p, file, len)?;
        if self.finalized {
            return self.read_known(p, file, from, limits, batch);
        }
        if self.discover(p, file, len, from, limits, batch)? == Stop::Tail {
            self.ended = true;
        }
        Ok(())
    }
}

#[async_trait]
impl SegmentReader for LocalSegmentReader {
    async fn read_batch(
        &mut self,
        from: EntryId,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<ReadBatch, SegmentError> {
        let mut state = self.state.take().unwrap_or_default();
        let paths = self.paths.clone();
        let limits = Limits { entries: max_entries.max(1), bytes: max_bytes.max(1) };
        let (state, result) = blocking(self.paths.segment, move || {
            let r = state.read(&paths, from, &limits);
            Ok((state, r))
        })
        .await?;
        self.state = Some(state);
        result
    }
}
