//! Positions in a log.
//!
//! A log is a sequence of segments `0, 1, 2, …`; each segment holds entries `0, 1, 2, …`. A position is the
//! pair `(segment_id, entry_id)` and orders lexicographically, which is the order entries were written in.

use std::fmt;

/// Identifier of a log, allocated from the metadata store (first log is 1).
pub type LogId = i64;
/// Identifier of a segment inside a log, dense from 0.
pub type SegmentId = i64;
/// Identifier of an entry inside a segment, dense from 0.
pub type EntryId = i64;

/// A position in a log: which segment, which entry of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogMessageId {
    /// Segment the entry belongs to.
    pub segment_id: SegmentId,
    /// Entry inside the segment.
    pub entry_id: EntryId,
}

impl LogMessageId {
    /// The first position of every log; readers opened here start after any truncation point.
    pub const EARLIEST: LogMessageId = LogMessageId { segment_id: 0, entry_id: 0 };
    /// "The tail": a reader opened here sees only entries written after it opened.
    pub const LATEST: LogMessageId = LogMessageId { segment_id: i64::MAX, entry_id: i64::MAX };

    /// A position from its two parts.
    pub const fn new(segment_id: SegmentId, entry_id: EntryId) -> Self {
        Self { segment_id, entry_id }
    }

    /// Whether this is the `LATEST` sentinel.
    pub fn is_latest(&self) -> bool {
        *self == Self::LATEST
    }
}

impl fmt::Display for LogMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.segment_id, self.entry_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_segment_then_entry() {
        let mut ids =
            vec![LogMessageId::new(1, 0), LogMessageId::new(0, 7), LogMessageId::LATEST, LogMessageId::EARLIEST];
        ids.sort();
        assert_eq!(
            ids,
            vec![LogMessageId::EARLIEST, LogMessageId::new(0, 7), LogMessageId::new(1, 0), LogMessageId::LATEST]
        );
        assert_eq!(LogMessageId::new(3, 4).to_string(), "3/4");
    }
}
