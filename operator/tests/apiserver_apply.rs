//! Against the real kube-apiserver + controller-manager: what the operator applies is decided on a
//! hash of the desired object, so a field removed from the spec is removed from the live object, a
//! cleared restart token lets the roll settle, and quantities the API server normalises
//! (`cpu: 0.5` → `500m`, `memory: 1024Mi` → `1Gi`) cause no write on a no-change pass.

mod apiserver_support;

use std::time::Duration;

use apiserver_support::{FakeCluster, RunningOperator, TestNamespace, client, config, install_crd, spawn_kubelet};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use woodpecker_crds::{RolloutState, WoodpeckerCluster};

fn cluster(spec: Value) -> WoodpeckerCluster {
    serde_json::from_value(json!({
        "apiVersion": "woodpecker.zilliz.io/v1alpha1",
        "kind": "WoodpeckerCluster",
        "metadata": {"name": "wal"},
        "spec": spec,
    }))
    .expect("cluster spec")
}

fn spec(port: u16) -> Value {
    json!({
        "metricsPort": port,
        "quorum": {"ensembleSize": 3, "strategy": "multi-az-single-rg", "affinityMode": "hard"},
        "rolloutPolicy": {"settleTimeSeconds": 0, "readyTimeoutSeconds": 60},
        "bufferPools": [{"name": "pool", "nodeGroups": [
            {"name": "az-a", "zone": "zone-a", "replicas": 1},
            {"name": "az-b", "zone": "zone-b", "replicas": 1},
            {"name": "az-c", "zone": "zone-c", "replicas": 1},
        ]}],
    })
}

fn template(s: &StatefulSet) -> Value {
    serde_json::to_value(s.spec.as_ref().map(|s| &s.template)).unwrap_or(Value::Null)
}

#[tokio::test]
async fn fields_removed_from_the_spec_are_removed_from_the_statefulset_and_the_roll_settles() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "remove").await;
    let fake = FakeCluster::new().await;
    let kubelet = spawn_kubelet(client.clone(), &ns.name, fake.clone());
    let op = RunningOperator::start(config().await, &ns.name);
    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);

    let mut s = spec(fake.port);
    s["rolloutPolicy"]["restartToken"] = json!("one");
    s["podAnnotations"] = json!({"team/owner": "storage"});
    s["tolerations"] = json!([{"key": "dedicated", "operator": "Equal", "value": "wal", "effect": "NoSchedule"}]);
    s["nodeSelector"] = json!({"disk": "ssd"});
    s["resources"] = json!({"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}});
    clusters.create(&PostParams::default(), &cluster(s)).await.expect("creating the cluster");
    ns.wait_for(&client, "3/3 Ready with the fields set", Duration::from_secs(90), || async {
        let st = clusters.get("wal").await.ok()?.status?;
        let t = template(&sts.get("wal-pool-az-a").await.ok()?);
        let set = t["metadata"]["annotations"]["woodpecker.zilliz.io/restart-token"] == "one"
            && t["metadata"]["annotations"]["team/owner"] == "storage"
            && t["spec"]["tolerations"].as_array().is_some_and(|a| !a.is_empty())
            && t["spec"]["nodeSelector"]["disk"] == "ssd"
            && t["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "1";
        (st.ready_replicas == 3 && set).then_some(())
    })
    .await;

    // Clear every one of them.
    clusters
        .patch(
            "wal",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "rolloutPolicy": {"restartToken": null},
                "podAnnotations": null,
                "tolerations": null,
                "nodeSelector": null,
                "resources": {"limits": null},
            }})),
        )
        .await
        .expect("clearing the fields");
    let t = ns
        .wait_for(&client, "the StatefulSet template without the cleared fields", Duration::from_secs(30), || async {
            let t = template(&sts.get("wal-pool-az-a").await.ok()?);
            let annotations = t["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
            let cleared = !annotations.contains_key("woodpecker.zilliz.io/restart-token")
                && !annotations.contains_key("team/owner")
                && t["spec"]["tolerations"].as_array().is_none_or(|a| a.is_empty())
                && t["spec"]["nodeSelector"].as_object().is_none_or(|m| !m.contains_key("disk"))
                && t["spec"]["containers"][0]["resources"]["limits"].is_null();
            cleared.then_some(t)
        })
        .await;
    assert_eq!(t["spec"]["containers"][0]["resources"]["requests"]["cpu"], "100m", "the kept request stays");

    // The pods still carry the old token: they are rolled, and the roll finishes (template_pending
    // clears because the StatefulSet lost the token).
    ns.wait_for(&client, "the roll to settle: Idle, 3 updated", Duration::from_secs(120), || async {
        let st = clusters.get("wal").await.ok()?.status?;
        let idle = st.rollout.as_ref().is_some_and(|r| r.state == RolloutState::Idle && r.outdated == 0);
        let updated: i32 = st.node_groups.iter().map(|g| g.updated).sum();
        (idle && updated == 3 && st.ready_replicas == 3).then_some(())
    })
    .await;
    op.stop().await;
    kubelet.abort();
}

#[tokio::test]
async fn quantities_the_api_server_normalises_cause_no_write_on_a_no_change_pass() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "qty").await;
    let fake = FakeCluster::new().await;
    let kubelet = spawn_kubelet(client.clone(), &ns.name, fake.clone());
    let op = RunningOperator::start(config().await, &ns.name);
    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);

    let mut s = spec(fake.port);
    s["resources"] = json!({"requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"memory": "2048Mi"}});
    clusters.create(&PostParams::default(), &cluster(s)).await.expect("creating the cluster");
    ns.wait_for(&client, "3/3 Ready", Duration::from_secs(90), || async {
        let st = clusters.get("wal").await.ok()?.status?;
        (st.ready_replicas == 3).then_some(())
    })
    .await;
    let t = template(&sts.get("wal-pool-az-a").await.expect("sts"));
    assert_eq!(
        t["spec"]["containers"][0]["resources"]["requests"]["cpu"], "500m",
        "the API server normalises the quantity (else this test proves nothing)"
    );

    // Wait for quiet, then poke the cluster (a watch event ⇒ a pass) and count writes.
    let mut quiet = false;
    for _ in 0..15 {
        let before = op.requests.len();
        tokio::time::sleep(Duration::from_secs(2)).await;
        if !op.requests.since(before).iter().any(|r| r.is_write()) {
            quiet = true;
            break;
        }
    }
    let mark = op.requests.len();
    let before = op.reconciles();
    for i in 0..3 {
        clusters
            .patch(
                "wal",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"test/poke": i.to_string()}}})),
            )
            .await
            .expect("poking the cluster");
        let target = before + f64::from(i) + 1.0;
        ns.wait_for(&client, "a pass after the poke", Duration::from_secs(20), || async {
            (op.reconciles() >= target).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes: Vec<String> = op
        .requests
        .since(mark)
        .into_iter()
        .filter(|r| r.is_write())
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect();
    assert!(quiet && writes.is_empty(), "a no-change pass wrote (quiet before the pokes: {quiet}): {writes:?}");
    op.stop().await;
    kubelet.abort();
}

#[tokio::test]
async fn adding_a_zone_restarts_no_existing_pod() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "addzone").await;
    let fake = FakeCluster::new().await;
    let kubelet = spawn_kubelet(client.clone(), &ns.name, fake.clone());
    let op = RunningOperator::start(config().await, &ns.name);
    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns.name);
    clusters.create(&PostParams::default(), &cluster(spec(fake.port))).await.expect("creating the cluster");
    ns.wait_for(&client, "3/3 Ready", Duration::from_secs(90), || async {
        let st = clusters.get("wal").await.ok()?.status?;
        (st.ready_replicas == 3).then_some(())
    })
    .await;
    let uids = |list: kube::core::ObjectList<k8s_openapi::api::core::v1::Pod>| -> Vec<(String, String)> {
        list.items
            .iter()
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), p.metadata.uid.clone().unwrap_or_default()))
            .collect()
    };
    let before = uids(pods.list(&Default::default()).await.expect("pods"));

    let mut s = spec(fake.port);
    s["bufferPools"][0]["nodeGroups"]
        .as_array_mut()
        .expect("groups")
        .push(json!({"name": "az-d", "zone": "zone-d", "replicas": 1}));
    clusters
        .patch("wal", &PatchParams::default(), &Patch::Merge(json!({"spec": {"bufferPools": s["bufferPools"]}})))
        .await
        .expect("adding zone d");
    ns.wait_for(&client, "4/4 Ready with nothing outdated", Duration::from_secs(60), || async {
        let st = clusters.get("wal").await.ok()?.status?;
        let idle = st.rollout.as_ref().is_some_and(|r| r.state == RolloutState::Idle && r.outdated == 0);
        let updated: i32 = st.node_groups.iter().map(|g| g.updated).sum();
        (st.ready_replicas == 4 && updated == 4 && idle).then_some(())
    })
    .await;
    let after = uids(pods.list(&Default::default()).await.expect("pods"));
    for (name, uid) in &before {
        assert!(after.contains(&(name.clone(), uid.clone())), "pod {name} was restarted by adding a zone");
    }
    op.stop().await;
    kubelet.abort();
}

#[tokio::test]
async fn relabelling_a_referenced_secret_restarts_nothing_but_changing_its_data_rolls() {
    use k8s_openapi::api::core::v1::Secret;
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "secretmeta").await;
    let fake = FakeCluster::new().await;
    let kubelet = spawn_kubelet(client.clone(), &ns.name, fake.clone());
    let op = RunningOperator::start(config().await, &ns.name);
    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s3-creds"},
        "stringData": {"AWS_ACCESS_KEY_ID": "minio", "AWS_SECRET_ACCESS_KEY": "minio123"},
    }))
    .expect("secret");
    secrets.create(&PostParams::default(), &secret).await.expect("creating the Secret");
    let mut s = spec(fake.port);
    s["objectStorage"] = json!({
        "endpoint": {"address": "minio.example", "port": 9000},
        "bucket": "wal",
        "credentials": {"secretRef": {"name": "s3-creds"}},
    });
    clusters.create(&PostParams::default(), &cluster(s)).await.expect("creating the cluster");
    ns.wait_for(&client, "3/3 Ready", Duration::from_secs(90), || async {
        let st = clusters.get("wal").await.ok()?.status?;
        (st.ready_replicas == 3).then_some(())
    })
    .await;
    let hash = |s: &StatefulSet| template(s)["metadata"]["annotations"]["woodpecker.zilliz.io/config-hash"].clone();
    let before = hash(&sts.get("wal-pool-az-a").await.expect("sts"));

    // kubectl label / a backup tool's annotation: a new resourceVersion, the same data.
    for i in 0..2 {
        let passes = op.reconciles();
        secrets
            .patch(
                "s3-creds",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"backup": format!("run-{i}")}}})),
            )
            .await
            .expect("labelling the Secret");
        ns.wait_for(&client, "a pass after the Secret changed", Duration::from_secs(20), || async {
            (op.reconciles() > passes).then_some(())
        })
        .await;
    }
    let now = hash(&sts.get("wal-pool-az-a").await.expect("sts"));
    assert_eq!(before, now, "relabelling a referenced Secret changed the pod template (a cluster-wide restart)");

    // A change of its data rolls the pods.
    secrets
        .patch(
            "s3-creds",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"AWS_SECRET_ACCESS_KEY": "rotated456"}})),
        )
        .await
        .expect("rotating the Secret");
    ns.wait_for(&client, "a new template hash after the rotation", Duration::from_secs(20), || async {
        let now = hash(&sts.get("wal-pool-az-a").await.ok()?);
        (now != before).then_some(())
    })
    .await;
    op.stop().await;
    kubelet.abort();
}
