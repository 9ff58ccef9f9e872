-- Keep this logically identical in migrations/{sqlite,postgres,mysql}.
-- The background scrub's record of each stored NAR (unix milliseconds; 0: never): when it last
-- looked at it (whatever it found: each pass takes the NARs looked at longest ago first, so one
-- it cannot check or repair does not stay at the head) and when it last found it intact.

ALTER TABLE nars ADD COLUMN checked_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nars ADD COLUMN verified_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX nars_checked_at ON nars (checked_at, nar_file);
