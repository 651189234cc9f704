//! The zero-setup default end to end: local segment files + embedded metadata, in one process.

mod common;

use std::time::Duration;

use common::{local_config, payload, read_n};
use woodpecker_client::{Client, LogMessageId, WoodpeckerError, WriteMessage};
use woodpecker_proto::meta::SegmentState;

const SMALL_SEGMENTS: &str = "woodpecker:\n  client:\n    segmentRollingPolicy:\n      maxSize: 32K\n  logstore:\n    segmentSyncPolicy:\n      maxFlushSize: 4K\n";

#[tokio::test]
async fn async_writes_roll_segments_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(local_config(dir.path(), SMALL_SEGMENTS)).await.unwrap();
    client.create_log("orders").await.unwrap();
    let log = client.open_log("orders").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    let mut futures = Vec::new();
    for i in 0..5000 {
        futures
            .push(writer.write_async(WriteMessage::new(payload(i)).with_property("i", i.to_string())).await.unwrap());
    }
    let mut ids = Vec::new();
    for f in futures {
        ids.push(f.await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "acknowledged positions must increase");
    writer.close().await.unwrap();

    let segments = log.segments().await.unwrap();
    assert!(segments.len() >= 3, "expected at least 3 segment rolls, got {segments:?}");
    assert!(segments.iter().all(|s| s.state == SegmentState::Completed), "{segments:?}");

    let mut reader = log.open_reader(LogMessageId::EARLIEST, "all").await.unwrap();
    let msgs = read_n(&mut reader, 5000, Duration::from_secs(30)).await;
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.id, ids[i]);
        assert_eq!(m.payload, payload(i).as_bytes());
        assert_eq!(m.properties.get("i"), Some(&i.to_string()));
    }
    // From the middle: exactly the suffix.
    let mut mid = log.open_reader(ids[2500], "mid").await.unwrap();
    let rest = read_n(&mut mid, 2500, Duration::from_secs(30)).await;
    assert_eq!(rest[0].id, ids[2500]);
    assert_eq!(rest.last().map(|m| m.id), ids.last().copied());
    reader.close().await.unwrap();
    mid.close().await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn tailing_reader_sees_entries_written_after_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(local_config(dir.path(), "")).await.unwrap();
    client.create_log("tail").await.unwrap();
    let log = client.open_log("tail").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    writer.write(WriteMessage::new("before")).await.unwrap();
    let mut reader = log.open_reader(LogMessageId::LATEST, "tail").await.unwrap();
    let w = tokio::spawn(async move {
        for i in 0..50 {
            writer.write(WriteMessage::new(payload(i))).await.unwrap();
        }
        writer
    });
    let msgs = read_n(&mut reader, 50, Duration::from_secs(20)).await;
    assert_eq!(msgs[0].payload, payload(0).as_bytes(), "the tail reader must not see entries written before it");
    assert_eq!(msgs[49].payload, payload(49).as_bytes());
    w.await.unwrap().close().await.unwrap();
}

#[tokio::test]
async fn second_writer_fences_first() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(local_config(dir.path(), "")).await.unwrap();
    client.create_log("fence").await.unwrap();
    let log = client.open_log("fence").await.unwrap();
    let first = log.open_writer().await.unwrap();
    let acked = first.write(WriteMessage::new("one")).await.unwrap();
    let second = log.open_writer().await.unwrap();
    let err = first.write(WriteMessage::new("two")).await.unwrap_err();
    assert!(matches!(err, WoodpeckerError::WriterFenced { .. }), "got {err}");
    let again = first.write(WriteMessage::new("three")).await.unwrap_err();
    assert!(again.is_writer_lost(), "later writes fail fast too: {again}");
    let next = second.write(WriteMessage::new("four")).await.unwrap();
    assert!(next > acked);
    second.close().await.unwrap();
    let mut r = log.open_reader(LogMessageId::EARLIEST, "check").await.unwrap();
    let msgs = read_n(&mut r, 2, Duration::from_secs(10)).await;
    assert_eq!((msgs[0].id, &msgs[0].payload[..]), (acked, &b"one"[..]));
    assert_eq!((msgs[1].id, &msgs[1].payload[..]), (next, &b"four"[..]));
}

#[tokio::test]
async fn truncate_then_cleanup_removes_segment_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "woodpecker:\n  client:\n    segmentRollingPolicy:\n      maxSize: 64K\n  logstore:\n    segmentSyncPolicy:\n      maxFlushSize: 4K\n    retentionPolicy:\n      ttl: 1\n";
    let client = Client::open(local_config(dir.path(), cfg)).await.unwrap();
    client.create_log("trunc").await.unwrap();
    let log = client.open_log("trunc").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..3000 {
        ids.push(writer.write_async(WriteMessage::new(payload(i))).await.unwrap());
    }
    let mut pos = Vec::new();
    for f in ids {
        pos.push(f.await.unwrap());
    }
    writer.close().await.unwrap();
    let cut = pos[2000];
    log.truncate(cut).await.unwrap();
    assert_eq!(log.truncated_position().await.unwrap(), Some(cut));
    let mut r = log.open_reader(LogMessageId::EARLIEST, "after").await.unwrap();
    let first = read_n(&mut r, 1, Duration::from_secs(10)).await;
    assert_eq!(first[0].id, pos[2001]);
    r.close().await.unwrap();

    tokio::time::sleep(Duration::from_millis(1100)).await;
    log.run_maintenance().await.unwrap();
    let report = log.run_maintenance().await.unwrap();
    let segments = log.segments().await.unwrap();
    assert!(segments.iter().all(|s| s.id >= cut.segment_id), "segments below the cut remain: {segments:?} {report:?}");
    let log_dir = dir.path().join("files").join(log.id().to_string());
    for s in 0..cut.segment_id {
        assert!(!log_dir.join(s.to_string()).exists(), "segment {s} directory still exists");
    }
    let mut r = log.open_reader(LogMessageId::EARLIEST, "after-gc").await.unwrap();
    let rest = read_n(&mut r, 999, Duration::from_secs(10)).await;
    assert_eq!(rest.last().map(|m| m.payload.clone()), Some(payload(2999).into()));
}

#[tokio::test]
async fn delete_removes_metadata_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(local_config(dir.path(), "")).await.unwrap();
    client.create_log("gone").await.unwrap();
    let log = client.open_log("gone").await.unwrap();
    let w = log.open_writer().await.unwrap();
    w.write(WriteMessage::new("x")).await.unwrap();
    w.close().await.unwrap();
    let log_dir = dir.path().join("files").join(log.id().to_string());
    assert!(log_dir.exists());
    client.delete_log("gone").await.unwrap();
    assert!(!client.log_exists("gone").await.unwrap());
    assert!(!log_dir.exists(), "data directory must be removed");
    assert!(matches!(client.open_log("gone").await, Err(WoodpeckerError::Meta(_))));
    client.delete_log("gone").await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        "woodpecker:\n  client:\n    maxEntrySize: 1K\n  logstore:\n    segmentSyncPolicy:\n      maxFlushSize: 1K\n";
    let client = Client::open(local_config(dir.path(), cfg)).await.unwrap();
    for bad in ["", "a/b", "x\ny", &"n".repeat(300)] {
        let e = client.create_log(bad).await.unwrap_err();
        assert!(matches!(e, WoodpeckerError::InvalidLogName(_)), "{bad:?}: {e}");
    }
    client.create_log("ok").await.unwrap();
    assert!(matches!(client.create_log("ok").await, Err(WoodpeckerError::Meta(_))));
    let log = client.open_log("ok").await.unwrap();
    let w = log.open_writer().await.unwrap();
    assert!(matches!(w.write(WriteMessage::default()).await, Err(WoodpeckerError::EmptyMessage)));
    let e = w.write(WriteMessage::new(vec![0u8; 2048])).await.unwrap_err();
    assert!(matches!(e, WoodpeckerError::EntryTooLarge { max: 1024, .. }), "{e}");
    assert!(e.to_string().contains("maxEntrySize"), "{e}");
    w.write(WriteMessage::new("fine")).await.unwrap();
    w.close().await.unwrap();
    let e = log.truncate(LogMessageId::new(7, 0)).await.unwrap_err();
    assert!(matches!(e, WoodpeckerError::InvalidPosition { .. }), "{e}");
}

#[tokio::test]
async fn flipped_byte_fails_the_read_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(local_config(dir.path(), "")).await.unwrap();
    client.create_log("flip").await.unwrap();
    let log = client.open_log("flip").await.unwrap();
    let w = log.open_writer().await.unwrap();
    for i in 0..100 {
        w.write(WriteMessage::new(payload(i))).await.unwrap();
    }
    w.close().await.unwrap();
    let file = dir.path().join("files").join(log.id().to_string()).join("0").join("data.log");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[200] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let mut r = log.open_reader(LogMessageId::EARLIEST, "flip").await.unwrap();
    let mut err = None;
    for _ in 0..100 {
        match tokio::time::timeout(Duration::from_secs(5), r.read_next()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => {
                err = Some(e);
                break;
            }
            Err(_) => break,
        }
    }
    let err = err.expect("reading a corrupted block must fail, not skip or hang");
    let text = err.to_string();
    assert!(text.contains("data.log") && text.to_lowercase().contains("corrupt"), "{text}");
}

#[tokio::test]
async fn second_process_on_the_same_data_dir_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Client::open(local_config(dir.path(), "")).await.unwrap();
    let err = Client::open(local_config(dir.path(), "")).await.unwrap_err();
    assert!(err.to_string().contains("meta"), "{err}");
}

#[tokio::test]
async fn try_result_hands_out_the_outcome_once() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(local_config(dir.path(), "")).await.unwrap();
    client.create_log("lone").await.unwrap();
    let log = client.open_log("lone").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    // One small entry never fills a block; it goes at once as a short one (nothing else is in flight).
    let mut ack = writer.write_async(WriteMessage::new("only")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let id = loop {
        if let Some(outcome) = ack.try_result() {
            break outcome.unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "a lone entry was not flushed within 10 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert_eq!(id, LogMessageId::new(0, 0));
    // The outcome was taken: asking again, or awaiting, is an error rather than a hang or a panic.
    assert!(matches!(ack.try_result(), Some(Err(WoodpeckerError::WriterClosed { .. }))));
    assert!(matches!((&mut ack).await, Err(WoodpeckerError::WriterClosed { .. })));
    writer.close().await.unwrap();
    let mut reader = log.open_reader(LogMessageId::EARLIEST, "lone").await.unwrap();
    let msgs = read_n(&mut reader, 1, Duration::from_secs(10)).await;
    assert_eq!(&msgs[0].payload[..], b"only");
}

/// The write buffer (`maxBytes`) is taken per entry and given back per block, and on every failure
/// path: sixty times the buffer goes through, and a fenced writer's callers get errors, never a wait
/// for buffer room that would not come.
#[tokio::test]
async fn the_write_buffer_is_given_back_on_success_and_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "woodpecker:\n  client:\n    maxEntrySize: 4K\n  logstore:\n    segmentSyncPolicy:\n      maxFlushSize: 4K\n      maxBytes: 16K\n";
    let client = Client::open(local_config(dir.path(), cfg)).await.unwrap();
    client.create_log("budget").await.unwrap();
    let log = client.open_log("budget").await.unwrap();
    let first = log.open_writer().await.unwrap();
    let payload = vec![b'x'; 1000];
    let mut futures = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        for _ in 0..1000 {
            futures.push(first.write_async(WriteMessage::new(payload.clone())).await.unwrap());
        }
        for f in futures.drain(..) {
            f.await.unwrap();
        }
    })
    .await;
    assert!(all.is_ok(), "1 MB through a 16 KB buffer did not finish: buffer room was lost");

    // Entries queued behind the fence fail, and their buffer room comes back: more writes than the
    // buffer holds all return (with errors) instead of waiting.
    let queued: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..10 {
            v.push(first.write_async(WriteMessage::new(payload.clone())).await.unwrap());
        }
        v
    };
    let second = log.open_writer().await.unwrap();
    let outcomes = tokio::time::timeout(Duration::from_secs(30), async {
        let mut errors = 0;
        for f in queued {
            errors += usize::from(f.await.is_err());
        }
        for _ in 0..100 {
            match first.write_async(WriteMessage::new(payload.clone())).await {
                Ok(f) => errors += usize::from(f.await.is_err()),
                Err(_) => errors += 1,
            }
        }
        errors
    })
    .await
    .expect("a fenced writer's callers waited for buffer room");
    assert!(outcomes >= 100, "writes after the fence fail: {outcomes} errors");
    second.close().await.unwrap();
    client.close().await;
}

/// `flush` resolves when everything written before it is durable. (Entries queued behind a block in
/// flight are written when it is done anyway, by group commit; `flush` is how a caller waits for them.)
#[tokio::test]
async fn flush_resolves_once_everything_written_before_it_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    // The timer would take a minute: only the writer's own cutting can make the entries durable.
    let cfg = "woodpecker:\n  logstore:\n    segmentSyncPolicy:\n      maxIntervalForLocalStorage: 60000\n";
    let client = Client::open(local_config(dir.path(), cfg)).await.unwrap();
    client.create_log("flush").await.unwrap();
    let log = client.open_log("flush").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), writer.flush())
        .await
        .expect("a flush with nothing written returns at once")
        .unwrap();
    let mut futures = Vec::new();
    for i in 0..10 {
        futures.push(writer.write_async(WriteMessage::new(payload(i))).await.unwrap());
    }
    tokio::time::timeout(Duration::from_secs(10), writer.flush()).await.expect("flush took maxInterval").unwrap();
    for (i, f) in futures.iter_mut().enumerate() {
        let id = f.try_result().expect("durable once flush returned").unwrap();
        assert_eq!(id.entry_id, i as i64);
    }
    // Twice in a row, and with entries already durable: nothing to wait for.
    tokio::time::timeout(Duration::from_secs(5), writer.flush()).await.unwrap().unwrap();
    writer.close().await.unwrap();
    assert!(writer.flush().await.is_err(), "a closed writer cannot flush");
    client.close().await;
}

/// The segment's metadata was created but its storage writer could not start (here: a file stands where
/// the segment directory goes). The entries fail; once the obstacle is gone the same writer writes on in
/// that segment. It used to create the segment's metadata again with other bytes, take that for another
/// writer's segment and fence itself.
#[tokio::test]
async fn a_segment_whose_storage_failed_to_start_is_taken_up_again_not_a_self_fence() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = local_config(dir.path(), "");
    let segments_root = dir.path().join(cfg.minio.root_path.trim_matches('/'));
    let client = Client::open(cfg).await.unwrap();
    client.create_log("obstacle").await.unwrap();
    let log = client.open_log("obstacle").await.unwrap();
    let log_dir = segments_root.join(log.id().to_string());
    std::fs::create_dir_all(&log_dir).unwrap();
    let obstacle = log_dir.join("0");
    std::fs::write(&obstacle, b"not a directory").unwrap();
    let writer = log.open_writer().await.unwrap();
    let err = writer.write(WriteMessage::new("first")).await.expect_err("segment 0 cannot start");
    assert!(!matches!(err, WoodpeckerError::WriterFenced { .. }), "a storage failure is not a fence: {err}");
    assert_eq!(log.segments().await.unwrap().len(), 1, "segment 0's metadata was created");
    std::fs::remove_file(&obstacle).unwrap();
    let id = writer.write(WriteMessage::new("second")).await.expect("the writer takes segment 0 up again");
    assert_eq!(id, LogMessageId::new(0, 0));
    writer.close().await.unwrap();
    let mut reader = log.open_reader(LogMessageId::EARLIEST, "obstacle").await.unwrap();
    let msgs = read_n(&mut reader, 1, Duration::from_secs(10)).await;
    assert_eq!(&msgs[0].payload[..], b"second");
    client.close().await;
}
