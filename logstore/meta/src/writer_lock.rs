//! The per-log writer lock: an etcd `concurrency.Mutex`-compatible key held by a session lease.
//!
//! ```text
//! P/logs/<log>/lock/<leaseHex>   value "" , lease = session
//! owner = the key with the lowest create_revision under P/logs/<log>/lock/
//! ```
//! Acquisition is a `TryLock`: create our key (guarded by `create_revision == 0`), read every key
//! under the prefix in the same transaction, and fail at once with `LockHeld` when a key with a
//! lower create revision exists. Go clients using `concurrency.NewMutex(P/logs/<log>/lock)` see the
//! same owner.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{MetaError, MetaResult};
use crate::keys::KeyLayout;
use crate::kv::{Compare, KvBackend, LeaseId, Txn, TxnOp};
use crate::session::{KeepAlive, KeepAlivePolicy, revoke_in_background};

/// A held writer lock. Valid until released, dropped, or lost: the lease expired or was revoked,
/// keep-alives failed too often or for a whole TTL, or the lock key was deleted (e.g. by
/// `delete_log`). Dropping it releases the lock in the background.
#[derive(Debug)]
pub struct WriterLock {
    log: String,
    key: String,
    lease: LeaseId,
    kv: Arc<dyn KvBackend>,
    valid: watch::Receiver<bool>,
    /// Until when the lease certainly lives, as far as this process knows (last keep-alive sent + TTL).
    deadline: watch::Receiver<tokio::time::Instant>,
    /// When the lock was taken: an earlier holder's lease had ended by then.
    acquired_at: tokio::time::Instant,
    ttl: std::time::Duration,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl WriterLock {
    /// Tries once to take the lock of `log`; `LockHeld` when another session owns it.
    pub(crate) async fn acquire(
        kv: Arc<dyn KvBackend>,
        keys: &KeyLayout,
        log: &str,
        policy: KeepAlivePolicy,
    ) -> MetaResult<WriterLock> {
        let granted_at = tokio::time::Instant::now();
        let lease = kv.grant_lease(policy.ttl).await?;
        match Self::try_lock(&kv, keys, log, lease).await {
            Ok(key) => {
                let (tx, rx) = watch::channel(true);
                let (deadline_tx, deadline) = watch::channel(granted_at + policy.ttl);
                let cancel = CancellationToken::new();
                let task = KeepAlive {
                    kv: kv.clone(),
                    lease,
                    granted_at,
                    guard_key: Some(key.clone()),
                    policy,
                    what: format!("writer-lock:{log}"),
                    deadline: Some(deadline_tx),
                }
                .spawn(cancel.clone(), tx);
                Ok(WriterLock {
                    log: log.to_owned(),
                    key,
                    lease,
                    kv,
                    valid: rx,
                    deadline,
                    acquired_at: tokio::time::Instant::now(),
                    ttl: policy.ttl,
                    cancel,
                    task: Some(task),
                })
            }
            Err(e) => {
                if let Err(revoke) = kv.revoke_lease(lease).await {
                    tracing::warn!(log, error = %revoke, "revoking the lease of a failed lock attempt failed");
                }
                Err(e)
            }
        }
    }

    async fn try_lock(kv: &Arc<dyn KvBackend>, keys: &KeyLayout, log: &str, lease: LeaseId) -> MetaResult<String> {
        let key = keys.lock_key(log, lease);
        let prefix = keys.lock_prefix(log);
        let owners = TxnOp::GetPrefix { prefix, limit: None };
        let resp =
            kv.txn(Txn::new().when(vec![Compare::absent(&key)]).and_then(vec![
                TxnOp::Put { key: key.clone(), value: Vec::new(), lease: Some(lease) },
                owners.clone(),
            ]))
            .await?;
        if !resp.succeeded {
            // A fresh lease cannot already own a key; treat it as somebody else's.
            return Err(MetaError::LockHeld { log: log.to_owned() });
        }
        let mine = resp.revision;
        let owner = resp.get_result(1).iter().map(|kv| kv.create_revision).min().unwrap_or(mine);
        if owner < mine {
            return Err(MetaError::LockHeld { log: log.to_owned() });
        }
        Ok(key)
    }

    /// Log this lock belongs to.
    pub fn log_name(&self) -> &str {
        &self.log
    }

    /// Full mutex key (`P/logs/<log>/lock/<leaseHex>`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Session lease holding the key.
    pub fn lease_id(&self) -> LeaseId {
        self.lease
    }

    /// Whether the lock is still held as far as this process can tell.
    pub fn is_valid(&self) -> bool {
        *self.valid.borrow()
    }

    /// Until when this process may act as the holder: the last keep-alive that succeeded was sent at
    /// `t`, so the server cannot have expired the lease before `t + TTL`. After it, the lease may be
    /// gone and another writer may hold the lock, even if no keep-alive has failed yet. (A revoked lease
    /// is only noticed at the next keep-alive; this bound still holds then.)
    pub fn valid_until(&self) -> tokio::time::Instant {
        *self.deadline.borrow()
    }

    /// Whether the lock is valid and `now` is before [`Self::valid_until`].
    pub fn holds_at(&self, now: tokio::time::Instant) -> bool {
        self.is_valid() && now < self.valid_until()
    }

    /// When this lock was taken; any earlier holder's lease had ended by then.
    pub fn acquired_at(&self) -> tokio::time::Instant {
        self.acquired_at
    }

    /// The session TTL: an earlier holder may have acted as the holder until this long after
    /// [`Self::acquired_at`] (its own [`Self::valid_until`] bound).
    pub fn session_ttl(&self) -> std::time::Duration {
        self.ttl
    }

    /// `Ok` while valid, `LockLost` once lost.
    pub fn check(&self) -> MetaResult<()> {
        if self.is_valid() { Ok(()) } else { Err(MetaError::LockLost { log: self.log.clone() }) }
    }

    /// Completes when the lock is lost; pending forever while it stays valid.
    pub async fn lost(&self) {
        let mut rx = self.valid.clone();
        // An error means the keep-alive task ended without publishing: treat it as lost too.
        let _ = rx.wait_for(|valid| !*valid).await;
    }

    /// A receiver of the validity flag (`true` while held) for use in `select!` loops.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.valid.clone()
    }

    /// Releases the lock: stops the keep-alive and revokes the session lease, deleting the key.
    pub async fn release(mut self) -> MetaResult<()> {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let lease = std::mem::take(&mut self.lease);
        self.kv.revoke_lease(lease).await
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        self.cancel.cancel();
        if self.lease != 0 {
            revoke_in_background(self.kv.clone(), self.lease, format!("writer-lock:{}", self.log));
        }
    }
}
