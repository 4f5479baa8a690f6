//! Each node's pull feed: the latest signed manifest the orchestrator addressed to it (a
//! release for the canary or a deploy step, or a rollback order), for nodes that cannot
//! be pushed to (behind NAT, `[agent] mode = "pull"`). The orchestrator writes the feed
//! of every node it sends to, pushed or not; `GET /api/fleet/feed/{node}` serves it with
//! an ETag, and the node verifies it exactly as a pushed manifest (keyring, floor,
//! expiry, revocations) — the feed itself is trusted for nothing.
//!
//! A feed only moves forward: a write with a sequence at or below the stored one changes
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

impl Registry {
    /// Puts `manifest` (sequence `sequence`) in `node`'s feed unless the feed already
    /// holds that sequence or a higher one. Returns whether the feed changed.
    pub async fn put_feed(
        &self,
        node: &str,
        sequence: u64,
        manifest: &[u8],
        now: i64,
    ) -> Result<bool, FleetError> {
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
        const SQL: &str = "INSERT INTO node_feed (node_id, sequence, sha256, manifest, updated_at) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (node_id) DO UPDATE SET sequence = excluded.sequence, sha256 = excluded.sha256,
                manifest = excluded.manifest, updated_at = excluded.updated_at
            WHERE node_feed.sequence < excluded.sequence";
        let changed = with_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(node)
                .bind(sequence)
                .bind(&sha)
                .bind(manifest)
                .bind(now)
                .execute(pool)
                .await
                .map_err(FleetError::db("write a node's feed"))?
                .rows_affected()
        });
        Ok(changed > 0)
    }

    /// `node`'s feed, if anything was addressed to it.
    pub async fn feed(&self, node: &str) -> Result<Option<FeedEntry>, FleetError> {
        const SQL: &str =
            "SELECT sequence, sha256, manifest, updated_at FROM node_feed WHERE node_id = $1";
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(node)
                .fetch_optional(pool)
                .await
                .map_err(FleetError::db("read a node's feed"))?
        }))
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
