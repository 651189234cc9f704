//! Writers racing for one log, round after round: each round a new writer (its own client, with random
//! block and roll settings) opens while the previous one is writing as fast as it can. Whatever the
//! timing, every acknowledged entry is readable exactly once and in order, nothing else is, each
//! writer's acknowledgements are a prefix of what it wrote, and every writer's entries come after the
//! entries of the writers before it.
//!
//! Runs over the etcd + MinIO test bed (conditional writes) and over local files with etcd metadata.
//! The seed is printed; `WP_RACE_SEED=<seed>` replays a run, `WP_RACE_ROUNDS` changes the count (200).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bed_config, local_files_etcd_config, unique};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use woodpecker_client::{Client, Config, LogMessageId, LogWriter, WriteMessage};

/// Random block, interval and roll settings for one writer.
fn random_settings(rng: &mut StdRng) -> String {
    let flush = ["256", "1K", "4K", "64K"][rng.random_range(0..4)];
    let blocks = [1, 2, 3, 10, 1000][rng.random_range(0..5)];
    let size = ["2K", "16K", "256M"][rng.random_range(0..3)];
    let interval = rng.random_range(1..20);
    format!(
        "woodpecker:\n  client:\n    segmentRollingPolicy:\n      maxBlocks: {blocks}\n      maxSize: {size}\n  \
         logstore:\n    segmentSyncPolicy:\n      maxFlushSize: {flush}\n      maxInterval: {interval}\n      \
         maxIntervalForLocalStorage: {interval}\n"
    )
}

/// What one writer's producer saw: the payload and outcome of each entry, in submission order, and
/// when each acknowledgement arrived.
struct Produced {
    outcomes: Vec<(String, Option<LogMessageId>, Instant)>,
}

/// Writes entries as fast as the writer takes them until it refuses one (it was fenced) or `cap` were
/// written. A collector awaits the acknowledgements in order as they arrive, so each one's time is
/// when it resolved.
async fn produce(writer: Arc<LogWriter>, round: usize, cap: usize) -> Produced {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, woodpecker_client::AppendFuture)>();
    let collector = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        while let Some((payload, f)) = rx.recv().await {
            let id = f.await.ok();
            outcomes.push((payload, id, Instant::now()));
        }
        outcomes
    });
    for i in 0..cap {
        let payload = format!("r{round:04}-e{i:05}");
        match writer.write_async(WriteMessage::new(payload.clone())).await {
            Ok(f) => {
                if tx.send((payload, f)).is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
        if i % 8 == 7 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    drop(tx);
    Produced { outcomes: collector.await.expect("collector") }
}

async fn writers_race_round_after_round(config: impl Fn(&str) -> Config) {
    let seed: u64 = std::env::var("WP_RACE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let rounds: usize = std::env::var("WP_RACE_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    println!("racing writers: seed {seed}, {rounds} rounds (WP_RACE_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let first = Client::open(config(&random_settings(&mut rng))).await.unwrap();
    first.create_log("race").await.unwrap();
    let mut clients = vec![first.clone()];
    let mut writer = Arc::new(first.open_log("race").await.unwrap().open_writer().await.unwrap());
    let mut acked: Vec<(LogMessageId, String)> = Vec::new();
    let mut late_acks = 0usize;
    // Rounds in which the writer still had entries in flight when it was fenced: the race really ran.
    let mut raced = 0usize;
    for round in 0..rounds {
        let producer = tokio::spawn(produce(writer.clone(), round, 3000));
        tokio::time::sleep(Duration::from_micros(rng.random_range(0..30_000))).await;
        let client = Client::open(config(&random_settings(&mut rng))).await.unwrap();
        let next = Arc::new(client.open_log("race").await.unwrap().open_writer().await.unwrap());
        let opened = Instant::now();
        let produced = producer.await.unwrap();
        let mut failed_at = None;
        for (i, (payload, id, at)) in produced.outcomes.into_iter().enumerate() {
            match id {
                Some(id) => {
                    assert!(
                        failed_at.is_none(),
                        "round {round}: entry {i} acknowledged after entry {failed_at:?} failed (seed {seed})"
                    );
                    if let Some((last, _)) = acked.last() {
                        assert!(id > *last, "round {round}: {id} acknowledged after {last} (seed {seed})");
                    }
                    late_acks += usize::from(at > opened);
                    acked.push((id, payload));
                }
                None => failed_at = failed_at.or(Some(i)),
            }
        }
        raced += usize::from(failed_at.is_some());
        writer = next;
        clients.push(client);
    }
    let last = writer.write(WriteMessage::new("last")).await.unwrap();
    acked.push((last, "last".to_owned()));
    writer.close().await.unwrap();

    let reader_client = Client::open(config("")).await.unwrap();
    let log = reader_client.open_log("race").await.unwrap();
    let mut reader = log.open_reader(LogMessageId::EARLIEST, "race-check").await.unwrap();
    for (n, (id, payload)) in acked.iter().enumerate() {
        let m = tokio::time::timeout(Duration::from_secs(20), reader.read_next())
            .await
            .unwrap_or_else(|_| panic!("entry {n} of {} ({id}) not readable within 20 s (seed {seed})", acked.len()))
            .unwrap();
        assert_eq!(
            (m.id, String::from_utf8_lossy(&m.payload).into_owned()),
            (*id, payload.clone()),
            "entry {n} (seed {seed})"
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), reader.read_next()).await.is_err(),
        "an entry that was never acknowledged is readable after the last one (seed {seed})"
    );
    reader.close().await.unwrap();
    println!(
        "racing writers: {rounds} rounds ({raced} fenced with entries in flight), {} entries acknowledged and read \
         back, {late_acks} acknowledged after the next writer opened (all readable), {:?}",
        acked.len(),
        started.elapsed()
    );
    assert!(raced * 2 >= rounds, "only {raced} of {rounds} rounds raced: the test no longer exercises the fence");
    for c in clients {
        c.close().await;
    }
    reader_client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_race_round_after_round_on_minio_with_condition_write() {
    let root = unique("race-cw");
    writers_race_round_after_round(|extra| bed_config(&root, extra)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_race_round_after_round_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = unique("race-local");
    writers_race_round_after_round(|extra| local_files_etcd_config(dir.path(), &root, extra)).await;
}
