//! `wrk -t1 --latency` with a Lua script that goes round-robin over a list of
//! paths and prints its summary as one machine-readable line.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

/// One wrk run.
#[derive(Clone, Copy, Debug, Default)]
pub struct WrkResult {
    pub requests: u64,
    pub duration_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl WrkResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.duration_s.max(1e-9)
    }
}

/// The Lua script: `request` cycles through `paths`, `done` prints a `BENCH` line.
pub fn script(paths: &[String]) -> String {
    let list: Vec<String> = paths.iter().map(|p| format!("  {p:?},")).collect();
    format!(
        r#"local paths = {{
{}
}}
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
"#,
        list.join("\n")
    )
}

/// Runs `wrk -t1 -c<conns> -d<secs>s --latency -s <script>` against `addr`.
/// Fails on any error wrk counted (non-2xx answers, socket errors).
pub async fn run(addr: SocketAddr, script: &Path, conns: u32, duration: Duration) -> Result<WrkResult> {
    let mut cmd = tokio::process::Command::new("wrk");
    cmd.arg("-t1")
        .arg(format!("-c{conns}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(format!("http://{addr}/"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let limit = duration + Duration::from_secs(30);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .with_context(|| format!("wrk did not finish within {limit:?}"))?
        .context("cannot run wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wrk failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&stdout)
}

/// The `BENCH` line of wrk's output.
pub fn parse(output: &str) -> Result<WrkResult> {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .with_context(|| format!("no BENCH line in wrk's output:\n{output}"))?;
    let field = |name: &str| -> Result<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name} in {line:?}"))?
            .parse::<f64>()
            .with_context(|| format!("bad {name} in {line:?}"))
    };
    let errors: f64 = ["non2xx", "connect", "read", "write", "timeout"]
        .iter()
        .map(|n| field(n))
        .sum::<Result<f64>>()?;
    if errors > 0.0 {
        bail!("wrk counted errors: {line}");
    }
    Ok(WrkResult {
        requests: field("requests")? as u64,
        duration_s: field("duration_us")? / 1e6,
        p50_us: field("p50_us")?,
        p99_us: field("p99_us")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_summary_line() -> Result<()> {
        let out = "Running 1s test\nBENCH requests=1000 duration_us=2000000 p50_us=77 p99_us=172 \
                   non2xx=0 connect=0 read=0 write=0 timeout=0\nRequests/sec: 500\n";
        let r = parse(out)?;
        assert_eq!(r.requests, 1000);
        assert!((r.rps() - 500.0).abs() < 1e-9);
        assert_eq!((r.p50_us, r.p99_us), (77.0, 172.0));
        assert!(parse(&out.replace("non2xx=0", "non2xx=3")).is_err());
        assert!(script(&["/a.narinfo".into()]).contains("\"/a.narinfo\","));
        Ok(())
    }
}
