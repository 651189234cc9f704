//! Client for the LogStore server's admin HTTP API (CONTRACT.md, "Admin HTTP").
//!
//! The controller talks to every Ready pod through the [`AdminClient`] trait so tests can point it
//! at a local HTTP server they run; [`HttpAdminClient`] is the real implementation.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

/// Default per-call timeout (§5.5: 3 s per pod).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// A failed admin call; every variant is safe to retry on a later pass.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request could not be sent or the connection failed.
    #[error("admin call {method} {url} failed: {source}")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// Full URL.
        url: String,
        /// Underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The call did not finish within the timeout.
    #[error("admin call {method} {url} timed out after {timeout:?}")]
    Timeout {
        /// HTTP method.
        method: &'static str,
        /// Full URL.
        url: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The server answered with a non-success status.
    #[error("admin call {method} {url} returned HTTP {status}: {body}")]
    Status {
        /// HTTP method.
        method: &'static str,
        /// Full URL.
        url: String,
        /// HTTP status code.
        status: u16,
        /// First bytes of the body.
        body: String,
    },
    /// The body was not the JSON the contract describes.
    #[error("admin call {method} {url} returned malformed JSON: {source}")]
    Decode {
        /// HTTP method.
        method: &'static str,
        /// Full URL.
        url: String,
        /// Underlying error.
        #[source]
        source: serde_json::Error,
    },
}

/// `GET /admin/node/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeStatus {
    /// The node's name (the pod name).
    pub node_name: String,
    /// `active`, `decommissioning` or `decommissioned`.
    pub state: String,
    /// How many members this node sees in its gossip cluster.
    pub member_count: u32,
    /// Advertised region.
    pub region: String,
    /// Advertised availability zone.
    pub az: String,
    /// Advertised resource group.
    pub resource_group: String,
    /// Server version.
    pub version: String,
    /// Start time, milliseconds since the Unix epoch, as the server reports it (a JSON number:
    /// decoding it as a string failed every status call against a real server).
    pub started_at: i64,
    /// True when the disk is past the hard watermark.
    pub disk_over_hard_watermark: bool,
}

/// One entry of `GET /admin/memberlist`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Member {
    /// Member name (pod name).
    pub name: String,
    /// Gossip address.
    pub gossip_addr: String,
    /// Service address clients dial.
    pub service_addr: String,
    /// Advertised region.
    pub region: String,
    /// Advertised availability zone.
    pub az: String,
    /// Advertised resource group.
    pub resource_group: String,
    /// Member state (`active`, `decommissioning`, ...).
    pub state: String,
    /// Whether gossip considers the member alive.
    pub alive: bool,
}

/// `GET /admin/node/decommission/progress`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecommissionProgress {
    /// Segments still to hand off.
    pub remaining_segments: u64,
    /// Whether the node still holds data only it has.
    pub has_local_data: bool,
    /// True once the pod may be deleted.
    pub safe_to_terminate: bool,
}

/// The admin API of one LogStore pod, addressed by `ip:port`.
///
/// Implementations must bound every call by a timeout; the controller calls all pods concurrently
/// and treats an error as "gate not passed" for that pod, never as success.
#[async_trait]
pub trait AdminClient: Send + Sync + 'static {
    /// `GET /admin/node/status`.
    async fn node_status(&self, addr: SocketAddr) -> Result<NodeStatus, AdminError>;
    /// `GET /admin/memberlist`.
    async fn memberlist(&self, addr: SocketAddr) -> Result<Vec<Member>, AdminError>;
    /// `GET /admin/log-health`: `Ok(true)` on 200, `Ok(false)` on 503.
    async fn log_healthy(&self, addr: SocketAddr) -> Result<bool, AdminError>;
    /// `POST /admin/node/decommission` (idempotent).
    async fn decommission(&self, addr: SocketAddr) -> Result<(), AdminError>;
    /// `GET /admin/node/decommission/progress`.
    async fn decommission_progress(&self, addr: SocketAddr) -> Result<DecommissionProgress, AdminError>;
    /// `POST /admin/node/decommission/cancel`.
    async fn cancel_decommission(&self, addr: SocketAddr) -> Result<(), AdminError>;
}

/// [`AdminClient`] over plain HTTP/1 to the pod IP.
#[derive(Clone)]
pub struct HttpAdminClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl Default for HttpAdminClient {
    fn default() -> Self {
        Self::new(DEFAULT_TIMEOUT)
    }
}

impl HttpAdminClient {
    /// A client whose every call is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build(connector);
        Self { client, timeout }
    }

    async fn call(
        &self,
        method: &'static str,
        addr: SocketAddr,
        path: &str,
        accept_503: bool,
    ) -> Result<(u16, Bytes), AdminError> {
        let url = format!("http://{addr}{path}");
        let transport =
            |e: Box<dyn std::error::Error + Send + Sync>| AdminError::Transport { method, url: url.clone(), source: e };
        let req = hyper::Request::builder()
            .method(method)
            .uri(&url)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| transport(Box::new(e)))?;
        let fut = async {
            let resp = self.client.request(req).await.map_err(|e| transport(Box::new(e)))?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.map_err(|e| transport(Box::new(e)))?.to_bytes();
            Ok::<_, AdminError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, fut).await.map_err(|_| AdminError::Timeout {
            method,
            url: url.clone(),
            timeout: self.timeout,
        })??;
        if (200..300).contains(&status) || (accept_503 && status == 503) {
            Ok((status, body))
        } else {
            Err(AdminError::Status {
                method,
                url,
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned(),
            })
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, addr: SocketAddr, path: &str) -> Result<T, AdminError> {
        let (_, body) = self.call("GET", addr, path, false).await?;
        serde_json::from_slice(&body).map_err(|source| AdminError::Decode {
            method: "GET",
            url: format!("http://{addr}{path}"),
            source,
        })
    }
}

/// `/admin/memberlist` may be a bare list or `{"members": [...]}`; accept both.
#[derive(Deserialize)]
#[serde(untagged)]
enum MemberlistBody {
    List(Vec<Member>),
    Wrapped { members: Vec<Member> },
}

#[async_trait]
impl AdminClient for HttpAdminClient {
    async fn node_status(&self, addr: SocketAddr) -> Result<NodeStatus, AdminError> {
        self.get_json(addr, "/admin/node/status").await
    }

    async fn memberlist(&self, addr: SocketAddr) -> Result<Vec<Member>, AdminError> {
        let body: MemberlistBody = self.get_json(addr, "/admin/memberlist").await?;
        Ok(match body {
            MemberlistBody::List(m) | MemberlistBody::Wrapped { members: m } => m,
        })
    }

    async fn log_healthy(&self, addr: SocketAddr) -> Result<bool, AdminError> {
        let (status, _) = self.call("GET", addr, "/admin/log-health", true).await?;
        Ok(status != 503)
    }

    async fn decommission(&self, addr: SocketAddr) -> Result<(), AdminError> {
        self.call("POST", addr, "/admin/node/decommission", false).await.map(|_| ())
    }

    async fn decommission_progress(&self, addr: SocketAddr) -> Result<DecommissionProgress, AdminError> {
        self.get_json(addr, "/admin/node/decommission/progress").await
    }

    async fn cancel_decommission(&self, addr: SocketAddr) -> Result<(), AdminError> {
        self.call("POST", addr, "/admin/node/decommission/cancel", false).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::{get, post};

    async fn serve(app: Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    #[tokio::test]
    async fn decodes_the_contract_json_and_maps_statuses() {
        let app = Router::new()
            .route(
                "/admin/node/status",
                get(|| async {
                    r#"{"node_name":"p-0","state":"active","member_count":3,"az":"a","started_at":1796685196315,"extra":1}"#
                }),
            )
            .route("/admin/memberlist", get(|| async { r#"{"members":[{"name":"p-0","alive":true}]}"# }))
            .route("/admin/log-health", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route("/admin/node/decommission", post(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
            .route(
                "/admin/node/decommission/progress",
                get(|| async { r#"{"remaining_segments":2,"has_local_data":true,"safe_to_terminate":false}"# }),
            );
        let addr = serve(app).await;
        let c = HttpAdminClient::new(Duration::from_secs(2));
        let st = c.node_status(addr).await.unwrap();
        assert_eq!(
            (st.node_name.as_str(), st.state.as_str(), st.member_count, st.az.as_str(), st.started_at),
            ("p-0", "active", 3, "a", 1_796_685_196_315)
        );
        let members = c.memberlist(addr).await.unwrap();
        assert_eq!(members.len(), 1);
        assert!(members[0].alive);
        assert!(!c.log_healthy(addr).await.unwrap(), "503 means a stalled log, not an error");
        let p = c.decommission_progress(addr).await.unwrap();
        assert_eq!((p.remaining_segments, p.has_local_data, p.safe_to_terminate), (2, true, false));
        match c.decommission(addr).await {
            Err(AdminError::Status { status: 500, .. }) => {}
            other => panic!("expected HTTP 500 as an error, got {other:?}"),
        }
        match c.cancel_decommission(addr).await {
            Err(AdminError::Status { status: 404, .. }) => {}
            other => panic!("expected HTTP 404 as an error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_hung_pod_times_out_instead_of_blocking_the_pass() {
        let app = Router::new().route(
            "/admin/node/status",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "{}"
            }),
        );
        let addr = serve(app).await;
        let c = HttpAdminClient::new(Duration::from_millis(200));
        let start = std::time::Instant::now();
        match c.node_status(addr).await {
            Err(AdminError::Timeout { .. }) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(2));
        // Nobody listening: a transport error, promptly.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(matches!(c.memberlist(closed).await, Err(AdminError::Transport { .. })));
    }

    #[tokio::test]
    async fn malformed_json_is_a_decode_error() {
        let app = Router::new().route("/admin/node/status", get(|| async { "not json" }));
        let addr = serve(app).await;
        let c = HttpAdminClient::default();
        assert!(matches!(c.node_status(addr).await, Err(AdminError::Decode { .. })));
    }
}
