//! Where segment data lives: object keys (object storage) and file paths (local storage).
//!
//! ```text
//! object storage, bucket = minio.bucketName, R = minio.rootPath
//!   R/<logId>/<segId>/0.blk 1.blk …   blocks, created If-None-Match
//!   R/<logId>/<segId>/<n>.blk          a fence object ("F", x-amz-meta-fenced: true) ends the segment
//!   R/<logId>/<segId>/footer.blk       index records + footer, written by finalize
//!   R/<logId>/<segId>/m_<n>.blk        merged blocks after compaction
//!   R/<logId>/<segId>/write.lock       held by the writer of a new segment
//! local storage, S = storage.rootPath
//!   S/R/<logId>/<segId>/data.log       header, blocks, index, footer in one file
//!   S/R/<logId>/<segId>/write.lock     flock'ed by the writer
//!   S/R/<logId>/<segId>/write.fence    present once a new writer fenced the segment
//! ```

use crate::ids::{LogId, SegmentId};

/// Joins `root` and `rest` with a single `/`, treating an empty root as "no prefix".
fn join(root: &str, rest: &str) -> String {
    let root = root.trim_matches('/');
    if root.is_empty() { rest.to_string() } else { format!("{root}/{rest}") }
}

/// `R/<logId>/` — everything stored for one log.
pub fn log_prefix(root: &str, log_id: LogId) -> String {
    join(root, &format!("{log_id}/"))
}

/// `R/<logId>/<segId>/` — everything stored for one segment.
pub fn segment_prefix(root: &str, log_id: LogId, segment_id: SegmentId) -> String {
    join(root, &format!("{log_id}/{segment_id}/"))
}

/// `R/<logId>/<segId>/<blockId>.blk`.
pub fn block_key(root: &str, log_id: LogId, segment_id: SegmentId, block_id: i64) -> String {
    format!("{}{block_id}.blk", segment_prefix(root, log_id, segment_id))
}

/// `R/<logId>/<segId>/m_<n>.blk`.
pub fn merged_block_key(root: &str, log_id: LogId, segment_id: SegmentId, merged_id: i64) -> String {
    format!("{}m_{merged_id}.blk", segment_prefix(root, log_id, segment_id))
}

/// `R/<logId>/<segId>/footer.blk`.
pub fn footer_key(root: &str, log_id: LogId, segment_id: SegmentId) -> String {
    format!("{}footer.blk", segment_prefix(root, log_id, segment_id))
}

/// `R/<logId>/<segId>/write.lock`.
pub fn write_lock_key(root: &str, log_id: LogId, segment_id: SegmentId) -> String {
    format!("{}write.lock", segment_prefix(root, log_id, segment_id))
}

/// What kind of object a key inside a segment prefix names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentObject {
    /// `<n>.blk`.
    Block(i64),
    /// `m_<n>.blk`.
    Merged(i64),
    /// `footer.blk`.
    Footer,
    /// `write.lock`.
    WriteLock,
}

/// Classifies the last path component of a key in a segment prefix; `None` for anything else.
pub fn parse_segment_object(key: &str) -> Option<SegmentObject> {
    let name = key.rsplit('/').next()?;
    match name {
        "footer.blk" => Some(SegmentObject::Footer),
        "write.lock" => Some(SegmentObject::WriteLock),
        _ => {
            let stem = name.strip_suffix(".blk")?;
            if let Some(m) = stem.strip_prefix("m_") {
                return m.parse().ok().filter(|n: &i64| *n >= 0).map(SegmentObject::Merged);
            }
            if stem.bytes().all(|b| b.is_ascii_digit()) { stem.parse().ok().map(SegmentObject::Block) } else { None }
        }
    }
}

/// Relative directory of a segment under `storage.rootPath` for local storage: `R/<logId>/<segId>`.
pub fn local_segment_dir(root: &str, log_id: LogId, segment_id: SegmentId) -> String {
    join(root, &format!("{log_id}/{segment_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_upstream_layout() {
        assert_eq!(block_key("files", 3, 0, 12), "files/3/0/12.blk");
        assert_eq!(block_key("", 3, 0, 12), "3/0/12.blk");
        assert_eq!(block_key("/a/b/", 1, 2, 0), "a/b/1/2/0.blk");
        assert_eq!(merged_block_key("files", 3, 1, 0), "files/3/1/m_0.blk");
        assert_eq!(footer_key("files", 3, 1), "files/3/1/footer.blk");
        assert_eq!(write_lock_key("files", 3, 1), "files/3/1/write.lock");
        assert_eq!(log_prefix("files", 3), "files/3/");
        assert_eq!(local_segment_dir("files", 3, 1), "files/3/1");
    }

    #[test]
    fn classifies_segment_objects() {
        assert_eq!(parse_segment_object("files/3/0/12.blk"), Some(SegmentObject::Block(12)));
        assert_eq!(parse_segment_object("files/3/0/m_2.blk"), Some(SegmentObject::Merged(2)));
        assert_eq!(parse_segment_object("files/3/0/footer.blk"), Some(SegmentObject::Footer));
        assert_eq!(parse_segment_object("files/3/0/write.lock"), Some(SegmentObject::WriteLock));
        assert_eq!(parse_segment_object("files/3/0/x.blk"), None);
        assert_eq!(parse_segment_object("files/3/0/-1.blk"), None);
        assert_eq!(parse_segment_object("files/3/0/m_x.blk"), None);
    }
}
