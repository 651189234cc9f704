//! `RANDOM_GROUP`: a fixed partition of the candidates into replica sets, one drawn per segment.
//!
//! Candidates (sorted by node id) are cut into consecutive groups of `limit`:
//!
//! ```text
//!   n = 10, limit = 3:  [n0 n1 n2] [n3 n4 n5] [n6 n7 n8] [n9 n0 n1]
//!                                                          └ wraps around
//! ```
//!
//! Few distinct replica sets exist (⌈n/limit⌉), which bounds how many segments a double failure
//! can hit. Upstream keeps only the ⌊n/limit⌋ full groups, so the last `n mod limit` nodes never
//! get a segment; here the last group wraps around to the first nodes instead, so every node is
//! reachable. The price: the first `limit - n mod limit` nodes sit in two groups and are drawn
//! about twice as often.

use rand::Rng;

use super::weight::draw;

/// Picks one group of exactly `limit` distinct indices out of `0..weights.len()`, groups drawn in
/// proportion to their summed weights; `None` when there are fewer than `limit` candidates.
pub(super) fn pick<R: Rng + ?Sized>(weights: &[f64], limit: usize, rng: &mut R) -> Option<Vec<usize>> {
    let n = weights.len();
    if limit == 0 || n < limit {
        return None;
    }
    let group = |g: usize| (0..limit).map(move |offset| (g * limit + offset) % n);
    let group_weights: Vec<f64> = (0..n.div_ceil(limit)).map(|g| group(g).map(|i| weights[i]).sum()).collect();
    let options: Vec<usize> = (0..group_weights.len()).collect();
    let chosen = draw(&options, &group_weights, rng)?;
    Some(group(chosen).collect())
}
