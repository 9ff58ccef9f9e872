-- Fetch leases: which replica is downloading a NAR (or looking up a narinfo) right now.
-- Taken and released in single short statements; a dead holder's row simply expires.
-- Keep this logically identical to migrations/sqlite and migrations/mysql.

CREATE TABLE fetch_leases (
    lease_key     TEXT PRIMARY KEY NOT NULL,  -- nar/<file name> or narinfo/<hash>
    holder        TEXT NOT NULL,              -- replica id, unique per process
    address       TEXT NOT NULL,              -- where the holder streams the fetch to other replicas
    expires_at_ms BIGINT NOT NULL             -- unix milliseconds
);
