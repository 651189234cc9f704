//! Crash safety and exclusivity of the embedded store's files.

use std::path::Path;
use std::time::Duration;

use woodpecker_meta::{EmbeddedKv, KvBackend, MetaError, MetadataStore, Txn, TxnOp};

fn put(key: &str, value: &str) -> Txn {
    Txn::new().and_then(vec![TxnOp::put(key, value.as_bytes().to_vec())])
}

async fn open(dir: &Path) -> EmbeddedKv {
    EmbeddedKv::open(dir).await.expect("open")
}

/// Opens, commits `n` single-key transactions `k0..k{n-1}`, closes; returns the journal length
/// after each commit (opening compacts, so the journal starts empty).
async fn commit_n(dir: &Path, n: usize) -> Vec<u64> {
    let kv = open(dir).await;
    let mut lens = Vec::new();
    for i in 0..n {
        kv.txn(put(&format!("k{i}"), &format!("value-{i}"))).await.expect("put");
        lens.push(std::fs::metadata(dir.join("journal")).expect("journal").len());
    }
    lens
}

#[tokio::test]
async fn committed_writes_survive_reopen_with_their_revisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rev, create) = {
        let kv = open(dir.path()).await;
        kv.txn(put("a", "1")).await.expect("put");
        let rev = kv.txn(put("a", "2")).await.expect("put").revision;
        kv.txn(put("b", "x")).await.expect("put");
        kv.txn(Txn::new().and_then(vec![TxnOp::delete("b")])).await.expect("delete");
        let a = kv.get("a").await.expect("get").expect("a");
        (rev, a.create_revision)
    };
    let kv = open(dir.path()).await;
    let a = kv.get("a").await.expect("get").expect("a survives");
    assert_eq!((a.value.as_slice(), a.mod_revision, a.create_revision, a.version), (&b"2"[..], rev, create, 2));
    assert!(kv.get("b").await.expect("get").is_none(), "the delete survives too");
    // The revision counter continues where it stopped.
    assert_eq!(kv.txn(put("c", "1")).await.expect("put").revision, rev + 3);
    drop(kv);
    // And again after the reopen compacted everything into the snapshot.
    let kv = open(dir.path()).await;
    assert_eq!(kv.get("c").await.expect("get").expect("c").mod_revision, rev + 3);
    assert_eq!(std::fs::metadata(dir.path().join("journal")).expect("journal").len(), 0);
}

#[tokio::test]
async fn torn_journal_tail_is_dropped_and_earlier_commits_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lens = commit_n(dir.path(), 3).await;
    // Cut the last record in half, as a crash during its write would.
    let cut = lens[1] + (lens[2] - lens[1]) / 2;
    let journal = dir.path().join("journal");
    let f = std::fs::OpenOptions::new().write(true).open(&journal).expect("open journal");
    f.set_len(cut).expect("truncate");
    drop(f);

    let kv = open(dir.path()).await;
    assert_eq!(kv.get("k0").await.expect("get").expect("k0").value, b"value-0");
    assert_eq!(kv.get("k1").await.expect("get").expect("k1").value, b"value-1");
    assert!(kv.get("k2").await.expect("get").is_none(), "the torn commit never returned Ok");
    // New commits after recovery land cleanly and survive another reopen.
    kv.txn(put("k3", "value-3")).await.expect("put");
    drop(kv);
    let kv = open(dir.path()).await;
    assert_eq!(kv.get("k3").await.expect("get").expect("k3").value, b"value-3");
    assert!(kv.get("k1").await.expect("get").is_some());
}

#[tokio::test]
async fn zero_filled_tail_is_a_torn_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lens = commit_n(dir.path(), 2).await;
    let journal = dir.path().join("journal");
    let f = std::fs::OpenOptions::new().write(true).open(&journal).expect("open journal");
    f.set_len(lens[1] + 64).expect("extend with zeros");
    drop(f);
    let kv = open(dir.path()).await;
    assert!(kv.get("k1").await.expect("get").is_some());
}

#[tokio::test]
async fn flipped_byte_mid_journal_is_corruption_naming_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lens = commit_n(dir.path(), 3).await;
    let journal = dir.path().join("journal");
    let mut bytes = std::fs::read(&journal).expect("read");
    // Inside the payload of the second record (header is 12 bytes).
    let at = usize::try_from(lens[0]).expect("len") + 12 + 4;
    bytes[at] ^= 0x01;
    std::fs::write(&journal, &bytes).expect("write");

    match EmbeddedKv::open(dir.path()).await {
        Err(MetaError::CorruptFile { path, offset, reason }) => {
            assert_eq!(path, journal);
            assert_eq!(offset, lens[0], "offset of the damaged record");
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected CorruptFile, got {other:?}"),
    }
    // Nothing was repaired or truncated behind the operator's back.
    assert_eq!(std::fs::read(&journal).expect("read"), bytes);
}

#[tokio::test]
async fn damaged_snapshot_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    commit_n(dir.path(), 2).await;
    drop(open(dir.path()).await); // compacts into the snapshot
    let snapshot = dir.path().join("snapshot");
    let mut bytes = std::fs::read(&snapshot).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&snapshot, &bytes).expect("write");
    assert!(matches!(EmbeddedKv::open(dir.path()).await, Err(MetaError::CorruptFile { .. })));
}

#[tokio::test]
async fn second_open_of_a_directory_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path()).await;
    match EmbeddedKv::open(dir.path()).await {
        Err(MetaError::StoreInUse { path }) => assert_eq!(path, dir.path().join("LOCK")),
        other => panic!("expected StoreInUse, got {other:?}"),
    }
    let err = MetadataStore::open_embedded(dir.path()).await.expect_err("in use");
    assert!(err.to_string().contains("in use"), "{err}");
    drop(first);
    open(dir.path()).await;
}

#[tokio::test]
async fn lease_bound_keys_do_not_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let kv = open(dir.path()).await;
        let lease = kv.grant_lease(Duration::from_secs(60)).await.expect("grant");
        kv.txn(Txn::new().and_then(vec![
            TxnOp::Put { key: "leased".to_owned(), value: b"v".to_vec(), lease: Some(lease) },
            TxnOp::put("durable", "v"),
        ]))
        .await
        .expect("put");
    }
    let kv = open(dir.path()).await;
    assert!(kv.get("leased").await.expect("get").is_none());
    assert!(kv.get("durable").await.expect("get").is_some());
}

#[tokio::test]
async fn metadata_survives_reopen_under_the_default_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = MetadataStore::open_embedded(dir.path()).await.expect("open");
        store.init_if_necessary().await.expect("init");
        store.create_log("l").await.expect("create");
        store.acquire_writer_lock("l").await.expect("lock").release().await.expect("release");
    }
    let store = MetadataStore::open_embedded(dir.path()).await.expect("reopen");
    assert_eq!(store.prefix(), "woodpecker/woodpecker");
    assert_eq!(store.get_log("l").await.expect("get").value.log_id, 1);
    assert_eq!(store.create_log("m").await.expect("create").value.log_id, 2);
}
