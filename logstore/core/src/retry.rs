//! The one retry policy of the workspace: bounded exponential backoff with jitter.
//!
//! Every layer that retries (object storage requests, segment uploads and fences, etcd requests, the
//! writer's metadata writes and seals) sleeps `RetryPolicy::delay` between attempts and keeps its own
//! decision of which errors are worth retrying.

use std::time::Duration;

/// How often and how patiently a transient failure is retried.
///
/// Attempt `n` (1-based) that failed transiently is followed by a sleep drawn uniformly from
/// `[d/2, d]`, where `d = min(base_delay * 2^(n-1), max_delay)`; after `max_attempts` attempts the
/// last error is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included; at least 1.
    pub max_attempts: u32,
    /// Sleep ceiling after the first failed attempt.
    pub base_delay: Duration,
    /// Upper bound of any single sleep.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 4, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(2) }
    }
}

impl RetryPolicy {
    /// Sleep after failed attempt `attempt` (1-based), with `jitter` in `[0, 1]` picking a point
    /// in the upper half of the window. Pure, so it can be table-tested.
    pub fn delay_with_jitter(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let ceiling = self.base_delay.saturating_mul(1u32 << exp).min(self.max_delay);
        let jitter = jitter.clamp(0.0, 1.0);
        ceiling.mul_f64(0.5 + 0.5 * jitter)
    }

    /// Sleep after failed attempt `attempt` (1-based), randomly jittered.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with_jitter(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p =
            RetryPolicy { max_attempts: 10, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        let table = [
            (1, Duration::from_millis(100)),
            (2, Duration::from_millis(200)),
            (3, Duration::from_millis(400)),
            (4, Duration::from_millis(800)),
            (5, Duration::from_secs(1)),
            (40, Duration::from_secs(1)),
        ];
        for (attempt, ceiling) in table {
            assert_eq!(p.delay_with_jitter(attempt, 1.0), ceiling, "attempt {attempt}");
            assert_eq!(p.delay_with_jitter(attempt, 0.0), ceiling / 2, "attempt {attempt}");
            let d = p.delay(attempt);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
        }
    }
}
