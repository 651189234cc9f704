//! `woodpecker log …`: create, list, info, write, read, tail, truncate, delete.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde_json::json;
use woodpecker_client::{Client, LogHandle, LogMessageId, LogReader, SegmentInfo, WoodpeckerError};
use woodpecker_meta::MetaError;

use crate::append::{self, Limits, MessageSource, Payload};
use crate::args::{LogCommand, OutputFormat, ReadArgs, TailArgs, WriteArgs};
use crate::entry_format;
use crate::position;
use crate::progress;

/// Runs one `log` subcommand.
pub async fn run(client: &Client, cmd: LogCommand) -> Result<()> {
    match cmd {
        LogCommand::Create { name, if_absent } => create(client, &name, if_absent).await,
        LogCommand::List { prefix } => list(client, prefix.as_deref().unwrap_or("")).await,
        LogCommand::Info { name, format } => info(client, &name, format).await,
        LogCommand::Write(args) => write(client, args).await,
        LogCommand::Read(args) => read(client, args).await,
        LogCommand::Tail(args) => tail(client, args).await,
        LogCommand::Truncate { name, position, cleanup } => truncate(client, &name, &position, cleanup).await,
        LogCommand::Delete { name, if_exists } => delete(client, &name, if_exists).await,
    }
}

/// Checks arguments that need no client, so bad input fails before any storage is touched.
pub fn check_args(cmd: &LogCommand) -> Result<()> {
    let name = match cmd {
        LogCommand::List { .. } => return Ok(()),
        LogCommand::Create { name, .. }
        | LogCommand::Info { name, .. }
        | LogCommand::Delete { name, .. }
        | LogCommand::Write(WriteArgs { name, .. })
        | LogCommand::Read(ReadArgs { name, .. })
        | LogCommand::Tail(TailArgs { name, .. }) => name,
        LogCommand::Truncate { name, position, .. } => {
            position::parse_exact(position)?;
            name
        }
    };
    woodpecker_core::names::validate_log_name(name)?;
    match cmd {
        LogCommand::Read(args) => {
            position::parse_start(&args.from)?;
            if args.timeout_secs == 0 {
                bail!("--timeout-secs must be at least 1");
            }
        }
        LogCommand::Tail(args) if args.timeout_secs == Some(0) => bail!("--timeout-secs must be at least 1"),
        LogCommand::Write(args) => {
            let no_props = args.properties.is_empty();
            if no_props && args.payload_size == Some(0) {
                bail!("--payload-size 0 makes empty entries: add a --property or use a size of at least 1");
            }
            if no_props && args.message.as_deref() == Some("") {
                bail!("--message is empty: an entry needs a payload or a --property");
            }
        }
        _ => {}
    }
    Ok(())
}

/// Opens a log, saying how to create it when it does not exist.
pub async fn open_existing(client: &Client, name: &str) -> Result<LogHandle> {
    match client.open_log(name).await {
        Ok(log) => Ok(log),
        Err(WoodpeckerError::Meta(MetaError::LogNotFound { .. })) => {
            bail!("log {name:?} does not exist (create it with `woodpecker log create {name}`)")
        }
        Err(e) => Err(e).with_context(|| format!("cannot open log {name:?}")),
    }
}

async fn create(client: &Client, name: &str, if_absent: bool) -> Result<()> {
    match client.create_log(name).await {
        Ok(()) => {
            let log = open_existing(client, name).await?;
            println!("created log {name:?} (id {})", log.id());
        }
        Err(WoodpeckerError::Meta(MetaError::LogAlreadyExists { .. })) if if_absent => {
            let log = open_existing(client, name).await?;
            println!("log {name:?} already exists (id {})", log.id());
        }
        Err(WoodpeckerError::Meta(MetaError::LogAlreadyExists { .. })) => {
            bail!("log {name:?} already exists (pass --if-absent to accept that)")
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create log {name:?}")),
    }
    Ok(())
}

async fn list(client: &Client, prefix: &str) -> Result<()> {
    let names = client.list_logs(prefix).await.context("cannot list logs")?;
    if names.is_empty() {
        if prefix.is_empty() {
            eprintln!("no logs");
        } else {
            eprintln!("no logs starting with {prefix:?}");
        }
    }
    let mut out = std::io::stdout().lock();
    for n in names {
        if let Err(e) = writeln!(out, "{n}") {
            return stdout_error(e);
        }
    }
    Ok(())
}

/// The last entry that exists now, or `None` for a log without entries.
pub async fn last_entry(log: &LogHandle) -> Result<Option<LogMessageId>> {
    let mut probe =
        log.open_reader(LogMessageId::LATEST, "cli-end-probe").await.context("cannot find the log's end")?;
    let end = probe.position();
    probe.close().await.context("cannot close the end probe")?;
    let segments = log.segments().await.context("cannot list segments")?;
    let ends: Vec<(i64, i64)> = segments.iter().map(|s| (s.id, s.last_entry_id)).collect();
    Ok(last_before(end, &ends))
}

/// The last entry before `end` (the next position a writer would fill), given each segment's recorded
/// last entry (`-1` when empty or still active).
fn last_before(end: LogMessageId, segment_ends: &[(i64, i64)]) -> Option<LogMessageId> {
    if end.entry_id > 0 {
        return Some(LogMessageId::new(end.segment_id, end.entry_id - 1));
    }
    segment_ends
        .iter()
        .rev()
        .filter(|(id, last)| *id < end.segment_id && *last >= 0)
        .map(|(id, last)| LogMessageId::new(*id, *last))
        .next()
}

async fn info(client: &Client, name: &str, format: OutputFormat) -> Result<()> {
    let log = open_existing(client, name).await?;
    let truncated = log.truncated_position().await.context("cannot read the truncation point")?;
    let segments = log.segments().await.context("cannot list segments")?;
    let active_end = match segments.last() {
        Some(s) if is_active(s) => last_entry(&log).await?.filter(|id| id.segment_id == s.id),
        _ => None,
    };
    let now_ms = now_ms();
    match format {
        OutputFormat::Json => {
            let segs: Vec<_> = segments
                .iter()
                .map(|s| {
                    json!({
                        "segment": s.id,
                        "state": s.state.as_str_name(),
                        "last_entry": segment_last(s, active_end),
                        "size": s.size,
                        "create_time_ms": s.create_time_ms,
                    })
                })
                .collect();
            let v = json!({
                "log": name,
                "log_id": log.id(),
                "truncated_up_to": truncated.map(|t| t.to_string()),
                "segments": segs,
            });
            println!("{v}");
        }
        OutputFormat::Text => {
            println!("log {name:?}: id {}", log.id());
            match truncated {
                Some(t) => println!("truncated up to and including {t} (readers from earliest start after it)"),
                None => println!("not truncated"),
            }
            print_segments(&segments, active_end, now_ms);
        }
    }
    Ok(())
}

/// Whether the segment is still being written (the proto enum is not re-exported by the client).
fn is_active(s: &SegmentInfo) -> bool {
    s.state.as_str_name() == "Active"
}

fn segment_last(s: &SegmentInfo, active_end: Option<LogMessageId>) -> i64 {
    match active_end {
        Some(end) if end.segment_id == s.id && s.last_entry_id < 0 => end.entry_id,
        _ => s.last_entry_id,
    }
}

/// Prints a segment table; `active_end` is the durable end of an active last segment, when known.
pub fn print_segments(segments: &[SegmentInfo], active_end: Option<LogMessageId>, now_ms: i64) {
    if segments.is_empty() {
        println!("no segments yet (nothing was written)");
        return;
    }
    println!("{} segment(s):", segments.len());
    println!("  {:>7}  {:<10}  {:>10}  {:>12}  {:>10}", "SEGMENT", "STATE", "LAST ENTRY", "SIZE", "CREATED");
    for s in segments {
        let state = s.state.as_str_name();
        let last = segment_last(s, active_end);
        let last = if last < 0 { "-".to_owned() } else { last.to_string() };
        let size = if is_active(s) { "(writing)".to_owned() } else { human_bytes(s.size.max(0) as u64) };
        let age = Duration::from_millis(now_ms.saturating_sub(s.create_time_ms).max(0) as u64);
        println!("  {:>7}  {:<10}  {:>10}  {:>12}  {:>10}", s.id, state, last, size, format!("{} ago", human_age(age)));
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Bytes for people: 1.5 MB style (powers of 1000).
pub fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n < 1e3 {
        format!("{n} B")
    } else if n < 1e6 {
        format!("{:.1} kB", n / 1e3)
    } else if n < 1e9 {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{:.2} GB", n / 1e9)
    }
}

fn human_age(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else if s < 172_800 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

async fn write(client: &Client, args: WriteArgs) -> Result<()> {
    let name = args.name.as_str();
    if args.create {
        client.create_log_if_absent(name).await.with_context(|| format!("cannot create log {name:?}"))?;
    }
    let log = match open_existing(client, name).await {
        Ok(log) => log,
        Err(e) if !args.create => return Err(e.context("pass --create to create the log first")),
        Err(e) => return Err(e),
    };
    let properties: BTreeMap<String, String> = args.properties.into_iter().collect();
    let mut source = if args.stdin {
        MessageSource::stdin(properties)
    } else if let Some(text) = args.message {
        MessageSource::generated(args.count, Payload::Fixed(Bytes::from(text)), properties)
    } else {
        let size = match args.payload_size {
            Some(s) => Some(usize::try_from(s).context("--payload-size does not fit in memory")?),
            None => None,
        };
        MessageSource::generated(args.count, Payload::Numbered(size), properties)
    };
    let pb = match source.len() {
        Some(n) if n > 1 => progress::bar(n, "write"),
        Some(_) => progress::hidden(),
        None => progress::spinner("write"),
    };
    let writer = log.open_writer().await.with_context(|| format!("cannot open a writer on log {name:?}"))?;
    let result = append::run(&writer, &mut source, None, Limits::default(), &pb).await;
    pb.finish_and_clear();
    let closed = writer.close().await;
    let report = result?;
    closed.with_context(|| format!("cannot close the writer of log {name:?}"))?;
    if report.interrupted {
        eprintln!("interrupted: stopped submitting; everything submitted before was flushed");
    }
    match (report.first, report.last) {
        (Some(first), Some(last)) => println!(
            "wrote {} entries ({}) to log {name:?}: first {first}, last {last}; {:.2}s, {:.0} entries/s, {:.2} MB/s",
            report.entries,
            human_bytes(report.payload_bytes),
            report.elapsed.as_secs_f64(),
            report.entries_per_sec(),
            report.mb_per_sec()
        ),
        _ => println!("wrote no entries to log {name:?}"),
    }
    Ok(())
}

/// When a read or tail stops.
struct ReadPlan {
    from: LogMessageId,
    count: Option<u64>,
    /// Stop after this entry (the end when the read started); `None` follows the log.
    until: Option<LogMessageId>,
    idle_timeout: Option<Duration>,
    format: OutputFormat,
}

async fn read(client: &Client, args: ReadArgs) -> Result<()> {
    let from = position::parse_start(&args.from)?;
    let log = open_existing(client, &args.name).await?;
    let until = if args.follow {
        None
    } else {
        match last_entry(&log).await? {
            Some(last) => Some(last),
            None => {
                eprintln!("log {:?} has no entries", args.name);
                return Ok(());
            }
        }
    };
    if from.is_latest() && until.is_some() {
        eprintln!("nothing to read: --from latest starts after the last entry; add --follow or use `log tail`");
        return Ok(());
    }
    let plan = ReadPlan {
        from,
        count: args.count,
        until,
        idle_timeout: Some(Duration::from_secs(args.timeout_secs)),
        format: args.format,
    };
    read_entries(&log, plan).await
}

async fn tail(client: &Client, args: TailArgs) -> Result<()> {
    let log = open_existing(client, &args.name).await?;
    let plan = ReadPlan {
        from: LogMessageId::LATEST,
        count: args.count,
        until: None,
        idle_timeout: args.timeout_secs.map(Duration::from_secs),
        format: args.format,
    };
    read_entries(&log, plan).await
}

async fn read_entries(log: &LogHandle, plan: ReadPlan) -> Result<()> {
    let name = log.name().to_owned();
    let mut reader = log
        .open_reader(plan.from, "cli")
        .await
        .with_context(|| format!("cannot read log {name:?} from {}", position::describe(plan.from)))?;
    let result = print_entries(&mut reader, &plan).await;
    let closed = reader.close().await;
    let (read, outcome) = result?;
    closed.context("cannot close the reader")?;
    match outcome {
        Outcome::TimedOut(pos) if plan.until.is_some() => {
            bail!(
                "read {read} entries, then no entry arrived within the timeout at {pos} although the log \
                 reached {} when the read started",
                plan.until.map(|u| u.to_string()).unwrap_or_default()
            )
        }
        Outcome::TimedOut(pos) => eprintln!("read {read} entries; no new entry within the timeout at {pos}"),
        Outcome::Interrupted => eprintln!("read {read} entries; interrupted"),
        Outcome::Done => eprintln!("read {read} entries"),
        Outcome::OutputClosed => {}
    }
    Ok(())
}

enum Outcome {
    Done,
    TimedOut(LogMessageId),
    Interrupted,
    OutputClosed,
}

async fn print_entries(reader: &mut LogReader, plan: &ReadPlan) -> Result<(u64, Outcome)> {
    if let Some(until) = plan.until
        && reader.position() > until
    {
        return Ok((0, Outcome::Done));
    }
    let follow = plan.until.is_none();
    // Progress goes to stderr, so it only makes sense while stdout goes elsewhere.
    let pb = if std::io::stdout().is_terminal() {
        progress::hidden()
    } else {
        match plan.count {
            Some(n) => progress::bar(n, "read"),
            None => progress::spinner("read"),
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut read = 0u64;
    let mut last_flush = Instant::now();
    let outcome = loop {
        if plan.count.is_some_and(|n| read >= n) {
            break Outcome::Done;
        }
        let next = async {
            match plan.idle_timeout {
                Some(t) => tokio::time::timeout(t, reader.read_next()).await.ok(),
                None => Some(reader.read_next().await),
            }
        };
        let msg = tokio::select! {
            biased;
            _ = &mut ctrl_c => break Outcome::Interrupted,
            r = next => match r {
                None => break Outcome::TimedOut(reader.position()),
                Some(r) => r.with_context(|| format!("cannot read entry {}", reader.position()))?,
            },
        };
        let line = match plan.format {
            OutputFormat::Text => entry_format::text_line(&msg),
            OutputFormat::Json => entry_format::json_line(&msg),
        };
        if let Err(e) = writeln!(out, "{line}") {
            return stdout_error(e).map(|()| (read, Outcome::OutputClosed));
        }
        read += 1;
        pb.inc(1);
        // Following: show entries as they come; reading a backlog: flush in batches.
        if follow || last_flush.elapsed() >= Duration::from_millis(200) {
            if let Err(e) = out.flush() {
                return stdout_error(e).map(|()| (read, Outcome::OutputClosed));
            }
            last_flush = Instant::now();
        }
        if plan.until.is_some_and(|u| msg.id >= u) {
            break Outcome::Done;
        }
    };
    pb.finish_and_clear();
    if let Err(e) = out.flush() {
        return stdout_error(e).map(|()| (read, Outcome::OutputClosed));
    }
    Ok((read, outcome))
}

/// A closed pipe (`| head`) ends the output quietly; anything else is an error.
fn stdout_error(e: std::io::Error) -> Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e).context("cannot write to standard output") }
}

async fn truncate(client: &Client, name: &str, position: &str, cleanup: bool) -> Result<()> {
    let upto = position::parse_exact(position)?;
    let log = open_existing(client, name).await?;
    log.truncate(upto).await.with_context(|| format!("cannot truncate log {name:?} at {upto}"))?;
    match log.truncated_position().await.context("cannot read the truncation point")? {
        Some(t) if t > upto => {
            println!("log {name:?} was already truncated up to {t}, past {upto}; unchanged")
        }
        Some(t) => println!("log {name:?} truncated up to and including {t}"),
        None => bail!("log {name:?} reports no truncation point after truncating at {upto}"),
    }
    if cleanup {
        let report = log.run_maintenance().await.with_context(|| format!("maintenance of log {name:?} failed"))?;
        let ids = |v: &[i64]| if v.is_empty() { "none".to_owned() } else { format!("{v:?}") };
        println!(
            "maintenance: marked truncated {}, compacted {}, deleted {}",
            ids(&report.marked_truncated),
            ids(&report.compacted),
            ids(&report.deleted)
        );
        let ttl = client.config().woodpecker.logstore.retention_policy.ttl;
        if report.deleted.is_empty() {
            println!(
                "truncated segments are deleted once older than woodpecker.logstore.retentionPolicy.ttl ({}s) \
                 and no reader needs them",
                ttl.as_secs()
            );
        }
    }
    Ok(())
}

async fn delete(client: &Client, name: &str, if_exists: bool) -> Result<()> {
    let exists = client.log_exists(name).await.with_context(|| format!("cannot look up log {name:?}"))?;
    if !exists {
        if if_exists {
            println!("log {name:?} does not exist; nothing to delete");
            return Ok(());
        }
        bail!("log {name:?} does not exist (pass --if-exists to accept that)");
    }
    client.delete_log(name).await.with_context(|| format!("cannot delete log {name:?}"))?;
    println!("deleted log {name:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_entry_is_inside_the_active_segment_when_it_has_entries() {
        assert_eq!(last_before(LogMessageId::new(2, 5), &[(0, 9), (1, 3), (2, -1)]), Some(LogMessageId::new(2, 4)));
    }

    #[test]
    fn last_entry_skips_empty_segments_back_to_the_last_non_empty_one() {
        assert_eq!(last_before(LogMessageId::new(3, 0), &[(0, 9), (1, 3), (2, -1)]), Some(LogMessageId::new(1, 3)));
        assert_eq!(last_before(LogMessageId::new(2, 0), &[(0, 9), (1, 3), (2, -1)]), Some(LogMessageId::new(1, 3)));
    }

    #[test]
    fn an_empty_log_has_no_last_entry() {
        assert_eq!(last_before(LogMessageId::EARLIEST, &[]), None);
        assert_eq!(last_before(LogMessageId::new(1, 0), &[(0, -1)]), None);
    }

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(human_age(Duration::from_secs(90)), "90s");
        assert_eq!(human_age(Duration::from_secs(3 * 86_400)), "3d");
    }
}
