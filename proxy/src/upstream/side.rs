//! Listings and build logs from the upstreams. Asked one at a time in priority order (down ones
//! skipped): they are asked for rarely and may be large, so no race that downloads several.
//! Their bytes are not signed; only configured upstreams are asked, as for NARs.

use std::sync::Arc;

use futures::StreamExt;
use nixcache_formats::content_encoding::ContentEncoding;
use nixcache_protocol::SideFile;
use reqwest::header;

use super::{ordered::Asked, Upstream, UpstreamError, Upstreams};
use crate::metrics::ObjectKind;

/// What the upstreams said about a listing or a log.
pub type SideLookup = Asked<SideDownload>;

/// A listing or log download whose headers arrived with 200.
pub struct SideDownload {
    /// How the body is encoded (cache.nixos.org sends `br` whatever was asked).
    pub encoding: ContentEncoding,
    /// The body; a failure in it is already counted against its upstream.
    pub body: futures::stream::BoxStream<'static, Result<bytes::Bytes, UpstreamError>>,
}

/// The metric label of a side file's kind.
pub fn object_kind(file: &SideFile) -> ObjectKind {
    match file {
        SideFile::Listing(_) => ObjectKind::Listing,
        SideFile::Log(_) => ObjectKind::Log,
    }
}

impl Upstreams {
    /// Asks the upstreams that are not down, best priority first, until one has `file`.
    pub async fn get_side_file(&self, file: &SideFile) -> SideLookup {
        self.ask_in_order(|upstream| self.side_file_from(upstream, file))
            .await
    }

    /// One upstream's answer: the download, `None` when it has none. Timed and counted.
    async fn side_file_from(
        &self,
        upstream: &Arc<Upstream>,
        file: &SideFile,
    ) -> Result<Option<SideDownload>, UpstreamError> {
        let kind = object_kind(file);
        let metrics = Arc::clone(&self.ctx.options.metrics);
        let started = std::time::Instant::now();
        let answer = self.side_file_headers(upstream, file).await;
        let response = match answer {
            Ok(response) => {
                metrics.upstream_request(upstream.url(), kind, started.elapsed());
                upstream.request_answered();
                response
            }
            Err(err) => {
                metrics.upstream_error(upstream.url(), kind, err.reason());
                upstream.request_failed(&err);
                return Err(err);
            }
        };
        let Some((response, encoding)) = response else {
            return Ok(None);
        };
        let url = response.url().to_string();
        let owner = Arc::clone(upstream);
        let body = response.bytes_stream().map(move |chunk| {
            chunk.map_err(|error| {
                let err = UpstreamError::Request {
                    url: url.clone(),
                    error,
                };
                metrics.upstream_error(owner.url(), kind, err.reason());
                owner.request_failed(&err);
                err
            })
        });
        Ok(Some(SideDownload {
            encoding,
            body: Box::pin(body),
        }))
    }

    /// Sends the request; the response (200) with its encoding, or `None` when absent.
    async fn side_file_headers(
        &self,
        upstream: &Upstream,
        file: &SideFile,
    ) -> Result<Option<(reqwest::Response, ContentEncoding)>, UpstreamError> {
        let url = side_file_url(upstream, file)?;
        let Some(response) = self.ctx.get_found(upstream, url.clone()).await? else {
            return Ok(None);
        };
        let header = response.headers().get(header::CONTENT_ENCODING);
        let encoding = ContentEncoding::parse(header.map(|v| v.to_str().unwrap_or("?"))).map_err(|e| {
            UpstreamError::Invalid {
                url: url.to_string(),
                reason: e.to_string(),
            }
        })?;
        Ok(Some((response, encoding)))
    }
}

/// `<base>/<hash>.ls` or `<base>/log/<drv>`.
fn side_file_url(upstream: &Upstream, file: &SideFile) -> Result<url::Url, UpstreamError> {
    match file {
        SideFile::Listing(hash) => url_under(upstream, &[&format!("{hash}.ls")]),
        SideFile::Log(drv) => url_under(upstream, &["log", &drv.to_string()]),
    }
}

/// The upstream's base URL with `segments` appended, each a path segment: a derivation's name
/// may hold `?`, which `Url::join` would take for a query.
pub(super) fn url_under(upstream: &Upstream, segments: &[&str]) -> Result<url::Url, UpstreamError> {
    let mut url = upstream.base.clone();
    let invalid = || UpstreamError::Invalid {
        url: upstream.url().into(),
        reason: "cannot be a base URL".into(),
    };
    {
        let mut path = url.path_segments_mut().map_err(|()| invalid())?;
        path.pop_if_empty();
        path.extend(segments);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_are_path_segments_under_the_base() {
        let options = crate::upstream::UpstreamOptions {
            connect_timeout: std::time::Duration::from_secs(1),
            header_timeout: std::time::Duration::from_secs(1),
            read_timeout: std::time::Duration::from_secs(1),
            allow_link_local: false,
            netrc: Default::default(),
            probe_interval: std::time::Duration::from_secs(10),
            metrics: Arc::new(crate::metrics::Metrics::new()),
        };
        let upstreams = Upstreams::new(&["http://up.example/team".into()], vec![], options).unwrap();
        let upstream = &upstreams.list()[0];
        let hash = "7qxb8wbwqha95lbfrcj97j6fb8wbywa4";
        for (path, url) in [
            (format!("{hash}.ls"), format!("http://up.example/team/{hash}.ls")),
            (
                format!("log/{hash}-a?b=c+d.drv"),
                format!("http://up.example/team/log/{hash}-a%3Fb=c+d.drv"),
            ),
        ] {
            let file = SideFile::parse(&path).unwrap();
            assert_eq!(side_file_url(upstream, &file).unwrap().as_str(), url);
        }
    }
}
