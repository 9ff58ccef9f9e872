-- Narinfos verified from an upstream, and the NAR files we hold.
-- Keep this logically identical to migrations/sqlite and migrations/mysql.

CREATE TABLE narinfos (
    hash          TEXT PRIMARY KEY NOT NULL,  -- 32-character store path hash
    store_path    TEXT NOT NULL,              -- base name, <hash>-<name>
    nar_file      TEXT NOT NULL,              -- our NAR file name, <filehash>.nar.xz
    compression   TEXT NOT NULL,
    file_hash     TEXT,                       -- sha256:<nixbase32>, when the upstream gave it
    file_size     BIGINT,
    nar_hash      TEXT NOT NULL,
    nar_size      BIGINT NOT NULL,
    refs          TEXT NOT NULL,              -- space-separated base names
    deriver       TEXT,
    ca            TEXT,
    sigs          TEXT NOT NULL,              -- upstream signatures, one per line
    upstream_url  TEXT NOT NULL,              -- absolute URL of the NAR at the upstream
    proxy_key     TEXT,                       -- public key that made proxy_sig
    proxy_sig     TEXT,
    created_at    BIGINT NOT NULL,            -- unix seconds
    last_access   BIGINT NOT NULL
);
CREATE INDEX narinfos_nar_file ON narinfos (nar_file);
CREATE INDEX narinfos_last_access ON narinfos (last_access);

CREATE TABLE nars (
    nar_file      TEXT PRIMARY KEY NOT NULL,
    file_size     BIGINT NOT NULL,
    nar_hash      TEXT NOT NULL,              -- verified: a narinfo naming this file must agree
    created_at    BIGINT NOT NULL,
    last_access   BIGINT NOT NULL
);
