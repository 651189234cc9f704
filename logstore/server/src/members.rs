//! This node's view of its cluster: gossip through the membership crate, behind the server's small
//! [`Members`] trait (what SelectNodes, the admin API and the stop sequence need).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use woodpecker_membership::gossip::{Gossip, GossipConfig, GossipTimings};
use woodpecker_membership::membership::Membership;
use woodpecker_proto::logstore::NodeMeta;

use crate::args::ServerArgs;
use crate::node::Members;

/// Gossip membership seen through [`Members`].
pub struct GossipMembers {
    gossip: Arc<Gossip>,
}

impl std::fmt::Debug for GossipMembers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipMembers")
            .field("name", &self.gossip.name())
            .field("addr", &self.gossip.gossip_addr())
            .finish()
    }
}

#[async_trait::async_trait]
impl Members for GossipMembers {
    fn local(&self) -> NodeMeta {
        self.gossip.local()
    }

    fn live_nodes(&self) -> Vec<NodeMeta> {
        self.gossip.live_nodes()
    }

    fn joined(&self) -> bool {
        self.gossip.joined()
    }

    fn members_json(&self) -> Vec<serde_json::Value> {
        self.gossip
            .members()
            .into_iter()
            .map(|m| {
                serde_json::json!({
                    "name": m.name,
                    "gossip_addr": m.gossip_addr.to_string(),
                    "service_addr": m.meta.endpoint,
                    "region": m.meta.region,
                    "az": m.meta.az,
                    "resource_group": m.meta.resource_group,
                    "state": m.meta.tags.get("status").cloned().unwrap_or_default(),
                    "alive": m.alive,
                    "load_factor": m.meta.load_factor,
                })
            })
            .collect()
    }

    async fn set_status(&self, status: &str) -> Result<(), String> {
        let status = status.to_owned();
        self.gossip
            .update_local(Box::new(move |m: &mut NodeMeta| {
                m.tags.insert("status".to_owned(), status);
            }))
            .await
            .map_err(|e| e.to_string())
    }

    fn report_load(&self, load: f64) {
        if let Err(e) = self.gossip.report_load(load) {
            tracing::debug!(error = %e, "cannot publish the load factor");
        }
    }

    async fn leave(&self, timeout: Duration) {
        if let Err(e) = self.gossip.leave(timeout).await {
            tracing::warn!(error = %e, "gossip leave");
        }
    }
}

/// Starts gossip on `0.0.0.0:--gossip-port`, advertising `local`, joining `--seeds`.
pub async fn start(args: &ServerArgs, local: NodeMeta, cancel: CancellationToken) -> Result<Arc<dyn Members>> {
    let config = GossipConfig {
        node_name: local.node_id.clone(),
        bind_addr: SocketAddr::from(([0, 0, 0, 0], args.gossip_port)),
        advertise_addr: args.advertise_gossip_addr.clone(),
        seeds: args.seeds.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
        cluster_name: args.cluster.clone(),
        meta: local,
        timings: GossipTimings::default(),
    };
    let gossip = Gossip::start(config, cancel).await.context("cannot start gossip")?;
    Ok(Arc::new(GossipMembers { gossip: Arc::new(gossip) }))
}
