//! The soak's uploader: what `nix copy --to` does for a new store path (PUT the NAR, then its
//! narinfo, with a Bearer token), then a client GETs both back. Every
//! [`CUT_EVERY`]th upload instead hangs up halfway through the NAR's body.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use futures::StreamExt;
use nixcache_protocol::{Compression, NarFile, NarInfo, Sha256Hash, StorePath, StorePathHash};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH};

use super::clients::{failure, Ctx, Object, Rng};
use super::outcome::{Kind, Outcome};
use crate::narinfo::NarInfo as Served;

/// The uploaders file's one line: a token, accepted as `Authorization: Bearer`.
pub const TOKEN: &str = "soak-uploader-7d2e91c4b0a35f68";
/// Pause between two uploads.
const PAUSE: Duration = Duration::from_secs(1);
/// One upload in this many is cut off.
const CUT_EVERY: u64 = 5;
/// NAR sizes: 16 KiB up to this (incompressible, stored uncompressed).
const MAX_NAR_BYTES: usize = 256 << 10;

/// A new store path: its NAR and narinfo, as a client uploads them.
struct Synthetic {
    object: Object,
    narinfo_text: String,
}

/// Path `i` of this run (`run` tells runs apart, so every path is new to the cache).
fn synthetic(run: u64, i: u64, rng: &mut Rng) -> Result<Synthetic> {
    let len = (16 << 10) + rng.below(MAX_NAR_BYTES - (16 << 10));
    let nar = Bytes::from(rng.bytes(len));
    let digest = Sha256Hash::digest(format!("nixcache soak {run} {i}").as_bytes());
    let mut hash = [0u8; 20];
    hash.copy_from_slice(&digest.0[..20]);
    let nar_file = NarFile {
        hash: Sha256Hash::digest(&nar),
        compression: Compression::None,
    };
    let info = NarInfo {
        store_path: StorePath::new(StorePathHash(hash), &format!("soak-upload-{i}"))?,
        url: nar_file.url(),
        compression: Compression::None,
        file_hash: Some(nar_file.hash),
        file_size: Some(nar.len() as u64),
        nar_hash: nar_file.hash,
        nar_size: nar.len() as u64,
        references: Vec::new(),
        deriver: None,
        sigs: Vec::new(),
        ca: None,
    };
    let narinfo_text = info.to_string();
    let mine = Served::parse(&narinfo_text)?;
    let fields = ["StorePath", "URL", "NarHash", "NarSize"]
        .iter()
        .filter_map(|k| Some((k.to_string(), mine.get(k)?.to_string())))
        .collect();
    Ok(Synthetic {
        object: Object {
            narinfo: format!("/{}.narinfo", info.store_path.hash()),
            nar: format!("/{}", nar_file.url()),
            fields,
            bytes: nar,
        },
        narinfo_text,
    })
}

/// Uploads until stopped.
pub async fn run(ctx: Arc<Ctx>) {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = Rng::new(run);
    for i in 1.. {
        if ctx.stop.is_cancelled() {
            break;
        }
        match synthetic(run, i, &mut rng) {
            Ok(x) if i % CUT_EVERY == 0 => {
                let got = put_and_hang_up(&ctx, &x.object).await;
                ctx.counters.count(Kind::UploadCut, &x.object.nar, &got);
            }
            Ok(x) => upload(&ctx, &x).await,
            Err(e) => {
                ctx.counters
                    .unexpected(format!("uploads: a synthetic path: {e:#}"));
                break;
            }
        }
        ctx.pause(PAUSE).await;
    }
}

async fn upload(ctx: &Ctx, x: &Synthetic) {
    let got = put(ctx, &x.object.nar, x.object.bytes.clone()).await;
    ctx.counters.count(Kind::Upload, &x.object.nar, &got);
    if !got.ok() {
        return;
    }
    let got = put(ctx, &x.object.narinfo, Bytes::from(x.narinfo_text.clone())).await;
    ctx.counters.count(Kind::Upload, &x.object.narinfo, &got);
    if got.ok() {
        ctx.fetch(Kind::Upload, &x.object).await;
    }
}

async fn put(ctx: &Ctx, path: &str, body: Bytes) -> Outcome {
    let sent = ctx
        .client
        .put(ctx.url(path))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            Outcome::Status(status)
        }
        Err(e) => failure(&e),
    }
}

/// PUT the NAR with its whole `Content-Length`, send half the body, wait a moment, hang up.
async fn put_and_hang_up(ctx: &Ctx, object: &Object) -> Outcome {
    let half = object.bytes.slice(..object.bytes.len() / 2);
    let body = futures::stream::iter([Ok::<_, std::io::Error>(half)]).chain(futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Err(std::io::Error::other("hanging up on purpose"))
    }));
    let sent = ctx
        .client
        .put(ctx.url(&object.nar))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(CONTENT_LENGTH, object.bytes.len())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    match sent {
        // The proxy answered before the body ended (it should not: the NAR is incomplete).
        Ok(response) => Outcome::Status(response.status().as_u16()),
        Err(_) => Outcome::HungUp,
    }
}
