//! Object storage per bucket. Requests name their bucket; the server's `minio.*` config supplies the
//! endpoint and credentials. One connection per bucket, made on first use.

use std::collections::HashMap;
use std::sync::Arc;

use woodpecker_storage::object::{ObjectError, ObjectStorage, S3ObjectStorage, S3Options};

/// Connections to the buckets requests name.
#[derive(Debug)]
pub struct ObjectStores {
    base: S3Options,
    map: tokio::sync::Mutex<HashMap<String, Arc<dyn ObjectStorage>>>,
}

impl ObjectStores {
    /// Buckets reached with `base` (its bucket is replaced by each request's).
    pub fn new(base: S3Options) -> Self {
        Self { base, map: tokio::sync::Mutex::new(HashMap::new()) }
    }

    /// The store of `bucket`, connecting on first use. The bucket must exist (as upstream's server).
    pub async fn get(&self, bucket: &str) -> Result<Arc<dyn ObjectStorage>, ObjectError> {
        let mut map = self.map.lock().await;
        if let Some(s) = map.get(bucket) {
            return Ok(Arc::clone(s));
        }
        let opts = S3Options { bucket: bucket.to_owned(), create_bucket: false, ..self.base.clone() };
        let store: Arc<dyn ObjectStorage> = Arc::new(S3ObjectStorage::connect(opts).await?);
        map.insert(bucket.to_owned(), Arc::clone(&store));
        Ok(store)
    }
}
