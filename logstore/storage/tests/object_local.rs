//! `LocalObjectStorage` across real processes: create-if-absent and fences must hold between
//! processes that share nothing but the directory (link(2)/symlink(2) atomicity).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use woodpecker_storage::object::{LocalObjectStorage, ObjectError, ObjectStorage, probe_condition_write};

const RACERS: usize = 8;
const KEYS: usize = 40;
const DIR_ENV: &str = "WP_OBJECT_RACER_DIR";
const ID_ENV: &str = "WP_OBJECT_RACER_ID";

/// Even keys: every racer creates a block. Odd keys: even racers fence, odd racers create a block.
fn racer_fences(key_index: usize, racer: usize) -> bool {
    !key_index.is_multiple_of(2) && racer.is_multiple_of(2)
}

/// Body of (and entry point for) one racing child process; run only by the test below.
#[tokio::test]
#[ignore = "helper process for racing_processes_agree_on_one_creator_per_key"]
async fn racer_process() {
    let dir =
        std::env::var(DIR_ENV).expect("racer_process is started by racing_processes_agree_on_one_creator_per_key");
    let id: usize = std::env::var(ID_ENV).unwrap().parse().unwrap();
    let store = LocalObjectStorage::open(Path::new(&dir).join("objects")).unwrap();
    let go = Path::new(&dir).join("go");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !go.exists() {
        assert!(Instant::now() < deadline, "no start signal within 60 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    for k in 0..KEYS {
        let key = format!("race/{k}.blk");
        let outcome = if racer_fences(k, id) {
            match store.put_fence(&key).await {
                Ok(()) => "fence-ok",
                Err(ObjectError::AlreadyExists { .. }) => "exists",
                Err(e) => panic!("racer {id} fence {key}: {e}"),
            }
        } else {
            match store.put_if_absent(&key, Bytes::from(format!("racer {id}"))).await {
                Ok(()) => "won",
                Err(ObjectError::AlreadyExists { .. }) => "exists",
                Err(ObjectError::Fenced { .. }) => "fenced",
                Err(e) => panic!("racer {id} create {key}: {e}"),
            }
        };
        println!("RESULT {id} {k} {outcome}");
    }
}

#[tokio::test]
async fn racing_processes_agree_on_one_creator_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..RACERS)
        .map(|id| {
            Command::new(&exe)
                .args(["--exact", "racer_process", "--ignored", "--nocapture", "--test-threads=1"])
                .env(DIR_ENV, dir.path())
                .env(ID_ENV, id.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Let every child reach its wait loop, then release them together.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(dir.path().join("go"), b"").unwrap();

    // outcomes[k][racer] = what that racer saw for key k.
    let mut outcomes: BTreeMap<usize, BTreeMap<usize, String>> = BTreeMap::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "racer failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // The harness may print "test racer_process ... " on the same line before ours.
            let Some(at) = line.find("RESULT ") else { continue };
            let parts: Vec<&str> = line[at..].split_whitespace().collect();
            if let ["RESULT", id, k, outcome] = parts[..] {
                outcomes.entry(k.parse().unwrap()).or_default().insert(id.parse().unwrap(), outcome.to_owned());
            }
        }
    }
    assert_eq!(outcomes.len(), KEYS);

    let store = LocalObjectStorage::open(dir.path().join("objects")).unwrap();
    for (k, seen) in &outcomes {
        assert_eq!(seen.len(), RACERS, "key {k}: {seen:?}");
        let key = format!("race/{k}.blk");
        let info = store.stat(&key).await.unwrap();
        let winners: Vec<usize> = seen.iter().filter(|(_, o)| *o == "won").map(|(id, _)| *id).collect();
        if info.fenced {
            assert!(winners.is_empty(), "key {k}: fenced yet created by {winners:?}");
            for (id, o) in seen {
                let want = if racer_fences(*k, *id) { "fence-ok" } else { "fenced" };
                assert_eq!(o, want, "key {k} racer {id}: {seen:?}");
            }
        } else {
            assert_eq!(winners.len(), 1, "key {k}: {seen:?}");
            for (id, o) in seen {
                if *id != winners[0] {
                    assert_eq!(o, "exists", "key {k} racer {id}: {seen:?}");
                }
            }
            let body = store.get(&key, None).await.unwrap();
            assert_eq!(body, Bytes::from(format!("racer {}", winners[0])), "key {k}");
        }
    }
    // No temporary file survives a clean run.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("objects/race"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".wp-tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn local_directory_passes_the_condition_write_probe() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalObjectStorage::open(dir.path()).unwrap();
    assert!(probe_condition_write(&store, "files").await.unwrap());
    assert!(store.list("").await.unwrap().is_empty());
    assert!(store.describe().starts_with("file://"));
}

#[tokio::test]
async fn objects_and_fences_survive_reopening_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LocalObjectStorage::open(dir.path()).unwrap();
        store.put_if_absent("files/1/0/0.blk", Bytes::from_static(b"block zero")).await.unwrap();
        store.put_fence("files/1/0/1.blk").await.unwrap();
    }
    let store = LocalObjectStorage::open(dir.path()).unwrap();
    assert_eq!(store.get("files/1/0/0.blk", Some(6..10)).await.unwrap(), &b"zero"[..]);
    assert!(store.stat("files/1/0/1.blk").await.unwrap().fenced);
    assert!(matches!(
        store.put_if_absent("files/1/0/1.blk", Bytes::from_static(b"late")).await,
        Err(ObjectError::Fenced { .. })
    ));
}
