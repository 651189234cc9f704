//! `docs/src/troubleshooting.md` is written by hand; this test fails when a variant of `WoodpeckerError`
//! has no section there (a `### \`Variant\`` heading), so a new error cannot ship undocumented.

use std::path::PathBuf;

/// Variant names of `pub enum WoodpeckerError`, read from its source.
fn error_variants() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(root.join("src/error.rs")).expect("read src/error.rs");
    let body = source.split("pub enum WoodpeckerError {").nth(1).expect("enum WoodpeckerError in src/error.rs");
    let body = &body[..body.find("\n}").expect("end of the enum")];
    body.lines()
        .filter(|l| l.starts_with("    ") && !l.starts_with("     "))
        .map(str::trim)
        .filter(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
        .map(|l| l.split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn every_error_variant_has_a_troubleshooting_section() {
    let variants = error_variants();
    assert!(variants.len() >= 10, "too few variants parsed from src/error.rs: {variants:?}");
    let page = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/src/troubleshooting.md");
    let text = std::fs::read_to_string(&page).expect("read docs/src/troubleshooting.md");
    let missing: Vec<&String> = variants.iter().filter(|v| !text.contains(&format!("### `{v}`\n"))).collect();
    assert!(missing.is_empty(), "docs/src/troubleshooting.md has no `### `Variant`` section for {missing:?}");
}
