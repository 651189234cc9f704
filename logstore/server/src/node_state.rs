//! The node's lifecycle state (`active`, `decommissioning`, `decommissioned`), persisted in
//! `<dataDir>/node_state.json` as upstream (`{"state": …, "timestamp": …}`), so a decommission survives
//! restarts: appends keep failing with Shutdown and gossip keeps advertising the state.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Takes new segments and appends.
    Active,
    /// Takes no new appends; serves reads until its data is compacted and cleaned.
    Decommissioning,
    /// Holds no data any more; safe to remove.
    Decommissioned,
}

impl Lifecycle {
    /// The name gossip and the admin API use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Decommissioning => "decommissioning",
            Self::Decommissioned => "decommissioned",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    state: Lifecycle,
    /// Milliseconds since the epoch of the last change.
    timestamp: i64,
}

/// The persisted lifecycle state of this node.
#[derive(Debug)]
pub struct NodeState {
    path: PathBuf,
    current: Mutex<Lifecycle>,
}

impl NodeState {
    /// Loads `<data_dir>/node_state.json`; a missing file means `active`.
    pub fn load(data_dir: &Path) -> io::Result<Self> {
        let path = data_dir.join("node_state.json");
        let current = match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<Stored>(&bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?
                    .state
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Lifecycle::Active,
            Err(e) => return Err(e),
        };
        Ok(Self { path, current: Mutex::new(current) })
    }

    /// The current state.
    pub fn get(&self) -> Lifecycle {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Persists `state` (write to a temporary file, fsync, rename, fsync the directory), then adopts it.
    pub fn set(&self, state: Lifecycle) -> io::Result<()> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if *current == state {
            return Ok(());
        }
        let body = serde_json::to_vec(&Stored { state, timestamp: now_ms() }).map_err(io::Error::other)?;
        write_durably(&self.path, &body)?;
        *current = state;
        Ok(())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Replaces `path` with `body` so that a crash leaves either the old or the new content.
pub fn write_durably(path: &Path, body: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_survives_a_reload_and_starts_active() {
        let dir = tempfile::tempdir().unwrap();
        let s = NodeState::load(dir.path()).unwrap();
        assert_eq!(s.get(), Lifecycle::Active);
        s.set(Lifecycle::Decommissioning).unwrap();
        assert_eq!(NodeState::load(dir.path()).unwrap().get(), Lifecycle::Decommissioning);
        let text = fs::read_to_string(dir.path().join("node_state.json")).unwrap();
        assert!(text.contains("\"state\":\"decommissioning\""), "upstream's shape: {text}");
        fs::write(dir.path().join("node_state.json"), b"{not json").unwrap();
        assert!(NodeState::load(dir.path()).is_err(), "a damaged file is an error, not silently active");
    }
}
