//! Pure decisions: which pod to roll next, how to scale; table-tested without I/O.
//!
//! The controller observes pods and their admin APIs, builds the plain input structs here, and acts
//! on the returned enums. Nothing in this module reads a clock or the network: time comes in as
//! `now` (Unix seconds), and the little state a decision needs across passes (when the gates first
//! passed, what was evicted last) is passed in and handed back as [`rollout::RollMemory`].

pub mod observed;
pub mod rollout;
pub mod scale;

pub use observed::{AdminView, MemberView, NodeState, ObservedPod};
pub use rollout::{RollDecision, RollInput, RollMemory, RollOutcome, decide_roll};
pub use scale::{GroupScaleInput, PoolScaleInput, ScaleAction, ScalePlan, ScalePodView, plan_pool_scale};

#[cfg(test)]
mod tests;
