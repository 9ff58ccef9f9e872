//! Upstreams as they are in the wild (issue 15): one closure whose narinfos take, path by path,
//! the shapes of cachix (UUID NAR names), snix (`?narsize=`), attic (`.nar` naming a zstd file),
//! niks3 (no `FileHash`/`FileSize`) and garnix (NARs on another host, allowed for that upstream
//! with `?nar-host=`). A real Nix client substitutes it through nixcache, which fetched each NAR
//! where its narinfo said and nowhere else.

use anyhow::{ensure, Result};
use nixcache_e2e::fixtures::WildShape;
use nixcache_e2e::{
    fetch, FetchOptions, Method, Nix, Proxy, ProxyOptions, TestUpstream, UpstreamCache, Variant,
};

const SALT: &str = "e2e";

async fn wild_closure_substitutes(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("zstd", SALT)?;
    // garnix's CDN: serves the NARs under their original names.
    let cdn = TestUpstream::start(&cache.dir)?;
    let wild = cache.variant(&Variant::Wild {
        nar_base: cdn.url.clone(),
    })?;
    let upstream = TestUpstream::start(&wild.dir)?;
    let upstream_url = format!("{}?nar-host={}", upstream.url, cdn.addr);
    let proxy = Proxy::start(ProxyOptions::new(&upstream_url, &cache.public_key)).await?;
    let opts = FetchOptions {
        method: Method::Substitute,
        nix,
        ..FetchOptions::default()
    };
    fetch(&proxy.url, &proxy.public_key, &[&wild.root], &opts)
        .await?
        .expect_whole_closure(&wild)?;

    let (theirs, cdns) = (upstream.stats(), cdn.stats());
    for (index, path) in wild.paths.iter().enumerate() {
        let shape = WildShape::of_index(index);
        let url = wild.narinfo_for(path)?.url()?.to_owned();
        let (asked, other) = match url.strip_prefix(&cdn.url) {
            Some(on_cdn) => (cdns.get(on_cdn), theirs.get(on_cdn)),
            None => {
                let file = format!("/{}", url.split('?').next().unwrap_or(&url));
                (theirs.get(&file), cdns.get(&file))
            }
        };
        ensure!(
            asked == 1 && other == 0,
            "{shape:?} {path}: its NAR {url} was fetched {asked} times where it is, {other} elsewhere"
        );
    }
    // The conventional names of moved NARs were never guessed at.
    let guessed: Vec<_> = theirs
        .paths_except(&[])
        .into_iter()
        .filter(|p| p.ends_with(".nar.zst") && !is_niks3(&wild, p))
        .collect();
    ensure!(
        guessed.is_empty(),
        "nixcache asked the upstream for NAR names no narinfo gave: {guessed:?}"
    );
    Ok(())
}

/// True when `http_path` is the NAR of a niks3-shaped path (its name is left as it was).
fn is_niks3(wild: &UpstreamCache, http_path: &str) -> bool {
    wild.paths.iter().enumerate().any(|(index, path)| {
        WildShape::of_index(index) == WildShape::Niks3
            && wild.nar_http_path(path).is_ok_and(|p| p == http_path)
    })
}

nixcache_e2e::each_nix! {
    closure_from_cachix_snix_attic_niks3_and_garnix_shapes_substitutes:
        wild_closure_substitutes();
}
