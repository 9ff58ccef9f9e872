//! Misses: 16 clients ask a fresh server (empty cache) for the big NAR (64
//! MiB unless `--big-mib`) at once, nixcache against nginx's `proxy_cache`
//! with `proxy_cache_lock on`, both in front of the same in-process upstream:
//! once with a rate-limited upstream (memory), once with a 50 ms upstream
//! delay (latency). [`super::replicas`] runs the same bursts against replicas; what
//! both share is in [`super::fresh`].

use anyhow::{Context, Result};

use super::fresh::{
    delayed_label, delayed_upstream, rate_limited_label, rate_limited_upstream, record_gets, record_latency,
    Fresh,
};
use super::hits::{measure_memory, progress, CLIENTS};
use super::report::Report;
use super::setup::Objects;
use super::{loadgen, order, procfs, Settings};
use crate::UpstreamCache;

/// Memory and upstream GETs with a rate-limited upstream.
pub async fn rate_limited(
    report: &mut Report,
    s: &Settings,
    cache: &UpstreamCache,
    objects: &Objects,
) -> Result<()> {
    let upstream = rate_limited_upstream(cache)?;
    let scenario = format!(
        "{CLIENTS} clients at once, {} NAR MISS, {}",
        objects.big_size(),
        rate_limited_label()
    );
    for run in 0..s.runs {
        for server in order(run) {
            let busy = procfs::wait_idle().await;
            let fresh = Fresh::start(s, server, cache, &upstream).await?;
            let t = fresh.prime(objects, &upstream).await?;
            let m = measure_memory(&t, &objects.big_nar, objects, CLIENTS)
                .await
                .with_context(|| format!("{scenario}, {}", server.name()))?;
            let gets = upstream.stats().get(&objects.big_nar) as f64;
            let what = format!(
                "peak {:.1} MiB, {gets} upstream GETs, last byte {:.2} s",
                m.hwm,
                m.last_byte_s()
            );
            progress(&scenario, run, s, server, busy, &what);
            m.record(report, &scenario, server, Some(64.0));
            record_gets(report, &scenario, server, gets);
            report.condition(&scenario, server, busy, None);
        }
    }
    Ok(())
}

/// Time to first and last byte with a 50 ms upstream.
pub async fn cold(report: &mut Report, s: &Settings, cache: &UpstreamCache, objects: &Objects) -> Result<()> {
    let upstream = delayed_upstream(cache)?;
    let scenario = format!(
        "{CLIENTS} clients at once, {} NAR cold MISS, {}",
        objects.big_size(),
        delayed_label()
    );
    for run in 0..s.runs {
        for server in order(run) {
            let busy = procfs::wait_idle().await;
            let fresh = Fresh::start(s, server, cache, &upstream).await?;
            let t = fresh.prime(objects, &upstream).await?;
            let fetches = loadgen::burst(&t.addrs(), &objects.big_nar, CLIENTS, objects.big_bytes.clone())
                .await
                .with_context(|| format!("{scenario}, {}", server.name()))?;
            let gets = upstream.stats().get(&objects.big_nar) as f64;
            record_gets(report, &scenario, server, gets);
            let Some(what) = record_latency(report, &scenario, server, &fetches) else {
                continue;
            };
            progress(
                &scenario,
                run,
                s,
                server,
                busy,
                &format!("{what}, {gets} upstream GETs"),
            );
            report.condition(&scenario, server, busy, None);
        }
    }
    Ok(())
}
