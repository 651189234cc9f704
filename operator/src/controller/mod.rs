//! Controller: load, validate, render, apply, observe, roll/scale, status.
//!
//! ```text
//!  watch(WoodpeckerCluster, owned objects, pods) ─▶ reconcile(cluster)
//!    1 load      referenced Secrets/ConfigMaps; missing ⇒ ConfigValid=False, no writes
//!    2 render    crate::render (pure)
//!    3 apply     SSA, field manager "woodpecker-operator", skipped when the cache already matches
//!    4 observe   pods from the cache + admin API of every Ready pod
//!    5 scale     crate::decide (pure) ⇒ decommission / cancel / shrink / delete PVC
//!    6 roll      crate::decide (pure) ⇒ evict one pod through the Eviction API (PDB arbitrates)
//!    7 status    patched only when it changed; an Event for every restart, block and decommission
//! ```

pub mod apply;
pub mod conditions;
pub mod deletion;
mod error;
pub mod load;
pub mod observe;
pub mod plan;
pub mod reconcile;
mod runner;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::runtime::events::{Event, Recorder};

pub use error::Error;
pub use runner::{Settings, Stores, run, slim, slim_watch};

use crate::admin::AdminClient;
use crate::metrics::Metrics;

/// Label every rendered object and pod carries: the owning cluster's name.
pub const LABEL_CLUSTER: &str = "woodpecker.zilliz.io/cluster";

/// Per-cluster memory kept between passes. Losing it (operator restart) is safe: it only makes
/// the roll settle once more and restarts the block timer.
#[derive(Clone, Debug, Default)]
pub struct ClusterMemory {
    /// The roll planner's memory (settle and wait timers, last eviction).
    pub roll: crate::decide::RollMemory,
    /// Last block reason an Event was emitted for (one Event per distinct reason).
    pub last_block_reason: Option<String>,
    /// When each decommission was first requested (Unix seconds), by pod.
    pub decommission_since: std::collections::BTreeMap<String, i64>,
    /// Stalled victims already reported by an Event.
    pub stalled_reported: std::collections::BTreeSet<String>,
    /// `spec.replicas` of each StatefulSet as last applied by this operator (the cache may lag
    /// behind our own writes).
    pub replicas_applied: std::collections::BTreeMap<String, i32>,
    /// PVC expansions (name, size) the API refused; not retried until the size changes again.
    pub expand_refused: std::collections::BTreeSet<(String, String)>,
}

/// Shared state of the controller.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Admin API of the LogStore pods.
    pub admin: Arc<dyn AdminClient>,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// Event recorder.
    pub recorder: Recorder,
    /// Reflector caches.
    pub stores: Stores,
    /// Settings.
    pub settings: Settings,
    /// Per-cluster memory, keyed by `namespace/name`.
    pub memory: Mutex<HashMap<String, ClusterMemory>>,
    /// Which clusters reference which user Secret/ConfigMap, so a change to one triggers them.
    pub references: Arc<ReferenceIndex>,
    /// Referenced user Secrets/ConfigMaps (metadata cache + contents per resourceVersion).
    pub users: Arc<load::UserObjects>,
}

/// `(kind, namespace, name)` of a referenced user object → names of the clusters referencing it.
#[derive(Default, Debug)]
pub struct ReferenceIndex(Mutex<HashMap<(String, String, String), std::collections::BTreeSet<String>>>);

impl ReferenceIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), std::collections::BTreeSet<String>>> {
        match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Record that cluster `ns/cluster` references exactly `refs` (kind, name) now.
    pub fn set(&self, ns: &str, cluster: &str, refs: &[(String, String)]) {
        let mut map = self.lock();
        map.retain(|_, clusters| {
            clusters.remove(cluster);
            !clusters.is_empty()
        });
        for (kind, name) in refs {
            map.entry((kind.clone(), ns.to_string(), name.clone())).or_default().insert(cluster.to_string());
        }
    }

    /// Clusters referencing `kind` `ns/name`.
    pub fn clusters(&self, kind: &str, ns: &str, name: &str) -> Vec<String> {
        self.lock()
            .get(&(kind.to_string(), ns.to_string(), name.to_string()))
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Context {
    /// Publish an Event; failures are logged, never fatal.
    pub async fn publish(&self, ev: &Event, reference: &k8s_openapi::api::core::v1::ObjectReference) {
        match self.recorder.publish(ev, reference).await {
            Ok(()) => self.metrics.write("Event", "create"),
            Err(e) => tracing::warn!(error = %e, reason = %ev.reason, "publishing an Event failed"),
        }
    }

    /// Run `f` on the memory of cluster `key`.
    pub fn with_memory<T>(&self, key: &str, f: impl FnOnce(&mut ClusterMemory) -> T) -> T {
        let mut map = match self.memory.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(map.entry(key.to_string()).or_default())
    }
}
