//! The storage's own ceiling, measured in the same run as the WAL: what the backend does with the WAL's
//! flush unit and parallelism and nothing else on top.
//!
//! ```text
//! local files:     [flush-size write][fdatasync] [flush-size write][fdatasync] …  one file, same directory
//!                  as the segments, a new file every segmentRollingPolicy.maxSize (as segments roll), the
//!                  page cache released behind the tail as segments do; the files are removed afterwards
//! object storage:  maxFlushThreads workers, each: PUT <flush-size object>, PUT …   (plain PUTs)
//! ```
//!
//! Each side gets the most favourable version of its own work, so that the ratio is not flattered:
//! - The local ceiling writes one buffer again and again (cache-hot, no memory traffic on top of the
//!   disk's) and removes its files only after the measurement (removing a 256 MB file per roll was
//!   measured costing ~15% of the throughput; the WAL does not delete while writing either).
//! - The object ceiling sends a pool of distinct buffers, together larger than the CPU's per-core cache:
//!   the WAL necessarily sends blocks it encoded a while ago, no longer cache-hot by the time they are
//!   hashed and sent, so one buffer hashed from cache would flatter the ceiling.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use hdrhistogram::Histogram;
use woodpecker_client::Config;
use woodpecker_storage::object::{ObjectStorage, S3ObjectStorage, S3Options};

use crate::append::latency_histogram;

/// How much to write.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// For this long.
    Time(Duration),
    /// This many bytes (rounded up to whole operations).
    Bytes(u64),
}

/// What the raw backend did.
#[derive(Debug)]
pub struct CeilingReport {
    /// Bytes written.
    pub bytes: u64,
    /// Write operations (each `op_size` bytes).
    pub ops: u64,
    /// Wall time of the whole measurement.
    pub elapsed: Duration,
    /// Latency of one operation, in microseconds.
    pub latency_us: Histogram<u64>,
    /// CPU time this process used meanwhile (`None` when the kernel did not say).
    pub cpu: Option<Duration>,
}

impl CeilingReport {
    /// Adds another measurement of the same kind (bytes, operations, time and latencies add up).
    pub fn absorb(&mut self, other: CeilingReport) -> Result<()> {
        self.bytes += other.bytes;
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.cpu = self.cpu.zip(other.cpu).map(|(a, b)| a + b);
        self.latency_us.add(&other.latency_us).map_err(|e| anyhow!("cannot merge latency histograms: {e}"))
    }
}

/// Bytes the ceiling's buffer pool spans at least (well above a core's L2 cache).
const POOL_BYTES: u64 = 64 << 20;

/// Distinct buffers of `len` bytes, together at least [`POOL_BYTES`] (at least two).
fn buffer_pool(len: usize) -> Vec<Bytes> {
    let count = (POOL_BYTES / (len as u64).max(1)).clamp(2, 1024) as usize;
    (0..count).map(|i| pattern_buffer(len, i as u64)).collect()
}

/// `len` pseudo-random bytes; a different pattern per `seed`, so no two objects or file regions are alike.
fn pattern_buffer(len: usize, seed: u64) -> Bytes {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
    Bytes::from(
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>(),
    )
}

/// Sequential `op_size` writes, each followed by `fdatasync`, into files in `dir`; a new file every
/// `file_size` bytes. The files are removed afterwards.
pub async fn local(dir: PathBuf, op_size: u64, file_size: u64, budget: Budget) -> Result<CeilingReport> {
    tokio::task::spawn_blocking(move || local_blocking(&dir, op_size, file_size, budget))
        .await
        .context("the local ceiling measurement task failed")?
}

/// The ceiling of a replicated write on one disk: `streams` local ceilings side by side in `dir`, one per
/// replica (service mode on one machine). Every payload byte is written once per stream, so the report
/// counts the bytes and operations of one stream (the payload rate the ensemble can sustain), over the
/// longest stream's time, with every stream's latencies.
pub async fn local_replicated(
    dir: PathBuf,
    op_size: u64,
    file_size: u64,
    budget: Budget,
    streams: usize,
) -> Result<CeilingReport> {
    let streams = streams.max(1);
    let runs = (0..streams).map(|i| local(dir.join(format!("replica-{i}")), op_size, file_size, budget));
    let mut merged: Option<CeilingReport> = None;
    for report in futures::future::join_all(runs).await {
        let r = report?;
        merged = Some(match merged {
            None => r,
            Some(mut m) => {
                let longest = m.elapsed.max(r.elapsed);
                let cpu = m.cpu.zip(r.cpu).map(|(a, b)| a.max(b));
                m.absorb(r)?;
                m.elapsed = longest;
                m.cpu = cpu;
                m
            }
        });
    }
    let mut m = merged.ok_or_else(|| anyhow!("no ceiling stream ran"))?;
    m.bytes /= streams as u64;
    m.ops /= streams as u64;
    for i in 0..streams {
        let _ = std::fs::remove_dir(dir.join(format!("replica-{i}")));
    }
    Ok(m)
}

fn local_blocking(dir: &Path, op_size: u64, file_size: u64, budget: Budget) -> Result<CeilingReport> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let len = usize::try_from(op_size).context("flush size does not fit in memory")?;
    let buf = pattern_buffer(len, 0);
    let mut latency_us = latency_histogram()?;
    let tag = format!("{}-{}", std::process::id(), crate::log_cmd::now_ms());
    let mut written: Vec<PathBuf> = Vec::new();
    let cpu_before = crate::cpu::process_time();
    let start = Instant::now();
    let (mut bytes, mut ops) = (0u64, 0u64);
    let mut current: Option<(std::fs::File, u64)> = None;
    let result = loop {
        let more = match budget {
            Budget::Time(d) => start.elapsed() < d,
            Budget::Bytes(total) => bytes < total,
        };
        if !more {
            break Ok(());
        }
        if current.as_ref().is_none_or(|(_, off)| *off >= file_size.max(op_size)) {
            let path = dir.join(format!(".bench-ceiling-{tag}-{}", written.len()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => current = Some((f, 0)),
                Err(e) => break Err(anyhow!("cannot create {}: {e}", path.display())),
            }
            written.push(path);
        }
        let Some((file, off)) = current.as_mut() else { break Ok(()) };
        let t = Instant::now();
        if let Err(e) = file.write_all_at(&buf, *off).and_then(|()| file.sync_data()) {
            break Err(anyhow!("cannot write {}: {e}", written.last().map_or(dir, |p| p.as_path()).display()));
        }
        // The same page-cache policy as segments, so neither side pays for the other's cached pages.
        woodpecker_storage::segment::local::release_cache_behind(file, *off, *off + op_size);
        latency_us.saturating_record(micros(t.elapsed()));
        *off += op_size;
        bytes += op_size;
        ops += 1;
    };
    let elapsed = start.elapsed();
    let cpu = crate::cpu::used_since(cpu_before);
    drop(current);
    for path in written {
        let _ = std::fs::remove_file(path);
    }
    result?;
    Ok(CeilingReport { bytes, ops, elapsed, latency_us, cpu })
}

/// `S3Options` for `cfg.minio`, as the client builds them, with plain (unconditional) PUTs.
pub fn s3_options(cfg: &Config) -> Result<S3Options> {
    let mut opts = woodpecker_client::s3_options(cfg)?;
    opts.condition_write = false;
    Ok(opts)
}

/// `threads` workers doing plain PUTs of `op_size` bytes under a scratch prefix, removed afterwards.
pub async fn object(cfg: &Config, op_size: u64, threads: usize, budget: Budget) -> Result<CeilingReport> {
    let opts = s3_options(cfg)?;
    let store = Arc::new(S3ObjectStorage::connect(opts).await.context("cannot connect to object storage")?);
    let root = cfg.minio.root_path.trim_matches('/');
    let scratch = format!("bench-ceiling-{}-{}/", std::process::id(), crate::log_cmd::now_ms());
    let prefix = if root.is_empty() { scratch } else { format!("{root}/{scratch}") };
    let len = usize::try_from(op_size).context("flush size does not fit in memory")?;
    let pool = Arc::new(buffer_pool(len));
    let claimed = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let cpu_before = crate::cpu::process_time();
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..threads.max(1) {
        let (store, pool, claimed, seq, prefix) =
            (store.clone(), pool.clone(), claimed.clone(), seq.clone(), prefix.clone());
        let mut latency_us = latency_histogram()?;
        workers.spawn(async move {
            let mut ops = 0u64;
            loop {
                let more = match budget {
                    Budget::Time(d) => start.elapsed() < d,
                    Budget::Bytes(total) => claimed.fetch_add(op_size, Ordering::Relaxed) < total,
                };
                if !more {
                    break;
                }
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let key = format!("{prefix}{n}.blk");
                let body = pool[(n % pool.len() as u64) as usize].clone();
                let t = Instant::now();
                store.put(&key, body).await.with_context(|| format!("PUT {key}"))?;
                latency_us.saturating_record(micros(t.elapsed()));
                ops += 1;
            }
            anyhow::Ok((ops, latency_us))
        });
    }
    let mut ops = 0u64;
    let mut latency_us = latency_histogram()?;
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        match joined.context("a PUT worker failed").and_then(|r| r) {
            Ok((n, h)) => {
                ops += n;
                latency_us.add(&h).map_err(|e| anyhow!("cannot merge latency histograms: {e}"))?;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let elapsed = start.elapsed();
    let cpu = crate::cpu::used_since(cpu_before);
    if let Err(e) = store.remove_prefix(&prefix).await {
        tracing::warn!(%prefix, error = %e, "cannot remove the ceiling measurement's objects");
    }
    if let Some(e) = first_error {
        return Err(e.context(format!("object storage ceiling measurement on {}", store.describe())));
    }
    Ok(CeilingReport { bytes: ops * op_size, ops, elapsed, latency_us, cpu })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_ceiling_writes_the_budget_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let r = local(dir.path().to_path_buf(), 4096, 3 * 4096, Budget::Bytes(10 * 4096)).await.unwrap();
        assert_eq!(r.ops, 10);
        assert_eq!(r.bytes, 10 * 4096);
        assert_eq!(r.latency_us.len(), 10);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn buffer_pool_spans_more_than_a_cache_with_distinct_buffers() {
        let pool = buffer_pool(2_000_000);
        assert_eq!(pool.len(), 33);
        assert!(pool.iter().all(|b| b.len() == 2_000_000));
        assert_ne!(pool[0], pool[1]);
        assert_eq!(buffer_pool(100 << 20).len(), 2);
    }

    #[test]
    fn s3_options_follow_the_minio_section() {
        let mut cfg = Config::default();
        cfg.minio.address = "127.0.0.1".into();
        cfg.minio.port = 9900;
        cfg.minio.cloud_provider = "minio".into();
        let o = s3_options(&cfg).unwrap();
        assert_eq!(o.endpoint, "127.0.0.1:9900");
        assert!(!o.condition_write);
        cfg.minio.cloud_provider = "nimbus".into();
        assert!(s3_options(&cfg).is_err());
    }
}
