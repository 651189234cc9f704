//! Leader election over a `coordination.k8s.io/v1` Lease.
//!
//! ```text
//!   acquire: GET lease ─ absent ─────────────────────▶ CREATE (holder = me)          ─▶ leader
//!                     ├ holder == me ────────────────▶ REPLACE renewTime (rv check) ─▶ leader
//!                     ├ holder empty (released) ─────▶ REPLACE holder = me, transitions+1
//!                     ├ unchanged for leaseDuration ─▶ REPLACE holder = me, transitions+1
//!                     │   (of *local* time, since this candidate last saw it change)
//!                     └ otherwise ───────────────────▶ follower, retry after `retry_period`
//! ```
//!
//! Safety rests on two rules, as in client-go's leaderelection:
//!
//! - **Expiry is decided on local time only.** A candidate remembers when it last saw the Lease
//!   change (its `resourceVersion`: every renewal is a write) and calls it expired once it has
//!   stayed unchanged for `leaseDurationSeconds` of the candidate's own monotonic clock. The
//!   `renewTime` the holder writes comes from another node's wall clock and is never compared with
//!   ours, so clock skew between nodes cannot make a live lease look expired (or a dead one live).
//! - **A leader stops before anyone can take over.** Each renewal attempt is bounded by the renew
//!   deadline, counted from the start of the last renewal that succeeded. A renewal that hangs
//!   (the client has no read timeout) is abandoned when that deadline passes and leadership is
//!   lost; [`LeaderElector::lead`] then drops the leader's work at once. A successor needs the
//!   Lease unchanged for `lease_duration` > `renew_deadline` from its own observation of that
//!   last renewal, which it cannot see before the renewal was sent:
//!
//! ```text
//!   leader:    renew sent ──ok──┄┄┄┄┄ hung renew ┄┄┄┄▶│ renew_deadline: work dropped
//!   successor:     sees the renewal ────── lease_duration (local) ─────────▶│ may take over
//! ```
//!
//! Every write carries the Lease's `resourceVersion`, so two candidates racing for an expired
//! lease cannot both win: the loser gets 409 Conflict and stays a follower.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;
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
    /// The call did not answer within the deadline (the client itself has no read timeout).
    #[error("lease {namespace}/{name}: no answer within {after:?}")]
    TimedOut {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// How long the call was given.
        after: Duration,
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

/// When this candidate last saw the Lease change, on its own monotonic clock.
///
/// Pure bookkeeping, so expiry is table-tested without a clock: the callers pass `now`.
#[derive(Clone, Debug, Default)]
pub struct LeaseObservation {
    last: Option<(String, Instant)>,
}

impl LeaseObservation {
    /// Record that the Lease was seen at `resource_version` at local time `now`; the observation
    /// time moves only when the version differs from the last one seen (any write is a change:
    /// a holder whose clock is stuck still shows it is alive by writing).
    pub fn saw(&mut self, resource_version: &str, now: Instant) {
        match &self.last {
            Some((rv, _)) if rv == resource_version => {}
            _ => self.last = Some((resource_version.to_string(), now)),
        }
    }

    /// Whether the Lease has stayed unchanged for `lease_duration` of local time by `now`.
    /// A Lease never seen before is not expired: the wait starts at the first sighting.
    pub fn expired(&self, lease_duration: Duration, now: Instant) -> bool {
        match &self.last {
            Some((_, at)) => now.saturating_duration_since(*at) >= lease_duration,
            None => false,
        }
    }
}

/// How a [`LeaderElector::lead`] call ended.
#[derive(Debug)]
pub enum Tenure<T> {
    /// `shutdown` fired before this candidate became leader; the work never ran.
    NeverLed,
    /// The work ran and finished (after `shutdown`, or on its own); the Lease was released.
    Finished(T),
    /// Leadership was lost (renew deadline passed, or another holder took the Lease); the work
    /// was dropped mid-flight, without waiting for it.
    Lost,
    /// The work panicked; the Lease was released.
    Panicked,
}

/// One candidate in the election.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    observed: Mutex<LeaseObservation>,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElector {
    /// A candidate using `client`.
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &cfg.namespace);
        Self { api, cfg, observed: Mutex::new(LeaseObservation::default()) }
    }

    fn err(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api { namespace: self.cfg.namespace.clone(), name: self.cfg.name.clone(), source }
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// Note the Lease as seen now; returns whether it has been unchanged for `lease_duration`.
    fn observe(&self, lease: &Lease, lease_duration: Duration) -> bool {
        let rv = lease.metadata.resource_version.as_deref().unwrap_or_default();
        let now = Instant::now();
        let mut observed = self.observed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        observed.saw(rv, now);
        observed.expired(lease_duration, now)
    }

    /// One attempt to acquire or renew the lease. Not bounded in time: [`Self::acquire`] and
    /// [`Self::hold`] bound it.
    pub async fn try_acquire_or_renew(&self) -> Result<LeaseState, LeaderError> {
        // Written for people and other tools; no decision here or elsewhere reads it back.
        let wall = Timestamp::now();
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
                    acquire_time: Some(MicroTime(wall)),
                    renew_time: Some(MicroTime(wall)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created, self.cfg.lease_duration);
                    Ok(LeaseState::Leader)
                }
                Err(e) if is_conflict(&e) => Ok(LeaseState::Follower { holder: String::from("<racing candidate>") }),
                Err(e) => Err(self.err(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        // The holder's stated duration, as client-go; ours when it states none.
        let duration = match spec.lease_duration_seconds {
            Some(s) if s > 0 => Duration::from_secs(u64::from(s.unsigned_abs())),
            _ => self.cfg.lease_duration,
        };
        let expired = self.observe(&lease, duration);
        let mine = holder == self.cfg.identity;
        if !mine && !expired && !holder.is_empty() {
            return Ok(LeaseState::Follower { holder });
        }
        let mut new_spec = spec.clone();
        new_spec.holder_identity = Some(self.cfg.identity.clone());
        new_spec.lease_duration_seconds = Some(self.duration_secs());
        new_spec.renew_time = Some(MicroTime(wall));
        if !mine {
            new_spec.acquire_time = Some(MicroTime(wall));
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(new_spec);
        // replace() sends the resourceVersion we read: a concurrent writer makes this a 409.
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(written) => {
                self.observe(&written, duration);
                Ok(LeaseState::Leader)
            }
            Err(e) if is_conflict(&e) => Ok(LeaseState::Follower { holder }),
            Err(e) => Err(self.err(e)),
        }
    }

    /// [`Self::try_acquire_or_renew`], abandoned at `deadline`.
    async fn attempt_until(&self, deadline: Instant) -> Result<LeaseState, LeaderError> {
        match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
            Ok(res) => res,
            Err(_) => Err(LeaderError::TimedOut {
                namespace: self.cfg.namespace.clone(),
                name: self.cfg.name.clone(),
                after: self.cfg.renew_deadline,
            }),
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

    /// Block until this candidate is leader, or `shutdown` fires (then `None`). Returns when the
    /// winning attempt started: the renew deadline counts from there.
    async fn acquire_at(&self, shutdown: &CancellationToken) -> Option<Instant> {
        loop {
            let started = Instant::now();
            // A hung call must not stall the candidate forever; if its write landed after all,
            // the next attempt finds itself the holder and renews.
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return None,
                res = self.attempt_until(started + self.cfg.renew_deadline) => res,
            };
            match attempt {
                Ok(LeaseState::Leader) => {
                    tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "became leader");
                    return Some(started);
                }
                Ok(LeaseState::Follower { holder }) => {
                    tracing::debug!(lease = %self.cfg.name, %holder, "waiting for leadership");
                }
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(self.cfg.retry_period) => {}
            }
        }
    }

    /// Block until this candidate is leader, or `shutdown` fires (then `false`).
    pub async fn acquire(&self, shutdown: &CancellationToken) -> bool {
        self.acquire_at(shutdown).await.is_some()
    }

    /// Keep renewing until leadership is lost or `stop` fires.
    ///
    /// Returns `true` when leadership was lost — the renew deadline passed without a successful
    /// renewal (a hung call is abandoned at that deadline), or another candidate holds the Lease —
    /// so the caller must stop its work at once. On `stop` it returns `false` without releasing.
    pub async fn hold(&self, stop: &CancellationToken) -> bool {
        self.hold_since(Instant::now(), stop).await
    }

    async fn hold_since(&self, mut last_renew: Instant, stop: &CancellationToken) -> bool {
        loop {
            let deadline = last_renew + self.cfg.renew_deadline;
            // Never sleep past the deadline: leadership ends at it, not a retry period later.
            let next = (Instant::now() + self.cfg.retry_period).min(deadline);
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep_until(next) => {}
            }
            let started = Instant::now();
            if started >= deadline {
                tracing::error!(lease = %self.cfg.name, "could not renew the lease within the renew deadline");
                return true;
            }
            let attempt = tokio::select! {
                () = stop.cancelled() => return false,
                res = self.attempt_until(deadline) => res,
            };
            match attempt {
                Ok(LeaseState::Leader) => last_renew = started,
                Ok(LeaseState::Follower { holder }) => {
                    tracing::error!(%holder, "lost the lease to another candidate");
                    return true;
                }
                Err(LeaderError::TimedOut { .. }) => {
                    tracing::error!(lease = %self.cfg.name, "renewing the lease hung past the renew deadline");
                    return true;
                }
                Err(e) => tracing::warn!(error = %e, "renewing the lease failed"),
            }
        }
    }

    /// Become leader, run `work` while leading, and stop it when leadership ends.
    ///
    /// - Leadership lost: the work is dropped at once (its in-flight calls with it), not asked
    ///   to finish, so nothing it does can overlap with a successor's work.
    /// - `shutdown`: the work's token is cancelled and it finishes gracefully while renewals
    ///   go on (if leadership is lost meanwhile, it is dropped), then the Lease is released so a
    ///   successor need not wait for expiry.
    /// - The work ends on its own: the Lease is released.
    pub async fn lead<F, Fut, T>(&self, shutdown: &CancellationToken, work: F) -> Tenure<T>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let Some(won_at) = self.acquire_at(shutdown).await else { return Tenure::NeverLed };
        let work_stop = CancellationToken::new();
        let mut task = tokio::spawn(work(work_stop.clone()));
        // Renewing stops only when the work has finished: a graceful shutdown stays leased.
        let renew_stop = CancellationToken::new();
        let hold = self.hold_since(won_at, &renew_stop);
        tokio::pin!(hold);
        let mut shutting_down = false;
        let finished = loop {
            tokio::select! {
                lost = &mut hold => {
                    if lost {
                        task.abort();
                        // Wait for the drop only: the aborted task runs no more of the work.
                        let _ = (&mut task).await;
                        return Tenure::Lost;
                    }
                    // Unreachable (renew_stop fires only below); stop the work like a shutdown.
                    work_stop.cancel();
                    break (&mut task).await;
                }
                res = &mut task => break res,
                () = shutdown.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    work_stop.cancel();
                }
            }
        };
        renew_stop.cancel();
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "releasing the lease failed; it expires on its own");
        }
        match finished {
            Ok(out) => Tenure::Finished(out),
            Err(_) => Tenure::Panicked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_counts_local_time_since_the_last_change() {
        let t0 = Instant::now();
        let d = Duration::from_secs(10);
        let mut o = LeaseObservation::default();
        assert!(!o.expired(d, t0), "a lease never seen is not expired");
        o.saw("1", t0);
        assert!(!o.expired(d, t0 + Duration::from_secs(9)));
        // Seeing the same version again does not restart the wait.
        o.saw("1", t0 + Duration::from_secs(9));
        assert!(o.expired(d, t0 + Duration::from_secs(10)));
        // A new version (a renewal, whatever renewTime it carries) does.
        o.saw("2", t0 + Duration::from_secs(11));
        assert!(!o.expired(d, t0 + Duration::from_secs(20)));
        assert!(o.expired(d, t0 + Duration::from_secs(21)));
    }
}
