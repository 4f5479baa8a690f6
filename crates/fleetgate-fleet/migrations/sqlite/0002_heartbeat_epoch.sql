-- Heartbeat epochs (issue 13): a heartbeat carries (epoch, seq); a higher epoch resets
-- the seq window, so a node locked out by an inflated seq re-syncs with a signed epoch
-- bump. Rows from before are epoch 0. SQLite cannot change a table's UNIQUE constraint
-- in place: the heartbeats table is rebuilt with (node_id, epoch, seq) unique.
ALTER TABLE peers ADD COLUMN last_epoch BIGINT NOT NULL DEFAULT 0;

CREATE TABLE heartbeats_epoch (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id          TEXT NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
    at               BIGINT NOT NULL,
    sent_at          BIGINT NOT NULL,
    epoch            BIGINT NOT NULL DEFAULT 0,
    seq              BIGINT NOT NULL,
    version          TEXT NOT NULL,
    code_hash        TEXT NOT NULL,
    healthy          BOOLEAN NOT NULL,
    exceptions_total BIGINT NOT NULL,
    requests_total   BIGINT NOT NULL,
    bench            TEXT NOT NULL DEFAULT '{}',
    UNIQUE (node_id, epoch, seq)
);
INSERT INTO heartbeats_epoch (id, node_id, at, sent_at, epoch, seq, version, code_hash, healthy, exceptions_total, requests_total, bench)
    SELECT id, node_id, at, sent_at, 0, seq, version, code_hash, healthy, exceptions_total, requests_total, bench FROM heartbeats;
DROP TABLE heartbeats;
ALTER TABLE heartbeats_epoch RENAME TO heartbeats;
CREATE INDEX heartbeats_node_at ON heartbeats (node_id, at);
