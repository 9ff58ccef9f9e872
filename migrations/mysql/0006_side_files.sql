-- Keep this logically identical in migrations/{sqlite,postgres,mysql}.
-- Side files the binary cache protocol serves next to NARs: NAR listings (<hash>.ls) and build
-- logs (log/<drv base name>). Their bytes are in the blob storage, as the NARs' are.

CREATE TABLE side_files (
    path          VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,  -- URL path without the leading slash
    encoding      VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,   -- Content-Encoding, '' for none
    size          BIGINT NOT NULL,                                              -- bytes stored
    uploaded      SMALLINT NOT NULL CHECK (uploaded IN (0, 1)),  -- 1: from a client, cannot be fetched again
    created_at    BIGINT NOT NULL,                                              -- unix seconds
    last_access   BIGINT NOT NULL,                                              -- unix milliseconds
    PRIMARY KEY (path),
    INDEX side_files_last_access (last_access)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
