//! `GET /`: what a person opening the cache's address needs: the `nix.conf` lines to use it and
//! what it holds. HTML for browsers, plain text for everything else (curl). No upstream URL or
//! other detail of the setup is shown: the page is as public as the cache.

use axum::{
    extract::State,
    http::{header, HeaderMap, Uri},
    response::{IntoResponse, Response},
};

use super::AppState;

pub async fn landing(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let page = Page::of(&state, &uri, &headers);
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    let (content_type, body) = if wants_html {
        ("text/html; charset=utf-8", page.html())
    } else {
        ("text/plain; charset=utf-8", page.text())
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

struct Page {
    /// This cache's address as the client reached it.
    url: String,
    public_key: String,
    status: &'static str,
    nars: i64,
    nar_bytes: i64,
    narinfos: i64,
    fills: usize,
    upstreams: usize,
    upstreams_down: usize,
    uploads: bool,
}

impl Page {
    fn of(state: &AppState, uri: &Uri, headers: &HeaderMap) -> Self {
        // HTTP/1.1 names the host in `Host`, HTTP/2 in the request's authority.
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or(uri.authority().map(|a| a.as_str()))
            .unwrap_or("localhost");
        // Behind a TLS-terminating ingress, the client used https.
        let https = headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        let metrics = state.cache.metrics();
        Self {
            url: format!("{}://{host}", if https { "https" } else { "http" }),
            public_key: state.cache.public_key().to_owned(),
            status: if state.is_draining() {
                "shutting down"
            } else {
                "serving"
            },
            nars: metrics.nars.get(),
            nar_bytes: metrics.size_bytes.get(),
            narinfos: metrics.narinfos.get(),
            fills: state.cache.fills_in_progress(),
            upstreams: state.cache.upstreams().list().len(),
            upstreams_down: state
                .cache
                .upstreams()
                .list()
                .iter()
                .filter(|u| u.health().is_down())
                .count(),
            uploads: state.writes.put,
        }
    }

    fn nix_conf(&self) -> String {
        format!(
            "substituters = {}\ntrusted-public-keys = {}",
            self.url, self.public_key
        )
    }

    fn facts(&self) -> String {
        format!(
            "status: {}\nstored: {} NAR files, {} bytes; {} narinfos\ndownloads in progress: {}\n\
             upstream caches: {} ({} down)\nuploads (nix copy --to): {}",
            self.status,
            self.nars,
            self.nar_bytes,
            self.narinfos,
            self.fills,
            self.upstreams,
            self.upstreams_down,
            if self.uploads { "on" } else { "off" }
        )
    }

    fn text(&self) -> String {
        format!(
            "nixcache: a Nix binary cache\n\nTo use it, add to nix.conf:\n\n{}\n\n{}\n",
            indent(&self.nix_conf()),
            self.facts()
        )
    }

    fn html(&self) -> String {
        format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>nixcache</title></head>\n\
             <body><h1>nixcache</h1><p>A Nix binary cache. To use it, add to <code>nix.conf</code>:</p>\n\
             <pre>{}</pre>\n<pre>{}</pre>\n<p><a href=\"/nix-cache-info\">nix-cache-info</a> · \
             <a href=\"/pubkey\">public key</a></p></body></html>\n",
            escape(&self.nix_conf()),
            escape(&self.facts())
        )
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Text safe inside HTML elements and attribute values (the Host header is the client's).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_text_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
    }
}
