//! In-memory backend for unit tests of logic above the object layer. Same semantics as S3.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;

use super::keys::validate_key;
use super::{FENCE_BODY, ObjectError, ObjectInfo, ObjectStorage, resolve_range};

#[derive(Debug, Clone)]
struct Stored {
    body: Bytes,
    fenced: bool,
}

/// A process-local map of objects; nothing survives the value.
///
/// Conditions are checked and applied under one lock, so create-if-absent is linearizable.
/// [`MemoryObjectStorage::ignoring_conditions`] builds one that behaves like a server that
/// ignores `If-None-Match` (for testing [`super::probe_condition_write`] and the callers' fallback).
#[derive(Debug)]
pub struct MemoryObjectStorage {
    objects: Mutex<BTreeMap<String, Stored>>,
    honour_conditions: bool,
}

impl Default for MemoryObjectStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryObjectStorage {
    /// An empty store that honours create-if-absent.
    pub fn new() -> Self {
        Self { objects: Mutex::new(BTreeMap::new()), honour_conditions: true }
    }

    /// An empty store whose conditional writes silently overwrite, like a server without
    /// `If-None-Match` support.
    pub fn ignoring_conditions() -> Self {
        Self { objects: Mutex::new(BTreeMap::new()), honour_conditions: false }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Stored>> {
        // A panic while holding the lock cannot leave the map half-updated (every mutation is a
        // single insert/remove), so a poisoned lock is still consistent.
        self.objects.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn create(&self, key: &str, stored: Stored) -> Result<(), ObjectError> {
        validate_key(key)?;
        let mut objects = self.lock();
        if !self.honour_conditions {
            objects.insert(key.to_owned(), stored);
            return Ok(());
        }
        match objects.get(key) {
            None => {
                objects.insert(key.to_owned(), stored);
                Ok(())
            }
            Some(existing) if existing.fenced && stored.fenced => Ok(()),
            Some(existing) if existing.fenced => Err(ObjectError::Fenced { key: key.to_owned() }),
            Some(_) => Err(ObjectError::AlreadyExists { key: key.to_owned() }),
        }
    }
}

#[async_trait::async_trait]
impl ObjectStorage for MemoryObjectStorage {
    fn describe(&self) -> String {
        format!("memory://{:p}", self)
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, ObjectError> {
        validate_key(key)?;
        let objects = self.lock();
        let stored = objects.get(key).ok_or_else(|| ObjectError::NotFound { key: key.to_owned() })?;
        let r = resolve_range(key, stored.body.len() as u64, range)?;
        // The resolved range lies within the body, whose length fits in usize.
        Ok(stored.body.slice(r.start as usize..r.end as usize))
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), ObjectError> {
        validate_key(key)?;
        self.lock().insert(key.to_owned(), Stored { body, fenced: false });
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), ObjectError> {
        self.create(key, Stored { body, fenced: false })
    }

    async fn put_fence(&self, key: &str) -> Result<(), ObjectError> {
        self.create(key, Stored { body: Bytes::from_static(FENCE_BODY), fenced: true })
    }

    async fn stat(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        validate_key(key)?;
        let objects = self.lock();
        let stored = objects.get(key).ok_or_else(|| ObjectError::NotFound { key: key.to_owned() })?;
        Ok(ObjectInfo { key: key.to_owned(), size: stored.body.len() as u64, fenced: stored.fenced })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError> {
        let objects = self.lock();
        Ok(objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectInfo { key: k.clone(), size: v.body.len() as u64, fenced: v.fenced })
            .collect())
    }

    async fn remove(&self, key: &str) -> Result<(), ObjectError> {
        validate_key(key)?;
        self.lock().remove(key);
        Ok(())
    }

    async fn remove_prefix(&self, prefix: &str) -> Result<usize, ObjectError> {
        let mut objects = self.lock();
        let doomed: Vec<String> = objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &doomed {
            objects.remove(k);
        }
        Ok(doomed.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::object::conformance;

    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        conformance::run_all(Arc::new(MemoryObjectStorage::new())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_store_has_exactly_one_winner_of_a_create_race() {
        conformance::create_race_has_one_winner(Arc::new(MemoryObjectStorage::new()), "race/0.blk").await;
    }

    #[tokio::test]
    async fn memory_store_ignoring_conditions_overwrites() {
        let store = MemoryObjectStorage::ignoring_conditions();
        store.put_if_absent("k", Bytes::from_static(b"one")).await.unwrap();
        store.put_if_absent("k", Bytes::from_static(b"two")).await.unwrap();
        assert_eq!(store.get("k", None).await.unwrap(), Bytes::from_static(b"two"));
    }
}
