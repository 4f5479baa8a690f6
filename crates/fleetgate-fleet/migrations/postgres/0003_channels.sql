-- Release channels (issue 19): each node belongs to one channel (`stable` unless set at
-- enrollment or changed later); a run targets one channel; a paused channel gets nothing.
ALTER TABLE peers ADD COLUMN channel TEXT NOT NULL DEFAULT 'stable';

CREATE TABLE channels (
    name       TEXT PRIMARY KEY,
    paused     BOOLEAN NOT NULL DEFAULT FALSE,
    reason     TEXT NOT NULL DEFAULT '',
    updated_at BIGINT NOT NULL
);
