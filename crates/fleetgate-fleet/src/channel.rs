//! Release channels: every node belongs to one (`stable` unless set at enrollment or
//! changed later, kept in the registry, not in the node's certificate, so an operator can
//! move a node without re-enrolling it). A run targets one channel: its canary, DEPLOY
//! steps and DEPLOY targets are nodes of that channel. A paused channel gets nothing:
//! its nodes are never selected or targeted until it is resumed.

use fleetgate_canary::Eligible;
use serde::{Deserialize, Serialize};

use crate::error::FleetError;
use crate::registry::Registry;

/// The channel of a node nobody placed, and of a run that names none.
pub const DEFAULT_CHANNEL: &str = "stable";

pub(crate) fn default_channel() -> String {
    DEFAULT_CHANNEL.to_owned()
}

/// A channel name: 1–32 characters of `[a-z0-9_-]`, starting with a letter or digit.
///
/// # Errors
/// [`FleetError::Invalid`] naming the value.
pub fn validate_channel(name: &str) -> Result<(), FleetError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(FleetError::Invalid {
            what: "channel name",
            value: name.to_owned(),
            expected: "1-32 characters of a-z, 0-9, '-' and '_', starting with a letter or digit",
        })
    }
}

/// One channel as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Its name.
    pub name: String,
    /// Paused: its nodes get nothing until it is resumed.
    pub paused: bool,
    /// Why it was paused or resumed (empty if never).
    pub reason: String,
    /// When it was last paused or resumed (unix seconds; 0 if never).
    pub updated_at: i64,
    /// Active, verified nodes in it.
    pub nodes: usize,
}

impl Registry {
    /// Moves a node to `channel` (validated).
    ///
    /// # Errors
    /// An invalid name, an unknown node, or the database.
    pub async fn set_peer_channel(&self, id: &str, channel: &str) -> Result<(), FleetError> {
        validate_channel(channel)?;
        let n = with_pool!(self, |pool| {
            sqlx::query("UPDATE peers SET channel = $1 WHERE id = $2")
                .bind(channel)
                .bind(id)
                .execute(pool)
                .await
                .map_err(FleetError::db("set peer channel"))?
                .rows_affected()
        });
        if n == 0 {
            return Err(FleetError::UnknownPeer(id.to_owned()));
        }
        Ok(())
    }

    /// Pauses (or resumes) a channel, recording why and when.
    ///
    /// # Errors
    /// An invalid name, or the database.
    pub async fn set_channel_paused(
        &self,
        channel: &str,
        paused: bool,
        reason: &str,
        now: i64,
    ) -> Result<(), FleetError> {
        validate_channel(channel)?;
        const SQL: &str = "INSERT INTO channels (name, paused, reason, updated_at) VALUES ($1, $2, $3, $4)
            ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, reason = excluded.reason, updated_at = excluded.updated_at";
        with_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(channel)
                .bind(paused)
                .bind(reason)
                .bind(now)
                .execute(pool)
                .await
                .map_err(FleetError::db("pause channel"))?;
        });
        Ok(())
    }

    /// Whether `channel` is paused.
    ///
    /// # Errors
    /// The database.
    pub async fn channel_paused(&self, channel: &str) -> Result<bool, FleetError> {
        let row: Option<(bool,)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT paused FROM channels WHERE name = $1")
                .bind(channel)
                .fetch_optional(pool)
                .await
                .map_err(FleetError::db("read channel"))?
        });
        Ok(row.is_some_and(|r| r.0))
    }

    /// Every channel a node is in or that was ever paused, by name.
    ///
    /// # Errors
    /// The database.
    pub async fn channels(&self) -> Result<Vec<Channel>, FleetError> {
        let counts: Vec<(String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT channel, COUNT(*) FROM peers WHERE status = 'active' AND master_key_verified = TRUE GROUP BY channel",
            )
            .fetch_all(pool)
            .await
            .map_err(FleetError::db("count channel nodes"))?
        });
        let rows: Vec<(String, bool, String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT name, paused, reason, updated_at FROM channels")
                .fetch_all(pool)
                .await
                .map_err(FleetError::db("list channels"))?
        });
        let mut out: std::collections::BTreeMap<String, Channel> = Default::default();
        for (name, paused, reason, updated_at) in rows {
            out.insert(
                name.clone(),
                Channel {
                    name,
                    paused,
                    reason,
                    updated_at,
                    nodes: 0,
                },
            );
        }
        for (name, n) in counts {
            out.entry(name.clone())
                .or_insert_with(|| Channel {
                    name,
                    paused: false,
                    reason: String::new(),
                    updated_at: 0,
                    nodes: 0,
                })
                .nodes = usize::try_from(n).unwrap_or(0);
        }
        Ok(out.into_values().collect())
    }

    /// The ids of the nodes a release or a rollback order goes to — active, enrolled with
    /// a verified certificate — in `channel` (every channel with `None`), in id order.
    /// Only the ids are read: DEPLOY's target list and a rollback order's plan used to
    /// read every whole peer row (certificate included), ~100 MB at 100,000 nodes, for a
    /// list of names.
    ///
    /// # Errors
    /// The database.
    pub async fn release_targets(&self, channel: Option<&str>) -> Result<Vec<String>, FleetError> {
        let rows: Vec<(String,)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id FROM peers WHERE status = 'active' AND master_key_verified = TRUE AND ($1 = '' OR channel = $1) ORDER BY id",
            )
            .bind(channel.unwrap_or(""))
            .fetch_all(pool)
            .await
            .map_err(FleetError::db("list release targets"))?
        });
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// How many nodes are enrolled, whatever their status.
    ///
    /// # Errors
    /// The database.
    pub async fn peer_count(&self) -> Result<usize, FleetError> {
        let (n,): (i64,) = with_pool!(self, |pool| {
            sqlx::query_as("SELECT COUNT(*) FROM peers")
                .fetch_one(pool)
                .await
                .map_err(FleetError::db("count peers"))?
        });
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// [`Registry::eligible_peers`] of one channel (every channel with `None`), leaving
    /// out the nodes of paused channels.
    ///
    /// # Errors
    /// The database.
    pub async fn eligible_in_channel(
        &self,
        now: i64,
        heartbeat_timeout_secs: u64,
        channel: Option<&str>,
    ) -> Result<Vec<Eligible>, FleetError> {
        self.eligible_where(now, heartbeat_timeout_secs, channel.unwrap_or(""), true)
            .await
    }
}
