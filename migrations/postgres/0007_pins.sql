-- Keep this logically identical in migrations/{sqlite,postgres,mysql}.
-- Store paths GC never evicts (`nixcache pin`, /_nixcache/pins, serve --pin): the path itself,
-- or with closure = 1 everything it references, as far as the cache holds it. Paths need not be
-- cached when pinned.

CREATE TABLE pins (
    hash          TEXT PRIMARY KEY NOT NULL,  -- 32-character store path hash
    store_path    TEXT NOT NULL,              -- base name, <hash>-<name>
    closure       SMALLINT NOT NULL CHECK (closure IN (0, 1)),
    declared      SMALLINT NOT NULL CHECK (declared IN (0, 1)),  -- 1: from serve --pin (a NixCache's spec.pins), kept in line with it at start
    created_at    BIGINT NOT NULL             -- unix seconds
);
