//! Leader election over a `coordination.k8s.io/v1` Lease.
//!
//! ```text
//!   acquire: GET lease ─ absent ──────────────▶ CREATE (holder = me)          ─▶ leader
//!                     ├ holder == me ─────────▶ REPLACE renewTime (rv check) ─▶ leader
//!                     ├ renewTime + duration < now ▶ REPLACE holder = me, transitions+1
//!                     └ otherwise ────────────▶ follower, retry after `retry_period`
//! ```
//!
//! Every write carries the Lease's `resourceVersion`, so two candidates racing for an expired
//! lease cannot both win: the loser gets 409 Conflict and stays a follower. A leader that cannot
//! renew within `renew_deadline` gives up leadership (the caller must stop reconciling) before
//! the lease can expire for the others.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

/// Timings of the election, as in client-go's leaderelection package.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Namespace holding the Lease.
    pub namespace: String,
    /// This candidate's identity (pod name plus a random suffix).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long steps down.
    pub renew_deadline: Duration,
    /// Pause between acquire/renew attempts.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// Defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A failed Lease call; retrying later is always safe.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The API call failed.
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// Underlying error.
        #[source]
        source: kube::Error,
    },
}

/// Outcome of one acquire-or-renew attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// We hold the lease.
    Leader,
    /// Someone else holds a valid lease.
    Follower {
        /// The current holder.
        holder: String,
    },
}

/// One candidate in the election.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElector {
    /// A candidate using `client`.
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &cfg.namespace);
        Self { api, cfg }
    }

    fn err(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api { namespace: self.cfg.namespace.clone(), name: self.cfg.name.clone(), source }
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// One attempt to acquire or renew the lease.
    pub async fn try_acquire_or_renew(&self) -> Result<LeaseState, LeaderError> {
        let now = Timestamp::now();
        let existing = self.api.get_opt(&self.cfg.name).await.map_err(|e| self.err(e))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(self.duration_secs()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(LeaseState::Leader),
                Err(e) if is_conflict(&e) => Ok(LeaseState::Follower { holder: String::from("<racing candidate>") }),
                Err(e) => Err(self.err(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
        let expired = match &spec.renew_time {
            Some(t) => t.0 + duration < now,
            None => true,
        };
        let mine = holder == self.cfg.identity;
        if !mine && !expired && !holder.is_empty() {
            return Ok(LeaseState::Follower { holder });
        }
        let mut new_spec = spec.clone();
        new_spec.holder_identity = Some(self.cfg.identity.clone());
        new_spec.lease_duration_seconds = Some(self.duration_secs());
        new_spec.renew_time = Some(MicroTime(now));
        if !mine {
            new_spec.acquire_time = Some(MicroTime(now));
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(new_spec);
        // replace() sends the resourceVersion we read: a concurrent writer makes this a 409.
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(LeaseState::Leader),
            Err(e) if is_conflict(&e) => Ok(LeaseState::Follower { holder }),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Give up the lease (best effort) so a successor need not wait for expiry.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await.map_err(|e| self.err(e))? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Block until this candidate is leader, or `shutdown` fires (then `false`).
    pub async fn acquire(&self, shutdown: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(LeaseState::Leader) => {
                    tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "became leader");
                    return true;
                }
                Ok(LeaseState::Follower { holder }) => {
                    tracing::debug!(lease = %self.cfg.name, %holder, "waiting for leadership");
                }
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(self.cfg.retry_period) => {}
            }
        }
    }

    /// Keep renewing until leadership is lost or `shutdown` fires.
    ///
    /// Returns `true` when leadership was lost, so the caller must stop reconciling. On shutdown
    /// it returns `false` without releasing: the caller stops its work first, then calls
    /// [`LeaderElector::release`], so two leaders never overlap.
    pub async fn hold(&self, shutdown: &CancellationToken) -> bool {
        let mut last_renew = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(self.cfg.retry_period) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(LeaseState::Leader) => last_renew = tokio::time::Instant::now(),
                Ok(LeaseState::Follower { holder }) => {
                    tracing::error!(%holder, "lost the lease to another candidate");
                    return true;
                }
                Err(e) => tracing::warn!(error = %e, "renewing the lease failed"),
            }
            if last_renew.elapsed() > self.cfg.renew_deadline {
                tracing::error!("could not renew the lease within the renew deadline");
                return true;
            }
        }
    }
}
