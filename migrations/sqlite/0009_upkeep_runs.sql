-- Keep this logically identical in migrations/{sqlite,postgres,mysql}.
-- What garbage collection and fsck did, however they ran (serve's schedule, `nixcache gc`/`fsck`
-- in a CronJob): one row per kind ('gc', 'fsck'), written when a run ends, so that every replica
-- can export it (a CronJob's process exits before anyone scrapes it). Dry runs and runs that
-- found another one running are not recorded. Times are unix milliseconds.

CREATE TABLE upkeep_runs (
    kind              TEXT PRIMARY KEY NOT NULL,
    runs              INTEGER NOT NULL,   -- runs that ended, failed ones included
    failures          INTEGER NOT NULL,
    freed_bytes       INTEGER NOT NULL,   -- over all runs
    last_started_at   INTEGER NOT NULL,
    last_finished_at  INTEGER NOT NULL,
    last_result       TEXT NOT NULL,      -- gc: ok, over_limit, error; fsck: clean, repaired, problems_left, error
    last_ok_at        INTEGER,            -- when the last run that did not fail ended; NULL: none yet
    last_freed_bytes  INTEGER NOT NULL,
    last_problems     INTEGER NOT NULL,   -- fsck: problems found; gc: objects it could not delete
    last_limit_bytes  INTEGER NOT NULL,   -- gc: the size limit it collected down to; fsck: 0
    last_summary      TEXT NOT NULL       -- one line for people (kubectl, /status)
);
