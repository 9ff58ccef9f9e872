//! One request to an upstream: sending it (credentials, timeouts, the outbound policy), reading a
//! bounded text body, and fetching and verifying a narinfo.

use nixcache_protocol::{NarInfo, PublicKey, StorePathHash};
use reqwest::{header, StatusCode};
use url::Url;

use super::{Upstream, UpstreamError, UpstreamOptions};
use crate::metrics::ObjectKind;

/// Largest narinfo or nix-cache-info accepted (real ones are a few KiB).
const MAX_TEXT_BYTES: usize = 1 << 20;

/// The body, or `None` when it is longer than `limit`.
pub(super) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// What a spawned lookup needs, detached from `Upstreams`' lifetime.
pub(super) struct TaskContext {
    pub(super) client: reqwest::Client,
    pub(super) trusted: Vec<PublicKey>,
    pub(super) options: UpstreamOptions,
}

impl TaskContext {
    pub(super) async fn send(
        &self,
        upstream: Option<&Upstream>,
        url: Url,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut request = self
            .client
            .get(url.clone())
            .header(header::ACCEPT_ENCODING, "identity");
        if let Some(creds) = upstream.and_then(|u| u.credentials.as_ref()) {
            request = request.basic_auth(&creds.login, Some(&creds.password));
        }
        let after = self.options.header_timeout;
        match tokio::time::timeout(after, request.send()).await {
            Err(_) => Err(UpstreamError::Timeout {
                url: url.to_string(),
                after,
            }),
            Ok(Err(error)) if error.is_redirect() => Err(UpstreamError::Redirect {
                url: url.to_string(),
                reason: std::error::Error::source(&error).map_or_else(String::new, ToString::to_string),
                error,
            }),
            Ok(Err(error)) => Err(UpstreamError::Request {
                url: url.to_string(),
                error,
            }),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// GET `url`: the response when it is 200, `None` on 404/403/410 (absent, as Nix treats
    /// them), an error for any other status.
    pub(super) async fn get_found(
        &self,
        upstream: &Upstream,
        url: Url,
    ) -> Result<Option<reqwest::Response>, UpstreamError> {
        let response = self.send(Some(upstream), url.clone()).await?;
        match response.status() {
            StatusCode::OK => Ok(Some(response)),
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::GONE => Ok(None),
            status => Err(UpstreamError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            }),
        }
    }

    /// GET a small text document; `None` on 404/403/410 (absent, as Nix treats them).
    pub(super) async fn get_text(
        &self,
        upstream: &Upstream,
        url: Url,
    ) -> Result<Option<String>, UpstreamError> {
        let Some(response) = self.get_found(upstream, url.clone()).await? else {
            return Ok(None);
        };
        let after = self.options.read_timeout;
        match tokio::time::timeout(after, read_limited(response, MAX_TEXT_BYTES)).await {
            Err(_) => Err(UpstreamError::Timeout {
                url: url.to_string(),
                after,
            }),
            Ok(Err(error)) => Err(UpstreamError::Request {
                url: url.to_string(),
                error,
            }),
            Ok(Ok(None)) => Err(UpstreamError::Invalid {
                url: url.to_string(),
                reason: format!("larger than {MAX_TEXT_BYTES} bytes"),
            }),
            Ok(Ok(Some(body))) => Ok(Some(String::from_utf8_lossy(&body).into_owned())),
        }
    }

    /// One upstream's verified narinfo; `Ok(None)` for absent or untrusted. Timed and counted.
    #[tracing::instrument(level = "info", name = "upstream_narinfo", skip_all, fields(upstream = upstream.url(), %hash))]
    pub(super) async fn narinfo_from(
        &self,
        upstream: &Upstream,
        hash: &StorePathHash,
    ) -> Result<Option<NarInfo>, UpstreamError> {
        let started = std::time::Instant::now();
        let result = self.verified_narinfo(upstream, hash).await;
        let metrics = &self.options.metrics;
        match &result {
            Ok(_) => {
                metrics.upstream_request(upstream.url(), ObjectKind::Narinfo, started.elapsed());
                upstream.request_answered();
            }
            Err(err) => {
                metrics.upstream_error(upstream.url(), ObjectKind::Narinfo, err.reason());
                upstream.request_failed(err);
            }
        }
        result
    }

    async fn verified_narinfo(
        &self,
        upstream: &Upstream,
        hash: &StorePathHash,
    ) -> Result<Option<NarInfo>, UpstreamError> {
        let url = upstream
            .base
            .join(&format!("{hash}.narinfo"))
            .map_err(|e| UpstreamError::Invalid {
                url: upstream.url().into(),
                reason: e.to_string(),
            })?;
        let Some(text) = self.get_text(upstream, url.clone()).await? else {
            return Ok(None);
        };
        let invalid = |reason: String| UpstreamError::Invalid {
            url: url.to_string(),
            reason,
        };
        let mut info = NarInfo::parse(&text).map_err(|e| invalid(format!("malformed narinfo: {e}")))?;
        if info.store_path.hash() != hash {
            return Err(invalid(format!("narinfo is for {}, not {hash}", info.store_path)));
        }
        if !info.verify_any(&self.trusted) {
            let sigs: Vec<String> = info.sigs.iter().map(|s| s.key_name().to_owned()).collect();
            tracing::warn!(%url, ?sigs, "narinfo not signed by any trusted key; treated as a miss");
            return Ok(None);
        }
        // Sizes are not covered by the signature: refuse what no real NAR can be.
        // A compressed file is never much larger than its NAR (xz, zstd, bzip2 add < 1 % to
        // incompressible data); an inflated FileSize would reserve room no download needs.
        let too_big = |n: u64| i64::try_from(n).is_err();
        let largest_file = info.nar_size.saturating_add(info.nar_size / 100 + (1 << 20));
        if info.file_size == Some(0)
            || info.file_size.is_some_and(|n| too_big(n) || n > largest_file)
            || too_big(info.nar_size)
        {
            return Err(invalid(format!(
                "impossible FileSize {:?} / NarSize {}",
                info.file_size, info.nar_size
            )));
        }
        if !info.compression.is_supported() {
            tracing::warn!(%url, compression = info.compression.as_str(), "unsupported compression; treated as a miss");
            return Ok(None);
        }
        let nar_url = url
            .join(&info.url)
            .map_err(|e| invalid(format!("bad URL {:?}: {e}", info.url)))?;
        // The URL is not covered by the signature: never let it point away from this upstream,
        // but to the hosts it was configured with (`?nar-host=`), and never to link-local space.
        if nar_url.origin() != upstream.base.origin() {
            if !upstream.nar_hosts.iter().any(|h| h.allows(&nar_url)) {
                return Err(invalid(format!(
                    "NAR URL {nar_url} is not on this upstream (allow its host with ?nar-host=)"
                )));
            }
            if !self.options.allow_link_local {
                super::outbound::check_literal(&nar_url).map_err(invalid)?;
            }
        }
        info.url = nar_url.to_string();
        Ok(Some(info))
    }
}
