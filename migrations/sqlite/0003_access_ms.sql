-- Keep this logically identical in migrations/{sqlite,postgres,mysql}.
-- Last access in milliseconds (was seconds), for the LRU eviction of `nixcache gc`: accesses are
-- recorded in batches, and ordering within a batch interval needs finer than whole seconds.
-- created_at stays in seconds. The NAR table gets the index the narinfo table already has.

UPDATE narinfos SET last_access = last_access * 1000;
UPDATE nars SET last_access = last_access * 1000;
CREATE INDEX nars_last_access ON nars (last_access);
