//! Reader registrations: `P/readers/<logId>/<reader>` keys bound to a lease that is kept alive.
//!
//! Upstream granted the 60 s lease and never refreshed it, so a reader stopped protecting its
//! segments from truncation GC after a minute (§14.3). Here a background task keeps the lease
//! alive until the registration is closed or dropped, and an update after a lost lease re-grants.

use std::sync::Arc;

use prost::Message;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use woodpecker_proto::meta::ReaderTempInfo;

use crate::error::{MetaError, MetaResult};
use crate::kv::{KvBackend, LeaseId, Txn, TxnOp};
use crate::session::{KeepAlive, KeepAlivePolicy, revoke_in_background};

#[derive(Debug)]
struct Session {
    lease: LeaseId,
    valid: watch::Receiver<bool>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// A live reader registration. Its key exists while this value lives and the store is reachable;
/// [`ReaderRegistration::close`] deletes it, dropping it revokes the lease in the background.
#[derive(Debug)]
pub struct ReaderRegistration {
    key: String,
    kv: Arc<dyn KvBackend>,
    policy: KeepAlivePolicy,
    session: Mutex<Option<Session>>,
}

impl ReaderRegistration {
    /// Writes `info` at `key` under a fresh kept-alive lease.
    pub(crate) async fn register(
        kv: Arc<dyn KvBackend>,
        key: String,
        info: &ReaderTempInfo,
        policy: KeepAlivePolicy,
    ) -> MetaResult<Self> {
        let reg = ReaderRegistration { key, kv, policy, session: Mutex::new(None) };
        reg.update(info).await?;
        Ok(reg)
    }

    async fn start_session(&self) -> MetaResult<Session> {
        let granted_at = tokio::time::Instant::now();
        let lease = self.kv.grant_lease(self.policy.ttl).await?;
        let (tx, rx) = watch::channel(true);
        let cancel = CancellationToken::new();
        let task = KeepAlive {
            kv: self.kv.clone(),
            lease,
            granted_at,
            guard_key: None,
            policy: self.policy,
            what: format!("reader:{}", self.key),
            deadline: None,
        }
        .spawn(cancel.clone(), tx);
        Ok(Session { lease, valid: rx, cancel, task })
    }

    /// Full key of the registration.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether the lease is currently alive (false after a loss until the next update).
    pub async fn is_alive(&self) -> bool {
        self.session.lock().await.as_ref().is_some_and(|s| *s.valid.borrow())
    }

    /// Lease currently holding the key (0 when none).
    pub async fn lease_id(&self) -> LeaseId {
        self.session.lock().await.as_ref().map_or(0, |s| s.lease)
    }

    /// Replaces the stored reader info; re-grants the lease first when it was lost.
    pub async fn update(&self, info: &ReaderTempInfo) -> MetaResult<()> {
        let value = info.encode_to_vec();
        let mut guard = self.session.lock().await;
        for attempt in 0..2 {
            let alive = guard.as_ref().is_some_and(|s| *s.valid.borrow());
            if !alive {
                if let Some(old) = guard.take() {
                    old.cancel.cancel();
                }
                *guard = Some(self.start_session().await?);
            }
            let lease = guard.as_ref().map_or(0, |s| s.lease);
            let put = TxnOp::Put { key: self.key.clone(), value: value.clone(), lease: Some(lease) };
            match self.kv.txn(Txn::new().and_then(vec![put])).await {
                Ok(_) => return Ok(()),
                Err(MetaError::LeaseNotFound { .. }) if attempt == 0 => {
                    if let Some(old) = guard.take() {
                        old.cancel.cancel();
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(MetaError::KeyNotFound { key: self.key.clone() })
    }

    /// Deletes the key and revokes the lease.
    pub async fn close(self) -> MetaResult<()> {
        let session = self.session.lock().await.take();
        if let Some(s) = session {
            s.cancel.cancel();
            let _ = s.task.await;
            self.kv.txn(Txn::new().and_then(vec![TxnOp::delete(&self.key)])).await?;
            self.kv.revoke_lease(s.lease).await?;
        } else {
            self.kv.txn(Txn::new().and_then(vec![TxnOp::delete(&self.key)])).await?;
        }
        Ok(())
    }
}

impl Drop for ReaderRegistration {
    fn drop(&mut self) {
        if let Some(s) = self.session.get_mut().take() {
            s.cancel.cancel();
            revoke_in_background(self.kv.clone(), s.lease, format!("reader:{}", self.key));
        }
    }
}
