-- Narinfos verified from an upstream, and the NAR files we hold.
-- Keep this logically identical to migrations/sqlite and migrations/postgres.
-- Keys and compared columns are VARCHAR with a binary collation (byte-wise equality, as on the
-- other engines); names are ASCII by construction. Store path base names (<hash>-<name>) are at most
-- 32 + 1 + 211 bytes; NAR file names 52 + 8. Free-form upstream values are utf8mb4 TEXT.

CREATE TABLE narinfos (
    hash          VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    store_path    VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    nar_file      VARCHAR(80) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    compression   TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    file_hash     VARCHAR(80) CHARACTER SET ascii COLLATE ascii_bin NULL,
    file_size     BIGINT NULL,
    nar_hash      VARCHAR(80) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    nar_size      BIGINT NOT NULL,
    refs          MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    deriver       VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NULL,
    ca            TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    sigs          TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    upstream_url  TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    proxy_key     TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    proxy_sig     TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    created_at    BIGINT NOT NULL,
    last_access   BIGINT NOT NULL,
    PRIMARY KEY (hash),
    INDEX narinfos_nar_file (nar_file),
    INDEX narinfos_last_access (last_access)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE nars (
    nar_file      VARCHAR(80) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    file_size     BIGINT NOT NULL,
    nar_hash      VARCHAR(80) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at    BIGINT NOT NULL,
    last_access   BIGINT NOT NULL,
    PRIMARY KEY (nar_file)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
