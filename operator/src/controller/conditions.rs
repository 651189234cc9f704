//! Status conditions that only change their transition time when their status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Set condition `type_` in `conds`, keeping `lastTransitionTime` when the status is unchanged.
pub fn set(
    conds: &mut Vec<Condition>,
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let status_str = if status { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status_str)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    let cond = Condition {
        type_: type_.to_string(),
        status: status_str.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: since,
    };
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => *c = cond,
        None => conds.push(cond),
    }
}

/// The condition `type_` in `conds`, if set.
pub fn get<'a>(conds: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conds.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let mut prev = Vec::new();
        set(&mut prev, &[], "Available", true, "Ok", "", Some(1));
        let t0 = prev[0].last_transition_time.clone();
        let mut next = Vec::new();
        set(&mut next, &prev, "Available", true, "Ok", "still", Some(2));
        assert_eq!(next[0].last_transition_time, t0);
        let mut flipped = Vec::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        set(&mut flipped, &prev, "Available", false, "Down", "", Some(2));
        assert_ne!(flipped[0].last_transition_time, t0);
    }
}
