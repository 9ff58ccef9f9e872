//! Wiring for how a replica on S3 serves hits: the hot tier in front of the bucket and its
//! sweep, or redirects to the bucket.

use std::{sync::Arc, time::Duration};

use anyhow::Context;

use crate::{
    cache::Cache,
    cli::{ServeArgs, StorageKind},
    metrics::Metrics,
    storage::{BlobStore, HotTier, HotTierConfig},
};

/// How often the hot tier drops what the cache's database no longer has (deleted by the GC
/// CronJob or another replica): one lookup per NAR it holds. Until then, the cache's own
/// lookup before each read keeps such a NAR from being served past `--memory-cache-ttl`.
const SWEEP_INTERVAL: Duration = Duration::from_secs(600);
/// S3 refuses presigned URLs valid for longer than a week.
const MAX_REDIRECT_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Refuses hit settings that cannot work together; at start, before anything is opened.
pub(super) fn check_flags(args: &ServeArgs) -> anyhow::Result<()> {
    let hits = &args.hits;
    let on_s3 = args.backend.storage.kind == StorageKind::S3;
    if hits.s3_redirect {
        anyhow::ensure!(on_s3, "--s3-redirect needs --storage s3");
        let expiry = hits.s3_redirect_expiry;
        anyhow::ensure!(
            expiry >= Duration::from_secs(1) && expiry <= MAX_REDIRECT_EXPIRY,
            "--s3-redirect-expiry must be between 1s and 7days (S3's limit), got {}",
            humantime::format_duration(expiry)
        );
    }
    let Some(dir) = &hits.hot_tier_dir else {
        return Ok(());
    };
    anyhow::ensure!(
        on_s3,
        "--hot-tier-dir needs --storage s3 (local storage is a local disk already)"
    );
    anyhow::ensure!(
        !hits.s3_redirect,
        "--s3-redirect sends NAR hits to the bucket, so a hot tier would never fill: set one of \
         --s3-redirect and --hot-tier-dir"
    );
    anyhow::ensure!(
        hits.hot_tier_size >= 1 << 20,
        "--hot-tier-size must be at least 1M"
    );
    refuse_overlap(dir, &args.backend.data_dir)
}

/// The storage the cache serves from, the storage behind it, and the hot tier between them
/// when `--hot-tier-dir` is set (the flags checked by [`check_flags`]).
pub(super) async fn with_hot_tier(
    args: &ServeArgs,
    storage: Arc<dyn BlobStore>,
    metrics: &Metrics,
) -> anyhow::Result<(Arc<dyn BlobStore>, Arc<dyn BlobStore>, Option<HotTier>)> {
    let Some(dir) = &args.hits.hot_tier_dir else {
        return Ok((Arc::clone(&storage), storage, None));
    };
    let config = HotTierConfig {
        dir: dir.clone(),
        max_bytes: args.hits.hot_tier_size,
        metrics: metrics.hot_tier.clone(),
    };
    let tier = HotTier::open(&config, Arc::clone(&storage))
        .await
        .with_context(|| format!("opening the hot tier in {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), max_bytes = config.max_bytes, "hot tier on (emptied at start)");
    Ok((Arc::new(tier.clone()), storage, Some(tier)))
}

/// The tier empties its directory at start: it must not be, hold or lie in the data dir.
fn refuse_overlap(tier: &std::path::Path, data: &std::path::Path) -> anyhow::Result<()> {
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (tier, data) = (absolute(tier), absolute(data));
    anyhow::ensure!(
        !tier.starts_with(&data) && !data.starts_with(&tier),
        "--hot-tier-dir {} and --data-dir {} overlap; the hot tier empties its directory at start, \
         so give it one of its own",
        tier.display(),
        data.display()
    );
    Ok(())
}

/// Sweeps the tier now and then; at shutdown, waits for its copies under way (they end with
/// their clients' responses, which are over or cut by then).
pub(super) fn start_sweep(cache: &Cache, tier: HotTier) {
    let lookups = cache.clone();
    cache.background().spawn("hot_tier_sweep", move |stop| async move {
        while stop.pause(SWEEP_INTERVAL).await {
            let sweep = tier.sweep(|nar| {
                let cache = lookups.clone();
                async move { cache.nar_recorded(&nar).await }
            });
            tokio::select! {
                swept = sweep => match swept {
                    Ok(0) => {}
                    Ok(dropped) => tracing::info!(dropped, "hot tier: dropped NARs the cache no longer has"),
                    Err(e) => tracing::warn!(error = %e, "hot tier: the sweep could not ask the database"),
                },
                () = stop.stopped() => break,
            }
        }
        tier.close().await;
    });
}
