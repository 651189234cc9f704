//! The write loop shared by `log write`, `quickstart` and `bench`: submit asynchronously, acknowledge in
//! order, measure.
//!
//! ```text
//!  producer ──(window permit)──▶ write_async ──▶ AppendFuture ──channel──▶ acker: await in order,
//!     ▲ stops on: source end, deadline,                                     record latency, count bytes,
//!     │ byte limit, Ctrl-C, first failure ◀──────── failed flag ─────────── release the window permit
//! ```
//!
//! `write_async` already waits for room in the writer's buffer (`maxBytes`); the optional window bounds
//! the number of writes in flight on top of that (a window of 1 is one synchronous write at a time).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::io::{AsyncBufReadExt, BufReader, Stdin};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
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

struct InFlight {
    ack: AppendFuture,
    submitted: Instant,
    bytes: u64,
    _permit: Option<OwnedSemaphorePermit>,
}

struct Acked {
    entries: u64,
    bytes: u64,
    first: Option<LogMessageId>,
    last: Option<LogMessageId>,
    latency_us: Histogram<u64>,
    error: Option<woodpecker_client::WoodpeckerError>,
    done: Instant,
}

/// Writes everything `source` yields (within `limits`), `window` writes in flight at most.
///
/// Returns once every submitted entry is acknowledged or failed; the first failure is the error, with
/// how many entries were durable before it. The writer stays open: the caller closes it.
pub async fn run(
    writer: &LogWriter,
    source: &mut MessageSource,
    window: Option<usize>,
    limits: Limits,
    progress: &ProgressBar,
) -> Result<AppendReport> {
    let window = window.map(|w| Arc::new(Semaphore::new(w.clamp(1, Semaphore::MAX_PERMITS))));
    let failed = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::unbounded_channel::<InFlight>();
    let acker = tokio::spawn(acknowledge(rx, latency_histogram()?, failed.clone(), progress.clone()));

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
    let mut producer_error: Option<anyhow::Error> = None;
    loop {
        if failed.load(Ordering::Acquire) {
            break;
        }
        if limits.max_payload_bytes.is_some_and(|max| submitted_bytes >= max) {
            break;
        }
        let step = async {
            let Some(msg) = source.next().await? else { return Ok(None) };
            let bytes = msg.payload.len() as u64;
            let permit = match &window {
                Some(w) => Some(w.clone().acquire_owned().await.context("write window closed")?),
                None => None,
            };
            let submitted = Instant::now();
            let ack = writer.write_async(msg).await?;
            anyhow::Ok(Some(InFlight { ack, submitted, bytes, _permit: permit }))
        };
        let next = tokio::select! {
            biased;
            _ = &mut ctrl_c => {
                interrupted = true;
                break;
            }
            _ = &mut deadline => break,
            r = step => r,
        };
        match next {
            Ok(Some(inflight)) => {
                submitted_bytes += inflight.bytes;
                if tx.send(inflight).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                producer_error = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let acked = acker.await.context("the acknowledgement task failed")?;
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

/// Awaits acknowledgements in submission order until the producer hangs up; keeps draining after a
/// failure so that window permits are released and every outcome is known.
async fn acknowledge(
    mut rx: mpsc::UnboundedReceiver<InFlight>,
    latency_us: Histogram<u64>,
    failed: Arc<AtomicBool>,
    progress: ProgressBar,
) -> Acked {
    let mut acked =
        Acked { entries: 0, bytes: 0, first: None, last: None, latency_us, error: None, done: Instant::now() };
    while let Some(inflight) = rx.recv().await {
        match inflight.ack.await {
            Ok(id) => {
                let us = u64::try_from(inflight.submitted.elapsed().as_micros()).unwrap_or(u64::MAX);
                acked.latency_us.saturating_record(us.max(1));
                if acked.error.is_none() {
                    acked.entries += 1;
                    acked.bytes += inflight.bytes;
                    acked.first.get_or_insert(id);
                    acked.last = Some(id);
                }
                progress.inc(1);
            }
            Err(e) => {
                failed.store(true, Ordering::Release);
                acked.error.get_or_insert(e);
            }
        }
        acked.done = Instant::now();
    }
    acked
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
    fn throughput_of_nothing_is_zero() {
        assert_eq!(mb_per_sec(10, Duration::ZERO), 0.0);
        assert!((mb_per_sec(2_000_000, Duration::from_secs(2)) - 1.0).abs() < 1e-9);
    }
}
