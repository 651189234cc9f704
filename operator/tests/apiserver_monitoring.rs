//! Against the real kube-apiserver (which does not serve the Prometheus operator's PodMonitor):
//! the three-zone sample, which asks for a PodMonitor, still gets its StatefulSets, and its status
//! says monitoring is unavailable instead of the pass failing before the workloads.

mod apiserver_support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use apiserver_support::{RunningOperator, TestNamespace, client, config, install_crd};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use woodpecker_crds::{CONDITION_MONITORING_UNAVAILABLE, WoodpeckerCluster};
use woodpecker_operator::controller::load;

fn sample(file: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/samples").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("parsing {file}: {e}"));
    docs.into_iter().find(|d| d["kind"] == "WoodpeckerCluster").expect("a WoodpeckerCluster in the sample")
}

#[tokio::test]
async fn three_zone_sample_without_the_pod_monitor_crd_deploys_and_reports_monitoring_unavailable() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "nomon").await;
    let op = RunningOperator::start(config().await, &ns.name);

    let mut doc = sample("three-zones-multi-az.yaml");
    assert_eq!(doc["spec"]["monitoring"]["podMonitor"], true, "the sample asks for a PodMonitor");
    doc["metadata"]["namespace"] = json!(ns.name);
    let cr: WoodpeckerCluster = serde_json::from_value(doc).expect("sample cluster");
    // The Secrets/ConfigMaps the sample references, with stand-in values.
    for r in load::references(&cr) {
        let data: std::collections::BTreeMap<String, String> =
            r.keys.iter().map(|k| (k.clone(), "stand-in".to_string())).collect();
        if r.kind == "Secret" {
            let s: Secret = serde_json::from_value(json!({"metadata": {"name": r.name}, "stringData": data}))
                .expect("stand-in secret");
            Api::<Secret>::namespaced(client.clone(), &ns.name)
                .create(&PostParams::default(), &s)
                .await
                .expect("creating a referenced Secret");
        } else {
            let c: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": r.name}, "data": data})).expect("stand-in cm");
            Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
                .create(&PostParams::default(), &c)
                .await
                .expect("creating a referenced ConfigMap");
        }
    }
    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    clusters.create(&PostParams::default(), &cr).await.expect("creating the sample cluster");

    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let name = cr.name_any();
    ns.wait_for(&client, "the sample's three StatefulSets", Duration::from_secs(30), || async {
        let lp = ListParams::default().labels(&format!("woodpecker.zilliz.io/cluster={name}"));
        let names: BTreeSet<String> = sts.list(&lp).await.ok()?.items.iter().map(|s| s.name_any()).collect();
        (names.len() == 3).then_some(())
    })
    .await;
    let cond = ns
        .wait_for(&client, "MonitoringUnavailable=True in status", Duration::from_secs(30), || async {
            let st = clusters.get(&name).await.ok()?.status?;
            st.conditions.into_iter().find(|c| c.type_ == CONDITION_MONITORING_UNAVAILABLE && c.status == "True")
        })
        .await;
    assert_eq!(cond.reason, "PodMonitorCRDMissing", "{cond:?}");
    assert!(cond.message.contains("PodMonitor"), "the message names what is missing: {}", cond.message);
    let st = clusters.get(&name).await.expect("cluster").status.expect("status");
    assert_eq!(st.replicas, 6, "the rest of the status is written too: {st:?}");
    assert!(
        st.conditions.iter().any(|c| c.type_ == "ConfigValid" && c.status == "True"),
        "the spec is valid: {:?}",
        st.conditions
    );
    op.stop().await;
}
