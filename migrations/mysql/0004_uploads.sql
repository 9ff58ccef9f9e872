-- NAR files uploaded by clients (PUT /nar/…) whose narinfo has not arrived yet: stored, hashed,
-- but invisible until a narinfo naming them is uploaded and agrees (then they move to `nars`).
-- Keep this logically identical in migrations/{sqlite,postgres,mysql}.

CREATE TABLE uploads (
    nar_file      VARCHAR(80) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    file_size     BIGINT NOT NULL,
    nar_hash      VARCHAR(80) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    nar_size      BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (nar_file),
    INDEX uploads_created_at (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
