-- Pull feeds at fleet scale (issue 18): a manifest addressed to many nodes is stored once,
-- content-addressed, and each node's feed row names it by SHA-256, instead of a copy of
-- the manifest in every node's row (100,000 nodes × a few KB per send).
CREATE TABLE feed_manifests (
    sha256     TEXT PRIMARY KEY NOT NULL,
    sequence   BIGINT NOT NULL,
    manifest   BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
INSERT INTO feed_manifests (sha256, sequence, manifest, created_at)
    SELECT sha256, MAX(sequence), manifest, MIN(updated_at) FROM node_feed GROUP BY sha256;
ALTER TABLE node_feed DROP COLUMN manifest;
