//! Leases with a fencing epoch: only the holder of the pipeline lease may advance it.
//!
//! `acquire` is one atomic upsert: it succeeds when the lease is free, expired, or
//! already held by the same holder; the epoch goes up by one on every change of holder
//! and stays the same when a holder renews or re-acquires its own lease. Holder names
//! must be unique per orchestrator process. Writes that must not come from a deposed
//! orchestrator (canary selection, deployment status) carry a [`Fence`] and are
//! conditional on it *in the same statement*; on PostgreSQL the lease row is locked
//! (`FOR SHARE`) for the duration, so a takeover cannot interleave.
//!
//! Lease times come from the database's clock ([`Registry::db_now`]), so orchestrators
//! whose clocks differ still agree on when a lease expires. The `_at` variants take the
//! time from the caller (tests).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::FleetError;
use crate::registry::{Pool, Registry, to_i64};

/// A held lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Lease {
    /// Lease name (e.g. `"pipeline"`).
    pub name: String,
    /// Holder id.
    pub holder: String,
    /// Fencing epoch: goes into every manifest and command issued under this lease.
    pub epoch: i64,
    /// Expiry (unix seconds, the database's clock).
    pub expires_at: i64,
    /// When the current holder took it (unix seconds, the database's clock).
    pub since: i64,
}

/// The proof a write comes from the current lease holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// Lease name.
    pub name: String,
    /// Epoch held.
    pub epoch: i64,
}

impl Lease {
    /// The fence for writes under this lease.
    pub fn fence(&self) -> Fence {
        Fence {
            name: self.name.clone(),
            epoch: self.epoch,
        }
    }
}

/// `EXISTS (…)` clause for fenced writes: lease `$name` at `$epoch`, unexpired at `$now`.
macro_rules! fence_clause {
    ($name:literal, $epoch:literal, $now:literal, $lock:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM leases WHERE name = ",
            $name,
            " AND epoch = ",
            $epoch,
            " AND expires_at > ",
            $now,
            $lock,
            ")"
        )
    };
}
pub(crate) use fence_clause;

fn ttl_secs(ttl: Duration) -> Result<i64, FleetError> {
    if ttl.as_secs() == 0 {
        return Err(FleetError::Invalid {
            what: "lease ttl",
            value: format!("{ttl:?}"),
            expected: "at least one second",
        });
    }
    to_i64("lease ttl", ttl.as_secs())
}

impl Registry {
    /// Tries to take (or keep) lease `name` for `holder` for `ttl`. `None` when another
    /// holder has it and it has not expired.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, FleetError> {
        let now = self.db_now().await?;
        self.acquire_lease_at(name, holder, ttl, now).await
    }

    /// [`Registry::acquire_lease`] at time `now`.
    pub async fn acquire_lease_at(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: i64,
    ) -> Result<Option<Lease>, FleetError> {
        if holder.is_empty() || name.is_empty() {
            return Err(FleetError::Invalid {
                what: "lease name or holder",
                value: format!("{name:?} / {holder:?}"),
                expected: "non-empty",
            });
        }
        let expires = now.saturating_add(ttl_secs(ttl)?);
        const SQL: &str = "INSERT INTO leases (name, holder, epoch, expires_at, since) VALUES ($1, $2, 1, $3, $4)
            ON CONFLICT (name) DO UPDATE SET
              epoch = CASE WHEN leases.holder = excluded.holder THEN leases.epoch ELSE leases.epoch + 1 END,
              since = CASE WHEN leases.holder = excluded.holder THEN leases.since ELSE excluded.since END,
              holder = excluded.holder,
              expires_at = excluded.expires_at
            WHERE leases.holder = excluded.holder OR leases.expires_at <= $4
            RETURNING name, holder, epoch, expires_at, since";
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(name)
                .bind(holder)
                .bind(expires)
                .bind(now)
                .fetch_optional(pool)
                .await
                .map_err(FleetError::db("acquire lease"))?
        }))
    }

    /// Extends a lease still held (same holder, same epoch, not expired).
    pub async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, FleetError> {
        let now = self.db_now().await?;
        self.renew_lease_at(lease, ttl, now).await
    }

    /// [`Registry::renew_lease`] at time `now`.
    pub async fn renew_lease_at(
        &self,
        lease: &Lease,
        ttl: Duration,
        now: i64,
    ) -> Result<Lease, FleetError> {
        let expires = now.saturating_add(ttl_secs(ttl)?);
        const SQL: &str = "UPDATE leases SET expires_at = $1
            WHERE name = $2 AND holder = $3 AND epoch = $4 AND expires_at > $5
            RETURNING name, holder, epoch, expires_at, since";
        let row: Option<Lease> = with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(expires)
                .bind(&lease.name)
                .bind(&lease.holder)
                .bind(lease.epoch)
                .bind(now)
                .fetch_optional(pool)
                .await
                .map_err(FleetError::db("renew lease"))?
        });
        match row {
            Some(l) => Ok(l),
            None => Err(self.fenced(&lease.fence(), now).await?),
        }
    }

    /// Gives a lease up (lets another orchestrator take over at once).
    pub async fn release_lease(&self, lease: &Lease) -> Result<(), FleetError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2 AND epoch = $3",
            )
            .bind(&lease.name)
            .bind(&lease.holder)
            .bind(lease.epoch)
            .execute(pool)
            .await
            .map_err(FleetError::db("release lease"))?;
        });
        Ok(())
    }

    /// The lease as stored (expired or not).
    pub async fn lease(&self, name: &str) -> Result<Option<Lease>, FleetError> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT name, holder, epoch, expires_at, since FROM leases WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(FleetError::db("read lease"))?
        }))
    }

    /// `Ok` when `fence` is still the current, unexpired epoch of its lease.
    pub async fn check_fence(&self, fence: &Fence) -> Result<(), FleetError> {
        let now = self.db_now().await?;
        self.check_fence_at(fence, now).await
    }

    /// [`Registry::check_fence`] at time `now`.
    pub async fn check_fence_at(&self, fence: &Fence, now: i64) -> Result<(), FleetError> {
        match self.lease(&fence.name).await? {
            Some(l) if l.epoch == fence.epoch && l.expires_at > now => Ok(()),
            _ => Err(self.fenced(fence, now).await?),
        }
    }

    pub(crate) async fn fenced(&self, fence: &Fence, now: i64) -> Result<FleetError, FleetError> {
        let current = match self.lease(&fence.name).await? {
            None => "absent".to_owned(),
            Some(l) if l.epoch != fence.epoch => {
                format!("held by {:?} at epoch {}", l.holder, l.epoch)
            }
            Some(l) if l.expires_at <= now => format!("expired at {}", l.expires_at),
            Some(l) => format!("held by {:?} at epoch {}", l.holder, l.epoch),
        };
        Ok(FleetError::Fenced {
            name: fence.name.clone(),
            epoch: u64::try_from(fence.epoch).unwrap_or(0),
            current,
        })
    }

    /// The database's clock (unix seconds): lease times are taken from it, so that
    /// orchestrators with skewed clocks agree on expiry.
    pub async fn db_now(&self) -> Result<i64, FleetError> {
        let (now,): (i64,) = match &self.pool {
            Pool::Postgres(pool) => sqlx::query_as(
                "SELECT CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp())) AS BIGINT)",
            )
            .fetch_one(pool)
            .await
            .map_err(FleetError::db("read the database clock"))?,
            Pool::Sqlite(pool) => sqlx::query_as("SELECT CAST(strftime('%s','now') AS INTEGER)")
                .fetch_one(pool)
                .await
                .map_err(FleetError::db("read the database clock"))?,
        };
        Ok(now)
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }
}
