-- High availability (issue 17): the run's state and the files later stages need live in
-- the shared registry, written only by the holder of the pipeline lease, so a standby
-- orchestrator can take the run over. `since` is when the lease's holder last changed
-- (the database's clock).
ALTER TABLE leases ADD COLUMN since BIGINT NOT NULL DEFAULT 0;

CREATE TABLE pipeline_state (
    name        TEXT PRIMARY KEY NOT NULL,
    doc         TEXT NOT NULL,
    rev         BIGINT NOT NULL,
    holder      TEXT NOT NULL,
    fence_epoch BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE pipeline_files (
    name       TEXT NOT NULL,
    path       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    bytes      BYTEA NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (name, path)
);
