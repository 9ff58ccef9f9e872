//! Build traces from the upstreams: asked one at a time in priority order (down ones skipped),
//! each checked against the trusted keys as a narinfo is. A trace no trusted key signed is a
//! miss at that upstream: it could send any store path for any derivation.

use nixcache_formats::content_encoding::{decode_limited, ContentEncoding};
use nixcache_protocol::{BuildTrace, BuildTraceKey, MAX_BUILD_TRACE};
use reqwest::header;

use super::{ordered::Asked, request::read_limited, side::url_under, Upstream, UpstreamError, Upstreams};
use crate::metrics::ObjectKind;

/// What the upstreams said about a build trace (`NotFound`: none has one a trusted key signed).
pub type TraceLookup = Asked<BuildTrace>;

impl Upstreams {
    /// Asks the upstreams that are not down, best priority first, until one has a trusted trace.
    pub async fn get_build_trace(&self, key: &BuildTraceKey) -> TraceLookup {
        self.ask_in_order(|upstream| self.build_trace_from(upstream, key))
            .await
    }

    /// One upstream's trusted trace; `None` when it has none. Timed and counted.
    async fn build_trace_from(
        &self,
        upstream: &Upstream,
        key: &BuildTraceKey,
    ) -> Result<Option<BuildTrace>, UpstreamError> {
        let started = std::time::Instant::now();
        let result = self.verified_build_trace(upstream, key).await;
        let metrics = &self.ctx.options.metrics;
        match &result {
            Ok(_) => {
                metrics.upstream_request(upstream.url(), ObjectKind::BuildTrace, started.elapsed());
                upstream.request_answered();
            }
            Err(err) => {
                metrics.upstream_error(upstream.url(), ObjectKind::BuildTrace, err.reason());
                upstream.request_failed(err);
            }
        }
        result
    }

    async fn verified_build_trace(
        &self,
        upstream: &Upstream,
        key: &BuildTraceKey,
    ) -> Result<Option<BuildTrace>, UpstreamError> {
        let url = trace_url(upstream, key)?;
        let invalid = |reason: String| UpstreamError::Invalid {
            url: url.to_string(),
            reason,
        };
        let Some(response) = self.ctx.get_found(upstream, url.clone()).await? else {
            return Ok(None);
        };
        let header = response.headers().get(header::CONTENT_ENCODING);
        let encoding = ContentEncoding::parse(header.map(|v| v.to_str().unwrap_or("?")))
            .map_err(|e| invalid(e.to_string()))?;
        let after = self.ctx.options.read_timeout;
        let body = match tokio::time::timeout(after, read_limited(response, MAX_BUILD_TRACE)).await {
            Err(_) => {
                return Err(UpstreamError::Timeout {
                    url: url.to_string(),
                    after,
                })
            }
            Ok(Err(error)) => {
                return Err(UpstreamError::Request {
                    url: url.to_string(),
                    error,
                })
            }
            Ok(Ok(None)) => return Err(invalid(format!("larger than {MAX_BUILD_TRACE} bytes"))),
            Ok(Ok(Some(body))) => body,
        };
        let body = decode_limited(encoding, &body, MAX_BUILD_TRACE).map_err(|e| invalid(e.to_string()))?;
        let trace = BuildTrace::parse(key, &body).map_err(|e| invalid(e.to_string()))?;
        if !trace.verify_any(&self.ctx.trusted) {
            let sigs: Vec<&str> = trace.signatures().iter().map(|s| s.key_name()).collect();
            tracing::warn!(%url, ?sigs, "build trace not signed by any trusted key; treated as a miss");
            return Ok(None);
        }
        Ok(Some(trace))
    }
}

/// `<base>/realisations/sha256:<hex>!<output>.doi` or `<base>/build-trace-v2/<drv>/<output>.doi`.
fn trace_url(upstream: &Upstream, key: &BuildTraceKey) -> Result<url::Url, UpstreamError> {
    let path = key.to_string();
    let segments: Vec<&str> = path.split('/').collect();
    url_under(upstream, &segments)
}
