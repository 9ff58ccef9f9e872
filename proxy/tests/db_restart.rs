//! The PostgreSQL server restarting under load (`pg_ctl stop -m fast`, then start): meanwhile
//! every request ends within a bound, with a right answer (hot entries may still be served from
//! memory) or 503 "cache metadata database unavailable", never a wrong body; once the server is
//! back, the same proxy serves hits and fetches and records misses again, and nothing was
//! recorded wrongly. Runs on a private server (`nixcache_testsupport::postgres`), never the shared one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{client, get, sample_nar, upstream_key, wait_until, Entry, Logs, Proxy, Upstream, TIMEOUT};
use nixcache::db::MetadataStore;
use nixcache_protocol::{Compression, NarFile, NarInfo};
use nixcache_testsupport::postgres::PgServer;
use reqwest::StatusCode;

const DB_DOWN: &str = "cache metadata database unavailable\n";
/// The pool's acquire timeout (5 s, `db/store.rs`) plus a margin: no request may take longer.
const BOUND: Duration = Duration::from_secs(8);
/// Long enough for hot entries to expire and for requests to time out on the database.
const OUTAGE: Duration = Duration::from_secs(8);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    HitNarinfo,
    HitNar,
    /// A narinfo not fetched yet, then its NAR.
    Miss,
    /// A narinfo no upstream has.
    Absent,
}

const KINDS: [Kind; 4] = [Kind::HitNarinfo, Kind::HitNar, Kind::Miss, Kind::Absent];

/// What a request may be answered with, besides 503 with `DB_DOWN`.
enum Expect<'a> {
    Body(&'a [u8]),
    NarInfoOf(&'a Entry),
    NotFound,
}

struct Sample {
    kind: Kind,
    at: Instant,
    took: Duration,
    status: u16,
    problem: Option<String>,
}

struct Load {
    client: reqwest::Client,
    base: String,
    /// Entries fetched and stored before the load, with the narinfo the proxy served.
    hits: Vec<(Entry, Bytes)>,
    fresh: Vec<Entry>,
    next_fresh: AtomicUsize,
    absent: Vec<Entry>,
    stop: AtomicBool,
}

impl Load {
    /// One request of `kind` (a miss is two), checked.
    async fn request(&self, kind: Kind, n: usize) -> (u16, Option<String>) {
        match kind {
            Kind::HitNarinfo => {
                let (entry, text) = &self.hits[n % self.hits.len()];
                self.check(&entry.narinfo_path(), Expect::Body(text), false).await
            }
            Kind::HitNar => {
                let (entry, _) = &self.hits[n % self.hits.len()];
                self.check(&nar_path(entry), Expect::Body(&entry.file), false)
                    .await
            }
            Kind::Absent => {
                let entry = &self.absent[n % self.absent.len()];
                self.check(&entry.narinfo_path(), Expect::NotFound, false).await
            }
            Kind::Miss => {
                let i = self.next_fresh.fetch_add(1, Ordering::Relaxed);
                let entry = &self.fresh[i % self.fresh.len()];
                let narinfo = self
                    .check(&entry.narinfo_path(), Expect::NarInfoOf(entry), false)
                    .await;
                if narinfo != (200, None) {
                    return narinfo;
                }
                // A fill whose row cannot be written fails, and cuts its readers.
                self.check(&nar_path(entry), Expect::Body(&entry.file), true)
                    .await
            }
        }
    }

    async fn check(&self, path: &str, expect: Expect<'_>, cut_ok: bool) -> (u16, Option<String>) {
        let started = Instant::now();
        let response = match self.client.get(format!("{}{path}", self.base)).send().await {
            Ok(response) => response,
            Err(err) => return (0, Some(format!("GET {path}: no answer: {err}"))),
        };
        let status = response.status();
        let body = response.bytes().await;
        let took = started.elapsed();
        let problem = match (status, &body, expect) {
            _ if took > BOUND => Some(format!("took {took:?}")),
            (StatusCode::OK, Err(_), _) if cut_ok => None,
            (_, Err(err), _) => Some(format!("body cut: {err}")),
            (StatusCode::SERVICE_UNAVAILABLE, Ok(b), _) if b == DB_DOWN => None,
            (StatusCode::OK, Ok(b), Expect::Body(want)) if b == want => None,
            (StatusCode::OK, Ok(b), Expect::NarInfoOf(e)) if is_narinfo_of(b, e) => None,
            (StatusCode::NOT_FOUND, Ok(_), Expect::NotFound) => None,
            (_, Ok(b), _) => Some(format!(
                "answered {status}: {:?}",
                String::from_utf8_lossy(&b[..b.len().min(200)])
            )),
        };
        (status.as_u16(), problem.map(|p| format!("GET {path}: {p}")))
    }
}

fn is_narinfo_of(body: &[u8], entry: &Entry) -> bool {
    let parsed = std::str::from_utf8(body)
        .ok()
        .and_then(|t| NarInfo::parse(t).ok());
    parsed.is_some_and(|info| info.store_path == entry.store_path && info.nar_hash == entry.info.nar_hash)
}

/// Seconds from `zero` to `at`, negative when before.
fn offset(at: Instant, zero: Instant) -> f64 {
    match at.checked_duration_since(zero) {
        Some(after) => after.as_secs_f64(),
        None => -zero.duration_since(at).as_secs_f64(),
    }
}

fn nar_path(entry: &Entry) -> String {
    format!("/nar/{}", entry.file_name())
}

/// Requests of `kind` one after another until told to stop.
async fn worker(load: Arc<Load>, kind: Kind) -> Vec<Sample> {
    let mut samples = Vec::new();
    for n in 0.. {
        if load.stop.load(Ordering::Relaxed) {
            break;
        }
        let at = Instant::now();
        let (status, problem) = load.request(kind, n).await;
        samples.push(Sample {
            kind,
            at,
            took: at.elapsed(),
            status,
            problem,
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    samples
}

fn entries(prefix: &str, count: usize, key: &nixcache_protocol::SigningKey) -> Vec<Entry> {
    (0..count)
        .map(|i| {
            let nar = sample_nar(1000 + i as u64, 4096 + i * 100);
            Entry::new(&format!("{prefix}-{i}"), nar, Compression::None, key)
        })
        .collect()
}

/// When the outage began and ended, and when a new miss had been served and recorded again.
struct Timeline {
    stopped: Instant,
    restarted: Instant,
    recovered: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_cleanly_while_the_database_restarts_and_recover() {
    let logs = Logs::capture();
    let Some(mut pg) = PgServer::start().await.unwrap() else {
        return;
    };
    let url = pg.create_database("nixcache").await.unwrap();
    nixcache::db::migrate::run(&url).await.unwrap();
    let key = upstream_key();
    let upstream = Upstream::start(10).await;
    let (hits, fresh) = (entries("hit", 2, &key), entries("fresh", 64, &key));
    let (absent, new) = (
        entries("absent", 4, &key),
        entries("new-after", 1, &key).remove(0),
    );
    for entry in hits.iter().chain(&fresh).chain([&new]) {
        upstream.add(entry);
    }
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--database-url", &url, "--memory-cache-ttl", "1s"];
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &flags).await;
    let client = client();
    let db = nixcache::db::connect(&url).await.unwrap();

    let mut warm = Vec::new();
    for entry in hits {
        let text = get(&client, &proxy.url(&entry.narinfo_path())).await;
        assert_eq!(get(&client, &proxy.url(&nar_path(&entry))).await.body, entry.file);
        assert!(
            wait_until(TIMEOUT, || recorded(&*db, &entry)).await,
            "not recorded"
        );
        warm.push((entry, text.body));
    }
    let load = Arc::new(Load {
        client: client.clone(),
        base: proxy.url(""),
        hits: warm,
        fresh,
        next_fresh: AtomicUsize::new(0),
        absent,
        stop: AtomicBool::new(false),
    });
    let workers: Vec<_> = (KINDS.iter().chain(&KINDS))
        .map(|&kind| tokio::spawn(worker(Arc::clone(&load), kind)))
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = Instant::now();
    pg.stop().await.unwrap();
    // Not ready while the database is down (Kubernetes takes the pod out of the Service).
    let ready = get(&client, &proxy.url("/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", ready.text());
    assert_eq!(ready.text(), "not ready: metadata database unreachable\n");
    tokio::time::sleep(OUTAGE.saturating_sub(stopped.elapsed())).await;
    pg.start_again().await.unwrap();
    let restarted = Instant::now();
    let ready = wait_until(Duration::from_secs(10), || async {
        get(&client, &proxy.url("/readyz")).await.status == StatusCode::OK
    });
    assert!(ready.await, "not ready 10 s after the database came back");

    // A new miss, through the same proxy: fetched and recorded within a few seconds.
    let recovered = wait_until(Duration::from_secs(10), || async {
        get(&client, &proxy.url(&new.narinfo_path())).await.status == StatusCode::OK
    })
    .await;
    let recovery = restarted.elapsed();
    assert!(
        recovered,
        "narinfo lookups still fail 10 s after the database came back"
    );
    let got = get(&client, &proxy.url(&nar_path(&new))).await;
    assert!(
        got.status == StatusCode::OK && got.body == new.file,
        "{}",
        got.status
    );
    let new_recorded = wait_until(TIMEOUT, || recorded(&*db, &new)).await;
    assert!(new_recorded, "the new miss was not recorded");
    let recovered = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for worker in workers {
        samples.extend(worker.await.unwrap());
    }

    let timeline = Timeline {
        stopped,
        restarted,
        recovered,
    };
    check_answers(&samples, &timeline);
    eprintln!("back {recovery:?} after the restart");
    let logged = logs.lines_with(&["request failed", "status=503", "database error"]);
    assert!(!logged.is_empty(), "the failures were not logged");
    // Hits stayed hits: no entry fetched twice from the upstream.
    for (entry, _) in &load.hits {
        assert_eq!(upstream.gets(&entry.narinfo_path()), 1);
        assert_eq!(upstream.gets(&entry.upstream_nar_path()), 1);
    }
    assert!(wait_until(TIMEOUT, || async { proxy.tmp_files().is_empty() }).await);
    let all = load.hits.iter().map(|(e, _)| e).chain(&load.fresh).chain([&new]);
    check_recorded_rightly(&*db, &proxy, all).await;
}

async fn recorded(db: &dyn MetadataStore, entry: &Entry) -> bool {
    let file = NarFile::parse(&entry.file_name()).unwrap();
    db.get_nar(&file).await.unwrap().is_some()
}

/// Every answer was right, each kind of request met the outage (and failed only then), and
/// none failed after the recovery.
fn check_answers(samples: &[Sample], t: &Timeline) {
    let problems: Vec<_> = samples
        .iter()
        .filter_map(|s| {
            Some(format!(
                "at {:.3} s: {}",
                offset(s.at, t.stopped),
                s.problem.as_ref()?
            ))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "{} bad answers: {problems:#?}",
        problems.len()
    );
    let mut by_kind: BTreeMap<(Kind, u16), usize> = BTreeMap::new();
    for s in samples {
        *by_kind.entry((s.kind, s.status)).or_default() += 1;
    }
    let slowest = samples.iter().map(|s| s.took).max().unwrap_or_default();
    eprintln!("answers by kind and status: {by_kind:?}; slowest {slowest:?}");
    for kind in KINDS {
        let failed = |s: &&Sample| s.kind == kind && s.status == 503;
        assert!(
            samples.iter().any(|s| failed(&s)),
            "no {kind:?} request met the outage: {by_kind:?}"
        );
        // Requests in flight when the server went down fail too.
        let outside: Vec<_> = (samples.iter().filter(failed))
            .map(|s| offset(s.at, t.stopped))
            .filter(|&at| at < -1.0 || at > offset(t.restarted, t.stopped))
            .collect();
        assert!(
            outside.is_empty(),
            "{kind:?} failed outside the outage, started at {outside:?} s \
             (stopped at 0, restarted at {:.3} s)",
            offset(t.restarted, t.stopped)
        );
        let after: Vec<_> = samples
            .iter()
            .filter(|s| s.kind == kind && s.at > t.recovered)
            .collect();
        assert!(!after.is_empty(), "no {kind:?} request after the recovery");
        assert!(
            after.iter().all(|s| s.status != 503),
            "{kind:?} still fails: {by_kind:?}"
        );
    }
}

/// Every NAR row has its stored object with the right bytes, and every narinfo row names its
/// entry's NAR. (An object without a row is harmless: a fill whose row could not be written.)
async fn check_recorded_rightly<'a>(
    db: &dyn MetadataStore,
    proxy: &Proxy,
    entries: impl Iterator<Item = &'a Entry>,
) {
    for entry in entries {
        let file = NarFile::parse(&entry.file_name()).unwrap();
        if let Some(row) = db.get_nar(&file).await.unwrap() {
            let stored = proxy.stored_file(&entry.file_name());
            let stored = stored.unwrap_or_else(|| panic!("{} recorded but not stored", entry.file_name()));
            assert!(
                std::fs::read(stored).unwrap() == entry.file,
                "stored bytes differ"
            );
            let expected = (entry.file.len() as u64, entry.info.nar_hash);
            assert_eq!((row.file_size, row.nar_hash), expected);
        }
        if let Some(record) = db.get_narinfo(entry.store_path.hash()).await.unwrap() {
            assert_eq!(record.info.nar_hash, entry.info.nar_hash);
            assert_eq!(record.nar_file, file);
        }
    }
}
