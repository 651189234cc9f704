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
                let cancel = CancellationToken::new();
                let task = KeepAlive {
                    kv: kv.clone(),
                    lease,
                    granted_at,
                    guard_key: Some(key.clone()),
                    policy,
                    what: format!("writer-lock:{log}"),
                }
                .spawn(cancel.clone(), tx);
                Ok(WriterLock { log: log.to_owned(), key, lease, kv, valid: rx, cancel, task: Some(task) })
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
