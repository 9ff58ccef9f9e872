//! The setup most NAR tests start from: one upstream holding one entry, a proxy in front of it,
//! and the entry's narinfo already fetched through the proxy (so the proxy knows the NAR).

use nixcache_protocol::SigningKey;

use super::{client, get, Entry, Fault, Proxy, Upstream};

pub struct OneNar {
    _dir: tempfile::TempDir,
    pub upstream: Upstream,
    pub proxy: Proxy,
    pub client: reqwest::Client,
    pub entry: Entry,
    /// `/nar/<file>` as the proxy's narinfo names it.
    pub nar_path: String,
    /// The same, as a full URL.
    pub nar_url: String,
}

impl OneNar {
    /// `fault` is set on the upstream's NAR before anything is fetched; `extra` are serve flags.
    pub async fn start(entry: Entry, key: &SigningKey, extra: &[&str], fault: Option<Fault>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let upstream = Upstream::start(10).await;
        upstream.add(&entry);
        if fault.is_some() {
            upstream.set_fault(&entry.upstream_nar_path(), fault);
        }
        let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], extra).await;
        let client = client();
        let info = get(&client, &proxy.url(&entry.narinfo_path())).await.narinfo();
        let nar_path = format!("/{}", info.url);
        let nar_url = proxy.url(&nar_path);
        Self {
            _dir: dir,
            upstream,
            proxy,
            client,
            entry,
            nar_path,
            nar_url,
        }
    }
}
