//! NAR uploads that go wrong: a body under a wrong name that decompresses to a lot, a client
//! that hangs up during verification, a database that fails between the object and its row.
//! None may cost more than its bytes, leave a temp file, or leave an object no row knows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{
    wait_until,
    writable::{start, upload_entry, TOKEN},
    TIMEOUT,
};
use nixcache_protocol::{NarFile, Sha256Hash};
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;

/// A zstd frame of `blocks` RLE blocks of 128 KiB zeros: 4 bytes of body per 128 KiB of NAR.
fn zstd_zeros(blocks: usize) -> Vec<u8> {
    const BLOCK: u32 = 128 << 10;
    // Magic; no content size, checksum or dictionary; a 128 KiB window (2^(10+7)).
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3];
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let header = (BLOCK << 3) | (1 << 1) | last; // size, type RLE, last block
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

fn zst_name(body: &[u8]) -> String {
    NarFile::parse(&format!("{}.nar.zst", Sha256Hash::digest(body).to_nixbase32()))
        .unwrap()
        .file_name()
}

#[test]
fn the_bomb_is_valid_zstd() {
    let zeros = zstd::decode_all(&zstd_zeros(3)[..]).unwrap();
    assert!(zeros.len() == 3 << 17 && zeros.iter().all(|b| *b == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_body_under_a_wrong_name_is_refused_before_it_is_decompressed() {
    let w = start(&["--allow-put"]).await;
    // 1 MiB of body, 32 GiB of zeros: half a minute of decompressing and hashing at 1 GB/s.
    let bomb = zstd_zeros(256 << 10);
    let wrong = zst_name(b"something else");
    let auth = format!("Bearer {TOKEN}");
    let started = Instant::now();
    let got = tokio::time::timeout(
        Duration::from_secs(2),
        w.put(&format!("/nar/{wrong}"), bomb, Some(&auth)),
    )
    .await
    .expect("the upload was decompressed before its name was checked");
    let took = started.elapsed();
    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{}", got.text());
    assert!(got.text().contains("not to its name"), "{}", got.text());
    eprintln!("refused in {took:?}");
    assert!(
        wait_until(TIMEOUT, || async { w.proxy.tmp_files().is_empty() }).await,
        "{:?}",
        w.proxy.tmp_files()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_during_verification_leaves_no_temp_file() {
    let w = start(&["--allow-put"]).await;
    // Named right, so it is verified: 64 GiB of zeros to decompress and hash, a minute or more
    // (the temp file must still be there when the client hangs up).
    let bomb = zstd_zeros(512 << 10);
    let name = zst_name(&bomb);
    let mut tcp = tokio::net::TcpStream::connect(w.proxy.addr).await.unwrap();
    let head = format!(
        "PUT /nar/{name} HTTP/1.1\r\nhost: proxy\r\nauthorization: Bearer {TOKEN}\r\n\
         content-length: {}\r\n\r\n",
        bomb.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&bomb).await.unwrap();
    tcp.flush().await.unwrap();
    // The body is in the temp file; give the verification time to start, then hang up.
    let written = wait_until(TIMEOUT, || async {
        w.proxy
            .tmp_files()
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == bomb.len() as u64))
    })
    .await;
    assert!(
        written,
        "the body never reached a temp file: {:?}",
        w.proxy.tmp_files()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(tcp);
    assert!(
        wait_until(TIMEOUT, || async { w.proxy.tmp_files().is_empty() }).await,
        "the abandoned upload's temp file stays: {:?}",
        w.proxy.tmp_files()
    );
    assert!(w.proxy.stored_files().is_empty(), "{:?}", w.proxy.stored_files());
}

/// Makes every recording of an upload fail, as a database failing at that moment would.
async fn fail_upload_rows(sqlite_url: &str, fail: bool) {
    let db = sqlx::SqlitePool::connect(sqlite_url).await.unwrap();
    let statement = if fail {
        "CREATE TRIGGER fail_uploads BEFORE INSERT ON uploads \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    } else {
        "DROP TRIGGER fail_uploads"
    };
    sqlx::query(statement).execute(&db).await.unwrap();
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_object_is_never_stored_without_its_row() {
    let w = start(&["--allow-put"]).await;
    let entry = upload_entry("unrecorded");
    let (nar_path, auth) = (format!("/nar/{}", entry.file_name()), format!("Bearer {TOKEN}"));
    fail_upload_rows(&w.proxy.sqlite_url(), true).await;
    let got = w.put(&nar_path, entry.file.clone(), Some(&auth)).await;
    assert!(got.status.is_server_error(), "{}: {}", got.status, got.text());
    // Stored without a row, no GC and no upload would ever find the object again.
    assert!(
        w.proxy.stored_files().is_empty(),
        "an object without its row: {:?}",
        w.proxy.stored_files()
    );
    assert!(w.proxy.tmp_files().is_empty(), "{:?}", w.proxy.tmp_files());

    fail_upload_rows(&w.proxy.sqlite_url(), false).await;
    let got = w.put(&nar_path, entry.file.clone(), Some(&auth)).await;
    assert_eq!(got.status, StatusCode::CREATED, "{}", got.text());
    let got = w
        .put(&entry.narinfo_path(), entry.narinfo_text(), Some(&auth))
        .await;
    assert_eq!(got.status, StatusCode::CREATED, "{}", got.text());
    assert_eq!(w.get(&nar_path).await.body, entry.file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narinfo_cannot_make_visible_a_nar_whose_upload_did_not_finish() {
    let w = start(&["--allow-put"]).await;
    let entry = upload_entry("unfinished");
    let auth = format!("Bearer {TOKEN}");
    // The row of an upload that died before its object was stored.
    let db = nixcache::db::connect(&w.proxy.sqlite_url()).await.unwrap();
    let record = nixcache::db::UploadRecord {
        nar_file: NarFile::parse(&entry.file_name()).unwrap(),
        file_size: entry.file.len() as u64,
        nar_hash: entry.info.nar_hash,
        nar_size: entry.info.nar_size,
    };
    db.put_upload(&record).await.unwrap();
    let got = w
        .put(&entry.narinfo_path(), entry.narinfo_text(), Some(&auth))
        .await;
    assert_eq!(got.status, StatusCode::CONFLICT, "{}", got.text());
    assert!(got.text().contains("PUT the NAR"), "{}", got.text());
    assert_eq!(w.get(&entry.narinfo_path()).await.status, StatusCode::NOT_FOUND);
    // Once the NAR is uploaded, the same narinfo goes through.
    let got = w
        .put(
            &format!("/nar/{}", entry.file_name()),
            entry.file.clone(),
            Some(&auth),
        )
        .await;
    assert_eq!(got.status, StatusCode::CREATED, "{}", got.text());
    let got = w
        .put(&entry.narinfo_path(), entry.narinfo_text(), Some(&auth))
        .await;
    assert_eq!(got.status, StatusCode::CREATED, "{}", got.text());
}
