-- fleetgate fleet registry, SQLite flavour. Times are unix seconds.
CREATE TABLE peers (
    id                  TEXT PRIMARY KEY NOT NULL,
    address             TEXT NOT NULL,
    public_key          TEXT NOT NULL,
    master_key_verified BOOLEAN NOT NULL DEFAULT FALSE,
    status              TEXT NOT NULL DEFAULT 'active',
    current_version     TEXT,
    code_hash           TEXT,
    last_heartbeat      BIGINT,
    last_seq            BIGINT NOT NULL DEFAULT 0,
    region              TEXT NOT NULL DEFAULT 'default',
    enrolled_at         BIGINT NOT NULL,
    cert                TEXT
);

CREATE TABLE heartbeats (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id          TEXT NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
    at               BIGINT NOT NULL,
    sent_at          BIGINT NOT NULL,
    seq              BIGINT NOT NULL,
    version          TEXT NOT NULL,
    code_hash        TEXT NOT NULL,
    healthy          BOOLEAN NOT NULL,
    exceptions_total BIGINT NOT NULL,
    requests_total   BIGINT NOT NULL,
    bench            TEXT NOT NULL DEFAULT '{}',
    UNIQUE (node_id, seq)
);
CREATE INDEX heartbeats_node_at ON heartbeats (node_id, at);

CREATE TABLE leases (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE canary_selections (
    run_id      TEXT PRIMARY KEY NOT NULL,
    seed_hex    TEXT NOT NULL,
    selection   TEXT NOT NULL,
    fence_epoch BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE deployments (
    run_id      TEXT NOT NULL,
    node_id     TEXT NOT NULL,
    status      TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    fence_epoch BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (run_id, node_id)
);
