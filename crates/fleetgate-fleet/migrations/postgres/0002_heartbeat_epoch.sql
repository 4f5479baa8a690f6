-- Heartbeat epochs (issue 13): a heartbeat carries (epoch, seq); a higher epoch resets
-- the seq window, so a node locked out by an inflated seq re-syncs with a signed epoch
-- bump. Rows from before are epoch 0; (node_id, epoch, seq) is unique.
ALTER TABLE peers ADD COLUMN last_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE heartbeats ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE heartbeats DROP CONSTRAINT heartbeats_node_id_seq_key;
ALTER TABLE heartbeats ADD CONSTRAINT heartbeats_node_id_epoch_seq_key UNIQUE (node_id, epoch, seq);
