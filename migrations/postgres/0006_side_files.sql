-- Keep this logically identical in migrations/{sqlite,postgres,mysql}.
-- Side files the binary cache protocol serves next to NARs: NAR listings (<hash>.ls) and build
-- logs (log/<drv base name>). Their bytes are in the blob storage, as the NARs' are.

CREATE TABLE side_files (
    path          TEXT PRIMARY KEY NOT NULL,  -- URL path without the leading slash, ASCII, <= 255 bytes
    encoding      TEXT NOT NULL,              -- Content-Encoding of the stored bytes, '' for none
    size          BIGINT NOT NULL,            -- bytes stored
    uploaded      SMALLINT NOT NULL CHECK (uploaded IN (0, 1)),  -- 1: from a client, cannot be fetched again
    created_at    BIGINT NOT NULL,            -- unix seconds
    last_access   BIGINT NOT NULL             -- unix milliseconds
);
CREATE INDEX side_files_last_access ON side_files (last_access);
