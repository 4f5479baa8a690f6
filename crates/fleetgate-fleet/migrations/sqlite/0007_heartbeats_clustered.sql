-- Heartbeat ingest at fleet scale (issue 18): the heartbeats table is clustered by node
-- and time (WITHOUT ROWID, primary key (node_id, at, epoch, seq)) instead of a rowid
-- table with two indexes. Every query reads one node's heartbeats by time, in
-- (at, epoch, seq) order, which is now the table's own order; an insert touches one
-- B-tree instead of three (rowid, the (node_id, epoch, seq) unique index and the
-- (node_id, at) index), which measured ~1.6x the batch store rate on a 20,000-node
-- registry. Replay protection does not rest on the dropped unique index: a heartbeat is
-- stored only after the compare-and-swap of its node's (epoch, seq) pair in `peers`, in
-- the same transaction.
CREATE TABLE heartbeats_clustered (
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
    PRIMARY KEY (node_id, at, epoch, seq)
) WITHOUT ROWID;
INSERT INTO heartbeats_clustered (node_id, at, sent_at, epoch, seq, version, code_hash, healthy, exceptions_total, requests_total, bench)
    SELECT node_id, at, sent_at, epoch, seq, version, code_hash, healthy, exceptions_total, requests_total, bench FROM heartbeats;
DROP TABLE heartbeats;
ALTER TABLE heartbeats_clustered RENAME TO heartbeats;
