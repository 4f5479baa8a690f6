//! The run's state in the shared registry (high availability): the pipeline state
//! document and the files later stages need (the completed-release record, signed
//! manifests, benchmark baselines, run archives), written only by the holder of the
//! pipeline lease — the lease check and the write are one transaction, the lease row
//! locked (`FOR UPDATE` on PostgreSQL) so a takeover cannot interleave — and with
//! compare-and-swap on the document's revision, so a deposed orchestrator can never
//! overwrite what its successor wrote.

use crate::error::FleetError;
use crate::registry::Registry;
use std::io::{Read, Write};

/// Documents larger than this are stored gzip-compressed (`doc_gzip`); smaller ones stay
/// plain text, readable with SQL.
pub const COMPRESS_ABOVE: usize = 256 * 1024;
/// The largest document read back from its compressed form (as the state file's limit).
pub const MAX_SHARED_DOC: u64 = 64 * 1024 * 1024;

/// The row as stored: `doc`, or `doc_gzip` when it was compressed.
#[derive(sqlx::FromRow)]
struct StoredDoc {
    doc: String,
    doc_gzip: Option<Vec<u8>>,
    rev: i64,
    holder: String,
    fence_epoch: i64,
    updated_at: i64,
}

impl StoredDoc {
    fn into_doc(self) -> Result<SharedDoc, FleetError> {
        let doc = match self.doc_gzip {
            None => self.doc,
            Some(gz) => inflate(&gz)?,
        };
        Ok(SharedDoc {
            doc,
            rev: self.rev,
            holder: self.holder,
            fence_epoch: self.fence_epoch,
            updated_at: self.updated_at,
        })
    }
}

fn corrupt(why: String) -> FleetError {
    FleetError::Corrupt {
        what: "pipeline_state.doc_gzip",
        value: why,
    }
}

/// The compressed document, read back: at most [`MAX_SHARED_DOC`] bytes of UTF-8.
fn inflate(gz: &[u8]) -> Result<String, FleetError> {
    let out = gunzip(gz).map_err(corrupt)?;
    String::from_utf8(out).map_err(|e| corrupt(format!("not UTF-8: {e}")))
}

/// `gz` inflated, at most [`MAX_SHARED_DOC`] bytes (what went wrong otherwise).
fn gunzip(gz: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .take(MAX_SHARED_DOC + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not gzip: {e}"))?;
    if out.len() as u64 > MAX_SHARED_DOC {
        return Err(format!("it inflates to more than {MAX_SHARED_DOC} bytes"));
    }
    Ok(out)
}

/// `bytes` gzip-compressed at the fastest level.
fn gzip(bytes: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 16),
        flate2::Compression::fast(),
    );
    enc.write_all(bytes)?;
    enc.finish()
}

/// `doc` as stored: `(text, None)` when small, `("", Some(gzip))` above [`COMPRESS_ABOVE`].
/// The fastest level: a 100,000-node state compressed 12-fold at it (16.2 MB to 1.34 MB,
/// measured in `benches/fleet100k.sh`).
fn deflate(doc: &str) -> Result<(&str, Option<Vec<u8>>), std::io::Error> {
    if doc.len() <= COMPRESS_ABOVE {
        return Ok((doc, None));
    }
    Ok(("", Some(gzip(doc.as_bytes())?)))
}

/// The state document as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SharedDoc {
    /// The state (the JSON of the state file), inflated when it was stored compressed.
    pub doc: String,
    /// Revision: 1 for the first write, one more for each write after.
    pub rev: i64,
    /// The orchestrator that wrote it.
    pub holder: String,
    /// The lease epoch it was written under.
    pub fence_epoch: i64,
    /// When (the database's clock).
    pub updated_at: i64,
}

/// A file of the state directory, stored beside the document. Written with its content
/// in `bytes`; a file larger than [`COMPRESS_ABOVE`] is stored gzip-compressed (the
/// archive of a run over a large fleet compresses about 12-fold), so a row read back by
/// [`Registry::shared_files`] holds the stored form: [`SharedFile::content`] gives the
/// content, checked against `sha256`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SharedFile {
    /// Its path under the state directory (`/`-separated, relative).
    pub path: String,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// The content, or (read back) its stored form.
    pub bytes: Vec<u8>,
}

impl SharedFile {
    /// The content: `bytes` when they are it, else inflated (at most [`MAX_SHARED_DOC`]
    /// bytes); either way its SHA-256 is `sha256`.
    ///
    /// # Errors
    /// [`FleetError::Corrupt`] naming the path: neither the bytes nor their inflated
    /// form have the recorded digest.
    pub fn content(self) -> Result<Vec<u8>, FleetError> {
        let matches = |b: &[u8]| fleetgate_trust::provenance::sha256_hex(b) == self.sha256;
        if matches(&self.bytes) {
            return Ok(self.bytes);
        }
        let bad = |why: String| FleetError::Corrupt {
            what: "pipeline_files.bytes",
            value: format!("{}: {why}", self.path),
        };
        if !self.bytes.starts_with(&[0x1f, 0x8b]) {
            return Err(bad("its SHA-256 is not the recorded one".into()));
        }
        let out = gunzip(&self.bytes).map_err(bad)?;
        if !matches(&out) {
            return Err(bad("inflated, its SHA-256 is not the recorded one".into()));
        }
        Ok(out)
    }
}

/// Why a shared write was refused.
#[derive(Debug, thiserror::Error)]
pub enum SharedWriteError {
    /// The writer does not hold the lease (at that epoch, unexpired): nothing was written.
    #[error(transparent)]
    Fenced(FleetError),
    /// The document moved on since the writer read it: nothing was written.
    #[error(
        "the shared run state moved on: it is at revision {current}, this orchestrator read {expected}; read it again"
    )]
    Conflict {
        /// Revision the writer read.
        expected: i64,
        /// Revision stored.
        current: i64,
    },
    /// The database failed.
    #[error(transparent)]
    Db(FleetError),
}

impl Registry {
    /// The state document `name`, if one was written.
    pub async fn shared_state(&self, name: &str) -> Result<Option<SharedDoc>, FleetError> {
        const SQL: &str = "SELECT doc, doc_gzip, rev, holder, fence_epoch, updated_at FROM pipeline_state WHERE name = $1";
        let row: Option<StoredDoc> = with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(name)
                .fetch_optional(pool)
                .await
                .map_err(FleetError::db("read the shared run state"))?
        });
        row.map(StoredDoc::into_doc).transpose()
    }

    /// The revision of the state document `name` (`None` before the first write): a
    /// reader that already holds this revision need not fetch the document again.
    pub async fn shared_state_rev(&self, name: &str) -> Result<Option<i64>, FleetError> {
        const SQL: &str = "SELECT rev FROM pipeline_state WHERE name = $1";
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(SQL)
                .bind(name)
                .fetch_optional(pool)
                .await
                .map_err(FleetError::db("read the shared run state's revision"))?
        }))
    }

    /// The files stored beside the state document `name`, by path, as stored
    /// ([`SharedFile::content`] gives each one's content).
    pub async fn shared_files(&self, name: &str) -> Result<Vec<SharedFile>, FleetError> {
        const SQL: &str =
            "SELECT path, sha256, bytes FROM pipeline_files WHERE name = $1 ORDER BY path";
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(name)
                .fetch_all(pool)
                .await
                .map_err(FleetError::db("read the shared state files"))?
        }))
    }

    /// The paths and content digests of the files stored beside the state document
    /// `name` (no content): a reader fetches only the files it does not hold already
    /// ([`Registry::shared_file`]), one at a time, so its memory is bounded by the
    /// largest file rather than by all of them.
    pub async fn shared_file_index(&self, name: &str) -> Result<Vec<(String, String)>, FleetError> {
        const SQL: &str = "SELECT path, sha256 FROM pipeline_files WHERE name = $1 ORDER BY path";
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(name)
                .fetch_all(pool)
                .await
                .map_err(FleetError::db("list the shared state files"))?
        }))
    }

    /// The file `path` stored beside the state document `name`, as stored
    /// ([`SharedFile::content`] gives its content), if there is one.
    pub async fn shared_file(
        &self,
        name: &str,
        path: &str,
    ) -> Result<Option<SharedFile>, FleetError> {
        const SQL: &str =
            "SELECT path, sha256, bytes FROM pipeline_files WHERE name = $1 AND path = $2";
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(name)
                .bind(path)
                .fetch_optional(pool)
                .await
                .map_err(FleetError::db("read a shared state file"))?
        }))
    }

    /// Write the state document `name` (and `files`, upserted by path) if `holder` holds
    /// the lease `lease` at `epoch`, unexpired by the database's clock, and the stored
    /// revision is `expected_rev` (0: none stored yet). Returns the new revision.
    #[allow(
        clippy::too_many_arguments,
        reason = "one fenced write, every part named"
    )]
    pub async fn put_shared_state(
        &self,
        name: &str,
        lease: &str,
        holder: &str,
        epoch: i64,
        expected_rev: i64,
        doc: &str,
        files: &[SharedFile],
    ) -> Result<i64, SharedWriteError> {
        let db = |what: &'static str| {
            move |e: sqlx::Error| SharedWriteError::Db(FleetError::db(what)(e))
        };
        let (doc, gz) = deflate(doc).map_err(|e| {
            SharedWriteError::Db(FleetError::Invalid {
                what: "shared run state",
                value: e.to_string(),
                expected: "compressible",
            })
        })?;
        // Large files (run archives) stored compressed; their digest stays the content's.
        let stored = files
            .iter()
            .map(|f| {
                if f.bytes.len() > COMPRESS_ABOVE {
                    gzip(&f.bytes).map(Some)
                } else {
                    Ok(None)
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                SharedWriteError::Db(FleetError::Invalid {
                    what: "shared state file",
                    value: e.to_string(),
                    expected: "compressible",
                })
            })?;
        let now = self.db_now().await.map_err(SharedWriteError::Db)?;
        const CHECK_PG: &str = "SELECT epoch FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > $4 FOR UPDATE";
        const CHECK_SQLITE: &str = "SELECT epoch FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > $4";
        let check = if self.is_postgres() {
            CHECK_PG
        } else {
            CHECK_SQLITE
        };
        const FILE: &str = "INSERT INTO pipeline_files (name, path, sha256, bytes, updated_at) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (name, path) DO UPDATE SET sha256 = excluded.sha256, bytes = excluded.bytes, updated_at = excluded.updated_at";
        const INSERT: &str = "INSERT INTO pipeline_state (name, doc, doc_gzip, rev, holder, fence_epoch, updated_at) VALUES ($1, $2, $6, 1, $3, $4, $5)
            ON CONFLICT (name) DO NOTHING";
        const UPDATE: &str = "UPDATE pipeline_state SET doc = $2, doc_gzip = $7, rev = rev + 1, holder = $3, fence_epoch = $4, updated_at = $5
            WHERE name = $1 AND rev = $6";
        const REV: &str = "SELECT rev FROM pipeline_state WHERE name = $1";
        let outcome: Result<i64, SharedWriteError> = with_pool!(self, |pool| {
            let mut tx = pool
                .begin()
                .await
                .map_err(db("begin the shared state write"))?;
            let held: Option<(i64,)> = sqlx::query_as(check)
                .bind(lease)
                .bind(holder)
                .bind(epoch)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("check the pipeline lease"))?;
            if held.is_none() {
                drop(tx);
                let fence = crate::Fence {
                    name: lease.to_owned(),
                    epoch,
                };
                return Err(SharedWriteError::Fenced(
                    self.fenced(&fence, now).await.unwrap_or_else(|e| e),
                ));
            }
            let n = if expected_rev == 0 {
                sqlx::query(INSERT)
                    .bind(name)
                    .bind(doc)
                    .bind(holder)
                    .bind(epoch)
                    .bind(now)
                    .bind(gz.as_deref())
                    .execute(&mut *tx)
                    .await
                    .map_err(db("write the shared run state"))?
                    .rows_affected()
            } else {
                sqlx::query(UPDATE)
                    .bind(name)
                    .bind(doc)
                    .bind(holder)
                    .bind(epoch)
                    .bind(now)
                    .bind(expected_rev)
                    .bind(gz.as_deref())
                    .execute(&mut *tx)
                    .await
                    .map_err(db("write the shared run state"))?
                    .rows_affected()
            };
            if n != 1 {
                let current: Option<(i64,)> = sqlx::query_as(REV)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db("read the shared state revision"))?;
                return Err(SharedWriteError::Conflict {
                    expected: expected_rev,
                    current: current.map_or(0, |c| c.0),
                });
            }
            for (f, gz) in files.iter().zip(&stored) {
                sqlx::query(FILE)
                    .bind(name)
                    .bind(&f.path)
                    .bind(&f.sha256)
                    .bind(gz.as_deref().unwrap_or(&f.bytes))
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("write a shared state file"))?;
            }
            tx.commit()
                .await
                .map_err(db("commit the shared state write"))?;
            Ok(expected_rev + 1)
        });
        outcome
    }
}
