//! [`KvBackend`] over a real etcd cluster (`etcd-client`).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp as EtcdCompareOp, ConnectOptions, DeleteOptions, GetOptions,
    LeaseKeepAliveStream, LeaseKeeper as EtcdLeaseKeeper, PutOptions, Txn as EtcdTxn, TxnOp as EtcdTxnOp,
    TxnOpResponse,
};

use woodpecker_core::retry::RetryPolicy;

use crate::error::{BoxError, MetaError, MetaResult};
use crate::etcd_tls::{self, EtcdTls};
use crate::kv::{
    Compare, CompareOp, CompareTarget, KeyValue, KvBackend, LeaseId, LeaseKeeper, Txn, TxnOp, TxnOpResult, TxnResponse,
    ttl_seconds,
};

/// Connection and request tunables of the etcd backend.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Timeout of establishing a connection to one endpoint.
    pub connect_timeout: Duration,
    /// Timeout of one request (`etcd.requestTimeout`, 10 s).
    pub request_timeout: Duration,
    /// Attempts of connecting and of read-only requests before giving up with `Unreachable`.
    /// Writes are never retried here: a timed-out write may have been applied.
    pub max_attempts: u32,
    /// Pause between attempts, doubled after each.
    pub retry_backoff: Duration,
    /// User name and password when etcd authentication is enabled (`etcd.auth.*`).
    pub credentials: Option<(String, String)>,
    /// TLS to etcd (`etcd.ssl.*`). `None` with `https://` endpoints uses TLS with the system's roots.
    pub tls: Option<EtcdTls>,
}

impl fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("retry_backoff", &self.retry_backoff)
            // Never print the password.
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("tls", &self.tls)
            .finish()
    }
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_attempts: 3,
            retry_backoff: Duration::from_millis(200),
            credentials: None,
            tls: None,
        }
    }
}

/// The etcd backend. Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct EtcdKv {
    client: Client,
    endpoints: Vec<String>,
    options: EtcdOptions,
}

impl fmt::Debug for EtcdKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdKv").field("endpoints", &self.endpoints).field("options", &self.options).finish()
    }
}

impl EtcdKv {
    /// Connects and checks that the cluster answers (bounded retries, then `Unreachable`).
    ///
    /// With TLS, a handshake failure on every endpoint fails at once with [`MetaError::Tls`] naming the
    /// endpoint; a refused user name or password fails at once with [`MetaError::AuthFailed`].
    pub async fn connect<E: AsRef<str>>(endpoints: &[E], options: &EtcdOptions) -> MetaResult<Self> {
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.as_ref().to_owned()).collect();
        if endpoints.is_empty() {
            return Err(MetaError::Unreachable { endpoints, source: "no etcd endpoints configured".into() });
        }
        let tls = options.tls.clone().or_else(|| etcd_tls::any_https(&endpoints).then(EtcdTls::default));
        let urls = etcd_tls::endpoint_urls(&endpoints, tls.is_some())?;
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), options.request_timeout);
        if let Some(tls) = &tls {
            let config = tls.client_config()?;
            // The balanced channel would retry a failing handshake until the request timeout; find it first.
            etcd_tls::probe(&urls, tls, options.connect_timeout.min(options.request_timeout)).await?;
            connect = connect.with_tls(config);
        }
        if let Some((user, password)) = &options.credentials {
            connect = connect.with_user(user.clone(), password.clone());
        }
        let mut attempt = 0;
        let client =
            loop {
                attempt += 1;
                let result =
                    match tokio::time::timeout(options.request_timeout, Client::connect(&urls, Some(connect.clone())))
                        .await
                    {
                        Ok(Ok(client)) => Ok(client),
                        Ok(Err(e)) => Err(Self::connect_failure(&endpoints, options, e)),
                        Err(_) => Err(MetaError::Unreachable {
                            endpoints: endpoints.clone(),
                            source: format!("connect timed out after {:?}", options.request_timeout).into(),
                        }),
                    };
                match result {
                    Ok(client) => break client,
                    Err(e) if !e.is_retryable() || attempt >= options.max_attempts.max(1) => return Err(e),
                    Err(e) => {
                        tracing::warn!(?endpoints, attempt, error = %e, "etcd connect failed; retrying");
                        tokio::time::sleep(backoff(options.retry_backoff, attempt)).await;
                    }
                }
            };
        let kv = Self { client, endpoints, options: options.clone() };
        // The channel connects lazily: prove the cluster answers before handing the store out.
        // A refusal (e.g. a user without maintenance permission) still proves it is reachable.
        match kv.read("status", |mut c| async move { c.status().await }).await {
            Ok(_) | Err(MetaError::Rejected { .. }) => Ok(kv),
            Err(e) => Err(e),
        }
    }

    /// What a failed `Client::connect` means. It authenticates when credentials are set, so a status
    /// other than a transport failure is the server refusing them.
    fn connect_failure(endpoints: &[String], options: &EtcdOptions, e: etcd_client::Error) -> MetaError {
        use tonic::Code;
        if let Some(reason) = etcd_tls::tls_cause(&e) {
            return MetaError::Tls { endpoint: endpoints.join(","), reason };
        }
        match (&e, &options.credentials) {
            (etcd_client::Error::GRpcStatus(status), Some((user, _)))
                if matches!(
                    status.code(),
                    Code::InvalidArgument | Code::Unauthenticated | Code::PermissionDenied | Code::FailedPrecondition
                ) =>
            {
                MetaError::AuthFailed { endpoints: endpoints.to_vec(), user: user.clone(), source: e.into() }
            }
            (etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_), _) => {
                MetaError::InvalidEndpoint { endpoint: endpoints.join(","), reason: e.to_string() }
            }
            _ => MetaError::Unreachable { endpoints: endpoints.to_vec(), source: BoxError::from(e) },
        }
    }

    /// The raw client, for tests and tools that need etcd features beyond [`KvBackend`].
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn map_err(&self, op: &'static str, e: etcd_client::Error, lease: LeaseId) -> MetaError {
        use etcd_client::Error as E;
        // A refused client certificate surfaces on the first request, not while connecting.
        if let Some(reason) = etcd_tls::tls_cause(&e) {
            return MetaError::Tls { endpoint: self.endpoints.join(","), reason };
        }
        match e {
            E::GRpcStatus(status) => {
                use tonic::Code;
                match status.code() {
                    Code::NotFound if status.message().contains("lease not found") => {
                        MetaError::LeaseNotFound { lease }
                    }
                    Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::Aborted
                    | Code::ResourceExhausted
                    | Code::Unknown => {
                        MetaError::Unreachable { endpoints: self.endpoints.clone(), source: status.into() }
                    }
                    _ => MetaError::Rejected { endpoints: self.endpoints.clone(), op, source: status.into() },
                }
            }
            // Raised when a keep-alive stream is opened for a lease that no longer exists.
            E::LeaseKeepAliveError(msg) if msg.contains("lease not found") => MetaError::LeaseNotFound { lease },
            e @ (E::TransportError(_) | E::IoError(_) | E::EndpointError(_) | E::LeaseKeepAliveError(_)) => {
                MetaError::Unreachable { endpoints: self.endpoints.clone(), source: e.into() }
            }
            other => MetaError::Rejected { endpoints: self.endpoints.clone(), op, source: other.into() },
        }
    }

    fn timed_out(&self, op: &'static str) -> MetaError {
        MetaError::Unreachable {
            endpoints: self.endpoints.clone(),
            source: format!("{op} timed out after {:?}", self.options.request_timeout).into(),
        }
    }

    /// One request with the request timeout, no retry.
    async fn once<T, F, Fut>(&self, op: &'static str, lease: LeaseId, f: F) -> MetaResult<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(self.options.request_timeout, f(self.client.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map_err(op, e, lease)),
            Err(_) => Err(self.timed_out(op)),
        }
    }

    /// An idempotent request, retried on transient failures up to `max_attempts` times.
    async fn read<T, F, Fut>(&self, op: &'static str, f: F) -> MetaResult<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.once(op, 0, &f).await {
                Err(e) if e.is_retryable() && attempt < self.options.max_attempts.max(1) => {
                    tracing::debug!(op, attempt, error = %e, "etcd read failed; retrying");
                    tokio::time::sleep(backoff(self.options.retry_backoff, attempt)).await;
                }
                other => return other,
            }
        }
    }
}

/// Sleep after failed attempt `attempt`: doubling from `base` up to 64 times it, with jitter (the
/// workspace's one policy), so clients that lost etcd together do not come back in lock step.
fn backoff(base: Duration, attempt: u32) -> Duration {
    RetryPolicy { max_attempts: u32::MAX, base_delay: base, max_delay: base.saturating_mul(64) }.delay(attempt)
}

fn to_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn to_etcd_compare(c: &Compare) -> EtcdCompare {
    let op = match c.op {
        CompareOp::Equal => EtcdCompareOp::Equal,
        CompareOp::NotEqual => EtcdCompareOp::NotEqual,
        CompareOp::Greater => EtcdCompareOp::Greater,
        CompareOp::Less => EtcdCompareOp::Less,
    };
    match &c.target {
        CompareTarget::Value(v) => EtcdCompare::value(c.key.as_str(), op, v.clone()),
        CompareTarget::CreateRevision(r) => EtcdCompare::create_revision(c.key.as_str(), op, *r),
        CompareTarget::ModRevision(r) => EtcdCompare::mod_revision(c.key.as_str(), op, *r),
    }
}

fn to_etcd_op(op: &TxnOp) -> EtcdTxnOp {
    match op {
        TxnOp::Put { key, value, lease } => {
            EtcdTxnOp::put(key.as_str(), value.clone(), lease.map(|l| PutOptions::new().with_lease(l)))
        }
        TxnOp::Delete { key } => EtcdTxnOp::delete(key.as_str(), None),
        TxnOp::DeletePrefix { prefix } => EtcdTxnOp::delete(prefix.as_str(), Some(DeleteOptions::new().with_prefix())),
        TxnOp::Get { key } => EtcdTxnOp::get(key.as_str(), None),
        TxnOp::GetPrefix { prefix, limit } => {
            let mut options = GetOptions::new().with_prefix();
            if let Some(limit) = limit {
                options = options.with_limit(i64::try_from(*limit).unwrap_or(i64::MAX));
            }
            EtcdTxnOp::get(prefix.as_str(), Some(options))
        }
    }
}

fn to_etcd_txn(txn: &Txn) -> EtcdTxn {
    EtcdTxn::new()
        .when(txn.compares.iter().map(to_etcd_compare).collect::<Vec<_>>())
        .and_then(txn.success.iter().map(to_etcd_op).collect::<Vec<_>>())
        .or_else(txn.failure.iter().map(to_etcd_op).collect::<Vec<_>>())
}

#[async_trait]
impl KvBackend for EtcdKv {
    fn describe(&self) -> String {
        format!("etcd {}", self.endpoints.join(","))
    }

    async fn get(&self, key: &str) -> MetaResult<Option<KeyValue>> {
        let resp = self.read("get", |mut c| async move { c.get(key, None).await }).await?;
        Ok(resp.kvs().first().map(to_kv))
    }

    async fn range(&self, prefix: &str) -> MetaResult<Vec<KeyValue>> {
        let resp = self
            .read("range", |mut c| async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await })
            .await?;
        Ok(resp.kvs().iter().map(to_kv).collect())
    }

    async fn txn(&self, txn: Txn) -> MetaResult<TxnResponse> {
        let read_only = !txn.success.iter().chain(&txn.failure).any(TxnOp::is_write);
        let etcd_txn = to_etcd_txn(&txn);
        let resp = if read_only {
            self.read("txn", |mut c| {
                let t = etcd_txn.clone();
                async move { c.txn(t).await }
            })
            .await?
        } else {
            let lease = txn
                .success
                .iter()
                .chain(&txn.failure)
                .find_map(|op| match op {
                    TxnOp::Put { lease: Some(l), .. } => Some(*l),
                    _ => None,
                })
                .unwrap_or(0);
            self.once("txn", lease, |mut c| async move { c.txn(etcd_txn).await }).await?
        };
        let revision = resp.header().map_or(0, |h| h.revision());
        let results = resp
            .op_responses()
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Put(_) => TxnOpResult::Put,
                TxnOpResponse::Delete(d) => TxnOpResult::Delete { deleted: d.deleted() },
                TxnOpResponse::Get(g) => TxnOpResult::Get(g.kvs().iter().map(to_kv).collect()),
                TxnOpResponse::Txn(_) => TxnOpResult::Put,
            })
            .collect();
        Ok(TxnResponse { succeeded: resp.succeeded(), revision, results })
    }

    async fn grant_lease(&self, ttl: Duration) -> MetaResult<LeaseId> {
        let secs = ttl_seconds(ttl);
        let resp = self.once("lease grant", 0, |mut c| async move { c.lease_grant(secs, None).await }).await?;
        Ok(resp.id())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> MetaResult<()> {
        match self.once("lease revoke", lease, |mut c| async move { c.lease_revoke(lease).await }).await {
            Ok(_) | Err(MetaError::LeaseNotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn keep_alive(&self, lease: LeaseId) -> MetaResult<Box<dyn LeaseKeeper>> {
        let stream =
            self.once("lease keep-alive", lease, |mut c| async move { c.lease_keep_alive(lease).await }).await?;
        Ok(Box::new(EtcdKeeper { kv: self.clone(), lease, stream: Some(stream) }))
    }
}

/// Keeps one etcd lease alive over a keep-alive stream, reopening the stream after errors.
struct EtcdKeeper {
    kv: EtcdKv,
    lease: LeaseId,
    stream: Option<(EtcdLeaseKeeper, LeaseKeepAliveStream)>,
}

#[async_trait]
impl LeaseKeeper for EtcdKeeper {
    async fn keep_alive_once(&mut self) -> MetaResult<i64> {
        let lease = self.lease;
        let (mut keeper, mut stream) = match self.stream.take() {
            Some(s) => s,
            None => {
                self.kv.once("lease keep-alive", lease, |mut c| async move { c.lease_keep_alive(lease).await }).await?
            }
        };
        let exchange = async {
            keeper.keep_alive().await?;
            stream.message().await
        };
        let resp = match tokio::time::timeout(self.kv.options.request_timeout, exchange).await {
            Ok(Ok(Some(resp))) => resp,
            Ok(Ok(None)) => {
                return Err(MetaError::Unreachable {
                    endpoints: self.kv.endpoints.clone(),
                    source: "lease keep-alive stream closed by the server".into(),
                });
            }
            Ok(Err(e)) => return Err(self.kv.map_err("lease keep-alive", e, lease)),
            Err(_) => return Err(self.kv.timed_out("lease keep-alive")),
        };
        self.stream = Some((keeper, stream));
        Ok(resp.ttl())
    }
}
