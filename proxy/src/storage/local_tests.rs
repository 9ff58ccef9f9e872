//! What only the local backend does, beside the shared suite (`storage::tests`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use futures::stream;

use super::{
    tests::{chunks, key},
    BlobKey, BlobStore, LocalStore,
};

#[tokio::test]
async fn local_put_file_moves_the_staged_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("nar"), dir.path().join("tmp"))
        .await
        .unwrap();
    let staged = dir.path().join("tmp").join("x.tmp");
    std::fs::write(&staged, b"staged bytes").unwrap();
    store.put_file(&key(3), &staged).await.unwrap();
    assert!(!staged.exists());
    assert_eq!(store.stat(&key(3)).await.unwrap(), Some(12));
}

#[tokio::test]
async fn local_put_stream_dropped_midway_leaves_no_temp_file() {
    // A client that hangs up mid-upload drops the put: its temp file goes with it. The key is
    // a log's with the longest name Nix allows, which must still make a valid temp name.
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("nar"), dir.path().join("tmp"))
        .await
        .unwrap();
    let drv = format!("log/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-{}.drv", "a".repeat(207));
    let k = BlobKey::for_side_file(&nixcache_protocol::SideFile::parse(&drv).unwrap());
    let body: super::ByteStream = Box::pin(futures::StreamExt::chain(
        stream::iter([Ok(Bytes::from_static(b"first chunk"))]),
        stream::pending(),
    ));
    let put = tokio::time::timeout(std::time::Duration::from_millis(200), store.put_stream(&k, body));
    assert!(put.await.is_err(), "the put should still be waiting for its body");
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert_eq!(store.stat(&k).await.unwrap(), None);
    store.put_stream(&k, chunks(b"whole log")).await.unwrap();
    assert_eq!(store.stat(&k).await.unwrap(), Some(9));
}
