//! Parsing: YAML text → tree → overlay merge → unknown-key check → `Config` → validation.

use std::path::Path;

use serde_json::Value;

use super::schema::{Documented, KeyDoc};
use super::{Config, ConfigError};

/// Reads a config file.
pub(super) fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })
}

/// Parses each `(origin, text)` layer, merges later layers over earlier ones, and returns the
/// validated configuration.
pub(super) fn from_layers(layers: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut merged = Value::Object(serde_json::Map::new());
    for (origin, text) in layers {
        let tree = parse_tree(origin, text)?;
        merge(&mut merged, tree);
    }
    let config = from_tree(merged)?;
    config.validate()?;
    Ok(config)
}

fn parse_tree(origin: &str, text: &str) -> Result<Value, ConfigError> {
    let tree: Value = serde_saphyr::from_str(text)
        .map_err(|e| ConfigError::Syntax { origin: origin.to_owned(), message: e.to_string() })?;
    match tree {
        // An empty file changes nothing.
        Value::Null => Ok(Value::Object(serde_json::Map::new())),
        Value::Object(_) => Ok(tree),
        other => Err(ConfigError::Syntax {
            origin: origin.to_owned(),
            message: format!("the top level must be a mapping, found {}", kind(&other)),
        }),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "an empty value",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Merges `overlay` into `base`: mappings key by key, any other value replaces; an empty
/// (null) overlay value leaves the base value alone, as upstream's Go loader does for scalars.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (_, Value::Null) => {}
        (Value::Object(base_map), Value::Object(overlay_map)) => {
            for (key, value) in overlay_map {
                match base_map.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base_map.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

fn from_tree(tree: Value) -> Result<Config, ConfigError> {
    if let Some(docs) = Config::key_docs() {
        check_known_keys(&tree, docs, "")?;
    }
    serde_path_to_error::deserialize(tree)
        .map_err(|e| ConfigError::InvalidValue { key: e.path().to_string(), message: e.into_inner().to_string() })
}

/// Rejects the first key that is not in the schema, naming its dotted path.
fn check_known_keys(value: &Value, docs: &'static [KeyDoc], path: &str) -> Result<(), ConfigError> {
    let Value::Object(map) = value else {
        // Not a mapping: deserialization reports the type error with the path.
        return Ok(());
    };
    for (key, child) in map {
        let child_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        let Some(doc) = docs.iter().find(|d| d.key == key) else {
            return Err(ConfigError::UnknownKey {
                key: child_path,
                known: docs.iter().map(|d| d.key).collect::<Vec<_>>().join(", "),
            });
        };
        let Some(child_docs) = (doc.children)() else { continue };
        match child {
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    check_known_keys(item, child_docs, &format!("{child_path}[{index}]"))?;
                }
            }
            other => check_known_keys(other, child_docs, &child_path)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_replaces_scalars_and_lists_and_merges_mappings() {
        let mut base = serde_json::json!({"a": {"x": 1, "y": [1, 2]}, "b": "keep"});
        merge(&mut base, serde_json::json!({"a": {"y": [3], "z": true}, "b": null}));
        assert_eq!(base, serde_json::json!({"a": {"x": 1, "y": [3], "z": true}, "b": "keep"}));
    }
}
