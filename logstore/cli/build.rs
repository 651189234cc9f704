//! Records the git commit the binary is built from, for `woodpecker --version`.
//!
//! `WOODPECKER_GIT_COMMIT` set at build time wins (an image build from a source tarball has no `.git`);
//! otherwise `git` is asked, and without git or a repository the commit reads `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=WOODPECKER_GIT_COMMIT");
    let commit = std::env::var("WOODPECKER_GIT_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        // Rebuild when HEAD moves: HEAD itself (branch switch) and the ref it names (new commit).
        if let Some(head) = git(&["rev-parse", "--path-format=absolute", "--git-path", "HEAD"]) {
            println!("cargo:rerun-if-changed={head}");
        }
        if let Some(name) = git(&["symbolic-ref", "-q", "HEAD"])
            && let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name])
        {
            println!("cargo:rerun-if-changed={path}");
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    let commit = commit.unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=WOODPECKER_GIT_COMMIT={commit}");
}
