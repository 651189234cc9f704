//! Name resolution for the pod tier: one managed block per pod tier in `/etc/hosts`.
//!
//! The servers, our client and etcd-client resolve names with `getaddrinfo`, which reads
//! `/etc/hosts` on every lookup, so a block written here makes a pod's DNS names
//! (`<pod>.<headless>.<ns>.svc.<domain>` and its shorter forms) and a Service's names resolve at once.
//! Each block is fenced by marker lines naming the owning process and namespace:
//!
//! ```text
//! # BEGIN woodpecker-pod-tier pid=4242 ns=wp-podtier-1a2b
//! 127.0.101.1 wal-pool-az-a-0.wal-pool-hs.wp-podtier-1a2b.svc.cluster.local wal-pool-az-a-0.wal-pool-hs ...
//! # END woodpecker-pod-tier pid=4242 ns=wp-podtier-1a2b
//! ```
//!
//! The file is replaced atomically (a rename; in place only where it is a bind mount that cannot be
//! renamed over) under a process-wide lock; the block is removed when the pod tier is dropped, and a block whose
//! process is gone (a test killed mid-run) is removed by the next pod tier that starts.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

/// Serialises read-modify-write of the hosts file between the pod tiers of this process.
static HOSTS_LOCK: Mutex<()> = Mutex::new(());

const MARK: &str = "woodpecker-pod-tier";

/// The managed block of one pod tier.
pub struct HostsBlock {
    path: PathBuf,
    tag: String,
    entries: Mutex<BTreeMap<String, Ipv4Addr>>,
}

impl HostsBlock {
    /// A block for namespace `ns` in `/etc/hosts` (or `$WOODPECKER_POD_TIER_HOSTS`, for a dry run);
    /// clears blocks left behind by dead processes.
    pub fn new(ns: &str) -> Self {
        let path =
            std::env::var_os("WOODPECKER_POD_TIER_HOSTS").map_or_else(|| PathBuf::from("/etc/hosts"), PathBuf::from);
        let block = Self { path, tag: format!("pid={} ns={ns}", std::process::id()), entries: Default::default() };
        block.rewrite(tag_pid_alive);
        block
    }

    /// Map every name in `names` to `ip` (replacing earlier mappings of those names).
    pub fn set(&self, ip: Ipv4Addr, names: &[String]) {
        let changed = {
            let mut e = self.entries.lock().unwrap();
            // Every name is inserted (no short-circuit), then: did any mapping change?
            let previous: Vec<Option<Ipv4Addr>> = names.iter().map(|n| e.insert(n.clone(), ip)).collect();
            previous.iter().any(|p| *p != Some(ip))
        };
        if changed {
            self.rewrite(tag_pid_alive);
        }
    }

    /// Rewrite the file: other owners' live blocks kept (`keep` decides on each foreign tag), ours
    /// replaced by the current entries.
    fn rewrite(&self, keep: impl Fn(&str) -> bool) {
        let _guard = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let text = std::fs::read_to_string(&self.path)
            .unwrap_or_else(|e| panic!("reading {} (the pod tier needs root to manage it): {e}", self.path.display()));
        let mut out = strip_blocks(&text, |tag| tag != self.tag && keep(tag));
        let entries = self.entries.lock().unwrap().clone();
        if !entries.is_empty() {
            let mut by_ip: BTreeMap<Ipv4Addr, Vec<String>> = BTreeMap::new();
            for (name, ip) in entries {
                by_ip.entry(ip).or_default().push(name);
            }
            out.push_str(&format!("# BEGIN {MARK} {}\n", self.tag));
            for (ip, names) in by_ip {
                out.push_str(&format!("{ip} {}\n", names.join(" ")));
            }
            out.push_str(&format!("# END {MARK} {}\n", self.tag));
        }
        replace_file(&self.path, &out)
            .unwrap_or_else(|e| panic!("writing {} (the pod tier needs root to manage it): {e}", self.path.display()));
    }
}

impl Drop for HostsBlock {
    fn drop(&mut self) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.rewrite(tag_pid_alive);
    }
}

/// Replace `path` with `text` atomically (a new file renamed over it), so a lookup running meanwhile
/// reads the old or the new file, never a truncated one: an in-place rewrite made a server's lookup
/// of a peer fail ("dns error") in the middle of a roll. A path that cannot be replaced by a rename
/// (a bind-mounted /etc/hosts in a container) is rewritten in place.
fn replace_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_file_name(format!(
        ".{}.pod-tier.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("hosts"),
        std::process::id()
    ));
    let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode());
    std::fs::write(&tmp, text)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    match std::fs::rename(&tmp, path) {
        Ok(()) => Ok(()),
        Err(_) => {
            let _ = std::fs::remove_file(&tmp);
            std::fs::write(path, text)
        }
    }
}

/// `text` without the managed blocks whose tag `keep` rejects.
fn strip_blocks(text: &str, keep: impl Fn(&str) -> bool) -> String {
    let mut out = String::new();
    let mut dropping = false;
    for line in text.lines() {
        if let Some(tag) = line.strip_prefix(&format!("# BEGIN {MARK} ")) {
            dropping = !keep(tag);
        }
        let end = line.starts_with(&format!("# END {MARK} "));
        if !dropping {
            out.push_str(line);
            out.push('\n');
        }
        if end {
            dropping = false;
        }
    }
    out
}

/// True when the process named by `pid=<n>` in `tag` still runs.
fn tag_pid_alive(tag: &str) -> bool {
    let pid = tag.split_whitespace().find_map(|w| w.strip_prefix("pid=")).and_then(|p| p.parse::<u32>().ok());
    pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
}

#[test]
fn blocks_of_dead_owners_are_stripped_and_others_kept() {
    let text = "127.0.0.1 localhost\n# BEGIN woodpecker-pod-tier pid=1 ns=a\n1.2.3.4 x\n# END woodpecker-pod-tier pid=1 ns=a\n\
                # BEGIN woodpecker-pod-tier pid=999999999 ns=b\n1.2.3.5 y\n# END woodpecker-pod-tier pid=999999999 ns=b\n";
    let out = strip_blocks(text, tag_pid_alive);
    assert!(out.contains("1.2.3.4 x"), "pid 1 lives: its block stays\n{out}");
    assert!(!out.contains("1.2.3.5"), "a dead owner's block goes\n{out}");
    assert!(out.starts_with("127.0.0.1 localhost\n"));
}
