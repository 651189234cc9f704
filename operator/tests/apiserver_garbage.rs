//! Against the real kube-apiserver + controller-manager: objects the spec no longer asks for are
//! deleted — the PodDisruptionBudget once `pdb.enabled` is false, a removed pool's Services, and a
//! removed node group's StatefulSet after its pods were decommissioned (PVCs by `pvcPolicy`).

mod apiserver_support;

use std::collections::BTreeSet;
use std::time::Duration;

use apiserver_support::{FakeCluster, RunningOperator, TestNamespace, client, config, install_crd, spawn_kubelet};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use woodpecker_crds::WoodpeckerCluster;

/// Pool `pool` (az-a..az-c, 1 each) and, unless `removed` is `None`, group az-d and pool `extra`
/// (3 groups) with `removed` replicas each.
fn pools(removed: Option<i32>) -> Value {
    let mut main = vec![
        json!({"name": "az-a", "zone": "zone-a", "replicas": 1}),
        json!({"name": "az-b", "zone": "zone-b", "replicas": 1}),
        json!({"name": "az-c", "zone": "zone-c", "replicas": 1}),
    ];
    let mut out = Vec::new();
    if let Some(r) = removed {
        main.push(json!({"name": "az-d", "zone": "zone-d", "replicas": r}));
    }
    out.push(json!({"name": "pool", "nodeGroups": main}));
    if let Some(r) = removed {
        out.push(json!({"name": "extra", "nodeGroups": [
            {"name": "xa", "zone": "zone-a", "replicas": r},
            {"name": "xb", "zone": "zone-b", "replicas": r},
            {"name": "xc", "zone": "zone-c", "replicas": r},
        ]}));
    }
    Value::Array(out)
}

async fn names<K>(api: &Api<K>) -> BTreeSet<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let lp = ListParams::default().labels("woodpecker.zilliz.io/cluster=wal");
    api.list(&lp)
        .await
        .map(|l| l.items.iter().filter(|o| o.meta().deletion_timestamp.is_none()).map(|o| o.name_any()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn objects_no_longer_rendered_are_deleted_and_removed_groups_drain_first() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "gc").await;
    let fake = FakeCluster::new().await;
    let kubelet = spawn_kubelet(client.clone(), &ns.name, fake.clone());
    let op = RunningOperator::start(config().await, &ns.name);
    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns.name);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns.name);

    let cr: WoodpeckerCluster = serde_json::from_value(json!({
        "apiVersion": "woodpecker.zilliz.io/v1alpha1",
        "kind": "WoodpeckerCluster",
        "metadata": {"name": "wal"},
        "spec": {
            "metricsPort": fake.port,
            "quorum": {"ensembleSize": 3, "strategy": "multi-az-single-rg", "affinityMode": "hard"},
            "rolloutPolicy": {"settleTimeSeconds": 0},
            "scaleDown": {"pvcPolicy": "Delete"},
            "pdb": {"enabled": true},
            "bufferPools": pools(Some(1)),
        },
    }))
    .expect("cluster");
    clusters.create(&PostParams::default(), &cr).await.expect("creating the cluster");
    ns.wait_for(&client, "7/7 Ready", Duration::from_secs(120), || async {
        let st = clusters.get("wal").await.ok()?.status?;
        (st.ready_replicas == 7).then_some(())
    })
    .await;
    let svcs_before = names(&svcs).await;
    let extra_svcs: BTreeSet<String> = svcs_before.iter().filter(|n| n.contains("extra")).cloned().collect();
    assert!(!extra_svcs.is_empty(), "the extra pool has Services: {svcs_before:?}");
    assert!(!names(&pdbs).await.is_empty(), "the PDB exists");
    assert!(pvcs.get_opt("data-wal-pool-az-d-0").await.expect("pvc").is_some(), "az-d has a PVC");

    // The CRD lets a group or pool go only at 0 replicas: drain them first (a whole pool may retire).
    clusters
        .patch(
            "wal",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pdb": {"enabled": false}, "bufferPools": pools(Some(0))}})),
        )
        .await
        .expect("disabling the PDB, scaling az-d and pool extra to 0");
    ns.wait_for(&client, "the PDB deleted", Duration::from_secs(30), || async {
        names(&pdbs).await.is_empty().then_some(())
    })
    .await;
    ns.wait_for(&client, "az-d and pool extra drained to 0 pods", Duration::from_secs(60), || async {
        let st = clusters.get("wal").await.ok()?.status?;
        (st.replicas == 3 && st.ready_replicas == 3 && st.decommission.is_empty()).then_some(())
    })
    .await;
    clusters
        .patch("wal", &PatchParams::default(), &Patch::Merge(json!({"spec": {"bufferPools": pools(None)}})))
        .await
        .expect("removing group az-d and pool extra");
    ns.wait_for(&client, "the removed pool's Services deleted", Duration::from_secs(30), || async {
        names(&svcs).await.is_disjoint(&extra_svcs).then_some(())
    })
    .await;
    let want: BTreeSet<String> = ["wal-pool-az-a", "wal-pool-az-b", "wal-pool-az-c"].map(String::from).into();
    ns.wait_for(&client, "only the kept groups' StatefulSets", Duration::from_secs(60), || async {
        (names(&sts).await == want).then_some(())
    })
    .await;
    let decommissioned: BTreeSet<String> = fake.decommissions.lock().unwrap().iter().cloned().collect();
    for pod in ["wal-pool-az-d-0", "wal-extra-xa-0", "wal-extra-xb-0", "wal-extra-xc-0"] {
        assert!(decommissioned.contains(pod), "{pod} was drained before its StatefulSet went: {decommissioned:?}");
    }
    ns.wait_for(&client, "the removed groups' PVCs deleted", Duration::from_secs(60), || async {
        let left = names(&pvcs).await;
        left.iter().all(|n| !n.contains("az-d") && !n.contains("extra")).then_some(())
    })
    .await;
    assert!(pvcs.get_opt("data-wal-pool-az-a-0").await.expect("pvc").is_some(), "kept groups keep their PVCs");
    op.stop().await;
    kubelet.abort();
}
