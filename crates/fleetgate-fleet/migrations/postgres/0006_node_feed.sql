-- Pull mode (issue 20): each node's feed holds the latest signed manifest the
-- orchestrator addressed to it (a release for the canary or a deploy step, or a rollback
-- order); a node behind NAT polls it. Only ever raised: the row keeps the highest
-- sequence. `last_floor` is the anti-rollback floor the node's last accepted heartbeat
-- reported: how the orchestrator sees that a pull-mode node obeyed a rollback order.
ALTER TABLE peers ADD COLUMN last_floor BIGINT NOT NULL DEFAULT 0;

CREATE TABLE node_feed (
    node_id    TEXT PRIMARY KEY NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
    sequence   BIGINT NOT NULL,
    sha256     TEXT NOT NULL,
    manifest   BYTEA NOT NULL,
    updated_at BIGINT NOT NULL
);
