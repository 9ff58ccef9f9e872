//! A proxy that accepts uploads (`--allow-put`) from one builder, over an upstream that has
//! nothing: what the push tests (`nix copy --to`, `nix store copy-log --to`) push into.

use anyhow::Result;
use tempfile::TempDir;

use crate::{Proxy, ProxyOptions, TestUpstream};

/// The builder's user name and password, as its netrc file gives them.
pub const BUILDER: (&str, &str) = ("builder", "hunter22");

/// The proxy, its empty upstream, and a work directory for the test's files.
pub struct WritableProxy {
    pub proxy: Proxy,
    pub work: TempDir,
    _upstream: TestUpstream,
}

impl WritableProxy {
    /// Starts it, trusting `upstream_key` (which its empty upstream never needs).
    pub async fn start(upstream_key: &str) -> Result<WritableProxy> {
        let work = tempfile::tempdir()?;
        let empty = work.path().join("empty-upstream");
        std::fs::create_dir_all(&empty)?;
        std::fs::write(
            empty.join("nix-cache-info"),
            "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n",
        )?;
        let upstream = TestUpstream::start(&empty)?;
        let creds = work.path().join("uploaders");
        let (user, password) = BUILDER;
        std::fs::write(&creds, format!("{user}:{}\n", bcrypt::hash(password, 6)?))?;
        let mut opts = ProxyOptions::new(&upstream.url, upstream_key);
        opts.extra_args = [
            "--allow-put",
            "--upload-credentials-file",
            &creds.display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        let proxy = Proxy::start(opts).await?;
        Ok(WritableProxy {
            proxy,
            work,
            _upstream: upstream,
        })
    }

    /// A netrc file in the work directory for the builder, with `password`.
    pub fn netrc(&self, name: &str, password: &str) -> Result<std::path::PathBuf> {
        let path = self.work.path().join(name);
        let (user, _) = BUILDER;
        std::fs::write(
            &path,
            format!("machine 127.0.0.1 login {user} password {password}\n"),
        )?;
        Ok(path)
    }
}
