-- Heartbeat ingest at fleet scale (issue 18), PostgreSQL: every stored heartbeat used to
-- touch three B-trees (the `id` serial's primary key, the (node_id, epoch, seq) unique
-- index and the (node_id, at) index) and draw from a sequence; now one: the primary key
-- (node_id, at, epoch, seq), the order every query reads a node's heartbeats in (as on
-- SQLite since 0007). `id` was never read. Replay protection does not rest on the dropped
-- unique index: a heartbeat is stored only after the compare-and-swap of its node's
-- (epoch, seq) pair in `peers`, in the same transaction.
ALTER TABLE heartbeats DROP COLUMN id;
ALTER TABLE heartbeats DROP CONSTRAINT heartbeats_node_id_epoch_seq_key;
DROP INDEX heartbeats_node_at;
ALTER TABLE heartbeats ADD PRIMARY KEY (node_id, at, epoch, seq);
-- Each batch updates its nodes' rows in `peers` (their last (epoch, seq), version, time):
-- free room on every page lets PostgreSQL keep the new row version on the same page
-- (a HOT update: no new entry in the primary key's index, old versions pruned in place).
ALTER TABLE peers SET (fillfactor = 50);
