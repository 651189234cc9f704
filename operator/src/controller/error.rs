//! Errors of one reconcile pass.

/// A failed reconcile step. Every variant is retried with backoff; none leaves partial state that
/// a later pass cannot repair, because every pass rebuilds its view from the API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{action} {kind} {name}: {source}")]
    Kube {
        /// What was attempted (`apply`, `get`, `evict`, ...).
        action: &'static str,
        /// Object kind.
        kind: String,
        /// Object name.
        name: String,
        /// Underlying error (boxed: it is large and errors are the cold path).
        #[source]
        source: Box<kube::Error>,
    },
    /// An object could not be turned into JSON (a bug in rendering).
    #[error("serializing {kind} {name}: {source}")]
    Serialize {
        /// Object kind.
        kind: String,
        /// Object name.
        name: String,
        /// Underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The cluster object lacks a namespace or name (cluster-scoped misuse).
    #[error("WoodpeckerCluster without {0}")]
    MissingMetadata(&'static str),
    /// Rendering refused the spec; reported as a condition, not retried until the spec changes.
    #[error("rendering failed: {0}")]
    Render(String),
}

impl Error {
    /// Wrap a kube error for `action` on `kind`/`name`.
    pub fn kube(action: &'static str, kind: &str, name: &str, source: kube::Error) -> Self {
        Self::Kube { action, kind: kind.to_string(), name: name.to_string(), source: Box::new(source) }
    }
}
