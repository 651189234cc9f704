//! CPU time this process used (all threads, user + system), for the bench's client-CPU-per-MB figures.

use std::time::Duration;

/// User plus system CPU time of the whole process so far; `None` when the kernel does not say.
pub fn process_time() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given and reads nothing from it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so it filled the struct (which was zeroed anyway).
    let usage = unsafe { usage.assume_init() };
    Some(timeval(usage.ru_utime)? + timeval(usage.ru_stime)?)
}

fn timeval(t: libc::timeval) -> Option<Duration> {
    let secs = u64::try_from(t.tv_sec).ok()?;
    let micros = u32::try_from(t.tv_usec).ok()?;
    Some(Duration::from_secs(secs) + Duration::from_micros(u64::from(micros)))
}

/// CPU time the process used since the reading `before`.
pub fn used_since(before: Option<Duration>) -> Option<Duration> {
    process_time()?.checked_sub(before?)
}

/// CPU milliseconds per MB (10^6 bytes); `None` without a CPU time or without bytes.
pub fn ms_per_mb(used: Option<Duration>, bytes: u64) -> Option<f64> {
    let used = used?;
    (bytes > 0).then(|| used.as_secs_f64() * 1e3 / (bytes as f64 / 1e6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_work_shows_up_as_cpu_time() {
        let before = process_time();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let used = used_since(before).unwrap();
        assert!(used >= Duration::from_millis(30), "50 ms of spinning showed as {used:?}");
    }

    #[test]
    fn cpu_per_mb_needs_a_reading_and_some_bytes() {
        let used = Some(Duration::from_millis(200));
        assert_eq!(ms_per_mb(used, 2_000_000), Some(100.0));
        assert_eq!(ms_per_mb(None, 2_000_000), None);
        assert_eq!(ms_per_mb(used, 0), None);
    }
}
