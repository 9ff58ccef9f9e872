//! A private PostgreSQL server for tests that stop and start it (the shared test server must
//! never be touched): `PgServer::start()` runs `initdb` into a temp dir and `pg_ctl start` on a
//! free port (127.0.0.1 only, trust auth, superuser `postgres`). `stop`/`start_again` take it
//! down and bring it back on the same port and data; dropping it stops the server (`-m immediate`)
//! and removes the directory.
//!
//! Binaries: `$NIXCACHE_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin`, else
//! `PATH`. PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user
//! through `runuser`. When something is missing, `start` returns `None` after printing `SKIP: ...`,
//! unless `CI` or `NIXCACHE_TEST_REQUIRE_DB=1` is set: then it fails.

use std::{
    io,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Output, Stdio},
    str::FromStr,
};

use sqlx::{postgres::PgConnectOptions, ConnectOptions, Connection, Executor};
use tokio::process::Command;

/// Longest wait for `pg_ctl` to start or stop the server.
const PG_CTL_WAIT_SECS: &str = "30";

pub struct PgServer {
    /// Our temp dir (mode 0755): `data/` and `run/` (socket, log) inside belong to the server's user.
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// When we are root: the user the server runs as.
    run_as: Option<RunAs>,
    port: u16,
    running: bool,
}

impl PgServer {
    /// A running server, or `None` when PostgreSQL (or, as root, `runuser`) is missing and not
    /// required.
    pub async fn start() -> io::Result<Option<Self>> {
        let prerequisites = match find_binaries() {
            Ok(found) => found,
            Err(why) => {
                if required() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{why} (required because CI or NIXCACHE_TEST_REQUIRE_DB=1 is set)"),
                    ));
                }
                eprintln!("SKIP: cannot run a private PostgreSQL server: {why}");
                return Ok(None);
            }
        };
        let (bin, run_as) = prerequisites;
        let mut server = Self::init(bin, run_as).await?;
        // The free port may be taken between the probe and the server's bind: try again.
        let mut last = None;
        for _ in 0..3 {
            server.port = free_port()?;
            match server.start_again().await {
                Ok(()) => return Ok(Some(server)),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("PostgreSQL did not start")))
    }

    /// `initdb` into a new temp dir.
    async fn init(bin: PathBuf, run_as: Option<RunAs>) -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let server = Self {
            dir,
            bin,
            run_as,
            port: 0,
            running: false,
        };
        for sub in [server.data_dir(), server.run_dir()] {
            std::fs::create_dir(&sub)?;
            std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700))?;
            if let Some(user) = &server.run_as {
                std::os::unix::fs::chown(&sub, Some(user.uid), Some(user.gid))?;
            }
        }
        let data = server.data_dir();
        let init = server
            .command("initdb")
            .args(["--username", "postgres", "--auth", "trust", "--no-locale"])
            .args(["--encoding", "UTF8", "--no-sync", "--pgdata"])
            .arg(&data)
            .output()
            .await?;
        check("initdb", &init)?;
        Ok(server)
    }

    /// Starts the (stopped) server on its port, over its data, and waits until it accepts
    /// connections.
    pub async fn start_again(&mut self) -> io::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.run_dir().display()
        );
        let started = self
            .pg_ctl()
            .args(["-o", &options, "-l"])
            .arg(self.run_dir().join("postgres.log"))
            .args(["-w", "-t", PG_CTL_WAIT_SECS, "start"])
            .output()
            .await?;
        if let Err(err) = check("pg_ctl start", &started) {
            return Err(io::Error::other(format!("{err}\nserver log:\n{}", self.log())));
        }
        self.running = true;
        Ok(())
    }

    /// Stops the server the way an operator's restart does (`pg_ctl stop -m fast`): open
    /// connections are terminated, new ones refused.
    pub async fn stop(&mut self) -> io::Result<()> {
        let stopped = self
            .pg_ctl()
            .args(["-m", "fast", "-w", "-t", PG_CTL_WAIT_SECS, "stop"])
            .output()
            .await?;
        check("pg_ctl stop", &stopped)?;
        self.running = false;
        Ok(())
    }

    /// `postgres://postgres@127.0.0.1:PORT/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates the (empty, unmigrated) database `name` and returns its URL.
    pub async fn create_database(&self, name: &str) -> io::Result<String> {
        let options = PgConnectOptions::from_str(&self.url("postgres")).map_err(io::Error::other)?;
        let mut conn = options.connect().await.map_err(io::Error::other)?;
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .map_err(io::Error::other)?;
        let _ = conn.close().await;
        Ok(self.url(name))
    }

    /// The server's log file.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.run_dir().join("postgres.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The Unix socket, lock file and log live here.
    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// A command for the PostgreSQL program `program`, run as the server's user.
    fn std_command(&self, program: &str) -> std::process::Command {
        let program = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", &user.name, "--"]).arg(program);
                c
            }
            None => std::process::Command::new(program),
        };
        // The server's user may not be allowed into the test's working directory.
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        command
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::from(self.std_command(program));
        command.kill_on_drop(true);
        command
    }

    fn pg_ctl(&self) -> Command {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(self.data_dir());
        command
    }
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("running", &self.running)
            .finish()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Also after a failed start or stop, which may leave a server behind.
        if !self.running && !self.data_dir().join("postmaster.pid").exists() {
            return;
        }
        // Synchronously, so the server is gone before the temp dir is removed.
        let stopped = self
            .std_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "-t", PG_CTL_WAIT_SECS, "stop"])
            .output();
        if !matches!(&stopped, Ok(out) if out.status.success()) {
            eprintln!(
                "warning: could not stop the test PostgreSQL on port {}: {stopped:?}",
                self.port
            );
        }
    }
}

/// The account the server runs as when the tests run as root.
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// The PostgreSQL bin dir, and the user to run the server as (when we are root).
fn find_binaries() -> Result<(PathBuf, Option<RunAs>), String> {
    let bin = pg_bin_dir()
        .ok_or("initdb and pg_ctl not found in $NIXCACHE_TEST_PG_BIN, /usr/lib/postgresql/*/bin or PATH")?;
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if !root {
        return Ok((bin, None));
    }
    if find_in_path("runuser").is_none() {
        return Err("running as root, and runuser (to run PostgreSQL as another user) not found".into());
    }
    let name = "postgres";
    let id = |flag| -> Option<u32> {
        let out = std::process::Command::new("id")
            .args([flag, name])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => Ok((
            bin,
            Some(RunAs {
                name: name.into(),
                uid,
                gid,
            }),
        )),
        _ => Err(format!(
            "running as root, and there is no user {name:?} to run PostgreSQL as"
        )),
    }
}

fn pg_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(explicit) = std::env::var_os("NIXCACHE_TEST_PG_BIN") {
        return Some(PathBuf::from(explicit)).filter(|d| has_tools(d));
    }
    // Debian's layout: /usr/lib/postgresql/<major>/bin; the newest version wins.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    find_in_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf))
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(program)).find(|p| p.is_file())
}

fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn check(what: &str, out: &Output) -> io::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

/// True when a missing PostgreSQL must fail the tests rather than skip them.
fn required() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    ci || std::env::var("NIXCACHE_TEST_REQUIRE_DB").is_ok_and(|v| v == "1")
}
