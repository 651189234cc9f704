//! The desired objects of a cluster: validate and render, grouped by kind for the typed caches.

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use woodpecker_crds::WoodpeckerCluster;

use crate::controller::load::Resolved;
use crate::render::{self, RenderInputs, Rendered};

/// Everything the cluster should consist of, grouped by kind for the typed caches.
#[derive(Clone, Debug)]
pub struct Desired {
    /// The full render.
    pub rendered: Rendered,
    /// ServiceAccounts.
    pub service_accounts: Vec<ServiceAccount>,
    /// Services.
    pub services: Vec<Service>,
    /// ConfigMaps (hashed server config, client bundle).
    pub config_maps: Vec<ConfigMap>,
    /// Secrets (hashed credentials overlay).
    pub secrets: Vec<Secret>,
    /// PodDisruptionBudgets.
    pub pdbs: Vec<PodDisruptionBudget>,
    /// The admin (metrics) port of every pod.
    pub admin_port: u16,
}

/// The admin port of the cluster's pods.
pub fn admin_port(cr: &WoodpeckerCluster) -> u16 {
    u16::try_from(cr.spec.metrics_port).unwrap_or(9091)
}

/// Validate and render. `Err` carries a message for `ConfigValid=False`.
pub fn render(cr: &WoodpeckerCluster, resolved: &Resolved) -> Result<Desired, String> {
    if let Err(errors) = render::validate_cluster(cr) {
        return Err(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
    }
    let inputs = RenderInputs {
        secrets: resolved.secrets.clone(),
        config_maps: resolved.config_maps.clone(),
        stamp_key: resolved.stamp_key.clone(),
    };
    let rendered = render::render(cr, &inputs).map_err(|e| e.to_string())?;
    let mut services = rendered.headless_services.clone();
    services.extend(rendered.seed_services.iter().cloned());
    services.push(rendered.admin_service.clone());
    Ok(Desired {
        service_accounts: rendered.service_account.iter().cloned().collect(),
        services,
        config_maps: vec![
            rendered.server_config.clone(),
            rendered.client_bundle.clone(),
            rendered.gossip_seeds.clone(),
        ],
        secrets: rendered.credentials_overlay.iter().cloned().collect(),
        pdbs: rendered.pdb.iter().cloned().collect(),
        admin_port: admin_port(cr),
        rendered,
    })
}
