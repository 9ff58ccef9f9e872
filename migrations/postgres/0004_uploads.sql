-- NAR files uploaded by clients (PUT /nar/…) whose narinfo has not arrived yet: stored, hashed,
-- but invisible until a narinfo naming them is uploaded and agrees (then they move to `nars`).
-- Keep this logically identical in migrations/{sqlite,postgres,mysql}.

CREATE TABLE uploads (
    nar_file      TEXT PRIMARY KEY NOT NULL,
    file_size     BIGINT NOT NULL,
    nar_hash      TEXT NOT NULL,              -- of the decompressed content, as computed here
    nar_size      BIGINT NOT NULL,
    created_at    BIGINT NOT NULL             -- unix seconds
);
CREATE INDEX uploads_created_at ON uploads (created_at);
