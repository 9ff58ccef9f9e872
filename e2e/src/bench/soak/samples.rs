//! What the soak watches: every interval, the nixcache process's RSS, open fds, threads and
//! temp files (under `<data dir>/tmp`), what the clients got, and some of the proxy's own
//! counters; then the table over time and the verdict: the last third of the run against the
//! samples just after warm-up.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::outcome::{Counters, Kind, Outcome};
use crate::bench::procfs;

/// The proxy's own counters at a sample (from `/metrics`).
#[derive(Clone, Debug, Default)]
pub struct Proxied {
    pub nar_misses: f64,
    pub narinfo_misses: f64,
    pub evicted: f64,
    pub abandoned: f64,
}

/// One look at the process.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Duration,
    /// The upstream's weather then, or what the moment is (idle).
    pub note: String,
    pub rss_mib: f64,
    pub fds: usize,
    pub threads: u64,
    pub temp_files: usize,
    pub temp_bytes: u64,
    /// Every request so far, by (kind, outcome).
    pub counts: BTreeMap<(Kind, String), u64>,
    pub proxy: Proxied,
}

/// Where to look.
pub struct Probe {
    pid: u32,
    tmp: PathBuf,
    metrics_url: String,
}

impl Probe {
    pub fn new(pid: u32, data_dir: &Path, base: &str) -> Probe {
        Probe {
            pid,
            tmp: data_dir.join("tmp"),
            metrics_url: format!("{base}/metrics"),
        }
    }

    pub async fn sample(&self, at: Duration, note: &str, counters: &Counters) -> Result<Sample> {
        let pid = self.pid;
        let rss_kib =
            procfs::status_value(pid, "VmRSS").with_context(|| format!("nixcache (pid {pid}) is gone"))?;
        let (temp_files, temp_bytes) = files_under(&self.tmp);
        let (_, body) = crate::http::get(&self.metrics_url).await?;
        let text = String::from_utf8_lossy(&body);
        let lookups = "nixcache_cache_lookups_total";
        Ok(Sample {
            at,
            note: note.to_string(),
            rss_mib: rss_kib as f64 / 1024.0,
            fds: procfs::open_fds(pid).unwrap_or(0),
            threads: procfs::status_value(pid, "Threads").unwrap_or(0),
            temp_files,
            temp_bytes,
            counts: counters.snapshot(),
            proxy: Proxied {
                nar_misses: metric(&text, lookups, &["kind=\"nar\"", "result=\"miss\""]),
                narinfo_misses: metric(&text, lookups, &["kind=\"narinfo\"", "result=\"miss\""]),
                evicted: metric(&text, "nixcache_gc_evictions_total", &[]),
                abandoned: metric(&text, "nixcache_fills_abandoned_total", &[]),
            },
        })
    }
}

/// Regular files under `dir`, recursively, but for the processes' lock files: how many, and
/// their bytes.
fn files_under(dir: &Path) -> (usize, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let (mut files, mut bytes) = (0, 0);
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let (f, b) = files_under(&entry.path());
            files += f;
            bytes += b;
        } else if entry.file_name() != nixcache::scratch::LOCK_FILE {
            files += 1;
            bytes += meta.len();
        }
    }
    (files, bytes)
}

/// The sum of the samples of `name` whose labels contain every one of `parts`.
fn metric(text: &str, name: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(['{', ' '])))
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| {
            let value = l.rfind("} ").map_or(&l[name.len()..], |at| &l[at + 1..]);
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        // Not `sum()`: an empty float sum is -0.
        .fold(0.0, |a, b| a + b)
}

/// Requests of `kinds` in `counts`: (all, failed).
fn requests(counts: &BTreeMap<(Kind, String), u64>, kinds: &[Kind]) -> (u64, u64) {
    counts
        .iter()
        .filter(|((k, _), _)| kinds.contains(k))
        .fold((0, 0), |(all, failed), ((_, label), n)| {
            (all + n, failed + if Outcome::failed(label) { *n } else { 0 })
        })
}

/// The table over time: resources at each sample, requests since the one before.
pub fn table(samples: &[Sample]) -> String {
    let mut out = String::from(
        "| min | upstream | RSS MiB | fds | threads | temp files | temp MiB | hits | misses | cancels \
         | uploads | failed | proxy misses (NAR / narinfo) | evictions / abandoned fills (total) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut previous: Option<&Sample> = None;
    for s in samples {
        let before = previous.map(|p| (&p.counts, &p.proxy));
        let empty = (BTreeMap::new(), Proxied::default());
        let (counts0, proxy0) = before.unwrap_or((&empty.0, &empty.1));
        let delta = |kinds: &[Kind]| {
            let (a, fa) = requests(&s.counts, kinds);
            let (b, fb) = requests(counts0, kinds);
            (a - b.min(a), fa - fb.min(fa))
        };
        let (_, failed) = delta(&Kind::ALL);
        let _ = writeln!(
            out,
            "| {:.1} | {} | {:.1} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {failed} | {:.0} / {:.0} | {:.0} / {:.0} |",
            s.at.as_secs_f64() / 60.0,
            s.note,
            s.rss_mib,
            s.fds,
            s.threads,
            s.temp_files,
            s.temp_bytes as f64 / (1 << 20) as f64,
            delta(&[Kind::Hit]).0,
            delta(&[Kind::Miss]).0,
            delta(&[Kind::Cancel]).0,
            delta(&[Kind::Upload, Kind::UploadCut]).0,
            s.proxy.nar_misses - proxy0.nar_misses,
            s.proxy.narinfo_misses - proxy0.narinfo_misses,
            s.proxy.evicted,
            s.proxy.abandoned,
        );
        previous = Some(s);
    }
    out
}

/// Every request of the run, by kind and outcome.
pub fn outcomes(counts: &BTreeMap<(Kind, String), u64>) -> String {
    let mut out = String::from("| clients | requests | outcomes |\n|---|---|---|\n");
    for kind in Kind::ALL {
        let (all, _) = requests(counts, &[kind]);
        let each: Vec<String> = counts
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, label), n)| format!("{label}: {n}"))
            .collect();
        let _ = writeln!(out, "| {} | {all} | {} |", kind.name(), each.join(", "));
    }
    out
}

/// A resource, how to read it from a sample, and how much above its warm maximum still counts
/// as flat: (factor, plus).
type Watched = (&'static str, fn(&Sample) -> f64, f64, f64);

const WATCHED: [Watched; 4] = [
    ("RSS MiB", |s| s.rss_mib, 1.10, 2.0),
    ("open fds", |s| s.fds as f64, 1.0, 8.0),
    ("threads", |s| s.threads as f64, 1.0, 4.0),
    ("temp files", |s| s.temp_files as f64, 1.0, 4.0),
];

/// The verdict lines, and whether everything was flat: for each resource the maximum over
/// the last third of `load` against the maximum over its second sixth (just after warm-up),
/// with the least-squares slope from the end of warm-up on; then the temp files left once
/// the load stopped (must be none).
pub fn verdict(load: &[Sample], after: &Sample) -> (Vec<String>, bool) {
    let n = load.len();
    if n < 6 {
        return (
            vec![format!(
                "{n} samples under load: too few for a verdict (6 at least)"
            )],
            false,
        );
    }
    let (warm, late) = (&load[n / 6..n / 3], &load[n - n / 3..]);
    let span = |w: &[Sample]| {
        let minutes = |s: Option<&Sample>| s.map_or(0.0, |s| s.at.as_secs_f64() / 60.0);
        format!("{:.1}–{:.1} min", minutes(w.first()), minutes(w.last()))
    };
    let (mut lines, mut flat) = (Vec::new(), true);
    for (name, read, factor, plus) in WATCHED {
        let max = |w: &[Sample]| w.iter().map(read).fold(f64::MIN, f64::max);
        let (w, l) = (max(warm), max(late));
        let ok = l <= w * factor + plus;
        flat &= ok;
        lines.push(format!(
            "{name}: max {w:.1} after warm-up ({}), max {l:.1} in the last third ({}), slope {:+.2} per 10 min: {}",
            span(warm),
            span(late),
            slope(&load[n / 6..], read) * 10.0,
            if ok { "flat" } else { "GROWING" }
        ));
    }
    let clean = after.temp_files == 0;
    flat &= clean;
    lines.push(format!(
        "{} s after the load: {} temp files ({} bytes), {} fds, {} threads, RSS {:.1} MiB: {}",
        (after.at.as_secs_f64() - load[n - 1].at.as_secs_f64()).round(),
        after.temp_files,
        after.temp_bytes,
        after.fds,
        after.threads,
        after.rss_mib,
        if clean {
            "no temp file left"
        } else {
            "TEMP FILES LEFT BEHIND"
        }
    ));
    (lines, flat)
}

/// Least-squares slope of `read` over the samples, per minute.
fn slope(samples: &[Sample], read: fn(&Sample) -> f64) -> f64 {
    let points: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.at.as_secs_f64() / 60.0, read(s)))
        .collect();
    let n = points.len() as f64;
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}
