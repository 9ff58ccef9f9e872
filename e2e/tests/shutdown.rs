//! SIGTERM during a large download: new connections are refused at once, the client of the
//! download still gets every byte, the NAR is stored whole, no temp file is left. With a grace
//! period shorter than the download, the client is cut, and nothing partial and no lease is
//! left either.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use nixcache_e2e::http::{client, get_narinfo};
use nixcache_e2e::util::find_by_name;
use nixcache_e2e::{nix_available, Faults, Proxy, ProxyOptions, TestUpstream, UpstreamCache};

/// Upstream speed for NARs: the 64 MiB NAR takes 4 s.
const RATE: u64 = 16 << 20;

struct Download {
    cache: UpstreamCache,
    _upstream: TestUpstream,
    proxy: Proxy,
    /// The NAR file's name, as stored.
    name: String,
    /// Its bytes, as the upstream has them.
    file: Vec<u8>,
    reader: tokio::task::JoinHandle<(usize, Option<String>)>,
}

/// Reads `response` to its end comparing with `expected`: how many bytes matched, and the
/// error that ended it early, if any.
async fn read_against(response: reqwest::Response, expected: Vec<u8>) -> (usize, Option<String>) {
    let mut at = 0;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => return (at, Some(format!("{err:#}"))),
        };
        if expected.get(at..at + chunk.len()) != Some(&chunk[..]) {
            return (at, Some(format!("bytes differ after {at}")));
        }
        at += chunk.len();
    }
    (at, None)
}

/// A proxy with `--shutdown-grace grace`, and a client 1 s into the big NAR's download.
async fn start_download(grace: &str) -> Result<Download> {
    let cache = UpstreamCache::get("xz", "e2e")?;
    let upstream = TestUpstream::start(&cache.dir)?;
    upstream.set_faults(Faults {
        rate_bytes_per_s: RATE,
        only_paths_with_prefix: Some("/nar/".into()),
        ..Faults::default()
    });
    let mut opts = ProxyOptions::new(&upstream.url, &cache.public_key);
    opts.extra_args = vec!["--shutdown-grace".into(), grace.into()];
    let proxy = Proxy::start(opts).await?;
    let info = get_narinfo(&proxy.url, &cache.big_path).await?;
    let file = std::fs::read(cache.nar_file_for(&cache.big_path)?)?;
    let response = client()
        .get(proxy.url_for(&format!("/{}", info.url()?)))
        .send()
        .await?;
    ensure!(
        response.status() == reqwest::StatusCode::OK,
        "{}",
        response.status()
    );
    let reader = tokio::spawn(read_against(response, file.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let name = info.url()?.trim_start_matches("nar/").to_owned();
    Ok(Download {
        cache,
        _upstream: upstream,
        proxy,
        name,
        file,
        reader,
    })
}

fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(find_by_name(dir, "")?
        .into_iter()
        .filter(|p| p.is_file())
        .collect())
}

/// SIGTERM, and a look from a new client 300 ms later: refused, or told the proxy is not ready.
async fn terminate(proxy: &mut Proxy, limit: Duration) -> Result<std::process::ExitStatus> {
    let url = proxy.url_for("/readyz");
    let late_client = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        client().get(&url).send().await
    };
    let (status, late) = tokio::join!(proxy.terminate(limit), late_client);
    match late {
        Err(err) => ensure!(err.is_connect(), "a new client must be refused: {err}"),
        Ok(r) => ensure!(
            r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE,
            "readyz: {}",
            r.status()
        ),
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_download_finish_and_leaves_no_partial_files() -> Result<()> {
    if !nix_available() {
        return Ok(());
    }
    let mut d = start_download("20s").await?;
    let status = terminate(&mut d.proxy, Duration::from_secs(30)).await?;
    let (read, error) = d.reader.await?;
    ensure!(
        error.is_none() && read == d.file.len(),
        "the client got {read} bytes, then {error:?}"
    );
    ensure!(status.success(), "nixcache exited with {status}");
    let tmp = files(&d.proxy.data_dir.join("tmp"))?;
    ensure!(tmp.is_empty(), "temp files left: {tmp:?}");
    let stored = files(&d.proxy.data_dir.join("nar"))?;
    let nar = stored
        .iter()
        .find(|p| p.ends_with(&d.name))
        .context("the NAR was not stored")?;
    ensure!(std::fs::read(nar)? == d.file, "the stored NAR differs");
    ensure!(
        d.proxy.log_tail(20).contains("stopped"),
        "{}",
        d.proxy.log_tail(20)
    );
    drop(d.cache);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_grace_cuts_the_download_and_leaves_nothing_partial() -> Result<()> {
    if !nix_available() {
        return Ok(());
    }
    let mut d = start_download("1s").await?;
    let status = terminate(&mut d.proxy, Duration::from_secs(10)).await?;
    ensure!(status.success(), "nixcache exited with {status}");
    let (read, error) = d.reader.await?;
    ensure!(
        error.is_some(),
        "the whole NAR arrived ({read} bytes) within the grace period"
    );
    ensure!(
        read > 0 && read < d.file.len(),
        "the client got {read} bytes before the cut"
    );
    let tmp = files(&d.proxy.data_dir.join("tmp"))?;
    ensure!(tmp.is_empty(), "temp files left: {tmp:?}");
    let stored = files(&d.proxy.data_dir.join("nar"))?;
    ensure!(
        stored.is_empty(),
        "a NAR was stored although its download was cut: {stored:?}"
    );
    // The download ended as failed: its fetch lease is released, not left for the others to
    // wait out.
    let url = format!("sqlite://{}/db.sqlite", d.proxy.data_dir.display());
    let db = nixcache::db::connect(&url).await?;
    let file = nixcache_protocol::NarFile::parse(&d.name)?;
    let lease = db.get_lease(&nixcache::db::LeaseKey::nar(&file)).await?;
    ensure!(lease.is_none(), "the cut download's lease is left: {lease:?}");
    Ok(())
}
