//! What garbage collection and fsck did, however they ran (serve's schedule, or `nixcache gc` and
//! `fsck` in a CronJob whose process exits before anyone scrapes it): one row per kind, updated
//! when a run ends, which every replica reads for its metrics and `/status`.

use async_trait::async_trait;

use super::{
    engine::Engine,
    row::corrupt,
    sql::{Arg, SqlDb},
    statements::placeholders,
    store::SqlStore,
    DbError, Timestamp,
};

/// The recorded kinds of upkeep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpkeepKind {
    Gc,
    Fsck,
}

impl UpkeepKind {
    pub const ALL: [UpkeepKind; 2] = [UpkeepKind::Gc, UpkeepKind::Fsck];

    pub fn as_str(self) -> &'static str {
        match self {
            UpkeepKind::Gc => "gc",
            UpkeepKind::Fsck => "fsck",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One run that ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpkeepRun {
    pub kind: UpkeepKind,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// gc: `ok`, `over_limit` (it ran, but what it may not evict still takes more than the
    /// limit), `error`; fsck: `clean`, `repaired`, `problems_left`, `error`.
    pub result: &'static str,
    pub freed_bytes: u64,
    /// fsck: problems found; gc: objects it could not delete.
    pub problems: u64,
    /// gc: the size limit it collected down to; fsck: 0.
    pub limit_bytes: u64,
    /// One line for people.
    pub summary: String,
}

impl UpkeepRun {
    /// The run did not get to its end.
    pub fn failed(&self) -> bool {
        self.result == "error"
    }
}

/// What is recorded of one kind: totals over every run, and the last run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpkeepRecord {
    pub runs: u64,
    pub failures: u64,
    pub freed_bytes: u64,
    pub last: UpkeepRun,
    /// When the last run that did not fail ended.
    pub last_ok_at: Option<Timestamp>,
}

/// The longest summary kept (characters).
const SUMMARY_MAX: usize = 500;

#[async_trait]
pub trait UpkeepStore: Send + Sync {
    /// Adds a run to its kind's totals and makes it the last one.
    async fn record_upkeep(&self, run: &UpkeepRun) -> Result<(), DbError>;
    /// What is recorded, by kind (kinds that never ran are absent).
    async fn upkeep(&self) -> Result<Vec<UpkeepRecord>, DbError>;
}

const COLUMNS: &str = "kind, runs, failures, freed_bytes, last_started_at, last_finished_at, \
                       last_result, last_ok_at, last_freed_bytes, last_problems, last_limit_bytes, last_summary";

/// An upsert that adds to the totals (a plain upsert replaces them); `last_ok_at` stays when
/// this run failed.
fn record_sql(engine: Engine) -> String {
    let insert = format!("INSERT INTO upkeep_runs ({COLUMNS}) VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    let last = [
        "last_started_at",
        "last_finished_at",
        "last_result",
        "last_freed_bytes",
        "last_problems",
        "last_limit_bytes",
        "last_summary",
    ];
    let mysql = engine == Engine::MySql;
    let new = |c: &str| {
        if mysql {
            format!("VALUES({c})")
        } else {
            format!("excluded.{c}")
        }
    };
    let old = |c: &str| {
        if mysql {
            c.to_owned()
        } else {
            format!("upkeep_runs.{c}")
        }
    };
    let mut set = vec![format!("runs = {} + 1", old("runs"))];
    for c in ["failures", "freed_bytes"] {
        set.push(format!("{c} = {} + {}", old(c), new(c)));
    }
    set.push(format!(
        "last_ok_at = COALESCE({}, {})",
        new("last_ok_at"),
        old("last_ok_at")
    ));
    set.extend(last.iter().map(|c| format!("{c} = {}", new(c))));
    if mysql {
        format!("{insert} ON DUPLICATE KEY UPDATE {}", set.join(", "))
    } else {
        format!("{insert} ON CONFLICT (kind) DO UPDATE SET {}", set.join(", "))
    }
}

fn int(n: u64) -> Arg {
    i64::try_from(n).unwrap_or(i64::MAX).into()
}

/// At most [`SUMMARY_MAX`] characters, on one line.
fn one_line(summary: &str) -> String {
    let line = summary.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(SUMMARY_MAX) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line,
    }
}

#[async_trait]
impl<DB: SqlDb> UpkeepStore for SqlStore<DB> {
    async fn record_upkeep(&self, run: &UpkeepRun) -> Result<(), DbError> {
        let ok_at = (!run.failed()).then(|| run.finished_at.unix_ms());
        let args: Vec<Arg> = vec![
            run.kind.as_str().into(),
            i64::from(run.failed()).into(),
            int(run.freed_bytes),
            run.started_at.unix_ms().into(),
            run.finished_at.unix_ms().into(),
            run.result.into(),
            ok_at.into(),
            int(run.freed_bytes),
            int(run.problems),
            int(run.limit_bytes),
            one_line(&run.summary).into(),
        ];
        let sql = placeholders(self.engine(), &record_sql(self.engine()));
        self.exec(&sql, args).await?;
        Ok(())
    }

    async fn upkeep(&self) -> Result<Vec<UpkeepRecord>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM upkeep_runs ORDER BY kind");
        let rows = self.fetch_all(&sql, vec![]).await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            let name = DB::text(row, "kind")?.unwrap_or_default();
            // A kind a newer nixcache records: not ours to show.
            let Some(kind) = UpkeepKind::parse(&name) else {
                continue;
            };
            records.push(record::<DB>(row, kind, &name)?);
        }
        Ok(records)
    }
}

fn record<DB: SqlDb>(row: &DB::Row, kind: UpkeepKind, name: &str) -> Result<UpkeepRecord, DbError> {
    let count = |column: &'static str| {
        let n = DB::int(row, column)?.ok_or_else(|| corrupt(name, column, "NULL"))?;
        u64::try_from(n).map_err(|e| corrupt(name, column, e))
    };
    let at = |column: &'static str| Ok::<_, DbError>(DB::int(row, column)?.map(Timestamp::from_unix_ms));
    let result = DB::text(row, "last_result")?.unwrap_or_default();
    Ok(UpkeepRecord {
        runs: count("runs")?,
        failures: count("failures")?,
        freed_bytes: count("freed_bytes")?,
        last_ok_at: at("last_ok_at")?,
        last: UpkeepRun {
            kind,
            started_at: at("last_started_at")?.unwrap_or_default(),
            finished_at: at("last_finished_at")?.unwrap_or_default(),
            result: known_result(&result),
            freed_bytes: count("last_freed_bytes")?,
            problems: count("last_problems")?,
            limit_bytes: count("last_limit_bytes")?,
            summary: DB::text(row, "last_summary")?.unwrap_or_default(),
        },
    })
}

/// The recorded result as one of the names runs record (`unknown` for any other).
fn known_result(result: &str) -> &'static str {
    ["ok", "over_limit", "error", "clean", "repaired", "problems_left"]
        .into_iter()
        .find(|r| *r == result)
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sql_adds_to_the_totals_on_every_engine() {
        let sqlite = record_sql(Engine::Sqlite);
        assert!(sqlite.contains("runs = upkeep_runs.runs + 1"), "{sqlite}");
        assert!(sqlite.contains("freed_bytes = upkeep_runs.freed_bytes + excluded.freed_bytes"));
        assert!(sqlite.contains("last_ok_at = COALESCE(excluded.last_ok_at, upkeep_runs.last_ok_at)"));
        let mysql = record_sql(Engine::MySql);
        assert!(
            mysql.contains("ON DUPLICATE KEY UPDATE runs = runs + 1"),
            "{mysql}"
        );
        assert!(mysql.contains("last_summary = VALUES(last_summary)"), "{mysql}");
    }

    #[test]
    fn summaries_are_one_bounded_line() {
        assert_eq!(one_line("evicted 3\n  freed 1 KiB"), "evicted 3 freed 1 KiB");
        let long = "é".repeat(SUMMARY_MAX + 10);
        let kept = one_line(&long);
        assert_eq!(kept.chars().count(), SUMMARY_MAX + 1);
        assert!(kept.ends_with('…'));
    }
}
