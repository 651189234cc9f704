//! Membership of this node (temporary: this node alone, until gossip lands).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use woodpecker_proto::logstore::NodeMeta;

use crate::args::ServerArgs;
use crate::node::Members;

#[derive(Debug)]
struct Alone(Mutex<NodeMeta>);

#[async_trait::async_trait]
impl Members for Alone {
    fn local(&self) -> NodeMeta {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
    fn live_nodes(&self) -> Vec<NodeMeta> {
        vec![self.local()]
    }
    fn joined(&self) -> bool {
        true
    }
    fn members_json(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }
    async fn set_status(&self, status: &str) -> Result<(), String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).tags.insert("status".into(), status.into());
        Ok(())
    }
    async fn leave(&self, _timeout: Duration) {}
}

/// Starts membership.
pub async fn start(_args: &ServerArgs, local: NodeMeta, _cancel: CancellationToken) -> Result<Arc<dyn Members>> {
    Ok(Arc::new(Alone(Mutex::new(local))))
}
