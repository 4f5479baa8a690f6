//! Each node's pull feed: the latest signed manifest the orchestrator addressed to it (a
//! release for the canary or a deploy step, or a rollback order), for nodes that cannot
//! be pushed to (behind NAT, `[agent] mode = "pull"`). The orchestrator writes the feed
//! of every node it sends to, pushed or not; `GET /api/fleet/feed/{node}` serves it with
//! an ETag, and the node verifies it exactly as a pushed manifest (keyring, floor,
//! expiry, revocations) — the feed itself is trusted for nothing.
//!
//! A manifest addressed to many nodes is stored once (`feed_manifests`, by SHA-256);
//! each node's row names it. A feed only moves forward: a write with a sequence at or below the stored one changes
//! nothing, so a deposed orchestrator cannot put back a release its successor revoked
//! (the rollback order has the higher sequence), and re-sending is harmless.

use crate::error::FleetError;
use crate::registry::Registry;

/// The largest manifest a feed holds (a signed manifest is a few kilobytes; one with
/// many artifacts and co-signatures stays far below this).
pub const MAX_FEED_MANIFEST: usize = 1 << 20;

/// One node's feed as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FeedEntry {
    /// The manifest's sequence.
    pub sequence: i64,
    /// SHA-256 of `manifest`, hex (the ETag).
    pub sha256: String,
    /// The signed manifest, exactly as signed.
    pub manifest: Vec<u8>,
    /// When it was written (unix seconds).
    pub updated_at: i64,
}

/// What [`Registry::put_feeds`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedWrite {
    /// Feeds that now hold the manifest (the others already held it or a later one).
    pub changed: u64,
    /// Nodes named that are not enrolled (their feeds were not written).
    pub unknown: Vec<String>,
}

/// Nodes written per statement.
const FEED_CHUNK: usize = 500;

impl Registry {
    /// Puts `manifest` (sequence `sequence`) in `node`'s feed unless the feed already
    /// holds that sequence or a higher one. Returns whether the feed changed.
    ///
    /// # Errors
    /// [`FleetError::UnknownPeer`] for a node that is not enrolled, the database's.
    pub async fn put_feed(
        &self,
        node: &str,
        sequence: u64,
        manifest: &[u8],
        now: i64,
    ) -> Result<bool, FleetError> {
        let w = self
            .put_feeds(&[node.to_owned()], sequence, manifest, now)
            .await?;
        if !w.unknown.is_empty() {
            return Err(FleetError::UnknownPeer(node.to_owned()));
        }
        Ok(w.changed > 0)
    }

    /// Puts `manifest` in the feed of each of `nodes` (see [`Registry::put_feed`]), in
    /// one transaction: the manifest is stored once, by SHA-256, and the feeds are
    /// raised a few hundred nodes per statement.
    pub async fn put_feeds(
        &self,
        nodes: &[String],
        sequence: u64,
        manifest: &[u8],
        now: i64,
    ) -> Result<FeedWrite, FleetError> {
        if manifest.len() > MAX_FEED_MANIFEST {
            return Err(FleetError::Invalid {
                what: "feed manifest size",
                value: manifest.len().to_string(),
                expected: "at most 1 MiB",
            });
        }
        let sequence = i64::try_from(sequence).map_err(|_| FleetError::Invalid {
            what: "manifest sequence",
            value: sequence.to_string(),
            expected: "at most 2^63 - 1",
        })?;
        let sha = fleetgate_trust::provenance::sha256_hex(manifest);
        let mut ids: Vec<&str> = nodes.iter().map(String::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        let begin = if self.is_postgres() {
            "BEGIN"
        } else {
            "BEGIN IMMEDIATE"
        };
        let (changed, known) = with_pool!(self, |pool| {
            let mut tx = pool
                .begin_with(begin)
                .await
                .map_err(FleetError::db("begin a feed write"))?;
            sqlx::query(
                "INSERT INTO feed_manifests (sha256, sequence, manifest, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(&sha)
            .bind(sequence)
            .bind(manifest)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(FleetError::db("store a feed manifest"))?;
            let mut changed = 0u64;
            let mut known = std::collections::BTreeSet::new();
            for chunk in ids.chunks(FEED_CHUNK) {
                let mut q = sqlx::QueryBuilder::new("SELECT id FROM peers WHERE id IN (");
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind((*id).to_owned());
                }
                sep.push_unseparated(")");
                let rows: Vec<(String,)> = q
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(FleetError::db("read the nodes of a feed write"))?;
                known.extend(rows.into_iter().map(|r| r.0));
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO node_feed (node_id, sequence, sha256, updated_at) SELECT id, ",
                );
                q.push_bind(sequence)
                    .push(", ")
                    .push_bind(sha.clone())
                    .push(", ")
                    .push_bind(now)
                    .push(" FROM peers WHERE id IN (");
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind((*id).to_owned());
                }
                sep.push_unseparated(")");
                q.push(
                    " ON CONFLICT (node_id) DO UPDATE SET sequence = excluded.sequence, sha256 = excluded.sha256,
                        updated_at = excluded.updated_at
                     WHERE node_feed.sequence < excluded.sequence",
                );
                changed += q
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(FleetError::db("write the nodes' feeds"))?
                    .rows_affected();
            }
            tx.commit()
                .await
                .map_err(FleetError::db("commit a feed write"))?;
            (changed, known)
        });
        Ok(FeedWrite {
            changed,
            unknown: ids
                .into_iter()
                .filter(|id| !known.contains(*id))
                .map(str::to_owned)
                .collect(),
        })
    }

    /// `node`'s feed, if anything was addressed to it.
    pub async fn feed(&self, node: &str) -> Result<Option<FeedEntry>, FleetError> {
        const SQL: &str = "SELECT f.sequence, f.sha256, m.manifest, f.updated_at FROM node_feed f
            JOIN feed_manifests m ON m.sha256 = f.sha256 WHERE f.node_id = $1";
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(node)
                .fetch_optional(pool)
                .await
                .map_err(FleetError::db("read a node's feed"))?
        }))
    }

    /// The anti-rollback floor each of `nodes` last reported ([`Registry::reported_floor`]
    /// for many nodes at once); unknown nodes are left out.
    pub async fn reported_floors(
        &self,
        nodes: &[String],
    ) -> Result<std::collections::BTreeMap<String, u64>, FleetError> {
        Ok(self
            .peer_column::<i64>("last_floor", nodes, "read the nodes' reported floors")
            .await?
            .into_iter()
            .map(|(id, f)| (id, u64::try_from(f).unwrap_or(0)))
            .collect())
    }

    /// The anti-rollback floor `node`'s last accepted heartbeat reported (0 before one
    /// that carries it), or `None` for an unknown node.
    pub async fn reported_floor(&self, node: &str) -> Result<Option<u64>, FleetError> {
        const SQL: &str = "SELECT last_floor FROM peers WHERE id = $1";
        let row: Option<(i64,)> = with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(node)
                .fetch_optional(pool)
                .await
                .map_err(FleetError::db("read a node's reported floor"))?
        });
        Ok(row.map(|(f,)| u64::try_from(f).unwrap_or(0)))
    }
}
