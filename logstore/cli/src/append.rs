//! The write loop shared by `log write`, `quickstart` and `bench`: submit asynchronously, acknowledge in
//! order, measure.
//!
//! ```text
//!  loop:  take every outcome already known at the front of the queue (in order; latency, bytes)
//!         window full?  wait for the oldest outcome (or Ctrl-C / the deadline)
//!         otherwise     next message ──▶ write_async ──▶ AppendFuture at the back of the queue
//!  stops on: source end, deadline, byte limit, Ctrl-C, first failure; then waits for every outcome
//! ```
//!
//! `write_async` already waits for room in the writer's buffer (`maxBytes`); the optional window bounds
//! the number of writes in flight on top of that (a window of 1 is one synchronous write at a time).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::io::{AsyncBufReadExt, BufReader, Stdin};
use woodpecker_client::{AppendFuture, LogMessageId, LogWriter, WriteMessage};

/// Where payloads come from.
#[derive(Debug)]
pub enum MessageSource {
    /// `count` generated entries.
    Generated {
        /// Index of the next entry.
        next: u64,
        /// Entries to produce in all.
        count: u64,
        /// How each payload is made.
        payload: Payload,
        /// Properties of every entry.
        properties: BTreeMap<String, String>,
    },
    /// One entry per line of standard input.
    Stdin {
        /// The input.
        input: BufReader<Stdin>,
        /// Number of the next line (from 1), for messages.
        line: u64,
        /// Properties of every entry.
        properties: BTreeMap<String, String>,
    },
}

/// How generated payloads look.
#[derive(Debug, Clone)]
pub enum Payload {
    /// The same bytes every time.
    Fixed(Bytes),
    /// `entry-<i>`, padded with '.' (or cut) to the given size when there is one.
    Numbered(Option<usize>),
}

/// The payload of generated entry `i` for [`Payload::Numbered`].
pub fn numbered_payload(i: u64, size: Option<usize>) -> Bytes {
    let mut p = format!("entry-{i}").into_bytes();
    if let Some(size) = size {
        p.resize(size, b'.');
    }
    Bytes::from(p)
}

impl MessageSource {
    /// `count` generated entries.
    pub fn generated(count: u64, payload: Payload, properties: BTreeMap<String, String>) -> Self {
        Self::Generated { next: 0, count, payload, properties }
    }

    /// Lines of standard input.
    pub fn stdin(properties: BTreeMap<String, String>) -> Self {
        Self::Stdin { input: BufReader::new(tokio::io::stdin()), line: 1, properties }
    }

    /// How many entries this source will produce, when known.
    pub fn len(&self) -> Option<u64> {
        match self {
            Self::Generated { count, .. } => Some(*count),
            Self::Stdin { .. } => None,
        }
    }

    /// The next message, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<WriteMessage>> {
        match self {
            Self::Generated { next, count, payload, properties } => {
                if *next >= *count {
                    return Ok(None);
                }
                let bytes = match payload {
                    Payload::Fixed(b) => b.clone(),
                    Payload::Numbered(size) => numbered_payload(*next, *size),
                };
                *next += 1;
                Ok(Some(WriteMessage { payload: bytes, properties: properties.clone() }))
            }
            Self::Stdin { input, line, properties } => {
                let mut buf = Vec::new();
                let n = input.read_until(b'\n', &mut buf).await.context("cannot read standard input")?;
                if n == 0 {
                    return Ok(None);
                }
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                if buf.is_empty() && properties.is_empty() {
                    bail!("line {line} of standard input is empty: an entry needs a payload or a --property");
                }
                *line += 1;
                Ok(Some(WriteMessage { payload: Bytes::from(buf), properties: properties.clone() }))
            }
        }
    }
}

/// When to stop besides the end of the source.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Stop submitting at this instant.
    pub deadline: Option<Instant>,
    /// Stop submitting once this many payload bytes were submitted.
    pub max_payload_bytes: Option<u64>,
    /// Open loop: submit at this many entries per second, each at its scheduled time from the start, and
    /// count its latency from that time (a submission held up by a full buffer is counted late, so
    /// queueing is not hidden by the loop slowing down). `None`: submit as fast as the window allows.
    pub entries_per_sec: Option<f64>,
}

/// What a run did.
#[derive(Debug)]
pub struct AppendReport {
    /// Entries acknowledged durable.
    pub entries: u64,
    /// Their payload bytes.
    pub payload_bytes: u64,
    /// Position of the first one.
    pub first: Option<LogMessageId>,
    /// Position of the last one.
    pub last: Option<LogMessageId>,
    /// From the first submission to the last acknowledgement.
    pub elapsed: Duration,
    /// Submission-to-durable latency of every entry, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Stopped by Ctrl-C.
    pub interrupted: bool,
}

impl AppendReport {
    /// Payload throughput in MB/s (10^6 bytes per second).
    pub fn mb_per_sec(&self) -> f64 {
        mb_per_sec(self.payload_bytes, self.elapsed)
    }

    /// Entries per second.
    pub fn entries_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.entries as f64 / secs } else { 0.0 }
    }
}

/// Bytes over a duration, in MB/s (10^6 bytes per second); 0 for an empty duration.
pub fn mb_per_sec(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { bytes as f64 / 1e6 / secs } else { 0.0 }
}

/// A latency histogram in microseconds, 1 µs to 1 h, 3 significant digits.
pub fn latency_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| anyhow!("cannot create a latency histogram: {e}"))
}

/// How a wait of the write loop ended.
enum Waited<T> {
    Done(T),
    Interrupted,
    Deadline,
}

/// Waits for `fut` unless Ctrl-C or the deadline comes first (checked in that order).
async fn wait_unless_stopped<T>(
    ctrl_c: std::pin::Pin<&mut impl std::future::Future>,
    deadline: std::pin::Pin<&mut impl std::future::Future>,
    fut: impl std::future::Future<Output = T>,
) -> Waited<T> {
    tokio::select! {
        biased;
        _ = ctrl_c => Waited::Interrupted,
        _ = deadline => Waited::Deadline,
        r = fut => Waited::Done(r),
    }
}

/// Open loop: waits until `due`, taking outcomes as they come meanwhile (so that each is timed when it
/// arrives, not when the schedule next wakes the loop). Returns at once when `due` has passed.
async fn wait_for_schedule(
    due: Instant,
    queue: &mut VecDeque<InFlight>,
    acked: &mut Acked,
    mut ctrl_c: std::pin::Pin<&mut impl std::future::Future>,
    mut deadline: std::pin::Pin<&mut impl std::future::Future>,
    progress: &ProgressBar,
) -> Waited<()> {
    loop {
        acked.take_ready(queue, progress);
        if Instant::now() >= due {
            return Waited::Done(());
        }
        let sleep = tokio::time::sleep_until(due.into());
        let Some(front) = queue.front_mut() else {
            return wait_unless_stopped(ctrl_c.as_mut(), deadline.as_mut(), sleep).await;
        };
        let waited = wait_unless_stopped(ctrl_c.as_mut(), deadline.as_mut(), async {
            tokio::select! {
                outcome = &mut front.ack => Some(outcome),
                _ = sleep => None,
            }
        })
        .await;
        match waited {
            Waited::Done(Some(outcome)) => {
                if let Some(inflight) = queue.pop_front() {
                    acked.record(&inflight, outcome, Instant::now());
                    progress.inc(1);
                }
            }
            Waited::Done(None) => return Waited::Done(()),
            Waited::Interrupted => return Waited::Interrupted,
            Waited::Deadline => return Waited::Deadline,
        }
    }
}

/// Submissions per clock reading (see `run`).
const CLOCK_EVERY: u32 = 32;

struct InFlight {
    ack: AppendFuture,
    submitted: Instant,
    bytes: u64,
}

/// Outcomes taken so far, in submission order.
struct Acked {
    entries: u64,
    bytes: u64,
    first: Option<LogMessageId>,
    last: Option<LogMessageId>,
    latency_us: Histogram<u64>,
    /// A run of equal latencies not recorded yet: (microseconds, count). Entries acknowledged together
    /// and submitted between two clock readings have the same latency, so most runs are long.
    latency_run: (u64, u64),
    error: Option<woodpecker_client::WoodpeckerError>,
    done: Instant,
}

impl Acked {
    fn new() -> Result<Self> {
        Ok(Self {
            entries: 0,
            bytes: 0,
            first: None,
            last: None,
            latency_us: latency_histogram()?,
            latency_run: (0, 0),
            error: None,
            done: Instant::now(),
        })
    }

    fn record(&mut self, inflight: &InFlight, outcome: woodpecker_client::Result<LogMessageId>, now: Instant) {
        match outcome {
            Ok(id) => {
                let us = u64::try_from(now.saturating_duration_since(inflight.submitted).as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                self.note_latency(us);
                if self.error.is_none() {
                    self.entries += 1;
                    self.bytes += inflight.bytes;
                    self.first.get_or_insert(id);
                    self.last = Some(id);
                }
            }
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self.done = now;
    }

    fn note_latency(&mut self, us: u64) {
        if self.latency_run.0 == us {
            self.latency_run.1 += 1;
        } else {
            self.flush_latencies();
            self.latency_run = (us, 1);
        }
    }

    /// Records the pending run of equal latencies.
    fn flush_latencies(&mut self) {
        let (us, n) = std::mem::take(&mut self.latency_run);
        if n > 0 {
            self.latency_us.saturating_record_n(us, n);
        }
    }

    /// Takes every outcome already known at the front of `queue` (one clock reading for all of them).
    fn take_ready(&mut self, queue: &mut VecDeque<InFlight>, progress: &ProgressBar) {
        let mut now = None;
        let mut n = 0;
        while let Some(front) = queue.front_mut() {
            let Some(outcome) = front.ack.try_result() else { break };
            let t = *now.get_or_insert_with(Instant::now);
            if let Some(inflight) = queue.pop_front() {
                self.record(&inflight, outcome, t);
            }
            n += 1;
        }
        if n > 0 {
            progress.inc(n);
        }
    }
}

/// Writes everything `source` yields (within `limits`), `window` writes in flight at most.
///
/// One task submits and takes outcomes: between submissions it takes the outcomes that are ready, and
/// with a full window it waits for the oldest. Returns once every submitted entry is acknowledged or
/// failed; the first failure is the error, with how many entries were durable before it. The writer
/// stays open: the caller closes it.
pub async fn run(
    writer: &LogWriter,
    source: &mut MessageSource,
    window: Option<usize>,
    limits: Limits,
    progress: &ProgressBar,
) -> Result<AppendReport> {
    let window = window.unwrap_or(usize::MAX).max(1);
    let mut queue: VecDeque<InFlight> = VecDeque::new();
    let mut acked = Acked::new()?;
    let start = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let deadline = async {
        match limits.deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut interrupted = false;
    let mut submitted_bytes = 0u64;
    // The clock is read once per CLOCK_EVERY submissions and after every wait, not per entry (a clock read
    // was ~1.5% of the client's CPU with 1 KiB entries): between two reads the loop only submits, so a
    // submission time is early by the time a few dozen submissions take (tens of microseconds), which can
    // only overstate a latency, and latencies are milliseconds.
    let mut clock = Instant::now();
    let mut since_clock = 0u32;
    let mut producer_error: Option<anyhow::Error> = None;
    // Open loop: entries scheduled so far.
    let mut scheduled = 0u64;
    loop {
        acked.take_ready(&mut queue, progress);
        if acked.error.is_some() || limits.max_payload_bytes.is_some_and(|max| submitted_bytes >= max) {
            break;
        }
        if queue.len() >= window {
            // Only here, and when the writer's buffer is full, does the loop wait: Ctrl-C and the deadline
            // are watched there (a loop that never waits is bounded by the window and the buffer).
            let Some(front) = queue.front_mut() else { break };
            let outcome = match wait_unless_stopped(ctrl_c.as_mut(), deadline.as_mut(), &mut front.ack).await {
                Waited::Done(outcome) => outcome,
                Waited::Interrupted => {
                    interrupted = true;
                    break;
                }
                Waited::Deadline => break,
            };
            if let Some(inflight) = queue.pop_front() {
                acked.record(&inflight, outcome, Instant::now());
                progress.inc(1);
            }
            since_clock = 0;
            continue;
        }
        let submitted = match limits.entries_per_sec {
            Some(rate) => {
                let due = start + Duration::from_secs_f64(scheduled as f64 / rate);
                match wait_for_schedule(due, &mut queue, &mut acked, ctrl_c.as_mut(), deadline.as_mut(), progress).await
                {
                    Waited::Done(()) => {}
                    Waited::Interrupted => {
                        interrupted = true;
                        break;
                    }
                    Waited::Deadline => break,
                }
                scheduled += 1;
                due
            }
            None => {
                if since_clock == 0 {
                    clock = Instant::now();
                }
                since_clock = (since_clock + 1) % CLOCK_EVERY;
                clock
            }
        };
        let msg = match source.next().await {
            Ok(Some(msg)) => msg,
            Ok(None) => break,
            Err(e) => {
                producer_error = Some(e);
                break;
            }
        };
        if limits.deadline.is_some_and(|d| submitted >= d) {
            break;
        }
        let bytes = msg.payload.len() as u64;
        let submit = writer.write_async(msg);
        tokio::pin!(submit);
        // Usually ready at once; when the writer's buffer is full it waits, and so may Ctrl-C.
        let outcome = match futures::poll!(&mut submit) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => {
                since_clock = 0;
                match wait_unless_stopped(ctrl_c.as_mut(), deadline.as_mut(), &mut submit).await {
                    Waited::Done(r) => r,
                    Waited::Interrupted => {
                        interrupted = true;
                        break;
                    }
                    Waited::Deadline => break,
                }
            }
        };
        match outcome {
            Ok(ack) => {
                submitted_bytes += bytes;
                queue.push_back(InFlight { ack, submitted, bytes });
            }
            Err(e) => {
                producer_error = Some(e.into());
                break;
            }
        }
    }
    // Nothing more comes: write the last short block now instead of after maxInterval (whether it
    // worked is told by each entry's outcome below).
    let _ = writer.flush().await;
    // Every submitted entry's outcome, in order (also after a failure, so that every outcome is known).
    while let Some(mut inflight) = queue.pop_front() {
        let outcome = (&mut inflight.ack).await;
        acked.record(&inflight, outcome, Instant::now());
        progress.inc(1);
    }
    acked.flush_latencies();
    let elapsed = acked.done.saturating_duration_since(start);
    let durable = match acked.last {
        Some(last) => format!("{} entries are durable, the last at {last}", acked.entries),
        None => "no entry was written".to_owned(),
    };
    if let Some(e) = acked.error {
        return Err(anyhow::Error::new(e).context(format!("write failed ({durable})")));
    }
    if let Some(e) = producer_error {
        return Err(e.context(format!("write stopped ({durable})")));
    }
    Ok(AppendReport {
        entries: acked.entries,
        payload_bytes: acked.bytes,
        first: acked.first,
        last: acked.last,
        elapsed,
        latency_us: acked.latency_us,
        interrupted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_payloads_are_padded_or_cut_to_size() {
        assert_eq!(&numbered_payload(7, None)[..], b"entry-7");
        assert_eq!(&numbered_payload(7, Some(10))[..], b"entry-7...");
        assert_eq!(&numbered_payload(12345, Some(4))[..], b"entr");
    }

    #[tokio::test]
    async fn generated_source_stops_after_count() {
        let mut s = MessageSource::generated(2, Payload::Fixed(Bytes::from_static(b"x")), BTreeMap::new());
        assert!(s.next().await.unwrap().is_some());
        assert!(s.next().await.unwrap().is_some());
        assert!(s.next().await.unwrap().is_none());
    }

    #[test]
    fn runs_of_equal_latencies_are_all_recorded() {
        let mut acked = Acked::new().unwrap();
        for us in [5, 5, 5, 9, 5, 5] {
            acked.note_latency(us);
        }
        acked.flush_latencies();
        acked.flush_latencies();
        let h = &acked.latency_us;
        assert_eq!((h.len(), h.count_at(5), h.count_at(9)), (6, 5, 1));
    }

    #[test]
    fn throughput_of_nothing_is_zero() {
        assert_eq!(mb_per_sec(10, Duration::ZERO), 0.0);
        assert!((mb_per_sec(2_000_000, Duration::from_secs(2)) - 1.0).abs() < 1e-9);
    }
}
