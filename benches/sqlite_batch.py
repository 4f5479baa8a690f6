#!/usr/bin/env python3
"""Replays the heartbeat endpoint's batch transaction against a copy of a SQLite registry.

    python3 benches/sqlite_batch.py state/fleet.db [BATCH] [--old-layout]

Copies the registry (never touches it), then runs 200 transactions like
`Registry::store_heartbeats`: read the batch's peers, advance each peer's pair, insert the
heartbeats. Nodes are drawn at random from the registry's `sim-NNNNN` peers (enroll them
first with `fleetgate fleet simulate`). `--old-layout` first rebuilds the heartbeats table
as it was before migration 0007 (a rowid table with a (node_id, epoch, seq) unique index
and a (node_id, at) index), to compare the two layouts on the same data.
"""
import random
import shutil
import sqlite3
import sys
import tempfile
import time

args = [a for a in sys.argv[1:] if not a.startswith("--")]
if not args:
    sys.exit(__doc__)
src, batch = args[0], int(args[1]) if len(args) > 1 else 115
work = tempfile.mkdtemp()
db = f"{work}/fleet.db"
with sqlite3.connect(src) as s, sqlite3.connect(db) as d:
    s.backup(d)
c = sqlite3.connect(db, isolation_level=None)
c.execute("pragma journal_mode=wal")
c.execute("pragma synchronous=full")
c.execute("pragma foreign_keys=on")
if "--old-layout" in sys.argv:
    c.execute("BEGIN")
    c.execute("""CREATE TABLE h2 (id INTEGER PRIMARY KEY AUTOINCREMENT,
        node_id TEXT NOT NULL REFERENCES peers(id) ON DELETE CASCADE, at BIGINT NOT NULL,
        sent_at BIGINT NOT NULL, epoch BIGINT NOT NULL DEFAULT 0, seq BIGINT NOT NULL,
        version TEXT NOT NULL, code_hash TEXT NOT NULL, healthy BOOLEAN NOT NULL,
        exceptions_total BIGINT NOT NULL, requests_total BIGINT NOT NULL,
        bench TEXT NOT NULL DEFAULT '{}', UNIQUE (node_id, epoch, seq))""")
    c.execute("""INSERT INTO h2 (node_id, at, sent_at, epoch, seq, version, code_hash, healthy,
        exceptions_total, requests_total, bench) SELECT node_id, at, sent_at, epoch, seq,
        version, code_hash, healthy, exceptions_total, requests_total, bench FROM heartbeats""")
    c.execute("DROP TABLE heartbeats")
    c.execute("ALTER TABLE h2 RENAME TO heartbeats")
    c.execute("CREATE INDEX heartbeats_node_at ON heartbeats (node_id, at)")
    c.execute("COMMIT")
c.execute("pragma wal_checkpoint(truncate)")
ids = [r[0] for r in c.execute("SELECT id FROM peers WHERE id LIKE 'sim-%'")]
if len(ids) < batch:
    sys.exit(f"{src}: {len(ids)} simulated peers, fewer than a batch of {batch}")
rows = c.execute("SELECT count(*) FROM heartbeats").fetchone()[0]
seq = 10**15
t0 = time.time()
for _ in range(200):
    nodes = random.sample(ids, batch)
    seq += 1
    now = int(time.time())
    c.execute("BEGIN IMMEDIATE")
    c.execute(
        "SELECT id, last_epoch, last_seq, status, public_key FROM peers WHERE id IN (%s)"
        % ",".join("?" * batch),
        nodes,
    ).fetchall()
    c.executemany(
        "UPDATE peers SET last_seq = ?, last_heartbeat = ? WHERE id = ?",
        [(seq, now, n) for n in nodes],
    )
    c.executemany(
        "INSERT INTO heartbeats (node_id, at, sent_at, seq, version, code_hash, healthy,"
        " exceptions_total, requests_total, bench, epoch) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        [(n, now, now, seq, "v1.0.0", "simulated", 1, 5, 1000, "{}", 0) for n in nodes],
    )
    c.execute("COMMIT")
dt = time.time() - t0
layout = "old layout" if "--old-layout" in sys.argv else "current layout"
print(f"{layout}: {len(ids)} peers, {rows} heartbeats, batches of {batch}: "
      f"{200 * batch / dt:,.0f} rows/s, {dt / 200 * 1000:.2f} ms per batch")
shutil.rmtree(work)
