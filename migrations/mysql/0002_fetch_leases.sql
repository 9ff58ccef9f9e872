-- Fetch leases: which replica is downloading a NAR (or looking up a narinfo) right now.
-- Taken and released in single short statements; a dead holder's row simply expires.
-- Keep this logically identical to migrations/sqlite and migrations/postgres.

CREATE TABLE fetch_leases (
    lease_key     VARCHAR(96) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,  -- nar/<file name> or narinfo/<hash>
    holder        VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,  -- replica id
    address       VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,  -- where the holder streams the fetch
    expires_at_ms BIGINT NOT NULL,                                            -- unix milliseconds
    PRIMARY KEY (lease_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
