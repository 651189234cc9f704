//! Load-aware weights of candidates and the weighted draw used by every strategy.

use rand::Rng;
use woodpecker_proto::logstore::NodeMeta;

use super::LoadPolicy;

/// Weight of a node whose load is fresh but at or above 0.99, so it stays pickable.
const MIN_WEIGHT: f64 = 0.01;
/// Weight of a node whose load is unknown or older than the policy's TTL.
const UNKNOWN_WEIGHT: f64 = 0.5;

/// One weight per node of `nodes`: `1 - load_factor` in [0.01, 1] for a fresh load, 0.5 for a stale
/// or absent one; all 1 (uniform) when the policy is off or no node has a fresh load.
pub(super) fn weights(nodes: &[&NodeMeta], policy: &LoadPolicy, now_ms: i64) -> Vec<f64> {
    let fresh = |node: &NodeMeta| {
        policy.enabled
            && node.load_updated_at != 0
            && now_ms.saturating_sub(node.load_updated_at) <= policy.ttl_ms
            && node.load_factor.is_finite()
    };
    if !nodes.iter().any(|node| fresh(node)) {
        return vec![1.0; nodes.len()];
    }
    nodes
        .iter()
        .map(|node| if fresh(node) { (1.0 - node.load_factor).clamp(MIN_WEIGHT, 1.0) } else { UNKNOWN_WEIGHT })
        .collect()
}

/// Draws one index out of `options` with probability proportional to `weights[index]`; `None` when
/// `options` is empty. Repeated draws with the winner removed give sampling without replacement.
pub(super) fn draw<R: Rng + ?Sized>(options: &[usize], weights: &[f64], rng: &mut R) -> Option<usize> {
    let last = *options.last()?;
    let total: f64 = options.iter().map(|&i| weights[i]).sum();
    let mut point = rng.random::<f64>() * total;
    for &i in options {
        point -= weights[i];
        if point < 0.0 {
            return Some(i);
        }
    }
    // Rounding left `point` at or just above zero: the last option owns that end of the range.
    Some(last)
}
