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

/// Spawns the task `keepalive:<what>` that refreshes `lease` every `policy.interval` until `cancel`
/// fires. It publishes `false` on `valid` and ends when the lease is lost: the server reports a TTL
/// `<= 0`, `max_failures` keep-alives in a row fail, or no keep-alive succeeded for a whole TTL
/// (the lease may have expired on the server, so the holder must stop trusting it). A lost lease is
/// revoked best-effort so its keys disappear without waiting for the TTL.
///
/// With a `guard_key`, the lease also counts as lost once that key is gone (deleted by
/// `delete_log` or by an operator) even though the lease itself lives on.
pub(crate) fn spawn_keepalive(
    kv: Arc<dyn KvBackend>,
    lease: LeaseId,
    guard_key: Option<String>,
    policy: KeepAlivePolicy,
    cancel: CancellationToken,
    valid: watch::Sender<bool>,
    what: String,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut keeper: Option<Box<dyn LeaseKeeper>> = None;
        let mut failures: u32 = 0;
        let mut last_ok = Instant::now();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(policy.interval) => {}
            }
            let attempt = async {
                if keeper.is_none() {
                    keeper = Some(kv.keep_alive(lease).await?);
                }
                match keeper.as_mut() {
                    Some(k) => k.keep_alive_once().await,
                    None => Ok(0),
                }
            };
            let outcome = tokio::select! {
                () = cancel.cancelled() => return,
                outcome = attempt => outcome,
            };
            let lost_reason = match outcome {
                Ok(ttl) if ttl > 0 => {
                    failures = 0;
                    last_ok = Instant::now();
                    match &guard_key {
                        Some(key) => match kv.get(key).await {
                            Ok(Some(_)) => None,
                            Ok(None) => Some(format!("key {key:?} was deleted")),
                            Err(e) => {
                                tracing::warn!(task = %what, error = %e, "checking the lock key failed");
                                None
                            }
                        },
                        None => None,
                    }
                }
                Ok(ttl) => Some(format!("lease {lease:x} is gone (ttl {ttl})")),
                Err(MetaError::LeaseNotFound { .. }) => Some(format!("lease {lease:x} no longer exists")),
                Err(e) => {
                    keeper = None;
                    failures += 1;
                    tracing::warn!(task = %what, lease = format!("{lease:x}"), failures, error = %e, "lease keep-alive failed");
                    if failures >= policy.max_failures {
                        Some(format!("{failures} consecutive keep-alive failures, last: {e}"))
                    } else if last_ok.elapsed() >= policy.ttl {
                        Some(format!("no successful keep-alive for {:?} (lease TTL), last: {e}", last_ok.elapsed()))
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
