//! `woodpecker quickstart`: a tour on the zero-setup default that writes, reads back and verifies a few
//! thousand entries, and says what it did and where the data is.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use woodpecker_client::Config;
use woodpecker_core::config::StorageType;

use crate::append::{self, Limits, MessageSource, Payload, numbered_payload};
use crate::args::{GlobalArgs, QuickstartArgs};
use crate::log_cmd::{self, print_segments};
use crate::progress;
use crate::setup::{self, describe_storage, display_dir};

/// How long the read-back waits for any one entry before giving up.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the quickstart.
pub async fn run(global: &GlobalArgs, cfg: Config, args: QuickstartArgs) -> Result<()> {
    woodpecker_core::names::validate_log_name(&args.log)?;
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    if args.payload_size == 0 {
        bail!("--payload-size must be at least 1 byte");
    }
    let size = usize::try_from(args.payload_size).context("--payload-size does not fit in memory")?;
    let name = args.log.as_str();

    println!("Woodpecker quickstart");
    println!("  storage: {}", describe_storage(&cfg));
    let client = setup::open_client(cfg.clone()).await?;
    let existed = client.log_exists(name).await.with_context(|| format!("cannot look up log {name:?}"))?;
    client.create_log_if_absent(name).await.with_context(|| format!("cannot create log {name:?}"))?;
    let log = log_cmd::open_existing(&client, name).await?;
    println!("1. {} log {name:?} (id {})", if existed { "opened the existing" } else { "created" }, log.id());

    // Write.
    let props: BTreeMap<String, String> = [("source".to_owned(), "quickstart".to_owned())].into();
    let mut source = MessageSource::generated(args.count, Payload::Numbered(Some(size)), props);
    let writer = log.open_writer().await.with_context(|| format!("cannot open a writer on log {name:?}"))?;
    let pb = progress::bar(args.count, "write");
    let written = append::run(&writer, &mut source, None, Limits::default(), &pb).await;
    pb.finish_and_clear();
    let closed = writer.close().await;
    let written = written?;
    closed.context("cannot close the writer")?;
    let (Some(first), Some(last)) = (written.first, written.last) else {
        bail!("nothing was written (interrupted?)");
    };
    if written.interrupted || written.entries != args.count {
        bail!("interrupted after writing {} of {} entries", written.entries, args.count);
    }
    println!(
        "2. wrote {} entries of {} (asynchronously, acknowledged in order once durable): positions {first} .. {last}",
        written.entries,
        crate::bench::human_size(args.payload_size)
    );
    println!(
        "   {:.2}s, {:.0} entries/s, {:.2} MB/s; latency p50 {:.2} ms, p99 {:.2} ms",
        written.elapsed.as_secs_f64(),
        written.entries_per_sec(),
        written.mb_per_sec(),
        written.latency_us.value_at_quantile(0.50) as f64 / 1000.0,
        written.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
    );
    println!("   the writer was closed, which completed its segment:");
    let segments = log.segments().await.context("cannot list segments")?;
    print_segments(&segments, None, log_cmd::now_ms());

    // Read back from the first entry written and compare.
    let mut reader = log.open_reader(first, "quickstart").await.context("cannot open a reader")?;
    let pb = progress::bar(args.count, "read");
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut checked = 0u64;
    let verify = async {
        for i in 0..args.count {
            let msg = tokio::time::timeout(READ_TIMEOUT, reader.read_next())
                .await
                .with_context(|| format!("no entry within {}s at {}", READ_TIMEOUT.as_secs(), reader.position()))?
                .with_context(|| format!("cannot read entry {}", reader.position()))?;
            if msg.payload != numbered_payload(i, Some(size)) {
                bail!("entry {} does not hold what was written as entry #{i}", msg.id);
            }
            if msg.properties.get("source").map(String::as_str) != Some("quickstart") {
                bail!("entry {} lost its properties: {:?}", msg.id, msg.properties);
            }
            if i + 1 == args.count && msg.id != last {
                bail!("the last entry read back is at {}, but the writer acknowledged {last}", msg.id);
            }
            bytes += msg.payload.len() as u64;
            checked += 1;
            pb.inc(1);
        }
        anyhow::Ok(())
    }
    .await;
    pb.finish_and_clear();
    let read_elapsed = start.elapsed();
    let closed = reader.close().await;
    verify?;
    closed.context("cannot close the reader")?;
    println!(
        "3. read back {checked} entries from {first} to {last} and compared them with what was written: all match"
    );
    println!(
        "   {:.2}s, {:.0} entries/s, {:.2} MB/s",
        read_elapsed.as_secs_f64(),
        checked as f64 / read_elapsed.as_secs_f64().max(1e-9),
        append::mb_per_sec(bytes, read_elapsed)
    );

    // Where it lives.
    match cfg.woodpecker.storage.storage_type {
        StorageType::Local => {
            let dir = setup::local_log_dir(&cfg, log.id());
            println!("4. data: {}/<segment>/data.log", display_dir(&dir.display().to_string()));
        }
        _ => println!(
            "4. data: objects s3://{}/{}",
            cfg.minio.bucket_name,
            woodpecker_core::keys::log_prefix(&cfg.minio.root_path, log.id())
        ),
    }
    if cfg.woodpecker.meta.meta_type == woodpecker_core::config::MetaType::Embedded {
        println!("   metadata: {}", display_dir(&setup::meta_dir(&cfg).display().to_string()));
    }
    client.close().await;

    let mut flags = String::new();
    if let Some(c) = &global.config {
        flags.push_str(&format!(" --config {}", c.display()));
    }
    if let Some(d) = &global.data_dir {
        flags.push_str(&format!(" --data-dir {}", d.display()));
    }
    println!("next:");
    println!("   woodpecker{flags} log info {name}");
    println!("   woodpecker{flags} log read {name} --count 5");
    println!("   woodpecker{flags} log write {name} --message hello");
    println!("   woodpecker{flags} log tail {name}");
    println!("   woodpecker{flags} bench --duration 5");
    Ok(())
}
