//! A proxy with uploads on (`--allow-put`, `--allow-delete`), and what a client uploads.

use base64::Engine as _;
use nixcache_protocol::Compression;

use super::{client, get, random_bytes, send, Entry, Got, Proxy, Upstream};

pub const USER: &str = "ci";
pub const PASSWORD: &str = "correct horse";
pub const TOKEN: &str = "tok-3d1f0c9a7b5e2c41";

pub struct Writable {
    _dir: tempfile::TempDir,
    pub upstream: Upstream,
    /// The key the upstream's narinfos must be signed with.
    pub upstream_key: nixcache_protocol::SigningKey,
    pub proxy: Proxy,
    pub client: reqwest::Client,
}

/// A proxy over an empty upstream with uploads on, as `extra` says.
pub async fn start(extra: &[&str]) -> Writable {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("uploaders");
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    std::fs::write(&creds, format!("{USER}:{hash}\n{TOKEN}\n")).unwrap();
    let upstream = Upstream::start(10).await;
    let creds = creds.display().to_string();
    let mut flags = vec!["--upload-credentials-file", creds.as_str()];
    flags.extend(extra);
    let key = super::upstream_key();
    let proxy = Proxy::start(
        &dir.path().join("data"),
        &[&upstream],
        &[key.public_key()],
        &flags,
    )
    .await;
    Writable {
        _dir: dir,
        upstream,
        upstream_key: key,
        proxy,
        client: client(),
    }
}

pub fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

impl Writable {
    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>, auth: Option<&str>) -> Got {
        let mut request = self.client.put(self.proxy.url(path)).body(body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        send(request).await
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>, auth: Option<&str>) -> Got {
        let mut request = self.client.post(self.proxy.url(path)).body(body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        send(request).await
    }

    pub async fn get_with(&self, path: &str, auth: &str) -> Got {
        send(
            self.client
                .get(self.proxy.url(path))
                .header("authorization", auth),
        )
        .await
    }

    pub async fn delete(&self, path: &str, auth: Option<&str>) -> Got {
        let mut request = self.client.delete(self.proxy.url(path));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        send(request).await
    }

    pub async fn get(&self, path: &str) -> Got {
        get(&self.client, &self.proxy.url(path)).await
    }
}

/// What `nix copy` would upload for a path: a NAR file and a narinfo signed by the client.
pub fn upload_entry(name: &str) -> Entry {
    let client_key = nixcache_protocol::SigningKey::generate("builder-1").unwrap();
    let mut entry = Entry::new(name, random_bytes(5, 300 << 10), Compression::Xz, &client_key);
    entry.info.url = format!("nar/{}", entry.file_name());
    entry
}
