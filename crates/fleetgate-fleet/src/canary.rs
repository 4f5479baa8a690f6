//! Queries the CANARY (and DEPLOY) stage calls: eligible peers, samples for the judge,
//! the persisted selection, per-node deployment status.

use fleetgate_canary::{Eligible, NodeReport, Sample, Selection};
use serde::{Deserialize, Serialize};

use crate::error::FleetError;
use crate::lease::{Fence, fence_clause};
use crate::registry::Registry;

/// Deployment status of one node in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployStatus {
    /// Chosen, not contacted yet.
    Pending,
    /// Manifest sent to its apply endpoint.
    Sent,
    /// It applied the manifest and reported healthy.
    Applied,
    /// It failed to apply.
    Failed,
    /// A rollback order was sent to it.
    RollbackSent,
    /// It is back on the previous version.
    RolledBack,
}

impl DeployStatus {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeployStatus::Pending => "pending",
            DeployStatus::Sent => "sent",
            DeployStatus::Applied => "applied",
            DeployStatus::Failed => "failed",
            DeployStatus::RollbackSent => "rollback_sent",
            DeployStatus::RolledBack => "rolled_back",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeployStatus::Pending,
            "sent" => DeployStatus::Sent,
            "applied" => DeployStatus::Applied,
            "failed" => DeployStatus::Failed,
            "rollback_sent" => DeployStatus::RollbackSent,
            "rolled_back" => DeployStatus::RolledBack,
            _ => return None,
        })
    }
}

/// One node's deployment record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// Run id.
    pub run_id: String,
    /// Node id.
    pub node_id: String,
    /// Status.
    pub status: DeployStatus,
    /// Free text (error message, version applied…).
    pub detail: String,
    /// Epoch of the lease it was written under.
    pub fence_epoch: i64,
    /// Last update (unix seconds).
    pub updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct DeploymentRow {
    run_id: String,
    node_id: String,
    status: String,
    detail: String,
    fence_epoch: i64,
    updated_at: i64,
}

impl Registry {
    /// Peers that may take part: verified, active, and heartbeating within
    /// `heartbeat_timeout_secs` of `now`; by id.
    pub async fn eligible_peers(
        &self,
        now: i64,
        heartbeat_timeout_secs: u64,
    ) -> Result<Vec<Eligible>, FleetError> {
        self.eligible_where(now, heartbeat_timeout_secs, "", false)
            .await
    }

    /// Verified, active, recent peers of `channel` (every channel when empty), leaving
    /// out paused channels' nodes when `skip_paused`.
    pub(crate) async fn eligible_where(
        &self,
        now: i64,
        heartbeat_timeout_secs: u64,
        channel: &str,
        skip_paused: bool,
    ) -> Result<Vec<Eligible>, FleetError> {
        let since = now.saturating_sub(i64::try_from(heartbeat_timeout_secs).unwrap_or(i64::MAX));
        const SQL: &str = "SELECT id, region FROM peers
            WHERE master_key_verified = TRUE AND status = 'active'
              AND last_heartbeat IS NOT NULL AND last_heartbeat >= $1
              AND ($2 = '' OR channel = $2)
              AND ($3 = FALSE OR channel NOT IN (SELECT name FROM channels WHERE paused = TRUE))
            ORDER BY id";
        let rows: Vec<(String, String)> = with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(since)
                .bind(channel)
                .bind(skip_paused)
                .fetch_all(pool)
                .await
                .map_err(FleetError::db("list eligible peers"))?
        });
        Ok(rows
            .into_iter()
            .map(|(id, region)| Eligible { id, region })
            .collect())
    }

    /// A judge sample at `at`: the latest heartbeat (received at or before `at`) of each
    /// canary and baseline node, in node id order (the judge looks each up by id). Nodes
    /// that never heartbeated are left out (the judge counts their silence). Each
    /// heartbeat becomes its report as it is read: the sample of a 100,000-node fleet
    /// is held once, not also as the rows it was made from.
    pub async fn sample(
        &self,
        canary: &[String],
        baseline: &[String],
        at: i64,
    ) -> Result<Sample, FleetError> {
        let mut ids = Vec::with_capacity(canary.len() + baseline.len());
        ids.extend_from_slice(canary);
        ids.extend_from_slice(baseline);
        let mut nodes = Vec::with_capacity(ids.len());
        self.visit_latest_heartbeats(&ids, at, |hb| {
            nodes.push(NodeReport {
                node_id: hb.node_id,
                heartbeat_at: u64::try_from(hb.at).ok(),
                healthy: Some(hb.healthy),
                code_hash: Some(hb.code_hash),
                exceptions_total: u64::try_from(hb.exceptions_total).unwrap_or(0),
                requests_total: u64::try_from(hb.requests_total).unwrap_or(0),
                bench: hb.bench,
            });
        })
        .await?;
        drop(ids);
        nodes.shrink_to_fit();
        Ok(Sample {
            at: u64::try_from(at).unwrap_or(0),
            nodes,
        })
    }

    /// Records the canary selection of `run_id`, under the lease. Idempotent: recording
    /// the same selection again is fine (a resumed run), a different one is refused.
    pub async fn persist_selection(
        &self,
        run_id: &str,
        selection: &Selection,
        fence: &Fence,
        now: i64,
    ) -> Result<(), FleetError> {
        let json = serde_json::to_string(selection).map_err(|e| FleetError::Invalid {
            what: "canary selection",
            value: e.to_string(),
            expected: "serialisable",
        })?;
        const SQLITE: &str = concat!(
            "INSERT INTO canary_selections (run_id, seed_hex, selection, fence_epoch, created_at)
             SELECT $1, $2, $3, $4, $5 WHERE ",
            fence_clause!("$6", "$4", "$5", ""),
            " ON CONFLICT (run_id) DO NOTHING"
        );
        const PG: &str = concat!(
            "INSERT INTO canary_selections (run_id, seed_hex, selection, fence_epoch, created_at)
             SELECT $1, $2, $3, $4, $5 WHERE ",
            fence_clause!("$6", "$4", "$5", " FOR SHARE"),
            " ON CONFLICT (run_id) DO NOTHING"
        );
        let sql = if self.is_postgres() { PG } else { SQLITE };
        let n = with_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(run_id)
                .bind(&selection.seed_hex)
                .bind(&json)
                .bind(fence.epoch)
                .bind(now)
                .bind(&fence.name)
                .execute(pool)
                .await
                .map_err(FleetError::db("store canary selection"))?
                .rows_affected()
        });
        if n == 1 {
            return Ok(());
        }
        self.check_fence_at(fence, now).await?;
        match self.load_selection(run_id).await? {
            Some(existing)
                if existing.nodes == selection.nodes && existing.seed_hex == selection.seed_hex =>
            {
                Ok(())
            }
            Some(existing) => Err(FleetError::SelectionConflict {
                run_id: run_id.to_owned(),
                existing: existing.nodes,
            }),
            None => Err(self.fenced(fence, now).await?),
        }
    }

    /// The canary selection recorded for `run_id`.
    pub async fn load_selection(&self, run_id: &str) -> Result<Option<Selection>, FleetError> {
        let row: Option<(String,)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT selection FROM canary_selections WHERE run_id = $1")
                .bind(run_id)
                .fetch_optional(pool)
                .await
                .map_err(FleetError::db("read canary selection"))?
        });
        row.map(|(s,)| {
            serde_json::from_str(&s).map_err(|_| FleetError::Corrupt {
                what: "canary selection",
                value: s.chars().take(200).collect(),
            })
        })
        .transpose()
    }

    /// Records the deployment status of `node_id` in `run_id`, under the lease.
    pub async fn record_deployment_status(
        &self,
        run_id: &str,
        node_id: &str,
        status: DeployStatus,
        detail: &str,
        fence: &Fence,
        now: i64,
    ) -> Result<(), FleetError> {
        const SQLITE: &str = concat!(
            "INSERT INTO deployments (run_id, node_id, status, detail, fence_epoch, updated_at)
             SELECT $1, $2, $3, $4, $5, $6 WHERE ",
            fence_clause!("$7", "$5", "$6", ""),
            " ON CONFLICT (run_id, node_id) DO UPDATE SET status = excluded.status, detail = excluded.detail,
               fence_epoch = excluded.fence_epoch, updated_at = excluded.updated_at"
        );
        const PG: &str = concat!(
            "INSERT INTO deployments (run_id, node_id, status, detail, fence_epoch, updated_at)
             SELECT $1, $2, $3, $4, $5, $6 WHERE ",
            fence_clause!("$7", "$5", "$6", " FOR SHARE"),
            " ON CONFLICT (run_id, node_id) DO UPDATE SET status = excluded.status, detail = excluded.detail,
               fence_epoch = excluded.fence_epoch, updated_at = excluded.updated_at"
        );
        let sql = if self.is_postgres() { PG } else { SQLITE };
        let n = with_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(run_id)
                .bind(node_id)
                .bind(status.as_str())
                .bind(detail)
                .bind(fence.epoch)
                .bind(now)
                .bind(&fence.name)
                .execute(pool)
                .await
                .map_err(FleetError::db("store deployment status"))?
                .rows_affected()
        });
        if n == 0 {
            return Err(self.fenced(fence, now).await?);
        }
        Ok(())
    }

    /// Deployment records of `run_id`, by node id.
    pub async fn deployment_statuses(
        &self,
        run_id: &str,
    ) -> Result<Vec<DeploymentRecord>, FleetError> {
        const SQL: &str = "SELECT run_id, node_id, status, detail, fence_epoch, updated_at
            FROM deployments WHERE run_id = $1 ORDER BY node_id";
        let rows: Vec<DeploymentRow> = with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(run_id)
                .fetch_all(pool)
                .await
                .map_err(FleetError::db("read deployment status"))?
        });
        rows.into_iter()
            .map(|r| {
                Ok(DeploymentRecord {
                    status: DeployStatus::parse(&r.status).ok_or_else(|| FleetError::Corrupt {
                        what: "deployment status",
                        value: r.status.clone(),
                    })?,
                    run_id: r.run_id,
                    node_id: r.node_id,
                    detail: r.detail,
                    fence_epoch: r.fence_epoch,
                    updated_at: r.updated_at,
                })
            })
            .collect()
    }
}
