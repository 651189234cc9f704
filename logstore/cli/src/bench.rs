//! `woodpecker bench`: embedded write throughput and latency per entry size, reported as a ratio of the
//! storage's own ceiling measured around each run (see `ceiling`), with peak RSS against `maxBytes`.
//!
//! ```text
//! for each entry size:   WAL run (async window, until --duration / --total-bytes)  ──▶ MB/s, p50/p99, peak RSS
//!                        ceiling: same duration / bytes, flush size, parallelism;    ──▶ MB/s
//!                                 half of it just before the WAL run, half just after
//!                        ratio = WAL MB/s / ceiling MB/s   (goal ≥ 0.9)
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde_json::json;
use woodpecker_client::{Client, Config};
use woodpecker_core::config::StorageType;

use crate::append::{self, AppendReport, Limits, MessageSource, Payload};
use crate::args::BenchArgs;
use crate::ceiling::{self, Budget, CeilingReport};
use crate::log_cmd::human_bytes;
use crate::{bench_latency, cpu, peak_rss, progress, setup};

/// Default length of each write run.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// The throughput ratio the WAL should reach against the raw backend.
const GOAL_RATIO: f64 = 0.9;
/// Service mode's goal: replication over the network and three disks costs more than a local write.
const SERVICE_GOAL_RATIO: f64 = 0.8;
/// Bytes the message envelope adds to a payload (protobuf tag and length), for window sizing only.
const ENVELOPE_ESTIMATE: u64 = 8;

/// Which backend the bench measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Local,
    Object,
    /// Service mode: the ceiling is one local write+fsync stream per replica, side by side, in
    /// `storage.rootPath` (meant to be on the servers' disk).
    Service {
        replicas: usize,
    },
}

impl Backend {
    /// The throughput ratio against the ceiling this backend aims at.
    pub(crate) fn goal_ratio(self) -> f64 {
        match self {
            Backend::Service { .. } => SERVICE_GOAL_RATIO,
            _ => GOAL_RATIO,
        }
    }

    /// How JSON output names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Object => "object",
            Backend::Service { .. } => "service",
        }
    }
}

/// The fixed parameters of one bench invocation.
pub(crate) struct Setup {
    pub(crate) backend: Backend,
    pub(crate) flush_size: u64,
    /// Blocks in flight at once: maxFlushThreads on object storage; 2 on local files (one appending and
    /// syncing, the next being encoded behind it).
    pub(crate) parallelism: usize,
    pub(crate) max_bytes: u64,
    pub(crate) budget: Budget,
}

/// One entry size's results.
struct SizeResult {
    entry_size: u64,
    window: usize,
    wal: AppendReport,
    ceiling: CeilingReport,
    peak_rss: Option<u64>,
    peak_rss_reset: bool,
    /// CPU time this process used during the WAL run (client, writer and uploads together).
    wal_cpu: Option<Duration>,
}

impl SizeResult {
    fn ratio(&self) -> f64 {
        let c = append::mb_per_sec(self.ceiling.bytes, self.ceiling.elapsed);
        if c > 0.0 { self.wal.mb_per_sec() / c } else { 0.0 }
    }

    /// This process's CPU milliseconds per MB written: (WAL run, ceiling).
    fn cpu_ms_per_mb(&self) -> (Option<f64>, Option<f64>) {
        (cpu::ms_per_mb(self.wal_cpu, self.wal.payload_bytes), cpu::ms_per_mb(self.ceiling.cpu, self.ceiling.bytes))
    }
}

/// Runs the bench.
pub async fn run(cfg: Config, args: BenchArgs) -> Result<()> {
    let backend = match cfg.woodpecker.storage.storage_type {
        StorageType::Local => Backend::Local,
        StorageType::Default | StorageType::Minio => Backend::Object,
        StorageType::Service => {
            Backend::Service { replicas: cfg.woodpecker.client.quorum.quorum_select_strategy.replicas.max(1) as usize }
        }
    };
    let sync = &cfg.woodpecker.logstore.segment_sync_policy;
    let setup = Setup {
        backend,
        flush_size: sync.max_flush_size.max(1),
        parallelism: match backend {
            Backend::Local => woodpecker_storage::segment::local::PIPELINE_DEPTH,
            Backend::Object => sync.max_flush_threads.max(1) as usize,
            // Blocks in flight per segment writer (client/src/service/writer.rs).
            Backend::Service { .. } => 4,
        },
        max_bytes: sync.max_bytes,
        budget: match args.total_bytes {
            Some(0) => bail!("--total-bytes must be at least 1"),
            Some(b) if args.latency || args.rate.is_some() => {
                bail!("--total-bytes {b}: latency runs are timed; use --duration")
            }
            Some(b) => Budget::Bytes(b),
            None if args.latency || args.rate.is_some() => {
                Budget::Time(args.duration.unwrap_or(bench_latency::DEFAULT_POINT_DURATION))
            }
            None => Budget::Time(args.duration.unwrap_or(DEFAULT_DURATION)),
        },
    };
    if args.entry_size.is_empty() {
        bail!("--entry-size needs at least one size");
    }
    let max_entry = cfg.woodpecker.client.max_entry_size;
    for &size in &args.entry_size {
        if size == 0 {
            bail!("--entry-size 0: entries need at least 1 byte");
        }
        if size + ENVELOPE_ESTIMATE > max_entry {
            bail!("--entry-size {size} exceeds woodpecker.client.maxEntrySize ({max_entry} bytes)");
        }
    }
    if args.window == Some(0) {
        bail!("--async must be at least 1");
    }

    let target = setup::describe_storage(&cfg);
    if !args.json {
        eprintln!("bench on {target}");
    }
    if args.latency || args.rate.is_some() {
        return bench_latency::run(cfg, &setup, &args, &target).await;
    }
    let client = setup::open_client(cfg.clone()).await?;
    let mut results = Vec::new();
    for &size in &args.entry_size {
        let r = run_size(&client, &cfg, &setup, &args, size).await;
        match r {
            Ok(r) => results.push(r),
            Err(e) => {
                client.close().await;
                return Err(e.context(format!("bench with {} entries", human_size(size))));
            }
        }
    }
    client.close().await;

    if args.json {
        println!("{}", to_json(&target, &setup, &results));
    } else {
        print_table(&target, &setup, &results);
    }
    Ok(())
}

async fn run_size(client: &Client, cfg: &Config, setup: &Setup, args: &BenchArgs, size: u64) -> Result<SizeResult> {
    let len = usize::try_from(size).context("entry size does not fit in memory")?;
    let window = args.window.unwrap_or_else(|| auto_window(setup, size));
    // The ceiling gets the WAL's budget in two halves, one before and one after the WAL run, so that slow
    // drift of a shared disk or network biases neither side of the ratio.
    let (before, after) = match setup.budget {
        Budget::Time(d) => (Budget::Time(d / 2), Budget::Time(d - d / 2)),
        Budget::Bytes(b) => (Budget::Bytes(b / 2), Budget::Bytes(b - b / 2)),
    };
    let mut ceiling = measure_ceiling(cfg, setup, before).await.context("ceiling measurement failed")?;
    let limits = match setup.budget {
        Budget::Time(d) => Limits { deadline: Some(Instant::now() + d), ..Limits::default() },
        Budget::Bytes(b) => Limits { max_payload_bytes: Some(b), ..Limits::default() },
    };
    let WalRun { report: wal, peak_rss, peak_rss_reset, cpu: wal_cpu } =
        wal_run(client, args, len, Some(window), limits, &format!("WAL {}", human_size(size))).await?;

    let second = measure_ceiling(cfg, setup, after).await.context("ceiling measurement failed")?;
    ceiling.absorb(second)?;
    Ok(SizeResult { entry_size: size, window, wal, ceiling, peak_rss, peak_rss_reset, wal_cpu })
}

/// What one write run of the WAL did.
pub(crate) struct WalRun {
    pub(crate) report: AppendReport,
    pub(crate) peak_rss: Option<u64>,
    pub(crate) peak_rss_reset: bool,
    /// CPU time this process used during the run.
    pub(crate) cpu: Option<Duration>,
}

/// Writes entries of `len` bytes to a fresh log (deleted afterwards unless --keep-logs) within `limits`,
/// `window` in flight at most.
pub(crate) async fn wal_run(
    client: &Client,
    args: &BenchArgs,
    len: usize,
    window: Option<usize>,
    limits: Limits,
    label: &str,
) -> Result<WalRun> {
    let name = format!(
        "bench-{}-{}-{}",
        human_size(len as u64).replace(' ', ""),
        std::process::id(),
        crate::log_cmd::now_ms()
    );
    client.create_log(&name).await.with_context(|| format!("cannot create log {name:?}"))?;
    let outcome = async {
        let log = client.open_log(&name).await?;
        let writer = log.open_writer().await?;
        let mut source = MessageSource::generated(u64::MAX, Payload::Fixed(static_payload(len)), BTreeMap::new());
        let pb = if args.json { progress::hidden() } else { progress::spinner(label) };
        let peak_rss_reset = peak_rss::reset();
        let cpu_before = cpu::process_time();
        let report = append::run(&writer, &mut source, window, limits, &pb).await;
        let cpu = cpu::used_since(cpu_before);
        pb.finish_and_clear();
        let closed = writer.close().await;
        let peak_rss = peak_rss::read();
        let report = report?;
        closed?;
        if report.interrupted {
            bail!("interrupted");
        }
        anyhow::Ok(WalRun { report, peak_rss, peak_rss_reset, cpu })
    }
    .await;
    if !args.keep_logs {
        // A failed clean-up does not throw the measurement away (service mode: a node that is down cannot
        // be told the log is deleted); it is reported, and the log can be deleted later.
        if let Err(e) = client.delete_log(&name).await {
            eprintln!("warning: cannot delete bench log {name:?}: {e}");
        }
    }
    outcome
}

/// A payload of `len` bytes whose copies share no reference count: every entry of a run is a copy of it,
/// and a shared count would be an atomic increment here and a decrement on the thread that encodes the
/// entry, for every entry (a cache line passed between cores; the ceiling's producer pays nothing alike).
/// Leaked on purpose: one buffer per entry size per bench.
fn static_payload(len: usize) -> Bytes {
    Bytes::from_static(Box::leak(vec![0x5au8; len].into_boxed_slice()))
}

/// The raw backend with the WAL's flush size and parallelism (see `ceiling`).
pub(crate) async fn measure_ceiling(cfg: &Config, setup: &Setup, budget: Budget) -> Result<CeilingReport> {
    let report = match setup.backend {
        Backend::Local => {
            let rolling = cfg.woodpecker.client.segment_rolling_policy.max_size;
            ceiling::local(setup::local_segments_root(cfg), setup.flush_size, rolling, budget).await
        }
        Backend::Object => ceiling::object(cfg, setup.flush_size, setup.parallelism, budget).await,
        Backend::Service { replicas } => {
            let rolling = cfg.woodpecker.client.segment_rolling_policy.max_size;
            let dir = setup::local_segments_root(cfg).join("bench-ceiling");
            ceiling::local_replicated(dir, setup.flush_size, rolling, budget, replicas).await
        }
    };
    release_freed_memory();
    report
}

/// Hands memory freed by the ceiling's buffer pool back to the kernel, so that the next WAL run's peak RSS
/// is the WAL's (glibc keeps freed heap memory otherwise).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Enough writes in flight to keep every flush slot busy plus one block being filled, within maxBytes.
fn auto_window(setup: &Setup, entry_size: u64) -> usize {
    let bytes = setup.flush_size.saturating_mul(setup.parallelism as u64 + 2).min(setup.max_bytes.max(1));
    usize::try_from((bytes / (entry_size + ENVELOPE_ESTIMATE)).max(1)).unwrap_or(usize::MAX)
}

/// An entry size in binary units (1 KiB, 64 KiB).
pub fn human_size(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

pub(crate) fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn ceiling_method(setup: &Setup) -> String {
    match setup.backend {
        Backend::Local => {
            format!("sequential {} writes + fdatasync in the segment directory", human_bytes(setup.flush_size))
        }
        Backend::Object => {
            format!("plain PUTs of {} objects, {} in parallel", human_bytes(setup.flush_size), setup.parallelism)
        }
        Backend::Service { replicas } => format!(
            "{replicas} sequential {} write + fdatasync streams side by side under storage.rootPath (one per \
             replica; the rate of one)",
            human_bytes(setup.flush_size)
        ),
    }
}

fn print_table(target: &str, setup: &Setup, results: &[SizeResult]) {
    println!("woodpecker bench: embedded WAL vs the raw storage ceiling");
    println!("  storage:  {target}");
    println!(
        "  flush:    {} per block (segmentSyncPolicy.maxFlushSize), {} block(s) in flight{}",
        human_bytes(setup.flush_size),
        setup.parallelism,
        if setup.backend == Backend::Local {
            " (local segments: one appending, the next being encoded)"
        } else {
            " (maxFlushThreads)"
        }
    );
    println!("  ceiling:  {}", ceiling_method(setup));
    match setup.budget {
        Budget::Time(d) => {
            println!("  run:      {:.1}s per entry size; ceiling: half before, half after the WAL run", d.as_secs_f64())
        }
        Budget::Bytes(b) => {
            println!("  run:      {} per entry size; ceiling: half before, half after the WAL run", human_bytes(b))
        }
    }
    println!();
    println!(
        "  {:>7}  {:>10}  {:>9}  {:>9}  {:>6}  {:>16}  {:>16}  {:>13}  {:>10}  {:>7}",
        "ENTRY",
        "ENTRIES",
        "WAL MB/s",
        "CEIL MB/s",
        "RATIO",
        "WAL p50/p99 ms",
        "CEIL p50/p99 ms",
        "CPU ms/MB W/C",
        "PEAK RSS",
        "WINDOW"
    );
    for r in results {
        let c = &r.ceiling;
        let (cpu_wal, cpu_ceiling) = r.cpu_ms_per_mb();
        let cpu_ms = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
        println!(
            "  {:>7}  {:>10}  {:>9.1}  {:>9.1}  {:>6.2}  {:>16}  {:>16}  {:>13}  {:>10}  {:>7}",
            human_size(r.entry_size),
            r.wal.entries,
            r.wal.mb_per_sec(),
            append::mb_per_sec(c.bytes, c.elapsed),
            r.ratio(),
            format!(
                "{:.2} / {:.2}",
                ms(r.wal.latency_us.value_at_quantile(0.5)),
                ms(r.wal.latency_us.value_at_quantile(0.99))
            ),
            format!("{:.2} / {:.2}", ms(c.latency_us.value_at_quantile(0.5)), ms(c.latency_us.value_at_quantile(0.99))),
            format!("{} / {}", cpu_ms(cpu_wal), cpu_ms(cpu_ceiling)),
            r.peak_rss.map(human_bytes).unwrap_or_else(|| "n/a".to_owned()),
            r.window,
        );
    }
    println!();
    for r in results {
        let goal = setup.backend.goal_ratio();
        let verdict = if r.ratio() >= goal { "met" } else { "NOT met" };
        println!("  ratio {:.2} with {} entries: goal >= {goal:.2} {verdict}", r.ratio(), human_size(r.entry_size));
    }
    let reset_note = if results.iter().all(|r| r.peak_rss_reset) {
        "peak RSS (VmHWM) is measured per write run"
    } else {
        "peak RSS (VmHWM) covers the whole process (the kernel refused a reset)"
    };
    println!("  {reset_note}; configured write buffer maxBytes = {}", human_bytes(setup.max_bytes));
    println!("  latency: submit to durable acknowledgement per entry; ceiling latency: per write+fsync / PUT");
    println!("  CPU ms/MB: this process's CPU time (all threads) per MB written, WAL run / ceiling");
}

fn to_json(target: &str, setup: &Setup, results: &[SizeResult]) -> serde_json::Value {
    let runs: Vec<_> = results
        .iter()
        .map(|r| {
            let c = &r.ceiling;
            let (cpu_wal, cpu_ceiling) = r.cpu_ms_per_mb();
            json!({
                "entry_size": r.entry_size,
                "window": r.window,
                "entries": r.wal.entries,
                "payload_bytes": r.wal.payload_bytes,
                "elapsed_s": r.wal.elapsed.as_secs_f64(),
                "wal_mb_per_s": r.wal.mb_per_sec(),
                "entries_per_s": r.wal.entries_per_sec(),
                "latency_ms": {
                    "p50": ms(r.wal.latency_us.value_at_quantile(0.5)),
                    "p99": ms(r.wal.latency_us.value_at_quantile(0.99)),
                    "max": ms(r.wal.latency_us.max()),
                },
                "ceiling": {
                    "bytes": c.bytes,
                    "ops": c.ops,
                    "elapsed_s": c.elapsed.as_secs_f64(),
                    "mb_per_s": append::mb_per_sec(c.bytes, c.elapsed),
                    "latency_ms": {
                        "p50": ms(c.latency_us.value_at_quantile(0.5)),
                        "p99": ms(c.latency_us.value_at_quantile(0.99)),
                    },
                },
                "ratio": r.ratio(),
                "goal_met": r.ratio() >= setup.backend.goal_ratio(),
                "peak_rss_bytes": r.peak_rss,
                "peak_rss_per_run": r.peak_rss_reset,
                "cpu_ms_per_mb": { "wal": cpu_wal, "ceiling": cpu_ceiling },
            })
        })
        .collect();
    json!({
        "storage": setup.backend.name(),
        "target": target,
        "flush_size": setup.flush_size,
        "flush_parallelism": setup.parallelism,
        "max_bytes": setup.max_bytes,
        "ceiling_method": ceiling_method(setup),
        "goal_ratio": setup.backend.goal_ratio(),
        "results": runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(backend: Backend, parallelism: usize, max_bytes: u64) -> Setup {
        Setup { backend, flush_size: 2_000_000, parallelism, max_bytes, budget: Budget::Time(Duration::from_secs(1)) }
    }

    #[test]
    fn auto_window_covers_the_flush_slots_within_the_buffer() {
        assert_eq!(auto_window(&setup(Backend::Local, 2, 256_000_000), 1024), 8_000_000 / 1032);
        assert_eq!(auto_window(&setup(Backend::Object, 32, 256_000_000), 65536), 68_000_000 / 65544);
        assert_eq!(auto_window(&setup(Backend::Object, 32, 1_000_000), 1024), 1_000_000 / 1032);
        assert_eq!(auto_window(&setup(Backend::Local, 2, 256_000_000), 64 << 20), 1);
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(human_size(1024), "1 KiB");
        assert_eq!(human_size(65536), "64 KiB");
        assert_eq!(human_size(1000), "1000 B");
        assert_eq!(human_size(2 << 20), "2 MiB");
    }
}
