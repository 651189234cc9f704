//! What the pod tier runs in place of the container image: the `woodpecker` binary built by cargo
//! for the image's `/usr/local/bin/woodpecker`, and the bind shim that gives each pod its own address.
//!
//! Mapping (documented in docs and the test's note): a container command whose first element is an
//! absolute path under `/usr/local/bin/` runs the file of the same name from the cargo target
//! directory (`$WOODPECKER_SERVER_BIN` overrides it for `woodpecker`). Any other command is refused
//! with a message naming it: the pod tier only runs the images this repository builds.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Env var naming a prebuilt `woodpecker` binary (CI builds it before the tests).
pub const SERVER_BIN_ENV: &str = "WOODPECKER_SERVER_BIN";

/// The cargo profile directory of this test binary (`<target>/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/debug/deps/pod_tier-<hash>
    exe.parent().and_then(Path::parent).expect("the test binary lives in <target>/<profile>/deps").to_path_buf()
}

/// The `woodpecker` binary: `$WOODPECKER_SERVER_BIN`, else built now with `cargo build -p woodpecker-cli`
/// into this test's target directory (a no-op when it is fresh).
pub fn server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os(SERVER_BIN_ENV).filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "{SERVER_BIN_ENV}={} is not a file", p.display());
            return p;
        }
        let profile = profile_dir();
        let target = profile.parent().expect("the target directory").to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "woodpecker-cli", "--bin", "woodpecker", "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("running cargo build -p woodpecker-cli");
        assert!(status.success(), "cargo build -p woodpecker-cli failed ({status}); or set {SERVER_BIN_ENV}");
        let bin = profile.join("woodpecker");
        assert!(bin.is_file(), "cargo built woodpecker-cli but {} is missing", bin.display());
        bin
    })
}

/// The host path that runs container command `cmd`, or an error naming it.
pub fn host_command(cmd: &str) -> Result<PathBuf, String> {
    match cmd.strip_prefix("/usr/local/bin/") {
        Some("woodpecker") => Ok(server_binary().to_path_buf()),
        Some(other) => {
            let p = profile_dir().join(other);
            if p.is_file() { Ok(p) } else { Err(format!("{cmd}: no {other} in {}", profile_dir().display())) }
        }
        None => Err(format!("{cmd}: the pod tier only runs binaries the image puts in /usr/local/bin")),
    }
}

/// The bind shim (`bind_to_pod_ip.c`), compiled once with the system C compiler (the one Rust links
/// with) into the target directory.
pub fn bind_shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pod_tier/bind_to_pod_ip.c");
        let out_dir = profile_dir().join("pod-tier");
        std::fs::create_dir_all(&out_dir).expect("creating the shim directory");
        // Built under a per-process name, then renamed: a concurrent test binary never loads half a file.
        let tmp = out_dir.join(format!("bind_to_pod_ip.so.{}", std::process::id()));
        let out = out_dir.join("bind_to_pod_ip.so");
        let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
        let output = std::process::Command::new(&cc)
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&tmp)
            .arg(&src)
            .arg("-ldl")
            .output()
            .unwrap_or_else(|e| panic!("running {cc:?} to build the bind shim: {e}"));
        assert!(output.status.success(), "building the bind shim failed: {}", String::from_utf8_lossy(&output.stderr));
        std::fs::rename(&tmp, &out).expect("installing the bind shim");
        out
    })
}
