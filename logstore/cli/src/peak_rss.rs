//! Peak resident memory of this process (Linux `VmHWM`), resettable between benchmark runs.

/// Resets the peak to the current RSS (`echo 5 > /proc/self/clear_refs`, Linux ≥ 4.0). False when the
/// kernel does not allow it; the next reading then covers the whole process lifetime.
pub fn reset() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak RSS in bytes, when `/proc/self/status` is readable.
pub fn read() -> Option<u64> {
    parse_vm_hwm(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// The `VmHWM:   1234 kB` line of `/proc/<pid>/status`, in bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let rest = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let mut parts = rest.split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\twoodpecker\nVmPeak:\t  99 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2048 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS: 1 kB"), None);
        assert_eq!(parse_vm_hwm("VmHWM: x kB"), None);
    }

    #[test]
    fn this_process_has_a_peak() {
        assert!(read().is_some_and(|b| b > 0));
    }
}
