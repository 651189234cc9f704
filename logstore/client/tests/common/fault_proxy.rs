//! An HTTP proxy in front of the real MinIO that can fail, hold or lose the reply of chosen requests,
//! so tests can construct the interleavings object storage produces in production: a PUT that fails,
//! a PUT that lands late (held, then forwarded while the writer has moved on), a reply lost after the
//! write applied.
//!
//! Requests keep their headers (SigV4 signs the `Host` the client dialled, which is this proxy), so
//! MinIO checks the signatures as usual.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// What the proxy does with a request that matches a rule.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer with this status at once; MinIO never sees the request.
    Fail(StatusCode),
    /// Keep the request until the hold is released, then forward it (and its answer).
    Hold(Arc<Hold>),
    /// Forward the request, then close the connection instead of answering: applied, reply lost.
    LoseReply,
}

/// A gate for held requests.
#[derive(Debug, Default)]
pub struct Hold {
    released: watch::Sender<bool>,
    /// Notified each time a request starts waiting at this gate.
    pub arrived: Notify,
    held: Mutex<usize>,
    /// Held requests that reached MinIO and were answered (whether or not the client still waited).
    landed: Mutex<usize>,
}

impl Hold {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// Lets every held request (and every later one) through.
    pub fn release(&self) {
        self.released.send_replace(true);
    }
    /// How many requests have waited here so far.
    pub fn held(&self) -> usize {
        *self.held.lock().unwrap()
    }
    /// How many held requests have reached MinIO and been answered.
    pub fn landed(&self) -> usize {
        *self.landed.lock().unwrap()
    }
    async fn wait(&self) {
        *self.held.lock().unwrap() += 1;
        self.arrived.notify_waiters();
        let mut rx = self.released.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }
}

/// A request the proxy applies an action to.
#[derive(Debug, Clone)]
pub struct Rule {
    /// HTTP method, e.g. "PUT".
    pub method: &'static str,
    /// Matches when the request path contains this.
    pub path_contains: String,
    /// Matches only bodies at least this long (tells a data block from a fence object at the same key).
    pub min_body: usize,
    /// How many more requests it applies to.
    pub times: usize,
    pub action: Action,
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub status: Option<u16>,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(State::default()));
        let upstream = Arc::new(upstream.to_owned());
        let client: HttpClient<HttpConnector, Full<Bytes>> =
            HttpClient::builder(TokioExecutor::new()).build(HttpConnector::new());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (st, upstream, client) = (st.clone(), upstream.clone(), client.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, st.clone(), upstream.clone(), client.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// Applies `action` to the next `times` requests with `method` whose path contains `path_contains`.
    pub fn add(&self, method: &'static str, path_contains: impl Into<String>, times: usize, action: Action) {
        self.add_rule(Rule { method, path_contains: path_contains.into(), min_body: 0, times, action });
    }

    /// Adds a rule.
    pub fn add_rule(&self, rule: Rule) {
        self.state.lock().unwrap().rules.push(rule);
    }

    /// Removes every rule (held requests stay held until their gate is released).
    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type ProxyError = Box<dyn std::error::Error + Send + Sync>;

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    upstream: Arc<String>,
    client: HttpClient<HttpConnector, Full<Bytes>>,
) -> Result<Response<Full<Bytes>>, ProxyError> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let action = {
        let mut st = state.lock().unwrap();
        let hit = st
            .rules
            .iter_mut()
            .find(|r| r.times > 0 && r.method == method && path.contains(&r.path_contains) && body.len() >= r.min_body);
        hit.map(|r| {
            r.times -= 1;
            r.action.clone()
        })
    };
    let record = |status: Option<u16>| {
        state.lock().unwrap().seen.push(Seen { method: method.clone(), path: path.clone(), status });
    };
    if let Some(Action::Fail(status)) = &action {
        record(Some(status.as_u16()));
        let body = format!(
            "<Error><Code>InternalError</Code><Message>injected by the fault proxy</Message><Resource>{path}</Resource></Error>"
        );
        return Ok(Response::builder().status(*status).body(Full::new(Bytes::from(body)))?);
    }
    // The rest runs detached: a request that was held (or whose reply is to be lost) still reaches MinIO
    // when the client has given up and closed the connection, as a late PUT does in production.
    let forwarded = tokio::spawn(forward(parts, body, action.clone(), upstream, client));
    let (rparts, rbody) = forwarded.await??;
    record(Some(rparts.status.as_u16()));
    if let Some(Action::LoseReply) = &action {
        return Err("reply dropped by the fault proxy".into());
    }
    Ok(Response::from_parts(rparts, Full::new(rbody)))
}

async fn forward(
    parts: hyper::http::request::Parts,
    body: Bytes,
    action: Option<Action>,
    upstream: Arc<String>,
    client: HttpClient<HttpConnector, Full<Bytes>>,
) -> Result<(hyper::http::response::Parts, Bytes), ProxyError> {
    if let Some(Action::Hold(gate)) = &action {
        gate.wait().await;
    }
    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri: hyper::Uri = format!("http://{upstream}{pq}").parse()?;
    let mut out = Request::builder().method(parts.method).uri(uri);
    for (k, v) in &parts.headers {
        out = out.header(k, v);
    }
    let resp = client.request(out.body(Full::new(body))?).await?;
    let (rparts, rbody) = resp.into_parts();
    let rbody = rbody.collect().await?.to_bytes();
    if let Some(Action::Hold(gate)) = &action {
        *gate.landed.lock().unwrap() += 1;
    }
    Ok((rparts, rbody))
}
