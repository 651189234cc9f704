//! Lease keep-alive: the background task behind writer locks and reader registrations.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::MetaError;
use crate::kv::{KvBackend, LeaseId, LeaseKeeper};

/// How a lease is kept alive and when it is declared lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlivePolicy {
    /// Lease TTL.
    pub ttl: Duration,
    /// Time between keep-alives.
    pub interval: Duration,
    /// Consecutive failed keep-alives after which the lease counts as lost.
    pub max_failures: u32,
}

/// What to keep alive, and how to tell that it is lost.
pub(crate) struct KeepAlive {
    /// Backend holding the lease.
    pub kv: Arc<dyn KvBackend>,
    /// The lease.
    pub lease: LeaseId,
    /// When the grant was requested: the server's TTL cannot have started earlier.
    pub granted_at: Instant,
    /// With a key, the lease also counts as lost once that key is gone (deleted by `delete_log`
    /// or by an operator) even though the lease itself lives on.
    pub guard_key: Option<String>,
    /// TTL, interval and failure budget.
    pub policy: KeepAlivePolicy,
    /// Task name for logs.
    pub what: String,
    /// Where to publish until when the lease certainly lives (`last keep-alive sent + TTL`), if anywhere.
    pub deadline: Option<watch::Sender<Instant>>,
}

enum Refresh {
    Alive,
    Lost(String),
    Failed(MetaError),
}

impl KeepAlive {
    /// Spawns the task that refreshes the lease every `policy.interval` until `cancel` fires. It
    /// publishes `false` on `valid` and ends when the lease is lost: the server reports a TTL
    /// `<= 0` or an unknown lease, the guard key is gone, `max_failures` keep-alives in a row fail,
    /// or no keep-alive succeeded for a whole TTL (the server may have expired the lease, so the
    /// holder must stop trusting it). A lost lease is revoked best-effort so its keys disappear
    /// without waiting for the TTL.
    pub(crate) fn spawn(self, cancel: CancellationToken, valid: watch::Sender<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let KeepAlive { kv, lease, granted_at, guard_key, policy, what, deadline: published } = self;
            let mut keeper: Option<Box<dyn LeaseKeeper>> = None;
            let mut failures: u32 = 0;
            // When the last successful keep-alive was *sent*: the server refreshed the lease no
            // earlier, so the lease certainly lives until `refreshed + ttl` and may be gone after.
            let mut refreshed = granted_at;
            loop {
                let deadline = refreshed + policy.ttl;
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(policy.interval) => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
                let sent = Instant::now();
                let attempt = async {
                    if keeper.is_none() {
                        match kv.keep_alive(lease).await {
                            Ok(k) => keeper = Some(k),
                            Err(MetaError::LeaseNotFound { .. }) => {
                                return Refresh::Lost(format!("lease {lease:x} no longer exists"));
                            }
                            Err(e) => return Refresh::Failed(e),
                        }
                    }
                    let Some(k) = keeper.as_mut() else { return Refresh::Lost("no keeper".to_owned()) };
                    match k.keep_alive_once().await {
                        Ok(ttl) if ttl > 0 => {}
                        Ok(ttl) => return Refresh::Lost(format!("lease {lease:x} is gone (ttl {ttl})")),
                        Err(MetaError::LeaseNotFound { .. }) => {
                            return Refresh::Lost(format!("lease {lease:x} no longer exists"));
                        }
                        Err(e) => return Refresh::Failed(e),
                    }
                    if let Some(key) = &guard_key {
                        match kv.get(key).await {
                            Ok(Some(_)) => {}
                            Ok(None) => return Refresh::Lost(format!("key {key:?} was deleted")),
                            Err(e) => return Refresh::Failed(e),
                        }
                    }
                    Refresh::Alive
                };
                let outcome = tokio::select! {
                    () = cancel.cancelled() => return,
                    outcome = tokio::time::timeout_at(deadline, attempt) => outcome,
                };
                let lost_reason = match outcome {
                    Err(_elapsed) => Some(format!("no successful keep-alive within the lease TTL {:?}", policy.ttl)),
                    Ok(Refresh::Alive) => {
                        failures = 0;
                        refreshed = sent;
                        if let Some(p) = &published {
                            p.send_replace(refreshed + policy.ttl);
                        }
                        None
                    }
                    Ok(Refresh::Lost(reason)) => Some(reason),
                    Ok(Refresh::Failed(e)) => {
                        keeper = None;
                        failures += 1;
                        tracing::warn!(task = %what, lease = format!("{lease:x}"), failures, error = %e, "lease keep-alive failed");
                        if failures >= policy.max_failures {
                            Some(format!("{failures} consecutive keep-alive failures, last: {e}"))
                        } else if Instant::now() >= refreshed + policy.ttl {
                            Some(format!("no successful keep-alive within the lease TTL {:?}, last: {e}", policy.ttl))
                        } else {
                            None
                        }
                    }
                };
                if let Some(reason) = lost_reason {
                    tracing::warn!(task = %what, lease = format!("{lease:x}"), %reason, "lease lost");
                    valid.send_replace(false);
                    if let Err(e) = kv.revoke_lease(lease).await {
                        tracing::debug!(task = %what, error = %e, "best-effort revoke of a lost lease failed");
                    }
                    return;
                }
            }
        })
    }
}

/// Revokes `lease` in the background; used from `Drop`, where nothing can be awaited.
pub(crate) fn revoke_in_background(kv: Arc<dyn KvBackend>, lease: LeaseId, what: String) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            if let Err(e) = kv.revoke_lease(lease).await {
                tracing::warn!(task = %what, lease = format!("{lease:x}"), error = %e, "revoke on drop failed; the lease expires by TTL");
            }
        });
    }
}
