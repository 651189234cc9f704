//! Connections to LogStore nodes: one HTTP/2 channel per service address, shared by every segment, with
//! keepalive so that a node that stops answering without closing its connection is noticed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use woodpecker_proto::logstore::Status;
use woodpecker_proto::logstore::log_store_client::LogStoreClient;
use woodpecker_storage::segment::{SegmentError, SegmentRef};

/// Largest message a node may send us (a read batch); upstream's client allows the same.
const MAX_RECV: usize = 512 << 20;
/// Largest message we send (an append batch).
const MAX_SEND: usize = 256 << 20;
/// How often an idle connection is pinged, and how long a ping may go unanswered.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a node that failed as a replica is left out of new replica sets unless it answers a probe
/// (every placement probes the suspects first). Gossip takes seconds to declare a dead node gone, and a
/// stopped process (SIGSTOP, a long pause) may never be declared gone: without this, rolls would pick it
/// again and again. The bound only keeps the set from growing without end.
pub(crate) const SUSPECT_FOR: Duration = Duration::from_secs(600);

/// How long a suspect node has to answer a probe to be taken back.
pub(crate) const SUSPECT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The gRPC clients of every node this process talks to, by service address.
#[derive(Debug)]
pub(crate) struct Nodes {
    clients: Mutex<HashMap<String, LogStoreClient<Channel>>>,
    /// Nodes that recently failed as replicas, until when they are avoided.
    suspects: Mutex<HashMap<String, Instant>>,
    connect_timeout: Duration,
}

impl Nodes {
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        Self { clients: Mutex::new(HashMap::new()), suspects: Mutex::new(HashMap::new()), connect_timeout }
    }

    /// Leaves `endpoint` out of new replica sets for [`SUSPECT_FOR`].
    pub(crate) fn suspect(&self, endpoint: &str) {
        self.suspects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(endpoint.to_owned(), Instant::now() + SUSPECT_FOR);
    }

    /// Asks every suspect node a harmless question (a one-node SelectNodes); one that answers at all is
    /// serving again (restarted) and no longer avoided. A dead, stopped or partitioned one stays suspect.
    pub(crate) async fn recheck_suspects(&self, limit: Duration) {
        let suspects: Vec<String> = {
            let mut s = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            s.retain(|_, until| *until > now);
            s.keys().cloned().collect()
        };
        let probes = suspects.into_iter().map(|endpoint| async move {
            let Ok(mut c) = self.client(&endpoint) else { return None };
            let req = woodpecker_proto::logstore::SelectNodesRequest {
                filters: vec![woodpecker_proto::logstore::NodeFilter { limit: 1, ..Default::default() }],
                ..Default::default()
            };
            bounded(self, &endpoint, limit, c.select_nodes(req)).await.ok().map(|_| endpoint)
        });
        for endpoint in futures::future::join_all(probes).await.into_iter().flatten() {
            tracing::debug!(node = %endpoint, "a suspect node answers again; it may be chosen");
            self.suspects.lock().unwrap_or_else(|p| p.into_inner()).remove(&endpoint);
        }
    }

    /// Whether `endpoint` failed as a replica recently.
    pub(crate) fn is_suspect(&self, endpoint: &str) -> bool {
        let mut suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        suspects.retain(|_, until| *until > now);
        suspects.contains_key(endpoint)
    }

    /// How many nodes are avoided now.
    pub(crate) fn suspect_count(&self) -> usize {
        let mut suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        suspects.retain(|_, until| *until > now);
        suspects.len()
    }

    /// The client for `endpoint` (`host:port`), connecting lazily: the first call on it dials.
    pub(crate) fn client(&self, endpoint: &str) -> Result<LogStoreClient<Channel>, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(endpoint) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|e| format!("invalid node address {endpoint:?}: {e}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        let client =
            LogStoreClient::new(channel).max_decoding_message_size(MAX_RECV).max_encoding_message_size(MAX_SEND);
        clients.insert(endpoint.to_owned(), client.clone());
        Ok(client)
    }

    /// Drops the channel to `endpoint` after a transport failure, so the next call dials afresh (a node
    /// restarted at the same address, or a name that now resolves elsewhere).
    pub(crate) fn forget(&self, endpoint: &str) {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).remove(endpoint);
    }
}

/// A node's answer to one call, reduced to what the client acts on.
#[derive(Debug, Clone)]
pub(crate) struct NodeFailure {
    /// Upstream status code; 0 when the node was not reached or did not answer in time.
    pub code: i32,
    pub retriable: bool,
    pub reason: String,
}

impl NodeFailure {
    pub(crate) fn transport(reason: impl Into<String>) -> Self {
        Self { code: 0, retriable: true, reason: reason.into() }
    }

    pub(crate) fn from_grpc(s: &tonic::Status) -> Self {
        Self::transport(format!("{}: {}", s.code(), s.message()))
    }

    /// Whether the node said the segment is closed to this writer (fenced or finalized there).
    pub(crate) fn is_not_writable(&self) -> bool {
        use woodpecker_proto::status::{FINALIZED, FINALIZING, SEGMENT_FENCED, STORAGE_NOT_WRITABLE};
        [SEGMENT_FENCED.code, FINALIZED.code, FINALIZING.code, STORAGE_NOT_WRITABLE.code].contains(&self.code)
    }

    /// The segment error this failure is, for `node` doing `what`.
    pub(crate) fn into_error(self, segment: SegmentRef, node: &str, what: &'static str) -> SegmentError {
        use woodpecker_proto::status::{FINALIZED, SEGMENT_FENCED};
        if self.code == SEGMENT_FENCED.code {
            return SegmentError::Fenced { segment };
        }
        if self.code == FINALIZED.code {
            return SegmentError::Finalized { segment };
        }
        SegmentError::Node {
            segment,
            node: node.to_owned(),
            what,
            code: self.code,
            retriable: self.retriable,
            reason: self.reason,
        }
    }
}

impl std::fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.code == 0 { write!(f, "{}", self.reason) } else { write!(f, "code {}: {}", self.code, self.reason) }
    }
}

/// `Ok` for a missing or zero status, the node's failure otherwise.
pub(crate) fn check(status: Option<&Status>) -> Result<(), NodeFailure> {
    match status {
        Some(s) if s.code != 0 => Err(NodeFailure { code: s.code, retriable: s.retriable, reason: s.reason.clone() }),
        _ => Ok(()),
    }
}

/// Runs `call` within `limit`; a timeout or transport error also drops the node's channel.
pub(crate) async fn bounded<T, F>(nodes: &Nodes, endpoint: &str, limit: Duration, call: F) -> Result<T, NodeFailure>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => {
            if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled) {
                nodes.forget(endpoint);
            }
            Err(NodeFailure::from_grpc(&s))
        }
        Err(_) => {
            nodes.forget(endpoint);
            Err(NodeFailure::transport(format!("no answer within {limit:?}")))
        }
    }
}
