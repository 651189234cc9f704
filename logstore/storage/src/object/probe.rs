//! Upstream's condition-write capability probe (`CheckIfConditionWriteSupport`, spec §9.2).

use bytes::Bytes;

use super::{ObjectError, ObjectStorage};

/// One probe step's expectation, for the log line when a backend gets it wrong.
#[derive(Debug, Clone, Copy)]
enum Step {
    CreateFresh,
    CreateAgain,
    FenceOntoObject,
    FenceFresh,
    CreateOntoFence,
    FenceAgain,
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Step::CreateFresh => "1: create-if-absent of a fresh key must succeed",
            Step::CreateAgain => "2: repeating it must fail with AlreadyExists",
            Step::FenceOntoObject => "3: a fence onto that object must fail with AlreadyExists",
            Step::FenceFresh => "4: a fence on a fresh key must succeed",
            Step::CreateOntoFence => "5: create-if-absent onto the fence must fail with Fenced",
            Step::FenceAgain => "6: a second fence on the fence key must succeed",
        }
    }
}

/// Errors that say "could not ask", as opposed to "asked, and the answer was wrong".
fn is_infrastructure(e: &ObjectError) -> bool {
    matches!(
        e,
        ObjectError::Unreachable { .. }
            | ObjectError::Denied { .. }
            | ObjectError::BucketMissing { .. }
            | ObjectError::Io { .. }
            | ObjectError::InvalidKey { .. }
            | ObjectError::InvalidConfig { .. }
    )
}

/// Checks whether `store` honours create-if-absent and fences, with upstream's six steps on
/// `<root_path>/conditional_write_<id>` and `<root_path>/conditional_write_fenced_<id>`:
///
/// 1. create-if-absent of a fresh key succeeds; 2. repeating it fails with `AlreadyExists`;
/// 3. a fence onto that object fails with `AlreadyExists`; 4. a fence on a fresh key succeeds;
/// 5. create-if-absent onto the fence fails with `Fenced`; 6. a second fence succeeds.
///
/// Unlike upstream, an empty `root_path` gives `conditional_write_<id>` rather than
/// `/conditional_write_<id>` (a key the local backend would reject).
///
/// Both keys are removed afterwards (best effort, logged on failure). Returns `Ok(true)` when every
/// step behaved, `Ok(false)` when the backend answered but not as a conditional store would, and
/// `Err` when it could not be asked at all (unreachable, denied, missing bucket).
pub async fn probe_condition_write(store: &dyn ObjectStorage, root_path: &str) -> Result<bool, ObjectError> {
    // Upstream's `generateUniqueTestID`: test-<unix nanos>-<pid>-<16 hex random>.
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let id = format!("test-{nanos}-{}-{:016x}", std::process::id(), rand::random::<u64>());
    let root = root_path.trim_end_matches('/');
    let join = |name: String| {
        if root.is_empty() { name } else { format!("{root}/{name}") }
    };
    let normal_key = join(format!("conditional_write_{id}"));
    let fence_key = join(format!("conditional_write_fenced_{id}"));

    let outcome = run_steps(store, &normal_key, &fence_key).await;

    for key in [&normal_key, &fence_key] {
        if let Err(e) = store.remove(key).await {
            tracing::warn!(store = %store.describe(), key, error = %e, "condition-write probe could not remove its object");
        }
    }

    match outcome {
        Ok(()) => Ok(true),
        Err((step, e)) if is_infrastructure(&e) => {
            tracing::warn!(store = %store.describe(), step = step.describe(), error = %e, "condition-write probe could not reach the store");
            Err(e)
        }
        Err((step, e)) => {
            tracing::warn!(store = %store.describe(), step = step.describe(), error = %e, "object store does not honour condition writes");
            Ok(false)
        }
    }
}

/// Runs the six steps; the error carries the step that misbehaved and what it returned instead.
async fn run_steps(store: &dyn ObjectStorage, normal_key: &str, fence_key: &str) -> Result<(), (Step, ObjectError)> {
    let body = Bytes::from_static(b"test-conditional-write-data");
    let unexpected = |key: &str, what: &str| ObjectError::Other {
        op: "probe_condition_write",
        key: key.to_owned(),
        message: format!("unexpectedly {what}"),
    };

    store.put_if_absent(normal_key, body.clone()).await.map_err(|e| (Step::CreateFresh, e))?;

    match store.put_if_absent(normal_key, body.clone()).await {
        Err(ObjectError::AlreadyExists { .. }) => {}
        Ok(()) => return Err((Step::CreateAgain, unexpected(normal_key, "overwrote"))),
        Err(e) => return Err((Step::CreateAgain, e)),
    }

    match store.put_fence(normal_key).await {
        Err(ObjectError::AlreadyExists { .. }) => {}
        Ok(()) => return Err((Step::FenceOntoObject, unexpected(normal_key, "fenced"))),
        Err(e) => return Err((Step::FenceOntoObject, e)),
    }

    store.put_fence(fence_key).await.map_err(|e| (Step::FenceFresh, e))?;

    match store.put_if_absent(fence_key, body).await {
        Err(ObjectError::Fenced { .. }) => {}
        Ok(()) => return Err((Step::CreateOntoFence, unexpected(fence_key, "overwrote"))),
        Err(e) => return Err((Step::CreateOntoFence, e)),
    }

    store.put_fence(fence_key).await.map_err(|e| (Step::FenceAgain, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::MemoryObjectStorage;

    #[tokio::test]
    async fn probe_passes_on_a_conditional_store_and_cleans_up() {
        let store = MemoryObjectStorage::new();
        assert!(probe_condition_write(&store, "files/").await.unwrap());
        assert!(store.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn probe_fails_on_a_store_that_ignores_conditions() {
        let store = MemoryObjectStorage::ignoring_conditions();
        assert!(!probe_condition_write(&store, "files").await.unwrap());
        assert!(store.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn probe_reports_an_unreachable_store_as_an_error_not_as_false() {
        #[derive(Debug)]
        struct Down;
        fn down() -> ObjectError {
            ObjectError::Unreachable {
                endpoint: "s3://b@http://127.0.0.1:1".into(),
                attempts: 3,
                source: "refused".into(),
            }
        }
        #[async_trait::async_trait]
        impl ObjectStorage for Down {
            fn describe(&self) -> String {
                "down".into()
            }
            async fn get(&self, _: &str, _: Option<std::ops::Range<u64>>) -> Result<Bytes, ObjectError> {
                Err(down())
            }
            async fn put(&self, _: &str, _: Bytes) -> Result<(), ObjectError> {
                Err(down())
            }
            async fn put_if_absent(&self, _: &str, _: Bytes) -> Result<(), ObjectError> {
                Err(down())
            }
            async fn put_fence(&self, _: &str) -> Result<(), ObjectError> {
                Err(down())
            }
            async fn stat(&self, _: &str) -> Result<crate::object::ObjectInfo, ObjectError> {
                Err(down())
            }
            async fn list(&self, _: &str) -> Result<Vec<crate::object::ObjectInfo>, ObjectError> {
                Err(down())
            }
            async fn remove(&self, _: &str) -> Result<(), ObjectError> {
                Err(down())
            }
            async fn remove_prefix(&self, _: &str) -> Result<usize, ObjectError> {
                Err(down())
            }
        }
        let err = probe_condition_write(&Down, "files").await.unwrap_err();
        assert!(matches!(err, ObjectError::Unreachable { .. }), "{err}");
    }

    #[tokio::test]
    async fn probe_keys_follow_upstream_names() {
        #[derive(Debug, Default)]
        struct Recording {
            inner: MemoryObjectStorage,
            keys: std::sync::Mutex<Vec<String>>,
        }
        #[async_trait::async_trait]
        impl ObjectStorage for Recording {
            fn describe(&self) -> String {
                "recording".into()
            }
            async fn get(&self, key: &str, range: Option<std::ops::Range<u64>>) -> Result<Bytes, ObjectError> {
                self.inner.get(key, range).await
            }
            async fn put(&self, key: &str, body: Bytes) -> Result<(), ObjectError> {
                self.inner.put(key, body).await
            }
            async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), ObjectError> {
                self.keys.lock().unwrap().push(key.to_owned());
                self.inner.put_if_absent(key, body).await
            }
            async fn put_fence(&self, key: &str) -> Result<(), ObjectError> {
                self.keys.lock().unwrap().push(key.to_owned());
                self.inner.put_fence(key).await
            }
            async fn stat(&self, key: &str) -> Result<crate::object::ObjectInfo, ObjectError> {
                self.inner.stat(key).await
            }
            async fn list(&self, prefix: &str) -> Result<Vec<crate::object::ObjectInfo>, ObjectError> {
                self.inner.list(prefix).await
            }
            async fn remove(&self, key: &str) -> Result<(), ObjectError> {
                self.inner.remove(key).await
            }
            async fn remove_prefix(&self, prefix: &str) -> Result<usize, ObjectError> {
                self.inner.remove_prefix(prefix).await
            }
        }
        let store = Recording::default();
        assert!(probe_condition_write(&store, "by-dev/wp").await.unwrap());
        let keys = store.keys.lock().unwrap().clone();
        assert_eq!(keys.len(), 6);
        assert!(keys[0].starts_with("by-dev/wp/conditional_write_test-"));
        assert!(keys[3].starts_with("by-dev/wp/conditional_write_fenced_test-"));
        assert_eq!(keys[0], keys[1]);
        assert_eq!(keys[3], keys[5]);
    }
}
