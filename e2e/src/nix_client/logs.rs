//! Build logs with a real client: `nix log` reads one from a binary cache (`log/<drv>`, the
//! deriver found in the narinfo when given an output path), `nix store copy-log` copies one
//! from a binary cache to another (a PUT, with credentials from a netrc file); `nix path-info`
//! looks at paths in a binary cache without fetching them.

use std::time::Duration;

use anyhow::{Context, Result};

use super::{output_text, summary, ClientDirs, Nix, PushOutcome};

/// What `nix log` printed: the log on stdout when it found one.
#[derive(Clone, Debug)]
pub struct LogRead {
    pub ok: bool,
    pub log: String,
    /// Its error output, summarised.
    pub output: String,
}

/// `nix log --store URL PATH`, with no substituter beside the store.
pub async fn read_log(store_url: &str, path: &str, nix: Nix, timeout: Duration) -> Result<LogRead> {
    let client = ClientDirs::new(nix)?;
    let args = ["nix", "log", "--store", store_url, path];
    let out = client.run(&args, timeout).await?;
    Ok(LogRead {
        ok: out.status.success(),
        log: String::from_utf8_lossy(&out.stdout).into_owned(),
        output: summary(&String::from_utf8_lossy(&out.stderr)),
    })
}

/// `nix path-info --store URL [-r] PATHS`: what a client that only looks asks for.
pub async fn look_up_paths(
    store_url: &str,
    paths: &[&str],
    recursive: bool,
    nix: Nix,
    timeout: Duration,
) -> Result<LogRead> {
    let client = ClientDirs::new(nix)?;
    let mut args = vec!["nix", "path-info", "--store", store_url];
    if recursive {
        args.push("-r");
    }
    args.extend(paths);
    let out = client.run(&args, timeout).await?;
    Ok(LogRead {
        ok: out.status.success(),
        log: String::from_utf8_lossy(&out.stdout).into_owned(),
        output: summary(&String::from_utf8_lossy(&out.stderr)),
    })
}

/// `nix store copy-log --from FROM --to TO PATH`, with `netrc_file`'s credentials.
pub async fn copy_log(
    from: &str,
    to: &str,
    path: &str,
    netrc_file: &std::path::Path,
    nix: Nix,
    timeout: Duration,
) -> Result<PushOutcome> {
    let client = ClientDirs::new(nix)?;
    let netrc = client.tmp.path().join("netrc");
    std::fs::copy(netrc_file, &netrc).with_context(|| format!("copy {}", netrc_file.display()))?;
    let netrc = netrc.display().to_string();
    let args = [
        "nix",
        "store",
        "copy-log",
        "--from",
        from,
        "--to",
        to,
        path,
        "--option",
        "netrc-file",
        &netrc,
    ];
    let out = client.run(&args, timeout).await?;
    Ok(PushOutcome {
        ok: out.status.success(),
        output: summary(&output_text(&out)),
    })
}
