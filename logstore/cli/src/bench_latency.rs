//! `woodpecker bench --latency` and `--rate`: append latency below saturation, where most applications
//! live, beside the backend's own single-operation latency measured in the same run.
//!
//! ```text
//! for each entry size:
//!   single op     one PUT of an entry-sized object / one entry-sized write + fdatasync, back to back
//!   ceiling       the saturation ceiling of `bench` (flush size x parallelism)        (--latency only)
//!   sync          one write at a time (--async 1): submit, wait for the acknowledgement, next
//!   open loop     entries scheduled at 1%, 10%, 50%, 90% of the ceiling's MB/s (or at --rate); each
//!                 entry's latency counts from its scheduled time, so a loop held up by a full buffer
//!                 or a slow flush cannot hide the queueing (no coordinated omission)
//! goals:          sync p50 <= 1.5x the single op's p50; p99 at 10% and 50% <= 3x the single op's p99
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde_json::json;
use woodpecker_client::{Client, Config};

use crate::append::{self, Limits};
use crate::args::BenchArgs;
use crate::bench::{self, Backend, Setup, human_size, ms};
use crate::ceiling::{self, Budget, CeilingReport};
use crate::log_cmd::human_bytes;
use crate::setup;

/// Length of each run of the latency profile unless --duration says otherwise.
pub const DEFAULT_POINT_DURATION: Duration = Duration::from_secs(5);
/// Open-loop loads of the profile, in percent of the measured ceiling.
const PROFILE_PERCENTS: [f64; 4] = [1.0, 10.0, 50.0, 90.0];
/// Goal: synchronous p50 at most this many times the single operation's p50.
const SYNC_P50_GOAL: f64 = 1.5;
/// Goal: p99 at the loads below at most this many times the single operation's p99.
const LOADED_P99_GOAL: f64 = 3.0;
const LOADED_P99_PERCENTS: [f64; 2] = [10.0, 50.0];

/// A target rate for an open-loop run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Entries per second.
    Entries(f64),
    /// Payload bytes per second.
    Bytes(f64),
}

impl Rate {
    /// Entries per second for entries of `entry_size` bytes.
    fn entries_per_sec(self, entry_size: u64) -> f64 {
        match self {
            Rate::Entries(n) => n,
            Rate::Bytes(b) => b / entry_size.max(1) as f64,
        }
    }
}

/// `2000`, `2000/s` (entries per second; decimals allowed) or `10MiB/s`, `512K/s` (bytes per second,
/// binary units as in sizes elsewhere; the `/s` is optional).
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let trimmed = text.trim();
    let body = trimmed.strip_suffix("/s").unwrap_or(trimmed).trim();
    let rate = match body.parse::<f64>() {
        Ok(n) => Rate::Entries(n),
        Err(_) => Rate::Bytes(woodpecker_core::config::units::parse_size(body).map_err(|e| {
            format!("invalid rate `{text}`: expected entries/s (e.g. 2000) or bytes/s (e.g. 10MiB/s): {e}")
        })? as f64),
    };
    match rate {
        Rate::Entries(n) | Rate::Bytes(n) if n.is_finite() && n > 0.0 => Ok(rate),
        _ => Err(format!("invalid rate `{text}`: must be more than zero")),
    }
}

/// One load the profile runs.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// One write at a time.
    Sync,
    /// Open loop at this percentage of the ceiling.
    Percent(f64),
    /// Open loop at a rate given on the command line.
    Given(Rate),
}

impl Load {
    fn label(self) -> String {
        match self {
            Load::Sync => "sync".to_owned(),
            Load::Percent(p) => format!("{p}%"),
            Load::Given(Rate::Entries(n)) => format!("{n}/s"),
            Load::Given(Rate::Bytes(b)) => format!("{}/s", human_bytes(b as u64)),
        }
    }
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Quantiles {
    p50: f64,
    p99: f64,
    p999: f64,
}

impl Quantiles {
    fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
        }
    }
}

/// One run of the profile.
struct Point {
    load: Load,
    /// Scheduled entries per second (`None` for sync).
    target_per_sec: Option<f64>,
    entries: u64,
    entries_per_sec: f64,
    mb_per_sec: f64,
    latency: Quantiles,
}

/// One entry size's profile.
struct Profile {
    entry_size: u64,
    single_op: Quantiles,
    single_ops: u64,
    /// Saturation ceiling in MB/s (`--latency` only).
    ceiling_mb_per_sec: Option<f64>,
    points: Vec<Point>,
}

impl Profile {
    fn point(&self, pred: impl Fn(Load) -> bool) -> Option<&Point> {
        self.points.iter().find(|p| pred(p.load))
    }

    /// (what, measured ratio, goal) for every goal this profile can judge.
    fn goals(&self) -> Vec<(String, f64, f64)> {
        let mut out = Vec::new();
        if let Some(sync) = self.point(|l| matches!(l, Load::Sync)) {
            out.push((
                "sync p50 / single-op p50".to_owned(),
                ratio(sync.latency.p50, self.single_op.p50),
                SYNC_P50_GOAL,
            ));
        }
        for pct in LOADED_P99_PERCENTS {
            if let Some(p) = self.point(|l| matches!(l, Load::Percent(x) if x == pct)) {
                out.push((
                    format!("p99 at {pct}% / single-op p99"),
                    ratio(p.latency.p99, self.single_op.p99),
                    LOADED_P99_GOAL,
                ));
            }
        }
        out
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::INFINITY }
}

/// Runs the latency profile (`--latency`) or one open-loop run (`--rate`) for every entry size.
pub(crate) async fn run(cfg: Config, setup: &Setup, args: &BenchArgs, target: &str) -> Result<()> {
    let Budget::Time(point) = setup.budget else { bail!("latency runs are timed; use --duration") };
    let client = setup::open_client(cfg.clone()).await?;
    let mut profiles = Vec::new();
    for &size in &args.entry_size {
        match profile(&client, &cfg, setup, args, size, point).await {
            Ok(p) => profiles.push(p),
            Err(e) => {
                client.close().await;
                return Err(e.context(format!("latency bench with {} entries", human_size(size))));
            }
        }
    }
    client.close().await;
    if args.json {
        println!("{}", to_json(target, setup, point, &profiles));
    } else {
        print_table(target, setup, point, &profiles);
    }
    Ok(())
}

async fn profile(
    client: &Client,
    cfg: &Config,
    setup: &Setup,
    args: &BenchArgs,
    size: u64,
    point: Duration,
) -> Result<Profile> {
    let len = usize::try_from(size).context("entry size does not fit in memory")?;
    let single = single_operation(cfg, setup, size, point / 2).await.context("single-operation measurement failed")?;
    let (ceiling_mb_per_sec, loads) = match args.rate {
        Some(rate) => (None, vec![Load::Given(rate)]),
        None => {
            let c =
                bench::measure_ceiling(cfg, setup, Budget::Time(point)).await.context("ceiling measurement failed")?;
            let mut loads = vec![Load::Sync];
            loads.extend(PROFILE_PERCENTS.iter().map(|&p| Load::Percent(p)));
            (Some(append::mb_per_sec(c.bytes, c.elapsed)), loads)
        }
    };
    let mut points = Vec::new();
    for load in loads {
        let (window, per_sec) = match load {
            Load::Sync => (Some(1), None),
            Load::Percent(p) => {
                let bytes_per_sec = ceiling_mb_per_sec.unwrap_or_default() * 1e6 * p / 100.0;
                (None, Some(Rate::Bytes(bytes_per_sec).entries_per_sec(size)))
            }
            Load::Given(rate) => (None, Some(rate.entries_per_sec(size))),
        };
        if per_sec.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            bail!("the {} load comes to no entries per second (ceiling {ceiling_mb_per_sec:?} MB/s)", load.label());
        }
        let limits = Limits { deadline: Some(Instant::now() + point), entries_per_sec: per_sec, ..Limits::default() };
        let label = format!("{} {}", human_size(size), load.label());
        let run = bench::wal_run(client, args, len, window, limits, &label).await?;
        let r = &run.report;
        points.push(Point {
            load,
            target_per_sec: per_sec,
            entries: r.entries,
            entries_per_sec: r.entries_per_sec(),
            mb_per_sec: r.mb_per_sec(),
            latency: Quantiles::of(&r.latency_us),
        });
    }
    Ok(Profile {
        entry_size: size,
        single_op: Quantiles::of(&single.latency_us),
        single_ops: single.ops,
        ceiling_mb_per_sec,
        points,
    })
}

/// The backend's own latency for one entry: entry-sized PUTs one after the other, or entry-sized
/// writes + fdatasync one after the other in the segment directory.
async fn single_operation(cfg: &Config, setup: &Setup, size: u64, budget: Duration) -> Result<CeilingReport> {
    match setup.backend {
        Backend::Local => {
            let rolling = cfg.woodpecker.client.segment_rolling_policy.max_size;
            ceiling::local(setup::local_segments_root(cfg), size, rolling, Budget::Time(budget)).await
        }
        Backend::Object => ceiling::object(cfg, size, 1, Budget::Time(budget)).await,
        Backend::Service { replicas } => {
            let rolling = cfg.woodpecker.client.segment_rolling_policy.max_size;
            let dir = setup::local_segments_root(cfg).join("bench-ceiling");
            ceiling::local_replicated(dir, size, rolling, Budget::Time(budget), replicas).await
        }
    }
}

fn single_op_method(backend: Backend) -> &'static str {
    match backend {
        Backend::Local => "one entry-sized write + fdatasync at a time",
        Backend::Object => "one PUT of an entry-sized object at a time",
        Backend::Service { .. } => "one entry-sized write + fdatasync at a time per replica, replicas side by side",
    }
}

fn print_table(target: &str, setup: &Setup, point: Duration, profiles: &[Profile]) {
    println!("woodpecker bench: append latency below saturation, beside the backend's single operation");
    println!("  storage:    {target}");
    println!("  single op:  {}", single_op_method(setup.backend));
    println!(
        "  runs:       {:.1}s each; open-loop latency counts from each entry's scheduled send time",
        point.as_secs_f64()
    );
    println!();
    println!(
        "  {:>7}  {:>10}  {:>11}  {:>11}  {:>8}  {:>9}  {:>9}  {:>9}  {:>7}  {:>7}",
        "ENTRY", "LOAD", "TARGET/s", "DONE/s", "MB/s", "p50 ms", "p99 ms", "p999 ms", "p50/OP", "p99/OP"
    );
    for pr in profiles {
        let q = pr.single_op;
        println!(
            "  {:>7}  {:>10}  {:>11}  {:>11}  {:>8}  {:>9.2}  {:>9.2}  {:>9.2}  {:>7}  {:>7}",
            human_size(pr.entry_size),
            "single op",
            "-",
            "-",
            "-",
            q.p50,
            q.p99,
            q.p999,
            "1.00",
            "1.00"
        );
        if let Some(c) = pr.ceiling_mb_per_sec {
            println!("  {:>7}  {:>10}  {:>11}  {:>11}  {:>8.1}", human_size(pr.entry_size), "ceiling", "-", "-", c);
        }
        for p in &pr.points {
            println!(
                "  {:>7}  {:>10}  {:>11}  {:>11.0}  {:>8.2}  {:>9.2}  {:>9.2}  {:>9.2}  {:>7.2}  {:>7.2}",
                human_size(pr.entry_size),
                p.load.label(),
                p.target_per_sec.map_or_else(|| "-".to_owned(), |t| format!("{t:.0}")),
                p.entries_per_sec,
                p.mb_per_sec,
                p.latency.p50,
                p.latency.p99,
                p.latency.p999,
                ratio(p.latency.p50, q.p50),
                ratio(p.latency.p99, q.p99),
            );
        }
    }
    println!();
    for pr in profiles {
        for (what, measured, goal) in pr.goals() {
            let verdict = if measured <= goal { "met" } else { "NOT met" };
            println!("  {} {what}: {measured:.2} (goal <= {goal:.1}) {verdict}", human_size(pr.entry_size));
        }
    }
    println!("  latency: submit (open loop: scheduled send) to durable acknowledgement per entry");
}

fn quantiles_json(q: Quantiles) -> serde_json::Value {
    json!({ "p50": q.p50, "p99": q.p99, "p999": q.p999 })
}

fn to_json(target: &str, setup: &Setup, point: Duration, profiles: &[Profile]) -> serde_json::Value {
    let results: Vec<_> = profiles
        .iter()
        .map(|pr| {
            let points: Vec<_> = pr
                .points
                .iter()
                .map(|p| {
                    json!({
                        "load": p.load.label(),
                        "target_entries_per_s": p.target_per_sec,
                        "entries": p.entries,
                        "entries_per_s": p.entries_per_sec,
                        "mb_per_s": p.mb_per_sec,
                        "latency_ms": quantiles_json(p.latency),
                        "p50_over_single_op": ratio(p.latency.p50, pr.single_op.p50),
                        "p99_over_single_op": ratio(p.latency.p99, pr.single_op.p99),
                    })
                })
                .collect();
            let goals: Vec<_> = pr
                .goals()
                .into_iter()
                .map(|(what, measured, goal)| json!({ "what": what, "measured": measured, "goal": goal, "met": measured <= goal }))
                .collect();
            json!({
                "entry_size": pr.entry_size,
                "single_op": { "ops": pr.single_ops, "latency_ms": quantiles_json(pr.single_op) },
                "ceiling_mb_per_s": pr.ceiling_mb_per_sec,
                "points": points,
                "goals": goals,
            })
        })
        .collect();
    json!({
        "storage": setup.backend.name(),
        "target": target,
        "single_op_method": single_op_method(setup.backend),
        "run_s": point.as_secs_f64(),
        "results": results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_entries_or_bytes_per_second() {
        assert_eq!(parse_rate("2000"), Ok(Rate::Entries(2000.0)));
        assert_eq!(parse_rate("2000/s"), Ok(Rate::Entries(2000.0)));
        assert_eq!(parse_rate("0.5/s"), Ok(Rate::Entries(0.5)));
        assert_eq!(parse_rate("10MiB/s"), Ok(Rate::Bytes(10.0 * 1048576.0)));
        assert_eq!(parse_rate("512K"), Ok(Rate::Bytes(512.0 * 1024.0)));
        for bad in ["0", "-3/s", "fast", "", "NaN", "inf/s"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} is refused");
        }
        assert!(parse_rate("fast").unwrap_err().contains("invalid rate `fast`"));
    }

    #[test]
    fn a_byte_rate_becomes_entries_per_second_of_the_entry_size() {
        assert_eq!(Rate::Bytes(1024.0 * 1000.0).entries_per_sec(1024), 1000.0);
        assert_eq!(Rate::Entries(7.0).entries_per_sec(65536), 7.0);
    }

    fn point(load: Load, p50: f64, p99: f64) -> Point {
        Point {
            load,
            target_per_sec: None,
            entries: 1,
            entries_per_sec: 1.0,
            mb_per_sec: 1.0,
            latency: Quantiles { p50, p99, p999: p99 },
        }
    }

    #[test]
    fn goals_compare_the_sync_p50_and_the_loaded_p99_with_the_single_operation() {
        let pr = Profile {
            entry_size: 1024,
            single_op: Quantiles { p50: 2.0, p99: 4.0, p999: 5.0 },
            single_ops: 100,
            ceiling_mb_per_sec: Some(100.0),
            points: vec![
                point(Load::Sync, 2.8, 5.0),
                point(Load::Percent(1.0), 9.0, 90.0),
                point(Load::Percent(10.0), 3.0, 12.0),
                point(Load::Percent(50.0), 3.0, 12.4),
                point(Load::Percent(90.0), 50.0, 500.0),
            ],
        };
        let goals = pr.goals();
        let met: Vec<_> = goals.iter().map(|(w, m, g)| (w.as_str(), (m * 100.0).round() / 100.0, m <= g)).collect();
        assert_eq!(
            met,
            [
                ("sync p50 / single-op p50", 1.4, true),
                ("p99 at 10% / single-op p99", 3.0, true),
                ("p99 at 50% / single-op p99", 3.1, false),
            ]
        );
    }
}
