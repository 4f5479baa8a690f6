-- The application health each node reported in its last accepted heartbeat (issue 19: the
-- fleet by version, channel and region *with health*, in `fleet list` and the Updates page).
-- NULL until the node's first heartbeat after this migration.
ALTER TABLE peers ADD COLUMN last_healthy BOOLEAN;
