//! The `Status` codes a LogStore node answers with, exactly as upstream's Go client interprets them.
//!
//! Application errors travel in each response's `Status` with a successful gRPC status; the client
//! rebuilds its error from `code` and the wire `retriable` flag, so the server decides retryability.
//! Code 0 is success. Codes and flags follow upstream's `common/werr/errors.go` (spec service-mode.md §2.1).

use crate::logstore::Status;

/// One upstream error code with the retry flag the Go client reads from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// The numeric code.
    pub code: i32,
    /// Whether the client may retry the same call.
    pub retriable: bool,
    /// Upstream's name for it (for logs and tests).
    pub name: &'static str,
}

macro_rules! codes {
    ($($(#[$doc:meta])* $id:ident = $code:literal, $retriable:literal;)*) => {
        $( $(#[$doc])* pub const $id: Code = Code { code: $code, retriable: $retriable, name: stringify!($id) }; )*
    };
}

codes! {
    /// A plain error without a more specific code.
    UNKNOWN = 1, true;
    /// The node is shutting down or decommissioning; it takes no new appends.
    SHUTDOWN = 2002, false;
    /// The log was marked deleted on this node.
    LOG_BEING_DELETED = 2005, false;
    /// The delete marker could not be persisted.
    MARK_DELETE_FAILED = 2006, true;
    /// The data disk is above its hard watermark.
    DISK_PRESSURE = 2007, true;
    /// The request's bucket or root path is not a clean relative path.
    INVALID_ROOT_PATH = 2008, false;
    /// CompleteSegment without a writer (the client always fences first).
    PROCESSOR_NO_WRITER = 2104, false;
    /// A compaction of the segment is already running here.
    ALREADY_COMPACTING = 2110, false;
    /// The append would overflow the segment's buffer window.
    BUFFER_FULL = 2200, true;
    /// Writing or syncing the segment file failed.
    SYNC_FAILED = 2201, true;
    /// The entry id cannot be placed in this segment.
    INVALID_ENTRY_ID = 2215, false;
    /// The segment was finalized; it takes no more appends.
    FINALIZED = 2216, false;
    /// The writer is closed.
    ALREADY_CLOSED = 2217, false;
    /// The segment already has data from an earlier writer (recovery mode): no new appends.
    IN_RECOVERY_MODE = 2218, false;
    /// The segment is being finalized.
    FINALIZING = 2219, false;
    /// The segment is finished on this node and the read is past its end.
    END_OF_FILE = 2310, false;
    /// The segment has no data on this node yet.
    NO_BLOCK_FOUND = 2311, false;
    /// A request without node filters.
    NO_FILTER = 4000, false;
    /// Not enough live nodes for the requested quorum.
    INSUFFICIENT_QUORUM = 4002, true;
    /// An append without payload.
    EMPTY_PAYLOAD = 8101, false;
    /// The entry is not here (yet): poll, or ask another replica.
    ENTRY_NOT_FOUND = 8102, true;
    /// The storage does not take writes.
    STORAGE_NOT_WRITABLE = 8103, false;
    /// The segment was fenced by a newer writer.
    SEGMENT_FENCED = 8104, false;
    /// The segment is unknown here.
    SEGMENT_NOT_FOUND = 8105, true;
    /// This copy does not hold the entries up to the LAC (compaction refused).
    INVALID_LAC_ALIGNMENT = 8107, false;
}

impl Code {
    /// A `Status` with this code and `reason`.
    pub fn status(self, reason: impl Into<String>) -> Status {
        Status { code: self.code, retriable: self.retriable, reason: reason.into(), ..Status::default() }
    }
}

/// The success status (code 0).
pub fn ok() -> Status {
    Status::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_retry_flags_match_what_the_go_client_expects() {
        let table = [
            (SHUTDOWN, 2002, false),
            (DISK_PRESSURE, 2007, true),
            (BUFFER_FULL, 2200, true),
            (FINALIZED, 2216, false),
            (IN_RECOVERY_MODE, 2218, false),
            (END_OF_FILE, 2310, false),
            (INSUFFICIENT_QUORUM, 4002, true),
            (ENTRY_NOT_FOUND, 8102, true),
            (SEGMENT_FENCED, 8104, false),
            (INVALID_LAC_ALIGNMENT, 8107, false),
        ];
        for (c, code, retriable) in table {
            let s = c.status("why");
            assert_eq!((s.code, s.retriable, s.reason.as_str()), (code, retriable, "why"), "{}", c.name);
        }
        assert_eq!(ok().code, 0);
    }
}
