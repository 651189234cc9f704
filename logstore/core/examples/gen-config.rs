//! Writes the default configuration, every key commented, to `config/woodpecker.yaml` (or to the
//! path given as the first argument; `-` prints to stdout).

use std::path::PathBuf;

use woodpecker_core::config::Config;

fn main() -> anyhow::Result<()> {
    let yaml = Config::default_yaml()?;
    let target = std::env::args().nth(1);
    match target.as_deref() {
        Some("-") => print!("{yaml}"),
        Some(path) => std::fs::write(path, yaml)?,
        None => {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/woodpecker.yaml");
            std::fs::write(&path, yaml)?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
