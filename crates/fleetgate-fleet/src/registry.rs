//! Connection, migrations and the peer table.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::error::FleetError;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which database a [`Registry`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Embedded SQLite file (default).
    Sqlite,
    /// PostgreSQL (central tier shared by several orchestrators).
    Postgres,
}

/// The fleet registry: a handle on the database (cheap to clone).
#[derive(Debug, Clone)]
pub struct Registry {
    pub(crate) pool: Pool,
    url: String,
    /// Node keys seen by the heartbeat endpoint (a hint; see [`crate::keycache`]).
    pub(crate) keys: std::sync::Arc<crate::keycache::KeyCache>,
}

/// Lifecycle of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerStatus {
    /// Takes part in canaries and deployments (if verified).
    Active,
    /// Temporarily out (maintenance); keeps its record.
    Inactive,
    /// Removed by the operator; its heartbeats are refused.
    Removed,
}

impl PeerStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerStatus::Active => "active",
            PeerStatus::Inactive => "inactive",
            PeerStatus::Removed => "removed",
        }
    }
}

impl FromStr for PeerStatus {
    type Err = FleetError;
    fn from_str(s: &str) -> Result<Self, FleetError> {
        match s {
            "active" => Ok(PeerStatus::Active),
            "inactive" => Ok(PeerStatus::Inactive),
            "removed" => Ok(PeerStatus::Removed),
            other => Err(FleetError::Invalid {
                what: "peer status",
                value: other.to_owned(),
                expected: "active, inactive or removed",
            }),
        }
    }
}

/// A peer as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    /// Node id.
    pub id: String,
    /// Base URL of its agent (apply endpoint).
    pub address: String,
    /// Its Ed25519 identity key, hex.
    pub public_key: String,
    /// It presented an enrollment certificate signed by the trust keys.
    pub master_key_verified: bool,
    /// Lifecycle status.
    pub status: PeerStatus,
    /// Version it last reported.
    pub current_version: Option<String>,
    /// Code hash it last reported.
    pub code_hash: Option<String>,
    /// When its last accepted heartbeat arrived (unix seconds).
    pub last_heartbeat: Option<i64>,
    /// Last accepted heartbeat sequence number (within `last_epoch`).
    pub last_seq: i64,
    /// Epoch of the last accepted heartbeat (0 for heartbeats without one).
    #[serde(default)]
    pub last_epoch: i64,
    /// Region label.
    pub region: String,
    /// When it was (last) enrolled (unix seconds).
    pub enrolled_at: i64,
    /// Its enrollment certificate (the signed JSON), if any.
    pub cert: Option<String>,
    /// Its release channel (`stable` unless set).
    #[serde(default = "crate::channel::default_channel")]
    pub channel: String,
    /// The application health its last accepted heartbeat reported (`None` before one).
    #[serde(default)]
    pub healthy: Option<bool>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct PeerRow {
    id: String,
    address: String,
    public_key: String,
    master_key_verified: bool,
    status: String,
    current_version: Option<String>,
    code_hash: Option<String>,
    last_heartbeat: Option<i64>,
    last_seq: i64,
    last_epoch: i64,
    region: String,
    enrolled_at: i64,
    cert: Option<String>,
    channel: String,
    last_healthy: Option<bool>,
}

impl TryFrom<PeerRow> for Peer {
    type Error = FleetError;
    fn try_from(r: PeerRow) -> Result<Self, FleetError> {
        let status = r.status.parse().map_err(|_| FleetError::Corrupt {
            what: "peer status",
            value: r.status.clone(),
        })?;
        Ok(Peer {
            id: r.id,
            address: r.address,
            public_key: r.public_key,
            master_key_verified: r.master_key_verified,
            status,
            current_version: r.current_version,
            code_hash: r.code_hash,
            last_heartbeat: r.last_heartbeat,
            last_seq: r.last_seq,
            last_epoch: r.last_epoch,
            region: r.region,
            enrolled_at: r.enrolled_at,
            cert: r.cert,
            channel: r.channel,
            healthy: r.last_healthy,
        })
    }
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `url` with any password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let auth_end = rest.find('/').unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &rest[at..]
                ),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

pub(crate) fn to_i64(field: &'static str, value: u64) -> Result<i64, FleetError> {
    i64::try_from(value).map_err(|_| FleetError::OutOfRange { field, value })
}

/// How long [`Registry::connect`] keeps trying to take the creation lock and open a
/// SQLite file that other processes are creating or migrating at the same moment.
const SQLITE_OPEN_DEADLINE: Duration = Duration::from_secs(60);

/// Pause between two attempts to take the creation lock or to open a busy file.
const SQLITE_RETRY_PAUSE: Duration = Duration::from_millis(25);

fn is_in_memory(file: &Path) -> bool {
    file.as_os_str().is_empty() || file.as_os_str() == ":memory:"
}

/// `<file>.lock`, held while the file is created and migrated.
fn lock_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes an exclusive `flock` on `path` (created if missing), waiting until `deadline`.
/// The lock is released when the returned handle is dropped (or the process dies).
async fn lock_file(
    path: &Path,
    deadline: tokio::time::Instant,
) -> Result<Flock<std::fs::File>, FleetError> {
    let lock_err = |source: std::io::Error| FleetError::Lock {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(lock_err)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, Errno::EWOULDBLOCK | Errno::EINTR)) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(lock_err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "another process held it for more than {}s",
                            SQLITE_OPEN_DEADLINE.as_secs()
                        ),
                    )));
                }
                file = f;
                tokio::time::sleep(SQLITE_RETRY_PAUSE).await;
            }
            Err((_, errno)) => return Err(lock_err(std::io::Error::from(errno))),
        }
    }
}

/// SQLite's "database is locked" / "database table is locked" (any extended code of
/// `SQLITE_BUSY` or `SQLITE_LOCKED`).
fn is_sqlite_busy(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    let by_code = db
        .code()
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6));
    by_code || db.message().contains("database is locked")
}

/// Opens the pool. Switching a fresh file to WAL needs an exclusive lock that SQLite's
/// busy timeout does not wait for, so a process racing another one's creation gets
/// "database is locked" at once: retried until `deadline`.
async fn connect_sqlite(
    opts: SqliteConnectOptions,
    url: &str,
    deadline: tokio::time::Instant,
) -> Result<SqlitePool, FleetError> {
    loop {
        match SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.clone())
            .await
        {
            Ok(pool) => return Ok(pool),
            Err(e) if is_sqlite_busy(&e) && tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "fleet database busy while opening it; retrying");
                tokio::time::sleep(SQLITE_RETRY_PAUSE).await;
            }
            Err(source) => {
                return Err(FleetError::Connect {
                    url: url.to_owned(),
                    source,
                });
            }
        }
    }
}

impl Registry {
    /// Connects to `database_url` and runs the embedded migrations.
    ///
    /// * `sqlite://PATH` (or `sqlite:PATH`): a file, created with its directory if
    ///   missing, in WAL mode with a 5 s busy timeout and foreign keys on. Safe when
    ///   several processes open a fresh file at once: creation and migration happen under
    ///   an exclusive lock on `PATH.lock` (kept beside the file), and an open that finds
    ///   the file busy is retried (up to 60 s in all).
    /// * `postgres://…` / `postgresql://…`: PostgreSQL. A `?options[search_path]=S`
    ///   parameter selects a schema (the tests use one schema each).
    pub async fn connect(database_url: &str) -> Result<Self, FleetError> {
        let url = redact_url(database_url);
        if database_url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(database_url)
                .map_err(|source| FleetError::Connect {
                    url: url.clone(),
                    source,
                })?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let file = opts.get_filename().to_path_buf();
            if let Some(dir) = file.parent()
                && !dir.as_os_str().is_empty()
            {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|source| FleetError::CreateDir {
                        path: dir.display().to_string(),
                        source,
                    })?;
            }
            // Creating the file, switching it to WAL and migrating it are done by one
            // process at a time: `<file>.lock` is held (flock) around them. Processes that
            // do not take the lock (older binaries, the sqlite3 shell) are covered by the
            // retries below.
            let deadline = tokio::time::Instant::now() + SQLITE_OPEN_DEADLINE;
            let lock = if is_in_memory(&file) {
                None
            } else {
                Some(lock_file(&lock_path(&file), deadline).await?)
            };
            let pool = connect_sqlite(opts, &url, deadline).await?;
            // SQLite has no migration lock: two processes opening the same fresh file at
            // once race, the loser's migration transaction rolls back ("table already
            // exists"). Running again sees the winner's migrations as applied.
            let mut attempt: u64 = 0;
            loop {
                match SQLITE_MIGRATIONS.run(&pool).await {
                    Ok(()) => break,
                    Err(_) if attempt < 5 => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                    }
                    Err(source) => {
                        return Err(FleetError::Migrate {
                            url: url.clone(),
                            source,
                        });
                    }
                }
            }
            // Released on drop too; explicit so the lock covers exactly creation + migration.
            drop(lock);
            Ok(Self {
                pool: Pool::Sqlite(pool),
                url,
                keys: std::sync::Arc::default(),
            })
        } else if database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
        {
            let opts =
                PgConnectOptions::from_str(database_url).map_err(|source| FleetError::Connect {
                    url: url.clone(),
                    source,
                })?;
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await
                .map_err(|source| FleetError::Connect {
                    url: url.clone(),
                    source,
                })?;
            POSTGRES_MIGRATIONS
                .run(&pool)
                .await
                .map_err(|source| FleetError::Migrate {
                    url: url.clone(),
                    source,
                })?;
            Ok(Self {
                pool: Pool::Postgres(pool),
                url,
                keys: std::sync::Arc::default(),
            })
        } else {
            Err(FleetError::UnsupportedUrl { url })
        }
    }

    /// Which backend this registry uses.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The database URL, password removed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Node keys the heartbeat endpoint holds verified in memory (see
    /// [`crate::keycache`]); the fleet endpoint's `fleetgate_fleet_cached_node_keys`.
    pub fn cached_node_keys(&self) -> usize {
        self.keys.len()
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }

    /// Adds or replaces a peer *without* a certificate: it is stored with
    /// `master_key_verified = false` and never takes part in a canary or deployment.
    pub async fn register_unverified(
        &self,
        id: &str,
        address: &str,
        public_key_hex: &str,
        region: &str,
        now: i64,
    ) -> Result<Peer, FleetError> {
        self.upsert_peer(id, address, public_key_hex, region, false, None, now)
            .await?;
        self.peer(id).await
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one column each; internal helper"
    )]
    pub(crate) async fn upsert_peer(
        &self,
        id: &str,
        address: &str,
        public_key_hex: &str,
        region: &str,
        verified: bool,
        cert: Option<&str>,
        now: i64,
    ) -> Result<(), FleetError> {
        const SQL: &str = "INSERT INTO peers (id, address, public_key, master_key_verified, status, region, enrolled_at, cert)
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, public_key = excluded.public_key,
               master_key_verified = excluded.master_key_verified, status = 'active', region = excluded.region,
               enrolled_at = excluded.enrolled_at, cert = excluded.cert";
        with_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(id)
                .bind(address)
                .bind(public_key_hex)
                .bind(verified)
                .bind(region)
                .bind(now)
                .bind(cert)
                .execute(pool)
                .await
                .map_err(FleetError::db("store peer"))?;
        });
        self.keys.evict(id);
        Ok(())
    }

    /// One peer.
    pub async fn peer(&self, id: &str) -> Result<Peer, FleetError> {
        self.find_peer(id)
            .await?
            .ok_or_else(|| FleetError::UnknownPeer(id.to_owned()))
    }

    /// The address of each of `nodes` that is enrolled (removed ones included), by id:
    /// one statement per few thousand nodes.
    pub async fn addresses(
        &self,
        nodes: &[String],
    ) -> Result<std::collections::BTreeMap<String, String>, FleetError> {
        Ok(self
            .peer_column::<String>("address", nodes, "read the nodes' addresses")
            .await?
            .into_iter()
            .collect())
    }

    /// `(id, column)` of each of `nodes` that is enrolled, 2,000 ids per statement.
    pub(crate) async fn peer_column<T>(
        &self,
        column: &'static str,
        nodes: &[String],
        what: &'static str,
    ) -> Result<Vec<(String, T)>, FleetError>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Sqlite>
            + sqlx::Type<sqlx::Sqlite>
            + for<'r> sqlx::Decode<'r, sqlx::Postgres>
            + sqlx::Type<sqlx::Postgres>
            + Send
            + Unpin,
    {
        let mut ids: Vec<&str> = nodes.iter().map(String::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::new();
        for chunk in ids.chunks(crate::heartbeat::READ_CHUNK) {
            let rows: Vec<(String, T)> = with_pool!(self, |pool| {
                let mut q = sqlx::QueryBuilder::new("SELECT id, ");
                q.push(column).push(" FROM peers WHERE id IN (");
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind((*id).to_owned());
                }
                sep.push_unseparated(")");
                q.build_query_as()
                    .fetch_all(pool)
                    .await
                    .map_err(FleetError::db(what))?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    /// One peer, if it exists.
    pub async fn find_peer(&self, id: &str) -> Result<Option<Peer>, FleetError> {
        const SQL: &str = "SELECT id, address, public_key, master_key_verified, status, current_version, code_hash, last_heartbeat, last_seq, last_epoch, region, enrolled_at, cert, channel, last_healthy FROM peers WHERE id = $1";
        let row: Option<PeerRow> = with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(FleetError::db("read peer"))?
        });
        row.map(Peer::try_from).transpose()
    }

    /// Every peer (removed ones included), by id.
    pub async fn list_peers(&self) -> Result<Vec<Peer>, FleetError> {
        const SQL: &str = "SELECT id, address, public_key, master_key_verified, status, current_version, code_hash, last_heartbeat, last_seq, last_epoch, region, enrolled_at, cert, channel, last_healthy FROM peers ORDER BY id";
        let rows: Vec<PeerRow> = with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .fetch_all(pool)
                .await
                .map_err(FleetError::db("list peers"))?
        });
        rows.into_iter().map(Peer::try_from).collect()
    }

    /// Sets a peer's status (`remove` = [`PeerStatus::Removed`]; history is kept).
    pub async fn set_status(&self, id: &str, status: PeerStatus) -> Result<(), FleetError> {
        let n = with_pool!(self, |pool| {
            sqlx::query("UPDATE peers SET status = $1 WHERE id = $2")
                .bind(status.as_str())
                .bind(id)
                .execute(pool)
                .await
                .map_err(FleetError::db("set peer status"))?
                .rows_affected()
        });
        self.keys.evict(id);
        if n == 0 {
            return Err(FleetError::UnknownPeer(id.to_owned()));
        }
        Ok(())
    }

    /// Marks a peer removed: it stops taking part and its heartbeats are refused.
    pub async fn remove_peer(&self, id: &str) -> Result<(), FleetError> {
        self.set_status(id, PeerStatus::Removed).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("sqlite://state/fleet.db"),
            "sqlite://state/fleet.db"
        );
    }
}
