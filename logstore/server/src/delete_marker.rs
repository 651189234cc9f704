//! Logs marked deleted on this node: `<dataDir>/.deleted/<bucket>/<rootPath>/<logId>.json`
//! (upstream's path and JSON shape), written durably before `MarkLogDeleted` answers and reloaded at
//! start, so a deleted log keeps being refused after a restart. Local data of a marked log is reclaimed
//! once the marker is older than the grace period.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use woodpecker_core::ids::LogId;
use woodpecker_storage::segment::staged::StagedScope;

use crate::node_state::{now_ms, write_durably};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Marker {
    bucket: String,
    root_path: String,
    #[serde(default)]
    log_id: LogId,
    #[serde(default)]
    instance: bool,
    deleted_at: i64,
}

/// The log id standing for "every log of the scope" (an instance marker).
pub const INSTANCE: LogId = -1;

/// The delete markers of this node.
#[derive(Debug)]
pub struct DeleteMarkers {
    dir: PathBuf,
    deleted: Mutex<HashSet<(StagedScope, LogId)>>,
    /// Markers whose log data is still on disk, with the time they were written.
    unreclaimed: Mutex<Vec<(StagedScope, LogId, i64)>>,
}

impl DeleteMarkers {
    /// Loads every marker under `<data_dir>/.deleted`.
    pub fn load(data_dir: &Path) -> io::Result<Self> {
        let dir = data_dir.join(".deleted");
        let mut deleted = HashSet::new();
        let mut unreclaimed = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            let entries = match fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "json") {
                    let m: Marker = serde_json::from_slice(&fs::read(&path)?)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
                    let scope = StagedScope::new(&m.bucket, &m.root_path)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
                    let log_id = if m.instance { INSTANCE } else { m.log_id };
                    unreclaimed.push((scope.clone(), log_id, m.deleted_at));
                    deleted.insert((scope, log_id));
                }
            }
        }
        Ok(Self { dir, deleted: Mutex::new(deleted), unreclaimed: Mutex::new(unreclaimed) })
    }

    /// Whether `log_id` of `scope`, or the whole scope (instance), was marked deleted.
    pub fn is_deleted(&self, scope: &StagedScope, log_id: LogId) -> bool {
        let deleted = self.deleted.lock().unwrap_or_else(PoisonError::into_inner);
        deleted.contains(&(scope.clone(), log_id)) || deleted.contains(&(scope.clone(), INSTANCE))
    }

    /// Persists a marker for `log_id` (idempotent), then refuses the log from now on. [`INSTANCE`] marks
    /// every log of the scope (`_instance_.json`, upstream's `MarkInstanceDeleted`).
    pub fn mark(&self, scope: &StagedScope, log_id: LogId) -> io::Result<()> {
        if self.is_deleted(scope, log_id) {
            return Ok(());
        }
        let mut path = self.dir.join(scope.bucket());
        if !scope.root_path().is_empty() {
            path = path.join(scope.root_path());
        }
        let file = if log_id == INSTANCE { "_instance_.json".to_owned() } else { format!("{log_id}.json") };
        let path = path.join(file);
        let deleted_at = now_ms();
        let marker = Marker {
            bucket: scope.bucket().to_owned(),
            root_path: scope.root_path().to_owned(),
            log_id,
            instance: log_id == INSTANCE,
            deleted_at,
        };
        write_durably(&path, &serde_json::to_vec(&marker).map_err(io::Error::other)?)?;
        self.deleted.lock().unwrap_or_else(PoisonError::into_inner).insert((scope.clone(), log_id));
        self.unreclaimed.lock().unwrap_or_else(PoisonError::into_inner).push((scope.clone(), log_id, deleted_at));
        Ok(())
    }

    /// Marked logs whose marker is at least `grace_ms` old and whose data was not reclaimed yet; they are
    /// taken off the list (a failed reclaim is handed back with [`Self::retry_reclaim`]).
    pub fn due_for_reclaim(&self, grace_ms: i64) -> Vec<(StagedScope, LogId)> {
        let now = now_ms();
        let mut list = self.unreclaimed.lock().unwrap_or_else(PoisonError::into_inner);
        let (due, keep): (Vec<_>, Vec<_>) = list.drain(..).partition(|(_, _, at)| now - at >= grace_ms);
        *list = keep;
        due.into_iter().map(|(s, l, _)| (s, l)).collect()
    }

    /// Puts a log whose reclaim failed back on the list.
    pub fn retry_reclaim(&self, scope: StagedScope, log_id: LogId) {
        self.unreclaimed.lock().unwrap_or_else(PoisonError::into_inner).push((scope, log_id, 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_survive_a_reload_and_are_scoped() {
        let dir = tempfile::tempdir().unwrap();
        let m = DeleteMarkers::load(dir.path()).unwrap();
        let a = StagedScope::new("bucket", "root/x").unwrap();
        let b = StagedScope::new("bucket", "other").unwrap();
        m.mark(&a, 7).unwrap();
        assert!(m.is_deleted(&a, 7));
        assert!(!m.is_deleted(&b, 7), "another root path is another tenant");
        assert!(dir.path().join(".deleted/bucket/root/x/7.json").is_file(), "upstream's marker path");
        let again = DeleteMarkers::load(dir.path()).unwrap();
        assert!(again.is_deleted(&a, 7) && !again.is_deleted(&a, 8));
        assert_eq!(again.due_for_reclaim(0), vec![(a.clone(), 7)]);
        assert!(again.due_for_reclaim(0).is_empty(), "handed out once");
    }
}
