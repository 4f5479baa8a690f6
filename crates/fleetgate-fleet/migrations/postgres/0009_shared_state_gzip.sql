-- A large fleet's run state (one delivery per node: ~30 MB of JSON at 100,000 nodes) is
-- stored gzip-compressed (issue 18): `doc` is then empty and `doc_gzip` holds it. Every
-- copy of the document on its way to the database (the bound argument, the protocol
-- message) was its full size, and each write of it went through the WAL.
ALTER TABLE pipeline_state ADD COLUMN doc_gzip BYTEA;
