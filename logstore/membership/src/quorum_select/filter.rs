//! One `NodeFilter`, checked and compiled once: which candidates it matches and how many it wants.

use std::collections::BTreeMap;

use regex::Regex;
use woodpecker_proto::logstore::{NodeFilter, NodeMeta};

use super::SelectError;

/// Characters that turn an az/resource-group filter from an exact name into an anchored regex
/// (upstream's list; `.` is not in it, so `us-east-1.a` is an exact name).
const PATTERN_CHARS: &[char] = &['*', '+', '?', '[', ']', '(', ')', '{', '}', '^', '$', '|', '\\'];

/// How one az or resource-group field of a filter matches a node's value.
enum Matcher {
    /// Empty in the filter: every value matches.
    Any,
    /// No pattern character: the value must be equal.
    Exact(String),
    /// A pattern character: the whole value must match (`^(?:pattern)$`).
    Pattern(Regex),
}

impl Matcher {
    fn compile(index: usize, field: &'static str, text: &str) -> Result<Self, SelectError> {
        if text.is_empty() {
            return Ok(Matcher::Any);
        }
        if !text.contains(PATTERN_CHARS) {
            return Ok(Matcher::Exact(text.to_owned()));
        }
        // Anchored, so `az-[12]` does not also match `az-10`.
        Regex::new(&format!("^(?:{text})$")).map(Matcher::Pattern).map_err(|e| SelectError::InvalidPattern {
            index,
            field,
            pattern: text.to_owned(),
            reason: e.to_string(),
        })
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Exact(name) => name == value,
            Matcher::Pattern(regex) => regex.is_match(value),
        }
    }
}

/// A validated filter: az and resource-group matchers, required tags, and a positive limit.
pub(super) struct CompiledFilter<'a> {
    az: Matcher,
    resource_group: Matcher,
    tags: &'a BTreeMap<String, String>,
    /// Number of nodes this filter must contribute (at least 1).
    pub(super) limit: usize,
    /// The filter as text, for error messages.
    pub(super) description: String,
}

impl<'a> CompiledFilter<'a> {
    /// Checks `filter` (the `index`-th of the request): a limit of at least 1 and valid patterns.
    pub(super) fn compile(index: usize, filter: &'a NodeFilter) -> Result<Self, SelectError> {
        let limit = usize::try_from(filter.limit)
            .ok()
            .filter(|&limit| limit > 0)
            .ok_or(SelectError::InvalidFilter { index, limit: filter.limit })?;
        Ok(CompiledFilter {
            az: Matcher::compile(index, "az", &filter.az)?,
            resource_group: Matcher::compile(index, "resource_group", &filter.resource_group)?,
            tags: &filter.tags,
            limit,
            description: describe(filter),
        })
    }

    /// Whether `node` is in this filter's az and resource group and carries every required tag.
    pub(super) fn matches(&self, node: &NodeMeta) -> bool {
        self.az.matches(&node.az)
            && self.resource_group.matches(&node.resource_group)
            && self.tags.iter().all(|(key, value)| node.tags.get(key) == Some(value))
    }
}

fn describe(filter: &NodeFilter) -> String {
    let field = |text: &str| if text.is_empty() { "any".to_owned() } else { format!("{text:?}") };
    let tags: Vec<String> = filter.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "az={} resource_group={} tags={{{}}} limit={}",
        field(&filter.az),
        field(&filter.resource_group),
        tags.join(","),
        filter.limit
    )
}
