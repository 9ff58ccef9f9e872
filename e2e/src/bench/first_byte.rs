//! First byte of a miss: one client asks a fresh nixcache (narinfo known, NAR not) for each
//! NAR of the fixture, and asks the upstream directly for the same NAR just before (so both
//! read it from the page cache). The difference is what the miss path costs: metadata lookups,
//! the fetch lease, the temp file, one more hop.

use std::time::Instant;

use anyhow::{ensure, Result};

use super::fresh::cluster;
use super::loadgen::{Check, Conn};
use super::report::{Better, Goal, Report};
use super::{summary, Server, Settings};
use crate::{TestUpstream, UpstreamCache};

/// Milliseconds from sending a GET on a new connection to its first response byte.
async fn ttfb_ms(addr: std::net::SocketAddr, path: &str) -> Result<f64> {
    let mut conn = Conn::connect(addr, 256 * 1024).await?;
    let sent = Instant::now();
    let answer = conn.get(path, &Check::Discard).await?;
    ensure!(answer.status == 200, "GET {path} from {addr}: {}", answer.status);
    Ok(answer.first_byte.duration_since(sent).as_secs_f64() * 1000.0)
}

pub async fn run(report: &mut Report, s: &Settings, cache: &UpstreamCache) -> Result<()> {
    let upstream = TestUpstream::start(&cache.dir)?;
    let scenario = "one client, NAR MISS, time to first byte: nixcache vs the upstream directly";
    let paths: Vec<&String> = cache.paths.iter().filter(|p| **p != cache.big_path).collect();
    for run in 0..s.runs {
        let fresh = cluster(s, 1, cache, &upstream).await?;
        let proxy = &fresh.replicas[0];
        let (mut direct, mut through, mut added) = (Vec::new(), Vec::new(), Vec::new());
        for path in &paths {
            let mut conn = Conn::connect(proxy.addr, 64 * 1024).await?;
            let narinfo = conn.get(&cache.narinfo_http_path(path), &Check::Discard).await?;
            ensure!(narinfo.status == 200, "narinfo of {path}: {}", narinfo.status);
            let nar = cache.nar_http_path(path)?;
            let d = ttfb_ms(upstream.addr, &nar).await?;
            let t = ttfb_ms(proxy.addr, &nar).await?;
            direct.push(d);
            through.push(t);
            added.push(t - d);
        }
        let (Some((d, _, _)), Some((t, _, t_max)), Some((a, _, _))) =
            (summary(&direct), summary(&through), summary(&added))
        else {
            continue;
        };
        eprintln!(
            "[bench] {scenario}, run {}/{}: upstream {d:.2} ms, nixcache {t:.2} ms (max {t_max:.2}), added {a:.2} ms",
            run + 1,
            s.runs
        );
        let mut rows = report.scoped(scenario, Server::Nixcache);
        rows.add(
            "TTFB from the upstream directly, median ms",
            Better::Lower,
            Goal::None,
            d,
        );
        rows.add(
            "TTFB of a miss through nixcache, median ms",
            Better::Lower,
            Goal::None,
            t,
        );
        rows.add(
            "added by nixcache, median ms",
            Better::Lower,
            Goal::Below(10.0),
            a,
        );
    }
    Ok(())
}
