//! Scenarios every [`ObjectStorage`] backend must pass; run by each backend's unit tests.

use std::sync::Arc;

use bytes::Bytes;

use super::{ObjectError, ObjectInfo, ObjectStorage};

/// Runs every single-task scenario against `store` (which must start empty).
pub(crate) async fn run_all(store: Arc<dyn ObjectStorage>) {
    put_get_and_ranged_get(store.as_ref()).await;
    put_if_absent_refuses_to_overwrite(store.as_ref()).await;
    fence_semantics(store.as_ref()).await;
    list_is_sorted_recursive_and_prefix_exact(store.as_ref()).await;
    remove_is_idempotent_and_remove_prefix_counts(store.as_ref()).await;
    empty_key_is_rejected(store.as_ref()).await;
}

async fn put_get_and_ranged_get(store: &dyn ObjectStorage) {
    let key = "rw/1/0.blk";
    assert!(matches!(store.get(key, None).await, Err(ObjectError::NotFound { .. })));
    assert!(matches!(store.stat(key).await, Err(ObjectError::NotFound { .. })));
    assert!(matches!(store.get(key, Some(0..1)).await, Err(ObjectError::NotFound { .. })));

    store.put(key, Bytes::from_static(b"0123456789")).await.unwrap();
    assert_eq!(store.get(key, None).await.unwrap(), &b"0123456789"[..]);
    assert_eq!(store.get(key, Some(2..5)).await.unwrap(), &b"234"[..]);
    assert_eq!(store.get(key, Some(7..100)).await.unwrap(), &b"789"[..]);
    assert_eq!(store.get(key, Some(3..3)).await.unwrap(), &b""[..]);
    assert!(matches!(store.get(key, Some(10..12)).await, Err(ObjectError::InvalidRange { .. })));
    assert_eq!(store.stat(key).await.unwrap(), ObjectInfo { key: key.into(), size: 10, fenced: false });

    // Unconditional put overwrites.
    store.put(key, Bytes::from_static(b"ab")).await.unwrap();
    assert_eq!(store.get(key, None).await.unwrap(), &b"ab"[..]);

    // Empty objects exist and have size 0.
    store.put("rw/empty", Bytes::new()).await.unwrap();
    assert_eq!(store.stat("rw/empty").await.unwrap().size, 0);
    assert_eq!(store.get("rw/empty", None).await.unwrap(), &b""[..]);
    store.remove_prefix("rw/").await.unwrap();
}

async fn put_if_absent_refuses_to_overwrite(store: &dyn ObjectStorage) {
    let key = "pia/0.blk";
    store.put_if_absent(key, Bytes::from_static(b"first")).await.unwrap();
    let err = store.put_if_absent(key, Bytes::from_static(b"second")).await.unwrap_err();
    assert!(matches!(&err, ObjectError::AlreadyExists { key: k } if k == key), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(store.get(key, None).await.unwrap(), &b"first"[..]);
    store.remove_prefix("pia/").await.unwrap();
}

async fn fence_semantics(store: &dyn ObjectStorage) {
    let fence = "fence/1/2/3.blk";
    store.put_fence(fence).await.unwrap();
    assert_eq!(store.stat(fence).await.unwrap(), ObjectInfo { key: fence.into(), size: 1, fenced: true });
    assert_eq!(store.get(fence, None).await.unwrap(), &b"F"[..]);
    // Idempotent.
    store.put_fence(fence).await.unwrap();
    // A stale writer's block upload onto the fence is refused as Fenced.
    let err = store.put_if_absent(fence, Bytes::from_static(b"late block")).await.unwrap_err();
    assert!(matches!(&err, ObjectError::Fenced { key } if key == fence), "{err}");
    assert_eq!(store.get(fence, None).await.unwrap(), &b"F"[..]);

    // Fencing onto a real block is refused as AlreadyExists and leaves the block alone.
    let block = "fence/1/2/2.blk";
    store.put_if_absent(block, Bytes::from_static(b"F")).await.unwrap();
    let err = store.put_fence(block).await.unwrap_err();
    assert!(matches!(&err, ObjectError::AlreadyExists { key } if key == block), "{err}");
    let info = store.stat(block).await.unwrap();
    assert!(!info.fenced, "a 1-byte normal object must not look like a fence");

    let listed = store.list("fence/").await.unwrap();
    assert_eq!(
        listed,
        vec![
            ObjectInfo { key: block.into(), size: 1, fenced: false },
            ObjectInfo { key: fence.into(), size: 1, fenced: true },
        ]
    );

    // An unconditional put replaces a fence with a normal object.
    store.put(fence, Bytes::from_static(b"data")).await.unwrap();
    assert!(!store.stat(fence).await.unwrap().fenced);
    store.remove_prefix("fence/").await.unwrap();
}

async fn list_is_sorted_recursive_and_prefix_exact(store: &dyn ObjectStorage) {
    let keys =
        ["ls/1/10/0.blk", "ls/1/1/footer.blk", "ls/1/1/1.blk", "ls/1/1/0.blk", "ls/1/2/0.blk", "ls/10/0/0.blk", "lsx"];
    for (i, k) in keys.iter().enumerate() {
        store.put(k, Bytes::from(vec![b'x'; i + 2])).await.unwrap();
    }
    let names = |v: Vec<ObjectInfo>| v.into_iter().map(|o| o.key).collect::<Vec<_>>();
    assert_eq!(names(store.list("ls/1/1/").await.unwrap()), ["ls/1/1/0.blk", "ls/1/1/1.blk", "ls/1/1/footer.blk"]);
    assert_eq!(
        names(store.list("ls/1/1").await.unwrap()),
        ["ls/1/1/0.blk", "ls/1/1/1.blk", "ls/1/1/footer.blk", "ls/1/10/0.blk"]
    );
    assert_eq!(
        names(store.list("ls/").await.unwrap()),
        ["ls/1/1/0.blk", "ls/1/1/1.blk", "ls/1/1/footer.blk", "ls/1/10/0.blk", "ls/1/2/0.blk", "ls/10/0/0.blk"]
    );
    assert_eq!(names(store.list("ls").await.unwrap()).len(), 7);
    assert!(store.list("nothing/here/").await.unwrap().is_empty());
    let sized = store.list("ls/1/1/0").await.unwrap();
    assert_eq!(sized, vec![ObjectInfo { key: "ls/1/1/0.blk".into(), size: 5, fenced: false }]);
    store.remove_prefix("ls").await.unwrap();
}

async fn remove_is_idempotent_and_remove_prefix_counts(store: &dyn ObjectStorage) {
    store.remove("rm/absent").await.unwrap();
    for k in ["rm/1/0.blk", "rm/1/1.blk", "rm/2/0.blk", "rmx/keep"] {
        store.put(k, Bytes::from_static(b"v")).await.unwrap();
    }
    store.put_fence("rm/1/2.blk").await.unwrap();
    store.remove("rm/1/0.blk").await.unwrap();
    store.remove("rm/1/0.blk").await.unwrap();
    assert!(matches!(store.stat("rm/1/0.blk").await, Err(ObjectError::NotFound { .. })));
    assert_eq!(store.remove_prefix("rm/").await.unwrap(), 3);
    assert_eq!(store.remove_prefix("rm/").await.unwrap(), 0);
    assert_eq!(store.list("rm").await.unwrap().len(), 1);
    // The removed keys can be created again, with or without conditions.
    store.put_if_absent("rm/1/2.blk", Bytes::from_static(b"again")).await.unwrap();
    assert_eq!(store.remove_prefix("rm").await.unwrap(), 2);
}

async fn empty_key_is_rejected(store: &dyn ObjectStorage) {
    assert!(matches!(store.put("", Bytes::new()).await, Err(ObjectError::InvalidKey { .. })));
    assert!(matches!(store.put_fence("").await, Err(ObjectError::InvalidKey { .. })));
}

/// 16 tasks race `put_if_absent` on one absent key: exactly one wins, the rest see
/// `AlreadyExists`, and the stored body is the winner's.
pub(crate) async fn create_race_has_one_winner(store: Arc<dyn ObjectStorage>, key: &str) {
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let store = store.clone();
        let barrier = barrier.clone();
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let body = Bytes::from(vec![i; 64 + usize::from(i)]);
            (i, store.put_if_absent(&key, body).await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, result) = t.await.unwrap();
        match result {
            Ok(()) => winners.push(i),
            Err(ObjectError::AlreadyExists { .. }) => {}
            Err(e) => panic!("task {i}: unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let body = store.get(key, None).await.unwrap();
    assert_eq!(body, Bytes::from(vec![winners[0]; 64 + usize::from(winners[0])]));
    store.remove(key).await.unwrap();
}
