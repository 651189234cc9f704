//! [`KvBackend`] for one process: an in-memory etcd model made durable by a journal.
//!
//! ```text
//! <dir>/LOCK       held with an exclusive file lock while open (second open: StoreInUse)
//! <dir>/snapshot   whole state at a revision (rewritten atomically: tmp + fsync + rename)
//! <dir>/journal    one checksummed record per committed write transaction, fsynced before Ok
//! ```
//! Opening replays snapshot + journal, drops lease-bound keys (leases live only as long as the
//! process), writes a fresh snapshot and empties the journal. The journal is also compacted that
//! way whenever it outgrows [`COMPACT_JOURNAL_BYTES`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{MetaError, MetaResult};
use crate::journal::{self, Mutation, SnapshotRef};
use crate::kv::{
    Compare, CompareOp, CompareTarget, KeyValue, KvBackend, LeaseId, LeaseKeeper, Txn, TxnOp, TxnOpResult, TxnResponse,
    ttl_seconds,
};

/// Journal size above which a commit also rewrites the snapshot and empties the journal.
pub const COMPACT_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

const LOCK_FILE: &str = "LOCK";
const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_TMP_FILE: &str = "snapshot.tmp";
const JOURNAL_FILE: &str = "journal";

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: LeaseId,
}

#[derive(Debug)]
struct Lease {
    ttl: i64,
    keys: HashSet<String>,
}

#[derive(Debug)]
struct State {
    revision: i64,
    data: BTreeMap<String, Entry>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    journal: File,
    journal_len: u64,
    poisoned: bool,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    state: Mutex<State>,
    /// Held for the lifetime of the store; the OS lock is released when it closes.
    _lock: File,
}

/// The embedded backend. Cheap to clone; all clones share one open store.
#[derive(Debug, Clone)]
pub struct EmbeddedKv {
    inner: Arc<Inner>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MetaError + '_ {
    move |source| MetaError::Io { path: path.to_owned(), source }
}

impl EmbeddedKv {
    /// Opens (creating if needed) the store in `dir`; `StoreInUse` when it is already open.
    pub async fn open(dir: &Path) -> MetaResult<Self> {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(&dir))
            .await
            .map_err(|e| MetaError::Io { path: PathBuf::new(), source: std::io::Error::other(e) })?
    }

    fn open_blocking(dir: &Path) -> MetaResult<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(MetaError::StoreInUse { path: lock_path }),
            Err(TryLockError::Error(e)) => return Err(MetaError::Io { path: lock_path, source: e }),
        }

        let mut revision = 1;
        let mut data = BTreeMap::new();
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let scan = journal::scan(&snapshot_path, &bytes)?;
                let bad = |reason: String| MetaError::CorruptFile { path: snapshot_path.clone(), offset: 0, reason };
                // The snapshot is replaced atomically, so it is never legitimately torn.
                if scan.torn_at.is_some() || scan.records.len() != 1 {
                    return Err(bad(format!("expected one intact record, found {}", scan.records.len())));
                }
                let (rev, entries) = journal::decode_snapshot(scan.records[0].1).map_err(bad)?;
                revision = rev;
                for e in entries {
                    data.insert(
                        e.key,
                        Entry {
                            value: e.value,
                            create_revision: e.create_revision,
                            mod_revision: e.mod_revision,
                            version: e.version,
                            lease: 0,
                        },
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(MetaError::Io { path: snapshot_path, source: e }),
        }

        let journal_path = dir.join(JOURNAL_FILE);
        let journal_bytes = match std::fs::read(&journal_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(MetaError::Io { path: journal_path, source: e }),
        };
        let scan = journal::scan(&journal_path, &journal_bytes)?;
        if let Some(at) = scan.torn_at {
            tracing::warn!(path = %journal_path.display(), offset = at, "dropping a torn record at the journal tail");
        }
        for (offset, payload) in &scan.records {
            let (rev, mutations) = journal::decode_batch(payload).map_err(|reason| MetaError::CorruptFile {
                path: journal_path.clone(),
                offset: *offset,
                reason,
            })?;
            if rev <= revision {
                // Already in the snapshot (a crash between snapshot rename and journal truncation).
                continue;
            }
            if rev != revision + 1 {
                return Err(MetaError::CorruptFile {
                    path: journal_path.clone(),
                    offset: *offset,
                    reason: format!("revision {rev} follows {revision}"),
                });
            }
            revision = rev;
            for m in mutations {
                apply_replayed(&mut data, rev, m);
            }
        }
        // Leases do not survive the process: their keys go away with it.
        data.retain(|_, e| e.lease == 0);

        let journal =
            OpenOptions::new().create(true).append(true).open(&journal_path).map_err(io_err(&journal_path))?;
        let mut state = State {
            revision,
            data,
            leases: HashMap::new(),
            next_lease: initial_lease_id(),
            journal,
            journal_len: journal_bytes.len() as u64,
            poisoned: false,
        };
        compact(dir, &mut state)?;
        Ok(Self { inner: Arc::new(Inner { dir: dir.to_owned(), state: Mutex::new(state), _lock: lock }) })
    }

    /// Directory of the store.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Current store revision.
    pub fn revision(&self) -> MetaResult<i64> {
        Ok(self.lock_state()?.revision)
    }

    fn lock_state(&self) -> MetaResult<MutexGuard<'_, State>> {
        let guard = self.inner.state.lock().map_err(|_| MetaError::Poisoned { path: self.inner.dir.clone() })?;
        if guard.poisoned {
            return Err(MetaError::Poisoned { path: self.inner.dir.clone() });
        }
        Ok(guard)
    }

    /// Runs a short look at (or in-memory change of) the state: inline when the state is free, else on the
    /// blocking pool. A write holds the state through its fsync, and waiting for it inline would stall
    /// a runtime worker (and every task queued on it) for as long as the disk takes.
    async fn with_state<T: Send + 'static>(&self, f: impl FnOnce(&mut State) -> T + Send + 'static) -> MetaResult<T> {
        match self.inner.state.try_lock() {
            Ok(mut guard) if !guard.poisoned => return Ok(f(&mut guard)),
            Ok(_) | Err(std::sync::TryLockError::Poisoned(_)) => {
                return Err(MetaError::Poisoned { path: self.inner.dir.clone() });
            }
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut state = this.lock_state()?;
            Ok(f(&mut state))
        })
        .await
        .map_err(|_| MetaError::Poisoned { path: self.inner.dir.clone() })?
    }

    /// Runs a state change on the blocking pool (it fsyncs).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path, &mut State) -> MetaResult<T> + Send + 'static,
    ) -> MetaResult<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut state = this.lock_state()?;
            f(&this.inner.dir, &mut state)
        })
        .await
        .map_err(|_| MetaError::Poisoned { path: self.inner.dir.clone() })?
    }
}

fn initial_lease_id() -> LeaseId {
    // Random start so ids (and lock keys) of different runs do not repeat; positive like etcd's.
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let raw = u64::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], 0]);
    i64::try_from(raw >> 4).unwrap_or(1).max(1)
}

fn apply_replayed(data: &mut BTreeMap<String, Entry>, revision: i64, m: Mutation) {
    match m {
        Mutation::Put { key, value, lease } => {
            let (create_revision, version) = match data.get(&key) {
                Some(e) => (e.create_revision, e.version + 1),
                None => (revision, 1),
            };
            data.insert(key, Entry { value, create_revision, mod_revision: revision, version, lease });
        }
        Mutation::Delete { key } => {
            data.remove(&key);
        }
    }
}

fn to_kv(key: &str, e: &Entry) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: e.value.clone(),
        create_revision: e.create_revision,
        mod_revision: e.mod_revision,
        version: e.version,
        lease: e.lease,
    }
}

fn prefix_range<'a>(
    data: &'a BTreeMap<String, Entry>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a Entry)> + 'a {
    data.range(prefix.to_owned()..).take_while(move |(k, _)| k.starts_with(prefix))
}

fn compare_holds(data: &BTreeMap<String, Entry>, c: &Compare) -> bool {
    let entry = data.get(&c.key);
    let ord = match (&c.target, entry) {
        // Like etcd: comparing the value of a missing key is always false.
        (CompareTarget::Value(_), None) => return false,
        (CompareTarget::Value(v), Some(e)) => e.value.as_slice().cmp(v.as_slice()),
        (CompareTarget::CreateRevision(r), e) => e.map_or(0, |e| e.create_revision).cmp(r),
        (CompareTarget::ModRevision(r), e) => e.map_or(0, |e| e.mod_revision).cmp(r),
    };
    match c.op {
        CompareOp::Equal => ord.is_eq(),
        CompareOp::NotEqual => ord.is_ne(),
        CompareOp::Greater => ord.is_gt(),
        CompareOp::Less => ord.is_lt(),
    }
}

/// Executes `ops` against `state`, journals the changes and fsyncs before returning.
fn execute(dir: &Path, state: &mut State, ops: &[TxnOp]) -> MetaResult<(i64, Vec<TxnOpResult>)> {
    for op in ops {
        if let TxnOp::Put { lease: Some(l), .. } = op
            && *l != 0
            && !state.leases.contains_key(l)
        {
            return Err(MetaError::LeaseNotFound { lease: *l });
        }
    }
    let rev = state.revision + 1;
    let mut mutations = Vec::new();
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            TxnOp::Put { key, value, lease } => {
                let lease = lease.unwrap_or(0);
                let (create_revision, version, old_lease) = match state.data.get(key) {
                    Some(e) => (e.create_revision, e.version + 1, e.lease),
                    None => (rev, 1, 0),
                };
                detach(state, old_lease, key);
                if let Some(l) = state.leases.get_mut(&lease) {
                    l.keys.insert(key.clone());
                }
                state.data.insert(
                    key.clone(),
                    Entry { value: value.clone(), create_revision, mod_revision: rev, version, lease },
                );
                mutations.push(Mutation::Put { key: key.clone(), value: value.clone(), lease });
                results.push(TxnOpResult::Put);
            }
            TxnOp::Delete { key } => {
                let deleted = delete_keys(state, vec![key.clone()], &mut mutations);
                results.push(TxnOpResult::Delete { deleted });
            }
            TxnOp::DeletePrefix { prefix } => {
                let keys = prefix_range(&state.data, prefix).map(|(k, _)| k.clone()).collect();
                let deleted = delete_keys(state, keys, &mut mutations);
                results.push(TxnOpResult::Delete { deleted });
            }
            TxnOp::Get { key } => {
                results.push(TxnOpResult::Get(state.data.get(key).map(|e| to_kv(key, e)).into_iter().collect()));
            }
            TxnOp::GetPrefix { prefix, limit } => {
                let kvs = prefix_range(&state.data, prefix)
                    .take(limit.unwrap_or(usize::MAX))
                    .map(|(k, e)| to_kv(k, e))
                    .collect();
                results.push(TxnOpResult::Get(kvs));
            }
        }
    }
    if mutations.is_empty() {
        return Ok((state.revision, results));
    }
    state.revision = rev;
    let record = journal::frame(&journal::encode_batch(rev, &mutations))?;
    let journal_path = dir.join(JOURNAL_FILE);
    let written = state.journal.write_all(&record).and_then(|()| state.journal.sync_data());
    if let Err(source) = written {
        // Memory is now ahead of disk and the file may hold a partial record: refuse all further work.
        state.poisoned = true;
        return Err(MetaError::Io { path: journal_path, source });
    }
    state.journal_len += record.len() as u64;
    if state.journal_len > COMPACT_JOURNAL_BYTES {
        compact(dir, state)?;
    }
    Ok((rev, results))
}

fn detach(state: &mut State, lease: LeaseId, key: &str) {
    if lease != 0
        && let Some(l) = state.leases.get_mut(&lease)
    {
        l.keys.remove(key);
    }
}

fn delete_keys(state: &mut State, keys: Vec<String>, mutations: &mut Vec<Mutation>) -> i64 {
    let mut deleted = 0;
    for key in keys {
        if let Some(e) = state.data.remove(&key) {
            detach(state, e.lease, &key);
            mutations.push(Mutation::Delete { key });
            deleted += 1;
        }
    }
    deleted
}

/// Writes the durable state as a new snapshot and empties the journal.
fn compact(dir: &Path, state: &mut State) -> MetaResult<()> {
    let result = (|| {
        let durable = state.data.iter().filter(|(_, e)| e.lease == 0);
        let count = durable.clone().count();
        let entries = durable.map(|(k, e)| SnapshotRef {
            key: k,
            value: &e.value,
            create_revision: e.create_revision,
            mod_revision: e.mod_revision,
            version: e.version,
        });
        let payload = journal::encode_snapshot(state.revision, ExactLen { inner: entries, len: count });
        let record = journal::frame(&payload)?;
        let tmp = dir.join(SNAPSHOT_TMP_FILE);
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&record).and_then(|()| f.sync_all()).map_err(io_err(&tmp))?;
        let snapshot = dir.join(SNAPSHOT_FILE);
        std::fs::rename(&tmp, &snapshot).map_err(io_err(&snapshot))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
        let journal_path = dir.join(JOURNAL_FILE);
        state.journal.set_len(0).and_then(|()| state.journal.sync_all()).map_err(io_err(&journal_path))?;
        state.journal_len = 0;
        Ok(())
    })();
    if result.is_err() {
        state.poisoned = true;
    }
    result
}

/// An iterator with a known length (a filtered map cannot report one itself).
struct ExactLen<I> {
    inner: I,
    len: usize,
}

impl<I: Iterator> Iterator for ExactLen<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next();
        if item.is_some() {
            self.len -= 1;
        }
        item
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len, Some(self.len))
    }
}

impl<I: Iterator> ExactSizeIterator for ExactLen<I> {}

#[async_trait]
impl KvBackend for EmbeddedKv {
    fn describe(&self) -> String {
        format!("embedded store {}", self.inner.dir.display())
    }

    async fn get(&self, key: &str) -> MetaResult<Option<KeyValue>> {
        let key = key.to_owned();
        self.with_state(move |state| state.data.get(&key).map(|e| to_kv(&key, e))).await
    }

    async fn range(&self, prefix: &str) -> MetaResult<Vec<KeyValue>> {
        let prefix = prefix.to_owned();
        self.with_state(move |state| prefix_range(&state.data, &prefix).map(|(k, e)| to_kv(k, e)).collect()).await
    }

    async fn txn(&self, txn: Txn) -> MetaResult<TxnResponse> {
        self.write(move |dir, state| {
            let succeeded = txn.compares.iter().all(|c| compare_holds(&state.data, c));
            let ops = if succeeded { &txn.success } else { &txn.failure };
            let (revision, results) = execute(dir, state, ops)?;
            Ok(TxnResponse { succeeded, revision, results })
        })
        .await
    }

    async fn grant_lease(&self, ttl: Duration) -> MetaResult<LeaseId> {
        self.with_state(move |state| {
            let id = state.next_lease;
            state.next_lease += 1;
            state.leases.insert(id, Lease { ttl: ttl_seconds(ttl), keys: HashSet::new() });
            id
        })
        .await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> MetaResult<()> {
        self.write(move |dir, state| {
            let Some(l) = state.leases.remove(&lease) else { return Ok(()) };
            let mut keys: Vec<String> = l.keys.into_iter().collect();
            keys.sort();
            let ops: Vec<TxnOp> = keys.into_iter().map(TxnOp::delete).collect();
            execute(dir, state, &ops).map(|_| ())
        })
        .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> MetaResult<Box<dyn LeaseKeeper>> {
        Ok(Box::new(EmbeddedKeeper { kv: self.clone(), lease }))
    }
}

struct EmbeddedKeeper {
    kv: EmbeddedKv,
    lease: LeaseId,
}

#[async_trait]
impl LeaseKeeper for EmbeddedKeeper {
    async fn keep_alive_once(&mut self) -> MetaResult<i64> {
        let lease = self.lease;
        self.kv.with_state(move |state| state.leases.get(&lease).map_or(0, |l| l.ttl)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// While a write holds the state through a slow fsync, reads wait on the blocking pool, not on the
    /// runtime's only worker: other tasks keep running.
    #[tokio::test(flavor = "current_thread")]
    async fn a_read_waiting_behind_a_slow_write_does_not_stall_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let kv = EmbeddedKv::open(dir.path()).await.unwrap();
        let held = kv.clone();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let _guard = held.inner.state.lock().unwrap();
            locked_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
        });
        locked_rx.recv().unwrap();
        let ticks = Arc::new(AtomicUsize::new(0));
        let t = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                t.fetch_add(1, Ordering::Relaxed);
            }
        });
        kv.get("k").await.unwrap();
        kv.range("").await.unwrap();
        kv.grant_lease(Duration::from_secs(5)).await.unwrap();
        let during = ticks.load(Ordering::Relaxed);
        ticker.abort();
        holder.join().unwrap();
        assert!(during >= 10, "the runtime ran only {during} ticks of 10 ms while the read waited ~300 ms");
    }
}
