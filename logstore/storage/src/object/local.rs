//! Local-directory backend: each object is a file at `<root>/<key>`.
//!
//! ```text
//!  <root>/files/7/3/0.blk           regular file = normal object (body = file content)
//!  <root>/files/7/3/1.blk -> .wp-fence   symlink with that exact target = fence object ("F")
//!  <root>/files/7/3/.wp-tmp-<pid>-<n>    write in progress (or left by a crash); never listed
//! ```
//!
//! * Every write goes to a temporary file in the target directory, is fsynced, and is then moved
//!   into place: `rename(2)` for an unconditional put, `link(2)` for create-if-absent (fails with
//!   `EEXIST` atomically, across processes and hosts sharing a POSIX file system), then the
//!   directory is fsynced.
//! * A fence is a dangling symlink created with `symlink(2)`, which also fails with `EEXIST`
//!   atomically, so "exists" and "is a fence" can never be observed apart, and no sidecar can get
//!   out of step with its object. An unconditional put `rename`s over it, as S3 overwrites one.
//! * `remove` prunes directories it leaves empty; writers that lose a race with that pruning
//!   recreate the directory and try again.
//! * Keys must be clean relative paths (no `..`, `.`, `//`, leading `/` or `.wp-tmp-` component).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::keys::{LOCAL_TMP_PREFIX, validate_local_key};
use super::{FENCE_BODY, ObjectError, ObjectInfo, ObjectStorage, resolve_range};

/// Target of the symlink that marks a fence object. Never created as a file.
const FENCE_LINK_TARGET: &str = ".wp-fence";

/// How often a write retries after a concurrent `remove` pruned its directory.
const DIR_RACE_ATTEMPTS: u32 = 5;

/// Objects as files under one directory; see the module docs for the layout.
#[derive(Debug, Clone)]
pub struct LocalObjectStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    tmp_seq: AtomicU64,
}

/// What is at a key's path.
enum Entry {
    Missing,
    File(u64),
    Fence,
    Directory,
}

impl LocalObjectStorage {
    /// Uses `root` (created if missing) as the store's top directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ObjectError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| ObjectError::io(&root, e))?;
        Ok(Self { inner: Arc::new(Inner { root, tmp_seq: AtomicU64::new(0) }) })
    }

    /// The store's top directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Runs blocking file-system work off the async runtime.
    async fn blocking<T, F>(&self, op: &'static str, key: &str, f: F) -> Result<T, ObjectError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, ObjectError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(|e| ObjectError::Other {
            op,
            key: key.to_owned(),
            message: format!("blocking task failed: {e}"),
        })?
    }
}

impl Inner {
    fn path_of(&self, key: &str) -> Result<PathBuf, ObjectError> {
        validate_local_key(key)?;
        Ok(self.root.join(key))
    }

    fn key_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
        Some(parts?.join("/"))
    }

    fn entry(&self, path: &Path) -> Result<Entry, ObjectError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(path).map_err(|e| ObjectError::io(path, e))?;
                if target.as_os_str() == FENCE_LINK_TARGET {
                    Ok(Entry::Fence)
                } else {
                    // Someone else's symlink: treat it as whatever it points to.
                    match fs::metadata(path) {
                        Ok(m) if m.is_dir() => Ok(Entry::Directory),
                        Ok(m) => Ok(Entry::File(m.len())),
                        Err(e) if is_absent(&e) => Ok(Entry::Missing),
                        Err(e) => Err(ObjectError::io(path, e)),
                    }
                }
            }
            Ok(m) if m.is_dir() => Ok(Entry::Directory),
            Ok(m) => Ok(Entry::File(m.len())),
            Err(e) if is_absent(&e) => Ok(Entry::Missing),
            Err(e) => Err(ObjectError::io(path, e)),
        }
    }

    /// Creates the parent directories of `path` and makes their entries durable.
    fn ensure_parent(&self, path: &Path) -> Result<PathBuf, ObjectError> {
        let parent = path
            .parent()
            .ok_or_else(|| ObjectError::io(path, std::io::Error::other("path has no parent")))?
            .to_path_buf();
        if parent.is_dir() {
            return Ok(parent);
        }
        fs::create_dir_all(&parent).map_err(|e| ObjectError::io(&parent, e))?;
        // New directory entries are only durable once each parent directory is fsynced.
        let mut dir = parent.as_path();
        while dir != self.root {
            let Some(up) = dir.parent() else { break };
            fsync_dir(up)?;
            dir = up;
        }
        Ok(parent)
    }

    /// Writes `body` to a fresh temporary file next to `path`, fsynced. `Ok(None)` when the
    /// directory vanished under us (a concurrent prune) and the caller should start over.
    fn write_tmp(&self, path: &Path, body: &[u8]) -> Result<Option<PathBuf>, ObjectError> {
        let parent = self.ensure_parent(path)?;
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = parent.join(format!("{LOCAL_TMP_PREFIX}{}-{seq}", std::process::id()));
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ObjectError::io(&tmp, e)),
        };
        let written = file.write_all(body).and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(ObjectError::io(&tmp, e));
        }
        Ok(Some(tmp))
    }

    fn put(&self, key: &str, body: &[u8]) -> Result<(), ObjectError> {
        let path = self.path_of(key)?;
        for _ in 0..DIR_RACE_ATTEMPTS {
            let Some(tmp) = self.write_tmp(&path, body)? else {
                continue;
            };
            if let Err(e) = fs::rename(&tmp, &path) {
                let _ = fs::remove_file(&tmp);
                return Err(self.conflict_or_io(key, &path, e));
            }
            return fsync_parent(&path);
        }
        Err(dir_race(key))
    }

    fn put_if_absent(&self, key: &str, body: &[u8]) -> Result<(), ObjectError> {
        let path = self.path_of(key)?;
        for _ in 0..DIR_RACE_ATTEMPTS {
            let Some(tmp) = self.write_tmp(&path, body)? else {
                continue;
            };
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            return match linked {
                Ok(()) => fsync_parent(&path),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => match self.entry(&path)? {
                    Entry::Fence => Err(ObjectError::Fenced { key: key.to_owned() }),
                    Entry::File(_) => Err(ObjectError::AlreadyExists { key: key.to_owned() }),
                    Entry::Directory => Err(is_directory(key)),
                    // Removed between our link and our look: the answer is still "not created".
                    Entry::Missing => Err(ObjectError::AlreadyExists { key: key.to_owned() }),
                },
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => Err(ObjectError::io(&path, e)),
            };
        }
        Err(dir_race(key))
    }

    fn put_fence(&self, key: &str) -> Result<(), ObjectError> {
        let path = self.path_of(key)?;
        for _ in 0..DIR_RACE_ATTEMPTS {
            self.ensure_parent(&path)?;
            return match std::os::unix::fs::symlink(FENCE_LINK_TARGET, &path) {
                Ok(()) => fsync_parent(&path),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => match self.entry(&path)? {
                    Entry::Fence => Ok(()),
                    Entry::File(_) | Entry::Missing => Err(ObjectError::AlreadyExists { key: key.to_owned() }),
                    Entry::Directory => Err(is_directory(key)),
                },
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => Err(ObjectError::io(&path, e)),
            };
        }
        Err(dir_race(key))
    }

    fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, ObjectError> {
        let path = self.path_of(key)?;
        if let Entry::Fence = self.entry(&path)? {
            let r = resolve_range(key, FENCE_BODY.len() as u64, range)?;
            return Ok(Bytes::from_static(FENCE_BODY).slice(r.start as usize..r.end as usize));
        }
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if is_absent(&e) => return Err(ObjectError::NotFound { key: key.to_owned() }),
            Err(e) => return Err(ObjectError::io(&path, e)),
        };
        let meta = file.metadata().map_err(|e| ObjectError::io(&path, e))?;
        if meta.is_dir() {
            return Err(ObjectError::NotFound { key: key.to_owned() });
        }
        let r = resolve_range(key, meta.len(), range)?;
        let len = usize::try_from(r.end - r.start).map_err(|_| ObjectError::Other {
            op: "get",
            key: key.to_owned(),
            message: "range does not fit in memory".into(),
        })?;
        let mut buf = vec![0u8; len];
        file.seek(SeekFrom::Start(r.start))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| ObjectError::io(&path, e))?;
        Ok(Bytes::from(buf))
    }

    fn stat(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        let path = self.path_of(key)?;
        let (size, fenced) = match self.entry(&path)? {
            Entry::Fence => (FENCE_BODY.len() as u64, true),
            Entry::File(size) => (size, false),
            Entry::Missing | Entry::Directory => {
                return Err(ObjectError::NotFound { key: key.to_owned() });
            }
        };
        Ok(ObjectInfo { key: key.to_owned(), size, fenced })
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError> {
        // Walk only the deepest directory the prefix names; filter the rest by string prefix.
        let start = match prefix.rfind('/') {
            Some(i) => {
                let dir = &prefix[..i];
                if validate_local_key(dir).is_err() {
                    return Err(ObjectError::InvalidKey {
                        key: prefix.to_owned(),
                        reason: "prefix directory is not a clean relative path",
                    });
                }
                self.root.join(dir)
            }
            None => self.root.clone(),
        };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(ObjectError::io(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| ObjectError::io(&dir, e))?;
                let path = entry.path();
                let name = entry.file_name();
                if name.to_str().is_none_or(|n| n.starts_with(LOCAL_TMP_PREFIX)) {
                    continue;
                }
                let Some(key) = self.key_of(&path) else {
                    continue;
                };
                let is_dir = entry.file_type().map_err(|e| ObjectError::io(&path, e))?.is_dir();
                if is_dir {
                    // Descend only where keys under it can still match the prefix.
                    let as_prefix = format!("{key}/");
                    if as_prefix.starts_with(prefix) || prefix.starts_with(&as_prefix) {
                        stack.push(path);
                    }
                    continue;
                }
                if !key.starts_with(prefix) {
                    continue;
                }
                match self.entry(&path)? {
                    Entry::Fence => out.push(ObjectInfo { key, size: FENCE_BODY.len() as u64, fenced: true }),
                    Entry::File(size) => out.push(ObjectInfo { key, size, fenced: false }),
                    Entry::Missing | Entry::Directory => {}
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Removes the object; `Ok(true)` when this call removed it.
    fn remove(&self, key: &str) -> Result<bool, ObjectError> {
        let path = self.path_of(key)?;
        if let Entry::Directory = self.entry(&path)? {
            return Ok(false);
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if is_absent(&e) => return Ok(false),
            Err(e) => return Err(ObjectError::io(&path, e)),
        }
        fsync_parent(&path)?;
        self.prune_empty_parents(&path);
        Ok(true)
    }

    /// Removes now-empty directories between `path` and the root. Best effort: a directory a
    /// concurrent writer just filled simply stays.
    fn prune_empty_parents(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || fs::remove_dir(d).is_err() {
                break;
            }
            if let Some(up) = d.parent() {
                let _ = fsync_dir(up);
            }
            dir = d.parent();
        }
    }

    fn conflict_or_io(&self, key: &str, path: &Path, e: std::io::Error) -> ObjectError {
        match self.entry(path) {
            Ok(Entry::Directory) => is_directory(key),
            _ => ObjectError::io(path, e),
        }
    }
}

fn is_absent(e: &std::io::Error) -> bool {
    // ENOTDIR: a parent component is a file, so the key cannot exist.
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

fn is_directory(key: &str) -> ObjectError {
    ObjectError::InvalidKey { key: key.to_owned(), reason: "a directory of other objects already has this name" }
}

fn dir_race(key: &str) -> ObjectError {
    ObjectError::Other {
        op: "put",
        key: key.to_owned(),
        message: format!("directory kept disappearing over {DIR_RACE_ATTEMPTS} attempts"),
    }
}

fn fsync_dir(dir: &Path) -> Result<(), ObjectError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| ObjectError::io(dir, e))
}

fn fsync_parent(path: &Path) -> Result<(), ObjectError> {
    match path.parent() {
        Some(dir) => fsync_dir(dir),
        None => Ok(()),
    }
}

#[async_trait::async_trait]
impl ObjectStorage for LocalObjectStorage {
    fn describe(&self) -> String {
        format!("file://{}", self.inner.root.display())
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, ObjectError> {
        let k = key.to_owned();
        self.blocking("get", key, move |s| s.get(&k, range)).await
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), ObjectError> {
        let k = key.to_owned();
        self.blocking("put", key, move |s| s.put(&k, &body)).await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), ObjectError> {
        let k = key.to_owned();
        self.blocking("put_if_absent", key, move |s| s.put_if_absent(&k, &body)).await
    }

    async fn put_fence(&self, key: &str) -> Result<(), ObjectError> {
        let k = key.to_owned();
        self.blocking("put_fence", key, move |s| s.put_fence(&k)).await
    }

    async fn stat(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        let k = key.to_owned();
        self.blocking("stat", key, move |s| s.stat(&k)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError> {
        let p = prefix.to_owned();
        self.blocking("list", prefix, move |s| s.list(&p)).await
    }

    async fn remove(&self, key: &str) -> Result<(), ObjectError> {
        let k = key.to_owned();
        self.blocking("remove", key, move |s| s.remove(&k).map(|_| ())).await
    }

    async fn remove_prefix(&self, prefix: &str) -> Result<usize, ObjectError> {
        let p = prefix.to_owned();
        self.blocking("remove_prefix", prefix, move |s| {
            let mut removed = 0;
            for info in s.list(&p)? {
                if s.remove(&info.key)? {
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::conformance;

    fn store() -> (tempfile::TempDir, LocalObjectStorage) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjectStorage::open(dir.path().join("objects")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn local_store_passes_the_conformance_suite() {
        let (_dir, store) = store();
        conformance::run_all(Arc::new(store)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn local_store_has_exactly_one_winner_of_a_create_race() {
        let (_dir, store) = store();
        for round in 0..5 {
            conformance::create_race_has_one_winner(Arc::new(store.clone()), &format!("race/{round}/0.blk")).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_handles_on_one_directory_share_create_if_absent() {
        // Separate instances stand in for separate processes: nothing is shared but the directory.
        let dir = tempfile::tempdir().unwrap();
        let a = LocalObjectStorage::open(dir.path()).unwrap();
        let b = LocalObjectStorage::open(dir.path()).unwrap();
        b.put_fence("seg/3.blk").await.unwrap();
        assert!(matches!(
            a.put_if_absent("seg/3.blk", Bytes::from_static(b"late")).await,
            Err(ObjectError::Fenced { .. })
        ));
        a.put_if_absent("seg/4.blk", Bytes::from_static(b"x")).await.unwrap();
        assert!(matches!(b.put_fence("seg/4.blk").await, Err(ObjectError::AlreadyExists { .. })));
    }

    #[tokio::test]
    async fn path_traversal_and_unclean_keys_are_rejected() {
        let (dir, store) = store();
        for key in ["../escape", "/etc/passwd", "a/../../escape", "a//b", "./a", "a/.wp-tmp-7"] {
            let err = store.put(key, Bytes::from_static(b"x")).await.unwrap_err();
            assert!(matches!(err, ObjectError::InvalidKey { .. }), "{key}: {err}");
            assert!(matches!(store.get(key, None).await, Err(ObjectError::InvalidKey { .. })));
            assert!(matches!(store.put_fence(key).await, Err(ObjectError::InvalidKey { .. })));
            assert!(matches!(store.remove(key).await, Err(ObjectError::InvalidKey { .. })));
        }
        assert!(matches!(store.list("../").await, Err(ObjectError::InvalidKey { .. })));
        assert!(!dir.path().join("escape").exists());
    }

    #[tokio::test]
    async fn objects_are_plain_files_and_fences_are_marker_symlinks() {
        let (_dir, store) = store();
        store.put("a/b/0.blk", Bytes::from_static(b"hello")).await.unwrap();
        store.put_fence("a/b/1.blk").await.unwrap();
        let root = store.root().to_path_buf();
        assert_eq!(fs::read(root.join("a/b/0.blk")).unwrap(), b"hello");
        assert_eq!(fs::read_link(root.join("a/b/1.blk")).unwrap(), PathBuf::from(FENCE_LINK_TARGET));
        // No temporary files are left behind.
        let names: Vec<_> =
            fs::read_dir(root.join("a/b")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[tokio::test]
    async fn leftover_temporary_files_are_invisible() {
        let (_dir, store) = store();
        store.put("seg/0.blk", Bytes::from_static(b"x")).await.unwrap();
        fs::write(store.root().join("seg/.wp-tmp-99-0"), b"torn").unwrap();
        let listed = store.list("seg/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(store.remove_prefix("seg/").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn remove_prunes_empty_directories_and_writes_recreate_them() {
        let (_dir, store) = store();
        store.put("x/1/2/0.blk", Bytes::from_static(b"x")).await.unwrap();
        store.remove("x/1/2/0.blk").await.unwrap();
        assert!(!store.root().join("x").exists());
        store.put_fence("x/1/2/1.blk").await.unwrap();
        assert!(store.stat("x/1/2/1.blk").await.unwrap().fenced);
    }

    #[tokio::test]
    async fn a_key_that_is_a_directory_is_not_an_object() {
        let (_dir, store) = store();
        store.put("d/child", Bytes::from_static(b"x")).await.unwrap();
        assert!(matches!(store.stat("d").await, Err(ObjectError::NotFound { .. })));
        assert!(matches!(store.get("d", None).await, Err(ObjectError::NotFound { .. })));
        assert!(matches!(
            store.put_if_absent("d", Bytes::from_static(b"x")).await,
            Err(ObjectError::InvalidKey { .. })
        ));
        assert!(matches!(store.put_fence("d").await, Err(ObjectError::InvalidKey { .. })));
        // A key under a file cannot exist.
        assert!(matches!(store.stat("d/child/deeper").await, Err(ObjectError::NotFound { .. })));
    }
}
