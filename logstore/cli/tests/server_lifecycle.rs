//! `woodpecker server`'s lifecycle as the operator drives it: decommission (persisted, refusing
//! appends, excluded from SelectNodes, finishing by itself once no data remains, cancellable),
//! probes, and a SIGTERM that ends the process in time. Real server processes, real MinIO.

mod cluster;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster::{Cluster, ClusterOptions};
use futures::StreamExt;
use woodpecker_proto::logstore::{
    AddEntriesRequest, AddEntryState, CleanSegmentRequest, LogEntry, NodeFilter, SelectNodesRequest,
};

fn root(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("life-{tag}-{}-{nanos}", std::process::id())
}

/// Appends one entry; the code of the stream's Failed frame, or 0 when it synced.
async fn append_code(node: &cluster::ServerNode, root: &str, seg: i64, id: i64) -> i32 {
    let mut c = node.client().await;
    let req = AddEntriesRequest {
        bucket_name: cluster::bucket(),
        root_path: root.to_owned(),
        log_id: 1,
        entries: vec![LogEntry { seg_id: seg, entry_id: id, values: Bytes::from_static(b"x") }],
    };
    let mut s = c.add_entries(req).await.expect("AddEntries").into_inner();
    let mut code = -1;
    while let Some(f) = s.next().await {
        let f = f.expect("frame");
        match AddEntryState::try_from(f.state) {
            Ok(AddEntryState::Failed) => return f.status.map_or(-1, |s| s.code),
            Ok(AddEntryState::Synced) => code = 0,
            _ => {}
        }
    }
    code
}

fn json_field(body: &str, key: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON {body:?}: {e}"));
    match &v[key] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn decommission_refuses_appends_survives_a_restart_finishes_when_no_data_remains_and_can_be_cancelled() {
    let opts = ClusterOptions { extra_yaml: "woodpecker:\n  logstore:\n    decommissionCheckInterval: 200ms\n".into() };
    let mut cl = Cluster::start(1, &opts);
    let root = root("decom");
    assert_eq!(append_code(&cl.nodes[0], &root, 0, 0).await, 0);
    let select = SelectNodesRequest {
        filters: vec![NodeFilter { limit: 1, ..NodeFilter::default() }],
        ..SelectNodesRequest::default()
    };
    let chosen = cl.nodes[0].client().await.select_nodes(select.clone()).await.unwrap().into_inner();
    assert_eq!(chosen.nodes.len(), 1, "an active node is selectable: {:?}", chosen.status);
    assert_eq!(chosen.nodes[0].endpoint, cl.nodes[0].endpoint());

    let (code, body) = cl.nodes[0].admin("POST", "/admin/node/decommission");
    assert_eq!((code, json_field(&body, "state")), (200, "decommissioning".into()));
    assert_eq!(append_code(&cl.nodes[0], &root, 1, 0).await, 2002, "appends refused with Shutdown");
    let none = cl.nodes[0].client().await.select_nodes(select.clone()).await.unwrap().into_inner();
    assert_eq!(none.status.map(|s| s.code), Some(4002), "a decommissioning node is never selected");
    let (code, body) = cl.nodes[0].admin("GET", "/admin/node/decommission/progress");
    assert_eq!(code, 200);
    assert_eq!(json_field(&body, "safe_to_terminate"), "false", "{body}");
    assert_eq!(json_field(&body, "remaining_segments"), "1", "{body}");
    assert_eq!(cl.nodes[0].admin("GET", "/readyz").0, 503, "not ready while decommissioning");
    assert_eq!(cl.nodes[0].admin("GET", "/livez").0, 200, "but alive");

    // The state is persisted: a restarted node keeps refusing.
    cl.nodes[0].kill();
    let node = &mut cl.nodes[0];
    node.restart_unready();
    wait_for("admin API after restart", Duration::from_secs(30), || {
        cluster::http(node.admin_port, "GET", "/livez").is_ok()
    });
    let (_, body) = node.admin("GET", "/admin/node/status");
    assert_eq!(json_field(&body, "state"), "decommissioning", "{body}");
    assert_eq!(append_code(node, &root, 1, 0).await, 2002);

    // Cancel restores it.
    let (code, body) = node.admin("POST", "/admin/node/decommission/cancel");
    assert_eq!((code, json_field(&body, "state")), (200, "active".into()));
    assert_eq!(append_code(node, &root, 2, 0).await, 0, "active again: appends taken");

    // Decommission again; once the data is cleaned the node finishes by itself.
    node.admin("POST", "/admin/node/decommission");
    let mut c = node.client().await;
    for seg in [0, 2] {
        let r = c
            .clean_segment(CleanSegmentRequest {
                bucket_name: cluster::bucket(),
                root_path: root.clone(),
                log_id: 1,
                segment_id: seg,
                flag: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status.map_or(0, |s| s.code), 0);
    }
    wait_for("decommissioned", Duration::from_secs(10), || {
        json_field(&node.admin("GET", "/admin/node/status").1, "state") == "decommissioned"
    });
    let (_, body) = node.admin("GET", "/admin/node/decommission/progress");
    assert_eq!(json_field(&body, "safe_to_terminate"), "true", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_server_within_the_budget_and_a_restart_serves_what_was_synced() {
    let mut cl = Cluster::start(1, &ClusterOptions::default());
    let root = root("term");
    for id in 0..20 {
        assert_eq!(append_code(&cl.nodes[0], &root, 0, id).await, 0);
    }
    let (status, took) = cl.nodes[0].terminate(Duration::from_secs(40));
    assert!(status.success(), "clean exit: {status}\n{}", cl.nodes[0].log_text());
    assert!(took < Duration::from_secs(30), "stopped in {took:?}");
    assert!(cl.nodes[0].log_text().contains("stopped"), "{}", cl.nodes[0].log_text());
    cl.nodes[0].restart(false);
    let mut c = cl.nodes[0].client().await;
    let r = c
        .get_segment_last_add_confirmed(woodpecker_proto::logstore::GetSegmentLastAddConfirmedRequest {
            bucket_name: cluster::bucket(),
            root_path: root.clone(),
            log_id: 1,
            segment_id: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.last_entry_id, 19, "every synced entry is on disk after the stop");
}

#[test]
fn start_up_refusals_are_one_line_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("woodpecker.yaml");
    let run = |args: &[&str], yaml: &str| {
        std::fs::write(&cfg, yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_woodpecker"))
            .arg("server")
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .env_remove("WOODPECKER_CONFIG")
            .env_remove("WOODPECKER_DATA_DIR")
            .env("METRICS_PORT", cluster::free_port().to_string())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        assert!(!out.status.success(), "refused: {args:?}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        err
    };
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let ok_yaml = "woodpecker:\n  storage:\n    type: local\n";
    let e = run(&["--data-dir", data, "--service-port", "18555", "--gossip-port", "18555"], ok_yaml);
    assert!(e.contains("--service-port and --gossip-port"), "{e}");
    let e = run(&["--data-dir", data], "woodpecker:\n  storage:\n    tpye: local\n");
    assert!(e.contains("tpye"), "unknown key named: {e}");
    let e = run(&["--data-dir", data], "woodpecker: [unclosed\n");
    assert!(e.contains("configuration"), "{e}");
    let service_without_seeds = "woodpecker:\n  meta:\n    type: etcd\n  storage:\n    type: service\n";
    let e = run(&["--data-dir", data], service_without_seeds);
    assert!(e.contains("quorumBufferPools"), "{e}");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let e = run(&["--data-dir", file.join("sub").to_str().unwrap()], ok_yaml);
    assert!(e.contains("data dir"), "{e}");
}
