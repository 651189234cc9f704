//! From a pod's first container to a host process: env resolved as the kubelet does (values with
//! `$(VAR)` expansion, `fieldRef`, `configMapKeyRef`, `secretKeyRef`), args expanded, and every
//! volume mount mapped to a directory of the pod on the host.
//!
//! A process cannot see the container's absolute paths (`/woodpecker/configs`, `/woodpecker/data`),
//! so each mount path is rewritten to its host directory wherever it appears as a path in the args,
//! the env values and the materialised ConfigMap/Secret files: `--config=/woodpecker/configs/x.yaml`
//! becomes `--config=<pod dir>/woodpecker/configs/x.yaml`. A path only matches at a path boundary
//! (`/woodpecker/data` does not touch `/woodpecker/database`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};

/// Everything the kubelet looks up while resolving env: the pod's own fields and the namespace's
/// ConfigMaps and Secrets (values already decoded).
pub struct EnvSources<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its IP.
    pub pod_ip: &'a str,
    /// Its node's IP.
    pub host_ip: &'a str,
    /// ConfigMap data by name.
    pub config_maps: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// Secret data by name.
    pub secrets: &'a BTreeMap<String, BTreeMap<String, String>>,
}

/// Kubernetes `$(VAR)` expansion: a defined variable is replaced, an undefined one is left as written,
/// `$$` is a literal `$`.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'('
                && let Some(end) = s[i + 2..].find(')')
            {
                let name = &s[i + 2..i + 2 + end];
                if let Some(v) = vars.get(name) {
                    out.push_str(v);
                    i += 2 + end + 1;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('$');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The value of a `fieldRef` path, or an error naming it.
fn field_value(path: &str, src: &EnvSources<'_>) -> Result<String, String> {
    let m = &src.pod.metadata;
    let v = match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "spec.nodeName" => src.pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => src.pod.spec.as_ref().and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => Some(src.pod_ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(src.host_ip.to_string()),
        other => {
            let key = other
                .strip_prefix("metadata.labels['")
                .map(|k| (k, true))
                .or_else(|| other.strip_prefix("metadata.annotations['").map(|k| (k, false)));
            match key {
                Some((k, labels)) => {
                    let k = k.trim_end_matches("']");
                    let map = if labels { m.labels.as_ref() } else { m.annotations.as_ref() };
                    Some(map.and_then(|l| l.get(k).cloned()).unwrap_or_default())
                }
                None => return Err(format!("fieldRef {other} is not supported by the pod tier")),
            }
        }
    };
    Ok(v.unwrap_or_default())
}

/// The container's env in order, resolved and expanded; an error names the variable that cannot be
/// resolved (a missing ConfigMap key is `CreateContainerConfigError` on a real node too).
pub fn resolve_env(c: &Container, src: &EnvSources<'_>) -> Result<Vec<(String, String)>, String> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for EnvVar { name, value, value_from } in c.env.clone().unwrap_or_default() {
        let v = if let Some(v) = value {
            expand(&v, &vars)
        } else if let Some(from) = value_from {
            if let Some(f) = from.field_ref {
                field_value(&f.field_path, src)?
            } else if let Some(k) = from.config_map_key_ref {
                match src.config_maps.get(&k.name).and_then(|d| d.get(&k.key)) {
                    Some(v) => v.clone(),
                    None if k.optional == Some(true) => continue,
                    None => return Err(format!("env {name}: ConfigMap {} has no key {}", k.name, k.key)),
                }
            } else if let Some(k) = from.secret_key_ref {
                match src.secrets.get(&k.name).and_then(|d| d.get(&k.key)) {
                    Some(v) => v.clone(),
                    None if k.optional == Some(true) => continue,
                    None => return Err(format!("env {name}: Secret {} has no key {}", k.name, k.key)),
                }
            } else {
                return Err(format!("env {name}: this valueFrom is not supported by the pod tier"));
            }
        } else {
            String::new()
        };
        vars.insert(name.clone(), v.clone());
        out.push((name, v));
    }
    Ok(out)
}

/// Container command and args with `$(VAR)` expanded from `env`.
pub fn expand_command(c: &Container, env: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let vars: BTreeMap<String, String> = env.iter().cloned().collect();
    let f = |v: &Option<Vec<String>>| v.clone().unwrap_or_default().iter().map(|a| expand(a, &vars)).collect();
    (f(&c.command), f(&c.args))
}

/// Mount paths of the container mapped to host directories, longest mount path first.
pub struct PathMap(Vec<(String, PathBuf)>);

impl PathMap {
    /// From `(mountPath, host dir)` pairs.
    pub fn new(mut mounts: Vec<(String, PathBuf)>) -> Self {
        mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
        Self(mounts)
    }

    /// `s` with every mount path (at a path boundary) replaced by its host directory.
    pub fn rewrite(&self, s: &str) -> String {
        let boundary_before =
            |c: Option<char>| c.is_none_or(|c| matches!(c, '=' | ',' | ':' | ' ' | '"' | '\'' | '\n'));
        let boundary_after = |c: Option<char>| c.is_none_or(|c| matches!(c, '/' | ',' | ':' | ' ' | '"' | '\'' | '\n'));
        let mut out = String::new();
        let mut rest = s;
        let mut prev: Option<char> = None;
        'outer: while !rest.is_empty() {
            if boundary_before(prev) {
                for (mount, dir) in &self.0 {
                    if let Some(after) = rest.strip_prefix(mount.as_str())
                        && boundary_after(after.chars().next())
                    {
                        out.push_str(&dir.display().to_string());
                        prev = mount.chars().last();
                        rest = after;
                        continue 'outer;
                    }
                }
            }
            let ch = rest.chars().next().unwrap_or(' ');
            out.push(ch);
            prev = Some(ch);
            rest = &rest[ch.len_utf8()..];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let vars: BTreeMap<String, String> = [("A".to_string(), "x".to_string())].into();
        assert_eq!(expand("$(A).$(B)-$$(A)", &vars), "x.$(B)-$(A)");
    }

    #[test]
    fn mount_paths_are_rewritten_only_at_path_boundaries() {
        let m = PathMap::new(vec![
            ("/woodpecker/data".into(), "/h/data".into()),
            ("/woodpecker/configs".into(), "/h/cfg".into()),
            ("/tmp".into(), "/h/tmp".into()),
        ]);
        assert_eq!(m.rewrite("--config=/woodpecker/configs/w.yaml"), "--config=/h/cfg/w.yaml");
        assert_eq!(m.rewrite("--data-dir=/woodpecker/data"), "--data-dir=/h/data");
        assert_eq!(m.rewrite("/woodpecker/database /x/tmp"), "/woodpecker/database /x/tmp");
        assert_eq!(m.rewrite("rootPath: /woodpecker/data\n"), "rootPath: /h/data\n");
    }
}
