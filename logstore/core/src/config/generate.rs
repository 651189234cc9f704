//! Renders a `Config` as YAML with a one-line comment on every key, taken from the fields' doc
//! comments. The defaults rendered this way are the checked-in `config/woodpecker.yaml`.

use super::schema::{Documented, KeyDoc};
use super::{Config, ConfigError};

const HEADER: &str = "\
# Woodpecker configuration (upstream woodpecker.yaml schema).
#
# GENERATED from the config types in logstore/core/src/config/ - do not edit by hand.
# Regenerate: cargo run -p woodpecker-core --example gen-config
#        or:  UPDATE_CONFIG=1 cargo test -p woodpecker-core --test config_file
#
# Durations: a plain number counts in the unit named in the comment; a string may carry its own
# unit (\"200ms\", \"10s\", \"5m\"). Sizes: bytes, or a string with a binary K/M/G/T suffix (\"64M\").
# Keys marked (ours) do not exist upstream; upstream hard-codes those values.
";

pub(super) fn to_commented_yaml(config: &Config) -> Result<String, ConfigError> {
    let plain = serde_saphyr::to_string(config).map_err(|e| ConfigError::Render { message: e.to_string() })?;
    let root =
        Config::key_docs().ok_or_else(|| ConfigError::Render { message: "Config has no key table".to_owned() })?;
    let mut out = String::from(HEADER);
    // Open keys: (indent of the key, its doc entry).
    let mut open: Vec<(usize, &'static KeyDoc)> = Vec::new();
    // Indent of the key whose block scalar (`|`, `>`) body is being copied, if any.
    let mut in_block_scalar: Option<usize> = None;
    for line in plain.lines() {
        let indent = line.len() - line.trim_start().len();
        let rest = &line[indent..];
        if let Some(key_indent) = in_block_scalar {
            if rest.is_empty() || indent > key_indent {
                out.push_str(line);
                out.push('\n');
                continue;
            }
            in_block_scalar = None;
        }
        let (key_indent, body, is_item) = match rest.strip_prefix("- ") {
            Some(item) => (indent + 2, item, true),
            None => (indent, rest, false),
        };
        let Some((key, value)) = split_key(body) else {
            // A scalar list item (`- localhost:2379`): nothing to document. A multi-line one (`- |-`) is a
            // block scalar whose body lines, indented past the dash, are text even where they look like keys.
            if is_item && (body.starts_with('|') || body.starts_with('>')) {
                in_block_scalar = Some(indent);
            }
            out.push_str(line);
            out.push('\n');
            continue;
        };
        while open.last().is_some_and(|(i, _)| *i >= key_indent) {
            open.pop();
        }
        let siblings = match open.last() {
            None => root,
            Some((_, parent)) => (parent.children)()
                .ok_or_else(|| ConfigError::Render { message: format!("key `{key}` under scalar `{}`", parent.key) })?,
        };
        let doc = siblings
            .iter()
            .find(|d| d.key == key)
            .ok_or_else(|| ConfigError::Render { message: format!("key `{key}` has no doc entry") })?;
        if doc.summary().is_empty() {
            return Err(ConfigError::Render { message: format!("key `{key}` has an empty doc comment") });
        }
        open.push((key_indent, doc));
        if value.is_empty() && !is_item {
            // A section or block list: comment on its own line above it.
            if indent == 0 && !out.ends_with('\n') {
                out.push('\n');
            }
            if indent == 0 {
                out.push('\n');
            }
            out.push_str(&" ".repeat(indent));
            out.push_str("# ");
            out.push_str(doc.summary());
            out.push('\n');
            out.push_str(line);
        } else if value.starts_with('|') || value.starts_with('>') {
            // A comment may follow the block indicator; the body lines stay untouched.
            in_block_scalar = Some(key_indent);
            out.push_str(line);
            out.push_str(" # ");
            out.push_str(doc.summary());
        } else {
            out.push_str(line);
            out.push_str(" # ");
            out.push_str(doc.summary());
        }
        out.push('\n');
    }
    Ok(out)
}

/// Splits `key: value` / `key:` into the key and the (possibly empty) value text.
fn split_key(body: &str) -> Option<(&str, &str)> {
    let (key, value) = match body.split_once(": ") {
        Some((key, value)) => (key, value.trim()),
        None => (body.strip_suffix(':')?, ""),
    };
    let plain_key = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    plain_key.then_some((key, value))
}
