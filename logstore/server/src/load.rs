//! The node's load factor for load-aware SelectNodes (`nodeSelectionPolicy`): every
//! `loadReportInterval`, `max(cpu busy share, iowait share, memory term)` from `/proc`, smoothed by an
//! EWMA (`ewmaAlpha`) and published through gossip. The memory term is `(used − t) / (1 − t)` once the
//! used share passes `t = memSoftThreshold`, else 0, as upstream.

/// Cumulative CPU times from the first line of `/proc/stat` (jiffies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Time not idle and not waiting for I/O.
    pub busy: u64,
    /// Time waiting for I/O.
    pub iowait: u64,
    /// All time.
    pub total: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map_while(|f| f.parse().ok()).collect();
    if v.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user/nice).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3];
    let iowait = v[4];
    Some(CpuTimes { busy: total.saturating_sub(idle + iowait), iowait, total })
}

/// The used share of memory from `/proc/meminfo` (1 − MemAvailable / MemTotal).
pub fn parse_meminfo(text: &str) -> Option<f64> {
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    (total > 0.0).then(|| (1.0 - available / total).clamp(0.0, 1.0))
}

/// One load sample between two CPU readings, with the memory share `mem_used`.
pub fn sample(prev: CpuTimes, now: CpuTimes, mem_used: f64, mem_soft_threshold: f64) -> f64 {
    let dt = now.total.saturating_sub(prev.total);
    let share = |a: u64, b: u64| if dt == 0 { 0.0 } else { a.saturating_sub(b) as f64 / dt as f64 };
    let cpu = share(now.busy, prev.busy);
    let io = share(now.iowait, prev.iowait);
    let mem = if mem_used > mem_soft_threshold && mem_soft_threshold < 1.0 {
        (mem_used - mem_soft_threshold) / (1.0 - mem_soft_threshold)
    } else {
        0.0
    };
    cpu.max(io).max(mem).clamp(0.0, 1.0)
}

/// An exponentially weighted moving average; the first sample is taken as it is.
#[derive(Debug, Clone, Copy)]
pub struct Ewma {
    alpha: f64,
    value: Option<f64>,
}

impl Ewma {
    /// An average giving weight `alpha` (0..=1) to each new sample.
    pub fn new(alpha: f64) -> Self {
        Self { alpha: alpha.clamp(0.0, 1.0), value: None }
    }

    /// Adds a sample; returns the new average.
    pub fn add(&mut self, x: f64) -> f64 {
        let v = match self.value {
            None => x,
            Some(v) => self.alpha * x + (1.0 - self.alpha) * v,
        };
        self.value = Some(v);
        v
    }
}

/// Reads `/proc/stat` and `/proc/meminfo` (None where they are unavailable).
pub fn read_proc() -> (Option<CpuTimes>, Option<f64>) {
    let cpu = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(parse_proc_stat);
    let mem = std::fs::read_to_string("/proc/meminfo").ok().as_deref().and_then(parse_meminfo);
    (cpu, mem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse_into_cpu_and_memory_shares() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5\n";
        assert_eq!(parse_proc_stat(stat), Some(CpuTimes { busy: 150, iowait: 50, total: 1000 }));
        assert_eq!(parse_proc_stat("intr 1 2\n"), None);
        let mem = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(parse_meminfo(mem), Some(0.75));
        assert_eq!(parse_meminfo("MemTotal: 0 kB\nMemAvailable: 0 kB\n"), None);
    }

    #[test]
    fn the_load_is_the_largest_pressure_smoothed() {
        let a = CpuTimes { busy: 0, iowait: 0, total: 0 };
        let b = CpuTimes { busy: 30, iowait: 60, total: 100 };
        assert!((sample(a, b, 0.5, 0.85) - 0.6).abs() < 1e-9, "iowait dominates");
        assert!((sample(a, b, 0.97, 0.85) - 0.8).abs() < 1e-9, "memory past the soft threshold dominates");
        assert_eq!(sample(b, b, 0.1, 0.85), 0.0, "no time passed: no load");
        let mut e = Ewma::new(0.5);
        assert_eq!(e.add(0.8), 0.8);
        assert!((e.add(0.2) - 0.5).abs() < 1e-9);
    }
}
