//! A pod's volumes as host directories, as the kubelet materialises them:
//!
//! ```text
//! <root>/pods/<pod>-<uid8>/volumes/<volume>/    ConfigMap / Secret items as files, emptyDir (new per pod)
//! <root>/claims/<claimName>/                      PersistentVolumeClaim: one per claim, so it survives
//!                                                 the pod's recreation (StatefulSet claims are data-<pod>)
//! ```
//!
//! ConfigMap and Secret file contents get the same mount-path rewrite as the args (see
//! `container_spec`), so a file naming another mounted file still points at it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, Pod};

use super::container_spec::PathMap;

/// Host directory of each volume of `pod` by volume name (nothing written yet).
pub fn volume_dirs(root: &Path, pod_dir: &Path, pod: &Pod) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for v in pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default() {
        let dir = match &v.persistent_volume_claim {
            Some(pvc) => root.join("claims").join(&pvc.claim_name),
            None => pod_dir.join("volumes").join(&v.name),
        };
        out.insert(v.name.clone(), dir);
    }
    out
}

/// `(mountPath, host dir)` of the first container's mounts (subPath joined), or an error naming a
/// mount whose volume is not declared.
pub fn mounts(pod: &Pod, dirs: &BTreeMap<String, PathBuf>) -> Result<Vec<(String, PathBuf)>, String> {
    let c = pod.spec.as_ref().and_then(|s| s.containers.first()).ok_or("the pod has no container")?;
    let mut out = Vec::new();
    for m in c.volume_mounts.clone().unwrap_or_default() {
        let dir = dirs.get(&m.name).ok_or_else(|| format!("mount {}: no volume {}", m.mount_path, m.name))?;
        let dir = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => dir.join(sub),
            None => dir.clone(),
        };
        out.push((m.mount_path.trim_end_matches('/').to_string(), dir));
    }
    Ok(out)
}

/// Write every volume: ConfigMap and Secret items as files (contents path-rewritten), emptyDir and
/// claims as directories. `uid` owns what is written (the pod's runAsUser / fsGroup).
pub fn materialise(
    pod: &Pod,
    dirs: &BTreeMap<String, PathBuf>,
    paths: &PathMap,
    config_maps: &BTreeMap<String, BTreeMap<String, String>>,
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
    uid: Option<u32>,
) -> Result<(), String> {
    for v in pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default() {
        let dir = &dirs[&v.name];
        std::fs::create_dir_all(dir).map_err(|e| format!("volume {}: {e}", v.name))?;
        let (data, items, mode) = if let Some(cm) = &v.config_map {
            let data =
                config_maps.get(&cm.name).ok_or_else(|| format!("volume {}: no ConfigMap {}", v.name, cm.name))?;
            (data, cm.items.clone(), cm.default_mode.unwrap_or(0o644))
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let data = secrets.get(&name).ok_or_else(|| format!("volume {}: no Secret {name}", v.name))?;
            (data, s.items.clone(), s.default_mode.unwrap_or(0o644))
        } else {
            chown(dir, uid)?;
            continue;
        };
        let items = items.unwrap_or_else(|| {
            data.keys().map(|k| KeyToPath { key: k.clone(), path: k.clone(), mode: None }).collect()
        });
        for item in items {
            let value = data.get(&item.key).ok_or_else(|| format!("volume {}: no key {}", v.name, item.key))?;
            let file = dir.join(&item.path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            std::fs::write(&file, paths.rewrite(value)).map_err(|e| format!("{}: {e}", file.display()))?;
            let mode = item.mode.unwrap_or(mode) as u32;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("{}: {e}", file.display()))?;
            chown(&file, uid)?;
        }
        chown(dir, uid)?;
    }
    Ok(())
}

fn chown(path: &Path, uid: Option<u32>) -> Result<(), String> {
    match uid {
        Some(u) => {
            std::os::unix::fs::chown(path, Some(u), Some(u)).map_err(|e| format!("chown {}: {e}", path.display()))
        }
        None => Ok(()),
    }
}
