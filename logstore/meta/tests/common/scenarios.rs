//! Scenarios every backend must pass; each takes a fresh fixture.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use woodpecker_meta::{
    DEFAULT_MAX_SEGMENT_ROLL_SIZE_BYTES, KvBackend, META_VERSION, MetaError, MetadataStore, Txn, TxnOp,
};
use woodpecker_proto::meta::{
    LogMeta, QuorumInfo, ReaderTempInfo, SegmentCleanupState, SegmentCleanupStatus, SegmentMetadata, SegmentState,
    Version,
};

use super::{Fixture, NamespacedKv, ReplyLosingKv, fast_options, keys_under, wait_until};

fn segment(seg_no: i64) -> SegmentMetadata {
    SegmentMetadata {
        seg_no,
        create_time: 1_700_000_000_000 + seg_no,
        state: SegmentState::Active as i32,
        last_entry_id: -1,
        quorum: Some(QuorumInfo {
            id: 1,
            es: 1,
            wq: 1,
            aq: 1,
            nodes: vec!["127.0.0.1:18080".to_owned()],
            replicas: vec![],
        }),
        ..SegmentMetadata::default()
    }
}

pub async fn create_exists_list_delete_log(f: &Fixture) {
    let store = f.store().await;
    assert!(!store.log_exists("orders").await.expect("exists"));
    let created = store.create_log("orders").await.expect("create");
    assert_eq!(created.value.log_id, 1);
    assert_eq!(created.value.truncated_segment_id, -1);
    assert_eq!(created.value.truncated_entry_id, -1);
    assert_eq!(created.value.max_segment_roll_size_bytes, DEFAULT_MAX_SEGMENT_ROLL_SIZE_BYTES);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    assert!(created.value.creation_timestamp.abs_diff(now) < 60, "timestamps are Unix seconds");
    store.create_log("orders-eu").await.expect("create");
    store.create_log("billing").await.expect("create");
    store.create_segment("orders", &segment(0)).await.expect("segment");
    assert!(store.log_exists("orders").await.expect("exists"));

    let read = store.get_log("orders").await.expect("get");
    assert_eq!(read.value, created.value);
    assert_eq!(read.revision, created.revision);

    assert_eq!(store.list_logs("").await.expect("list"), ["billing", "orders", "orders-eu"]);
    assert_eq!(store.list_logs("orders").await.expect("list"), ["orders", "orders-eu"]);

    store.delete_log("orders").await.expect("delete");
    assert!(!store.log_exists("orders").await.expect("exists"));
    assert_eq!(store.list_logs("").await.expect("list"), ["billing", "orders-eu"]);
    assert!(matches!(store.delete_log("orders").await, Err(MetaError::LogNotFound { name }) if name == "orders"));
}

pub async fn concurrent_create_of_one_name_has_exactly_one_winner(f: &Fixture) {
    let store = f.store().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        // Separate store instances, as separate processes would have.
        let s = MetadataStore::with_backend(f.kv.clone(), &f.root, "woodpecker").await.expect("open");
        tasks.push(tokio::spawn(async move { s.create_log("contended").await }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => wins += 1,
            Err(MetaError::LogAlreadyExists { name }) => assert_eq!(name, "contended"),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one creator must win");
    assert_eq!(store.get_log("contended").await.expect("get").value.log_id, 1);
}

pub async fn log_ids_increase_from_one(f: &Fixture) {
    let store = f.store().await;
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(store.create_log(name).await.expect("create").value.log_id);
    }
    assert_eq!(ids, [1, 2, 3]);
    let idgen = f.kv.get(&store.keys().log_id_gen()).await.expect("get").expect("idgen");
    assert_eq!(idgen.value, b"3");
    // Different names created concurrently all get distinct ids.
    let mut tasks = Vec::new();
    for i in 0..4 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move { s.create_log(&format!("p{i}")).await }));
    }
    let mut got = BTreeSet::new();
    for t in tasks {
        got.insert(t.await.expect("join").expect("create").value.log_id);
    }
    assert_eq!(got, BTreeSet::from([4, 5, 6, 7]));
}

pub async fn missing_log_is_not_found_and_not_retryable(f: &Fixture) {
    let store = f.store().await;
    let err = store.get_log("nope").await.expect_err("missing");
    assert!(matches!(&err, MetaError::LogNotFound { name } if name == "nope"), "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("nope"));
    let err = store.get_segment("nope", 3).await.expect_err("missing");
    assert!(matches!(err, MetaError::SegmentNotFound { segment: 3, .. }));
    assert!(store.list_segments("nope").await.expect("list").is_empty());
    assert!(matches!(store.acquire_writer_lock("nope").await, Err(MetaError::LogNotFound { .. })));
}

pub async fn invalid_log_names_are_rejected(f: &Fixture) {
    let store = f.store().await;
    for bad in ["", "a/b", "tab\tname"] {
        assert!(matches!(store.create_log(bad).await, Err(MetaError::InvalidName { .. })), "{bad:?}");
    }
}

pub async fn create_log_before_init_reports_not_initialised(f: &Fixture) {
    let store = f.raw_store().await;
    let err = store.create_log("x").await.expect_err("not initialised");
    assert!(matches!(&err, MetaError::NotInitialised { key, .. } if key.ends_with("/logidgen")), "{err}");
}

pub async fn init_is_idempotent_and_detects_partial_init(f: &Fixture) {
    let store = f.raw_store().await;
    store.init_if_necessary().await.expect("init");
    let instance = store.instance_id().await.expect("instance");
    assert_eq!(uuid::Uuid::parse_str(&instance).expect("uuid").to_string(), instance);
    assert_eq!(store.version().await.expect("version"), META_VERSION);
    store.init_if_necessary().await.expect("second init is a no-op");
    assert_eq!(store.instance_id().await.expect("instance"), instance);

    f.kv.txn(Txn::new().and_then(vec![TxnOp::delete(store.keys().quorum_id_gen())])).await.expect("delete");
    match store.init_if_necessary().await {
        Err(MetaError::PartiallyInitialised { missing, present, .. }) => {
            assert_eq!(missing, [store.keys().quorum_id_gen()]);
            assert_eq!(present.len(), 3);
        }
        other => panic!("expected PartiallyInitialised, got {other:?}"),
    }
}

pub async fn segment_create_conflicts_and_missing_log(f: &Fixture) {
    let store = f.store().await;
    store.create_log("l").await.expect("create");
    let created = store.create_segment("l", &segment(0)).await.expect("segment");
    assert_eq!(created.revision, created.create_revision);
    let err = store.create_segment("l", &segment(0)).await.expect_err("duplicate");
    assert!(matches!(&err, MetaError::SegmentAlreadyExists { log, segment: 0 } if log == "l"), "{err}");
    let err = store.create_segment("ghost", &segment(0)).await.expect_err("no log");
    assert!(matches!(&err, MetaError::LogNotFound { name } if name == "ghost"), "{err}");
    assert_eq!(store.get_segment("l", 0).await.expect("get").value, segment(0));
}

pub async fn segments_list_sorted_by_numeric_id(f: &Fixture) {
    let store = f.store().await;
    store.create_log("l").await.expect("create");
    for id in [10, 2, 1, 0] {
        store.create_segment("l", &segment(id)).await.expect("segment");
    }
    let ids: Vec<i64> = store.list_segments("l").await.expect("list").iter().map(|s| s.value.seg_no).collect();
    assert_eq!(ids, [0, 1, 2, 10]);
    store.delete_segment("l", 2).await.expect("delete");
    assert!(matches!(store.delete_segment("l", 2).await, Err(MetaError::SegmentNotFound { segment: 2, .. })));
    let ids: Vec<i64> = store.list_segments("l").await.expect("list").iter().map(|s| s.value.seg_no).collect();
    assert_eq!(ids, [0, 1, 10]);
}

pub async fn cas_updates_return_new_revision_and_detect_conflicts(f: &Fixture) {
    let store = f.store().await;
    let log = store.create_log("l").await.expect("create");
    let seg = store.create_segment("l", &segment(0)).await.expect("segment");

    let mut completed = seg.value.clone();
    completed.state = SegmentState::Completed as i32;
    completed.last_entry_id = 41;
    let rev1 = store.update_segment("l", &completed, seg.revision).await.expect("update");
    assert!(rev1 > seg.revision);
    // The stale revision now conflicts for any other change...
    let mut other = completed.clone();
    other.last_entry_id = 40;
    let err = store.update_segment("l", &other, seg.revision).await.expect_err("stale");
    assert!(matches!(&err, MetaError::RevisionConflict { key } if key.ends_with("/logs/l/segments/0")), "{err}");
    assert!(!err.is_retryable());
    // ...while repeating the change that was applied is recognised as done (a retry after a lost reply).
    assert_eq!(store.update_segment("l", &completed, seg.revision).await.expect("same change again"), rev1);
    // ...and the returned one works without a re-read (upstream §14.7).
    completed.state = SegmentState::Sealed as i32;
    let rev2 = store.update_segment("l", &completed, rev1).await.expect("update with returned revision");
    let read = store.get_segment("l", 0).await.expect("get");
    assert_eq!(read.revision, rev2);
    assert_eq!(read.value.state, SegmentState::Sealed as i32);
    assert!(matches!(
        store.update_segment("l", &segment(9), 1).await,
        Err(MetaError::SegmentNotFound { segment: 9, .. })
    ));

    let mut truncated = log.value;
    truncated.truncated_segment_id = 0;
    truncated.truncated_entry_id = 41;
    let lrev = store.update_log("l", &truncated, log.revision).await.expect("update log");
    assert!(matches!(store.update_log("l", &truncated, log.revision).await, Err(MetaError::RevisionConflict { .. })));
    let read = store.get_log("l").await.expect("get");
    assert_eq!((read.revision, read.value.truncated_entry_id), (lrev, 41));
    assert!(matches!(store.update_log("zz", &truncated, 1).await, Err(MetaError::LogNotFound { .. })));
}

pub async fn delete_log_parks_copies_and_removes_everything(f: &Fixture) {
    let store = f.store().await;
    let keep = store.create_log("keep").await.expect("create");
    let log = store.create_log("victim").await.expect("create");
    let id = log.value.log_id;
    // More segments than fit in one 120-op chunk of parked copies.
    for seg in 0..130 {
        store.create_segment("victim", &segment(seg)).await.expect("segment");
    }
    store.create_segment("keep", &segment(0)).await.expect("segment");
    let lock = store.acquire_writer_lock("victim").await.expect("lock");
    let reader = store
        .register_reader(id, &ReaderTempInfo { reader_name: "r1".to_owned(), log_id: id, ..Default::default() })
        .await
        .expect("reader");
    let status = SegmentCleanupStatus { log_id: id, segment_id: 0, ..Default::default() };
    store.create_cleanup_status(&status).await.expect("cleanup");
    // A marking record and upstream's exact lock key, written raw.
    let k = store.keys().clone();
    f.kv.txn(Txn::new().and_then(vec![
        TxnOp::put(k.marking(id, 0), b"x".to_vec()),
        TxnOp::put(k.lock_key_upstream("victim"), Vec::new()),
    ]))
    .await
    .expect("raw puts");

    store.delete_log("victim").await.expect("delete");

    let p = store.prefix().to_owned();
    let left: Vec<String> = keys_under(&f.kv, &format!("{p}/"))
        .await
        .into_iter()
        .filter(|key| !key.starts_with(&format!("{p}/logs-deleted/")))
        .collect();
    let expected =
        vec![k.instance(), k.log_id_gen(), k.log("keep"), k.segment("keep", 0), k.quorum_id_gen(), k.version()];
    assert_eq!(left, expected, "only the other log and the bootstrap keys remain");
    assert!(keep.value.log_id != id);

    let parked = keys_under(&f.kv, &format!("{p}/logs-deleted/")).await;
    assert_eq!(parked.len(), 131, "log + 130 segments parked");
    let parked_log = parked.iter().find(|key| !key.contains("/segments/")).expect("parked log key");
    let suffix = parked_log.strip_prefix(&format!("{p}/logs-deleted/victim-")).expect("parked name");
    assert!(suffix.parse::<i64>().expect("unix nanos") > 1_600_000_000_000_000_000);
    let parked_meta = f.kv.get(parked_log).await.expect("get").expect("parked");
    assert_eq!(LogMeta::decode(parked_meta.value.as_slice()).expect("decode").log_id, id);
    let seg_copy = f.kv.get(&format!("{parked_log}/segments/129")).await.expect("get").expect("parked segment");
    assert_eq!(SegmentMetadata::decode(seg_copy.value.as_slice()).expect("decode").seg_no, 129);

    // The log name is free again.
    let again = store.create_log("victim").await.expect("recreate");
    assert!(again.value.log_id > id);
    assert!(store.list_segments("victim").await.expect("list").is_empty());
    // The old writer learns that its lock key is gone.
    tokio::time::timeout(Duration::from_secs(10), lock.lost()).await.expect("lock of a deleted log is lost");
    drop(reader);
}

pub async fn second_writer_lock_is_refused_until_release(f: &Fixture) {
    let store = f.store().await;
    store.create_log("l").await.expect("create");
    let other = MetadataStore::with_backend(f.kv.clone(), &f.root, "woodpecker").await.expect("open");
    let lock = store.acquire_writer_lock("l").await.expect("first lock");
    assert!(lock.is_valid());
    assert!(lock.key().starts_with(&store.keys().lock_prefix("l")));
    assert_eq!(lock.key(), store.keys().lock_key("l", lock.lease_id()));
    let err = other.acquire_writer_lock("l").await.expect_err("held");
    assert!(matches!(&err, MetaError::LockHeld { log } if log == "l"), "{err}");
    // Same store, second writer: also refused (no sharing of one session, §14.8).
    assert!(matches!(store.acquire_writer_lock("l").await, Err(MetaError::LockHeld { .. })));
    // Failed attempts leave no keys behind.
    assert_eq!(keys_under(&f.kv, &store.keys().lock_prefix("l")).await, [lock.key().to_owned()]);
    lock.release().await.expect("release");
    assert!(keys_under(&f.kv, &store.keys().lock_prefix("l")).await.is_empty());
    let relock = other.acquire_writer_lock("l").await.expect("acquirable after release");
    relock.release().await.expect("release");
}

pub async fn dropped_writer_lock_becomes_acquirable(f: &Fixture) {
    let store = f.store().await;
    store.create_log("l").await.expect("create");
    drop(store.acquire_writer_lock("l").await.expect("lock"));
    let prefix = store.keys().lock_prefix("l");
    wait_until(Duration::from_secs(10), "the dropped lock's key to disappear", || async {
        keys_under(&f.kv, &prefix).await.is_empty()
    })
    .await;
    store.acquire_writer_lock("l").await.expect("acquirable after drop").release().await.expect("release");
}

pub async fn writer_lock_is_lost_when_its_lease_is_revoked(f: &Fixture) {
    let store = f.store().await;
    store.create_log("l").await.expect("create");
    let lock = store.acquire_writer_lock("l").await.expect("lock");
    lock.check().expect("valid");
    // Someone else (an operator, etcdctl) revokes the session lease.
    f.kv.revoke_lease(lock.lease_id()).await.expect("revoke");
    tokio::time::timeout(Duration::from_secs(10), lock.lost()).await.expect("lost() must fire within 10 s");
    assert!(!lock.is_valid());
    assert!(matches!(lock.check(), Err(MetaError::LockLost { log }) if log == "l"));
    assert!(keys_under(&f.kv, &store.keys().lock_prefix("l")).await.is_empty());
    let next = store.acquire_writer_lock("l").await.expect("a new writer can take over");
    next.release().await.expect("release");
}

pub async fn reader_registration_outlives_its_lease_ttl_while_held(f: &Fixture) {
    let store = f.store().await;
    assert_eq!(store.options().reader_lease_ttl, fast_options().reader_lease_ttl);
    let info = ReaderTempInfo {
        reader_name: "tailer".to_owned(),
        open_timestamp: 1,
        log_id: 7,
        recent_read_segment_id: 3,
        ..Default::default()
    };
    let reg = store.register_reader(7, &info).await.expect("register");
    assert_eq!(reg.key(), store.keys().reader(7, "tailer"));
    assert!(f.kv.get(reg.key()).await.expect("get").expect("key").lease != 0, "the key is lease-bound");
    // Well past the 2 s TTL: the keep-alive task must have refreshed it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(reg.is_alive().await);
    assert_eq!(store.list_readers(7).await.expect("list"), std::slice::from_ref(&info));
    let mut moved = info.clone();
    moved.recent_read_segment_id = 4;
    reg.update(&moved).await.expect("update");
    assert_eq!(store.list_readers(7).await.expect("list"), [moved]);
    let key = reg.key().to_owned();
    reg.close().await.expect("close");
    assert!(f.kv.get(&key).await.expect("get").is_none(), "close deletes the key");
    assert!(store.list_readers(7).await.expect("list").is_empty());
}

pub async fn condition_write_is_stored_once(f: &Fixture) {
    let store = f.store().await;
    assert_eq!(store.get_condition_write().await.expect("get"), None);
    assert!(!store.store_condition_write_if_absent(false).await.expect("store"));
    assert!(!store.store_condition_write_if_absent(true).await.expect("store"), "first decision sticks");
    let raw = f.kv.get(&store.keys().condition_write()).await.expect("get").expect("key");
    assert_eq!(raw.value, b"false");
    store.store_condition_write(true).await.expect("store");
    assert_eq!(store.get_condition_write().await.expect("get"), Some(true));
    let raw = f.kv.get(&store.keys().condition_write()).await.expect("get").expect("key");
    assert_eq!(raw.value, b"true");
}

pub async fn cleanup_records_lifecycle(f: &Fixture) {
    let store = f.store().await;
    assert!(store.get_cleanup_status(5, 1).await.expect("get").is_none());
    let mut status = SegmentCleanupStatus {
        log_id: 5,
        segment_id: 1,
        state: SegmentCleanupState::CleanupInProgress as i32,
        start_time: 10,
        quorum_cleanup_status: [("n1:18080".to_owned(), false)].into(),
        ..Default::default()
    };
    let created = store.create_cleanup_status(&status).await.expect("create");
    assert!(matches!(store.create_cleanup_status(&status).await, Err(MetaError::KeyAlreadyExists { .. })));
    status.state = SegmentCleanupState::CleanupCompleted as i32;
    status.quorum_cleanup_status.insert("n1:18080".to_owned(), true);
    let rev = store.update_cleanup_status(&status).await.expect("update");
    assert!(rev > created.revision);
    let read = store.get_cleanup_status(5, 1).await.expect("get").expect("record");
    assert_eq!(read.value, status);
    assert_eq!(store.list_cleanup_statuses(5).await.expect("list").len(), 1);
    store.delete_cleanup_status(5, 1).await.expect("delete");
    assert!(store.get_cleanup_status(5, 1).await.expect("get").is_none());
    let mut other = status.clone();
    other.segment_id = 2;
    assert!(matches!(store.update_cleanup_status(&other).await, Err(MetaError::KeyNotFound { .. })));
}

pub async fn legacy_prefix_wins_when_it_holds_data(f: &Fixture) {
    // The legacy prefix is absolute (`woodpecker/...`): isolate this test in a namespace.
    let ns: Arc<dyn KvBackend> = Arc::new(NamespacedKv { inner: f.kv.clone(), ns: format!("{}/ns/", f.root) });
    let fresh = MetadataStore::with_backend(ns.clone(), "by-dev", "woodpecker").await.expect("open");
    assert_eq!(fresh.prefix(), "by-dev/woodpecker");
    let defaulted = MetadataStore::with_backend(ns.clone(), "", "").await.expect("open");
    assert_eq!(defaulted.prefix(), "woodpecker");

    // Any one of the probed keys or prefixes under `woodpecker/` flips the choice.
    for legacy_key in ["woodpecker/logidgen", "woodpecker/logs/old-log", "woodpecker/cleaning/1/2"] {
        ns.txn(Txn::new().and_then(vec![TxnOp::put(legacy_key, b"0".to_vec())])).await.expect("put");
        let store = MetadataStore::with_backend(ns.clone(), "by-dev", "woodpecker").await.expect("open");
        assert_eq!(store.prefix(), "woodpecker", "legacy data at {legacy_key}");
        ns.txn(Txn::new().and_then(vec![TxnOp::delete(legacy_key)])).await.expect("delete");
    }
    // Keys merely sharing the text prefix do not count.
    ns.txn(Txn::new().and_then(vec![TxnOp::put("woodpecker/woodpecker/logidgen", b"0".to_vec())])).await.expect("put");
    let store = MetadataStore::with_backend(ns.clone(), "by-dev", "woodpecker").await.expect("open");
    assert_eq!(store.prefix(), "by-dev/woodpecker");
}

pub async fn golden_keys_for_a_log_with_two_segments(f: &Fixture) {
    let store = f.store().await;
    let p = format!("{}/woodpecker", f.root);
    assert_eq!(store.prefix(), p);
    store.create_log("golden").await.expect("create");
    store.create_segment("golden", &segment(0)).await.expect("segment");
    store.create_segment("golden", &segment(1)).await.expect("segment");

    let kvs = f.kv.range(&format!("{p}/")).await.expect("range");
    let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    let want = [
        format!("{p}/instance"),
        format!("{p}/logidgen"),
        format!("{p}/logs/golden"),
        format!("{p}/logs/golden/segments/0"),
        format!("{p}/logs/golden/segments/1"),
        format!("{p}/quorumidgen"),
        format!("{p}/version"),
    ];
    assert_eq!(keys, want);
    let value = |suffix: &str| kvs.iter().find(|kv| kv.key == format!("{p}/{suffix}")).expect(suffix).value.clone();
    assert_eq!(value("logidgen"), b"1");
    assert_eq!(value("quorumidgen"), b"0");
    // Version{major:1}: proto3 omits the zero minor/patch, so the bytes are exactly 08 01.
    assert_eq!(value("version"), [0x08, 0x01]);
    assert_eq!(Version::decode(value("version").as_slice()).expect("decode"), META_VERSION);
    let meta = LogMeta::decode(value("logs/golden").as_slice()).expect("decode");
    assert_eq!(
        (
            meta.log_id,
            meta.max_segment_roll_time_seconds,
            meta.compaction_buffer_size_bytes,
            meta.max_compaction_file_count
        ),
        (1, 60, 128 * 1024 * 1024, 600)
    );
    assert_eq!(SegmentMetadata::decode(value("logs/golden/segments/1").as_slice()).expect("decode"), segment(1));
    assert_eq!(value("logs/golden/segments/0"), segment(0).encode_to_vec());
    // Nothing outside P was written.
    assert_eq!(keys_under(&f.kv, &format!("{}/", f.root)).await.len(), want.len());
}

/// Revision bookkeeping must match etcd's; checked as deltas so it runs on a shared etcd too.
pub async fn kv_revisions_follow_etcd_semantics(f: &Fixture) {
    let kv = &f.kv;
    let k = |s: &str| format!("{}/kv/{s}", f.root);
    let put = |key: String, v: &str| Txn::new().and_then(vec![TxnOp::put(key, v.as_bytes().to_vec())]);
    // On a shared etcd other tests write concurrently: there the revision only has to increase.
    let next = |prev: i64, now: i64| {
        if f.exclusive {
            assert_eq!(now, prev + 1, "one revision per writing transaction");
        } else {
            assert!(now > prev, "revision must increase: {prev} -> {now}");
        }
    };

    let r0 = kv.txn(put(k("a"), "1")).await.expect("put").revision;
    let a = kv.get(&k("a")).await.expect("get").expect("a");
    assert_eq!((a.create_revision, a.mod_revision, a.version), (r0, r0, 1));

    let r1 = kv.txn(put(k("a"), "2")).await.expect("put").revision;
    next(r0, r1);
    let a = kv.get(&k("a")).await.expect("get").expect("a");
    assert_eq!((a.create_revision, a.mod_revision, a.version, a.value.as_slice()), (r0, r1, 2, &b"2"[..]));

    // One transaction, one revision for every key it writes.
    let both = Txn::new().and_then(vec![TxnOp::put(k("b"), b"x".to_vec()), TxnOp::put(k("c"), b"y".to_vec())]);
    let r2 = kv.txn(both).await.expect("txn").revision;
    next(r1, r2);
    let b = kv.get(&k("b")).await.expect("get").expect("b");
    let c = kv.get(&k("c")).await.expect("get").expect("c");
    assert_eq!((b.mod_revision, c.mod_revision, c.create_revision), (r2, r2, r2));

    // Reads and deletes of missing keys do not move the revision (nor the keys' revisions).
    let read = kv.txn(Txn::new().and_then(vec![TxnOp::get(k("a"))])).await.expect("read");
    assert_eq!(read.get_result(0)[0].value, b"2");
    assert_eq!(read.get_result(0)[0].mod_revision, r1);
    let noop = kv.txn(Txn::new().and_then(vec![TxnOp::delete(k("missing"))])).await.expect("delete");
    assert_eq!(noop.results, [woodpecker_meta::TxnOpResult::Delete { deleted: 0 }]);
    if f.exclusive {
        assert_eq!((read.revision, noop.revision), (r2, r2));
    }

    // Delete then re-create: a new create revision and version 1.
    let r3 = kv.txn(Txn::new().and_then(vec![TxnOp::delete(k("a"))])).await.expect("delete").revision;
    next(r2, r3);
    assert!(kv.get(&k("a")).await.expect("get").is_none());
    let r4 = kv.txn(put(k("a"), "3")).await.expect("put").revision;
    next(r3, r4);
    let a = kv.get(&k("a")).await.expect("get").expect("a");
    assert_eq!((a.create_revision, a.mod_revision, a.version), (r4, r4, 1));

    // Prefix delete counts keys and bumps once.
    let del = kv.txn(Txn::new().and_then(vec![TxnOp::delete_prefix(k(""))])).await.expect("delete prefix");
    assert_eq!(del.results, [woodpecker_meta::TxnOpResult::Delete { deleted: 3 }]);
    next(r4, del.revision);
}

/// Guards: value compares on missing keys are false, revision compares treat missing as 0,
/// and the failure branch runs (and reports) when any guard fails.
pub async fn kv_txn_compares_choose_the_branch(f: &Fixture) {
    use woodpecker_meta::{Compare, CompareOp, CompareTarget};
    let kv = &f.kv;
    let k = |s: &str| format!("{}/kv/{s}", f.root);
    let cmp = |key: String, op, target| Compare { key, op, target };

    let missing_value = Txn::new()
        .when(vec![cmp(k("m"), CompareOp::NotEqual, CompareTarget::Value(b"z".to_vec()))])
        .and_then(vec![TxnOp::put(k("m"), b"1".to_vec())])
        .or_else(vec![TxnOp::get(k("m"))]);
    let resp = kv.txn(missing_value).await.expect("txn");
    assert!(!resp.succeeded, "a value compare against a missing key is false, even !=");
    assert!(resp.get_result(0).is_empty());

    let created =
        kv.txn(Txn::new().when(vec![Compare::absent(k("m"))]).and_then(vec![TxnOp::put(k("m"), b"1".to_vec())]));
    let rev = created.await.expect("txn").revision;
    for (target, op, want) in [
        (CompareTarget::Value(b"1".to_vec()), CompareOp::Equal, true),
        (CompareTarget::Value(b"0".to_vec()), CompareOp::Greater, true),
        (CompareTarget::Value(b"2".to_vec()), CompareOp::Less, true),
        (CompareTarget::ModRevision(rev), CompareOp::Equal, true),
        (CompareTarget::ModRevision(rev - 1), CompareOp::Greater, true),
        (CompareTarget::CreateRevision(rev + 1), CompareOp::Less, true),
        (CompareTarget::CreateRevision(0), CompareOp::Equal, false),
        (CompareTarget::ModRevision(rev), CompareOp::NotEqual, false),
    ] {
        let txn = Txn::new().when(vec![cmp(k("m"), op, target.clone())]);
        assert_eq!(kv.txn(txn).await.expect("txn").succeeded, want, "{op:?} {target:?}");
    }
    // All guards must hold.
    let mixed = Txn::new()
        .when(vec![Compare::present(k("m")), Compare::present(k("nope"))])
        .and_then(vec![TxnOp::delete(k("m"))])
        .or_else(vec![TxnOp::GetPrefix { prefix: k(""), limit: Some(1) }]);
    let resp = kv.txn(mixed).await.expect("txn");
    assert!(!resp.succeeded);
    assert_eq!(resp.get_result(0).len(), 1);
    assert!(kv.get(&k("m")).await.expect("get").is_some(), "the success branch did not run");
}

/// Lease-bound keys go away with the lease; puts on an unknown lease are refused.
pub async fn kv_leases_bind_keys(f: &Fixture) {
    let kv = &f.kv;
    let key = format!("{}/kv/leased", f.root);
    let lease = kv.grant_lease(Duration::from_secs(30)).await.expect("grant");
    let put = TxnOp::Put { key: key.clone(), value: b"v".to_vec(), lease: Some(lease) };
    kv.txn(Txn::new().and_then(vec![put])).await.expect("put");
    assert_eq!(kv.get(&key).await.expect("get").expect("key").lease, lease);
    let mut keeper = kv.keep_alive(lease).await.expect("keeper");
    assert!(keeper.keep_alive_once().await.expect("keep alive") > 0);
    kv.revoke_lease(lease).await.expect("revoke");
    assert!(kv.get(&key).await.expect("get").is_none());
    assert!(keeper.keep_alive_once().await.expect("keep alive") <= 0, "a revoked lease reports ttl <= 0");
    kv.revoke_lease(lease).await.expect("revoking twice is fine");
    let orphan = TxnOp::Put { key: key.clone(), value: b"v".to_vec(), lease: Some(lease) };
    let err = kv.txn(Txn::new().and_then(vec![orphan])).await.expect_err("unknown lease");
    assert!(matches!(err, MetaError::LeaseNotFound { .. }), "{err}");
}

pub async fn marking_records_use_revision_cas(f: &Fixture) {
    use woodpecker_proto::meta::{SegmentCompactedNotifyState, SegmentCompactedNotifyStatus};
    let store = f.store().await;
    let mut status = SegmentCompactedNotifyStatus {
        log_id: 9,
        segment_id: 4,
        state: SegmentCompactedNotifyState::NotifyInProgress as i32,
        quorum_notify_status: [("n1:18080".to_owned(), false), ("n2:18080".to_owned(), false)].into(),
        ..Default::default()
    };
    let created = store.create_marking_status(&status).await.expect("create");
    assert!(matches!(store.create_marking_status(&status).await, Err(MetaError::KeyAlreadyExists { .. })));
    // An operator confirms; the distributor's stale write must not clobber it.
    let mut confirmed = status.clone();
    confirmed.state = SegmentCompactedNotifyState::NotifyOperatorConfirmed as i32;
    let rev = store.update_marking_status(&confirmed, created.revision).await.expect("confirm");
    status.quorum_notify_status.insert("n1:18080".to_owned(), true);
    let err = store.update_marking_status(&status, created.revision).await.expect_err("stale");
    assert!(matches!(err, MetaError::RevisionConflict { .. }), "{err}");
    let read = store.get_marking_status(9, 4).await.expect("get").expect("record");
    assert_eq!((read.revision, read.value.state), (rev, SegmentCompactedNotifyState::NotifyOperatorConfirmed as i32));
    assert_eq!(store.list_marking_statuses(9).await.expect("list").len(), 1);
    store.delete_marking_status(9, 4).await.expect("delete");
    assert!(matches!(store.update_marking_status(&status, rev).await, Err(MetaError::KeyNotFound { .. })));
    assert!(store.get_marking_status(9, 4).await.expect("get").is_none());
}

pub async fn a_later_writer_epoch_stops_segment_creation_by_earlier_writers(f: &Fixture) {
    let store = f.store().await;
    let log = store.create_log("l").await.expect("create");
    let id = log.value.log_id;
    let first = store.open_writer_epoch("l", id, "first").await.expect("epoch");
    store.create_segment_in_epoch("l", &segment(0), &first).await.expect("segment 0 by the first writer");
    let second = store.open_writer_epoch("l", id, "second").await.expect("epoch");
    assert!(second.number() > first.number(), "{second:?} after {first:?}");
    let err = store.create_segment_in_epoch("l", &segment(1), &first).await.expect_err("stale epoch");
    assert!(
        matches!(&err, MetaError::EpochSuperseded { log, mine, current }
            if log == "l" && *mine == first.number() && *current == second.number()),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert!(matches!(store.get_segment("l", 1).await, Err(MetaError::SegmentNotFound { .. })), "nothing was created");
    store.create_segment_in_epoch("l", &segment(1), &second).await.expect("segment 1 by the second writer");
    // A segment that exists with other bytes is another writer's, whatever the epoch says.
    let mut theirs = segment(2);
    theirs.create_time += 1;
    store.create_segment("l", &theirs).await.expect("segment 2 by a writer outside the epoch scheme");
    let err = store.create_segment_in_epoch("l", &segment(2), &second).await.expect_err("taken");
    assert!(matches!(err, MetaError::SegmentAlreadyExists { segment: 2, .. }), "{err}");
    let err = store.open_writer_epoch("ghost", 99, "x").await.expect_err("no log");
    assert!(matches!(err, MetaError::LogNotFound { .. }), "{err}");
    // Deleting the log removes its epoch key.
    let epoch_key = store.keys().writer_epoch(id);
    store.delete_log("l").await.expect("delete");
    assert!(f.kv.get(&epoch_key).await.expect("get").is_none(), "{epoch_key} outlived its log");
}

pub async fn writes_whose_reply_was_lost_are_recognised_by_their_writer_on_retry(f: &Fixture) {
    let lossy = Arc::new(ReplyLosingKv::new(f.kv.clone()));
    let store = MetadataStore::with_backend(lossy.clone(), &f.root, "woodpecker")
        .await
        .expect("open store")
        .with_options(fast_options());
    store.init_if_necessary().await.expect("init");
    let log = store.create_log("l").await.expect("create");
    let epoch = store.open_writer_epoch("l", log.value.log_id, "me").await.expect("epoch");

    lossy.lose_next_reply();
    let err = store.create_segment_in_epoch("l", &segment(0), &epoch).await.expect_err("reply lost");
    assert!(err.is_retryable(), "a lost reply reads as a transient failure: {err}");
    let created =
        store.create_segment_in_epoch("l", &segment(0), &epoch).await.expect("the retry finds its own segment");
    assert_eq!(created.value, segment(0));
    assert_eq!(created.revision, store.get_segment("l", 0).await.expect("get").revision);

    let mut completed = segment(0);
    completed.state = SegmentState::Completed as i32;
    completed.last_entry_id = 7;
    lossy.lose_next_reply();
    store.update_segment("l", &completed, created.revision).await.expect_err("reply lost");
    let rev = store.update_segment("l", &completed, created.revision).await.expect("the retry finds its own update");
    let read = store.get_segment("l", 0).await.expect("get");
    assert_eq!((read.revision, read.value), (rev, completed));
}
