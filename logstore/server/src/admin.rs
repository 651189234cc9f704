//! Admin HTTP (`METRICS_PORT`): probes, `/metrics` and the admin API of CONTRACT.md.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /livez` | 200 while the process and its runtime respond (no peers, disk or etcd involved) |
//! | `GET /healthz` | 200 when the data dir is writable, gRPC listens and gossip joined; 503 naming the failing check |
//! | `GET /readyz` | 200 when `/healthz` passes and the node is `active` |
//! | `GET /metrics` | Prometheus text |
//! | `GET /admin/node/status` | node name, state, members, topology, version, start time, disk |
//! | `GET /admin/memberlist` | every member this node sees |
//! | `POST /admin/node/decommission` (`/cancel`), `GET …/progress` | decommission, persisted |
//! | `GET /admin/log-health` | per-segment append health; 503 when one is stalled |

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::node::Node;
use crate::node_state::Lifecycle;

/// A segment whose appends have not moved for this long is reported stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(30);

/// What the admin endpoints read.
#[derive(Debug)]
pub struct Admin {
    /// The node.
    pub node: Arc<Node>,
    /// The gRPC listener is bound and serving.
    pub grpc_listening: AtomicBool,
    /// Milliseconds since the epoch at start.
    pub started_at: i64,
    /// Version string (`woodpecker --version`).
    pub version: String,
}

/// The admin router.
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/node/status", get(node_status))
        .route("/admin/memberlist", get(memberlist))
        .route("/admin/node/decommission", post(decommission))
        .route("/admin/node/decommission/progress", get(decommission_progress))
        .route("/admin/node/decommission/cancel", post(cancel_decommission))
        .route("/admin/log-health", get(log_health))
        .with_state(admin)
}

/// Every health check, by name; `Err` carries why it fails.
async fn checks(admin: &Admin) -> Vec<(&'static str, Result<(), String>)> {
    let dir = admin.node.processors.staged().data_dir().to_path_buf();
    let writable = tokio::task::spawn_blocking(move || crate::data_dir_writable(&dir))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let grpc = if admin.grpc_listening.load(Ordering::Acquire) { Ok(()) } else { Err("not listening".to_owned()) };
    let gossip = if admin.node.members.joined() { Ok(()) } else { Err("no seed joined yet".to_owned()) };
    vec![("data_dir_writable", writable), ("grpc_listening", grpc), ("gossip_joined", gossip)]
}

fn check_response(
    checks: Vec<(&'static str, Result<(), String>)>,
    extra: Option<(&'static str, Result<(), String>)>,
) -> Response {
    let mut all = checks;
    all.extend(extra);
    let failing: Vec<String> = all.iter().filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}"))).collect();
    let body: serde_json::Map<String, Value> = all
        .iter()
        .map(|(n, r)| ((*n).to_owned(), json!(r.as_ref().map_or_else(|e| e.clone(), |()| "ok".to_owned()))))
        .collect();
    if failing.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ok", "checks": body}))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "failing", "failing": failing, "checks": body})))
            .into_response()
    }
}

async fn healthz(State(admin): State<Arc<Admin>>) -> Response {
    check_response(checks(&admin).await, None)
}

async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    let state = admin.node.lifecycle.get();
    let active = if state == Lifecycle::Active { Ok(()) } else { Err(state.as_str().to_owned()) };
    check_response(checks(&admin).await, Some(("node_active", active)))
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let m = &admin.node.metrics;
    m.active_processors.set(admin.node.processors.all().len() as i64);
    let disk = admin.node.disk.usage();
    m.disk_free_bytes.set(disk.free as i64);
    if disk.total > 0 {
        m.disk_usage_ratio.set(disk.total.saturating_sub(disk.free) as f64 / disk.total as f64);
    }
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], m.render()).into_response()
}

async fn node_status(State(admin): State<Arc<Admin>>) -> Json<Value> {
    let node = &admin.node;
    let local = node.members.local();
    let disk = node.disk.usage();
    Json(json!({
        "node_name": node.name,
        "state": node.lifecycle.get().as_str(),
        "member_count": node.members.live_nodes().len(),
        "region": local.region,
        "az": local.az,
        "resource_group": local.resource_group,
        "endpoint": local.endpoint,
        "version": admin.version,
        "started_at": admin.started_at,
        "disk": {
            "total_bytes": disk.total,
            "free_bytes": disk.free,
            "over_watermark": node.disk.over_watermark(),
        },
    }))
}

async fn memberlist(State(admin): State<Arc<Admin>>) -> Json<Value> {
    Json(Value::Array(admin.node.members.members_json()))
}

async fn decommission(State(admin): State<Arc<Admin>>) -> Response {
    set_state(&admin, Lifecycle::Decommissioning).await
}

async fn cancel_decommission(State(admin): State<Arc<Admin>>) -> Response {
    set_state(&admin, Lifecycle::Active).await
}

async fn set_state(admin: &Admin, state: Lifecycle) -> Response {
    match admin.node.set_lifecycle(state).await {
        Ok(now) => (StatusCode::OK, Json(json!({"state": now.as_str()}))).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e}))).into_response(),
    }
}

async fn decommission_progress(State(admin): State<Arc<Admin>>) -> Response {
    match admin.node.decommission_progress().await {
        Ok(p) => Json(json!({
            "state": admin.node.lifecycle.get().as_str(),
            "remaining_segments": p.remaining_segments,
            "has_local_data": p.remaining_segments > 0,
            "safe_to_terminate": p.safe_to_terminate,
        }))
        .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e}))).into_response(),
    }
}

async fn log_health(State(admin): State<Arc<Admin>>) -> Response {
    let segments: Vec<_> = admin.node.processors.all().iter().map(|p| p.health()).collect();
    let stalled = segments.iter().any(|s| s.stalled_seconds.is_some_and(|t| t >= STALL_AFTER.as_secs_f64()));
    let code = if stalled { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(json!({"stalled": stalled, "segments": segments}))).into_response()
}
