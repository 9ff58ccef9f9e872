-- Keep this logically identical in migrations/{sqlite,postgres,mysql}.
-- GC marks an evicted narinfo instead of deleting it: a lookup of the path is a miss again (the
-- upstream is asked anew), but a client that cached the narinfo itself (Nix keeps them for 30
-- days) can still fetch the NAR, which is then downloaded again from the URL kept here.
-- Marked rows are deleted for good a while later.

ALTER TABLE narinfos ADD COLUMN evicted_at BIGINT NULL;  -- unix milliseconds; NULL = live
CREATE INDEX narinfos_evicted_at ON narinfos (evicted_at);
