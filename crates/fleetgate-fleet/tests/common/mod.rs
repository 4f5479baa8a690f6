//! Shared test harness: every scenario runs against a fresh SQLite file and, when
//! `FLEETGATE_TEST_PG_URL` is set, against PostgreSQL in a schema of its own.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use fleetgate_fleet::{CertFields, Heartbeat, Registry, SignedHeartbeat, issue_cert};
use fleetgate_trust::{Keyring, SigningKey};
use sqlx::Connection;

pub struct Db {
    pub name: &'static str,
    pub url: String,
    pg: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub async fn backends() -> Vec<Db> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("state/fleet.db").display());
    let mut out = vec![Db {
        name: "sqlite",
        url,
        pg: None,
        _dir: Some(dir),
    }];
    if let Some(base) = fleetgate_testkit::postgres_url("only SQLite was tested") {
        let schema = format!(
            "t_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .expect("connect to FLEETGATE_TEST_PG_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await
            .expect("create test schema");
        eprintln!("[postgres] testing in schema {schema}");
        let sep = if base.contains('?') { '&' } else { '?' };
        out.push(Db {
            name: "postgres",
            url: format!("{base}{sep}options[search_path]={schema}"),
            pg: Some((base, schema)),
            _dir: None,
        });
    }
    out
}

impl Db {
    pub async fn registry(&self) -> Registry {
        Registry::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("[{}] connect: {e}", self.name))
    }

    /// Runs `sql` directly (to look at or damage what is stored), returning the first
    /// row's first two columns as integers (NULL: `None`) when it returns rows.
    pub async fn raw(&self, sql: &str) -> Option<(Option<i64>, Option<i64>)> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.pg.is_some() {
            let mut c = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("connect");
            first_two(
                sqlx::query(sql)
                    .fetch_optional(&mut c)
                    .await
                    .expect("raw sql"),
            )
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.url)
                .await
                .expect("connect");
            first_two(
                sqlx::query(sql)
                    .fetch_optional(&mut c)
                    .await
                    .expect("raw sql"),
            )
        }
    }

    /// Builds the registry as an older release left it: the backend's migrations up to
    /// and including `version` only, then `statements` run on that schema (to store rows
    /// in the old layout). [`Db::registry`] then runs the remaining migrations.
    pub async fn at_migration(&self, version: i64, statements: &[String]) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(self.name);
        let migrator = sqlx::migrate::Migrator::new(dir)
            .await
            .expect("read the migrations");
        if self.pg.is_some() {
            let mut c = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("connect");
            migrator.run_to(version, &mut c).await.expect("migrate");
        } else {
            let opts =
                <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&self.url)
                    .expect("sqlite url")
                    .create_if_missing(true)
                    .foreign_keys(true);
            if let Some(dir) = opts.get_filename().parent() {
                std::fs::create_dir_all(dir).expect("create the database's directory");
            }
            let mut c = sqlx::SqliteConnection::connect_with(&opts)
                .await
                .expect("connect");
            migrator.run_to(version, &mut c).await.expect("migrate");
        }
        for sql in statements {
            self.raw(sql).await;
        }
    }

    /// Drops the PostgreSQL schema (also done on drop, so a failing test cleans up too).
    pub async fn cleanup(self) {
        drop(self);
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some((base, schema)) = self.pg.take() {
            // Drop may run inside a runtime or during a panic: use a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS {schema} CASCADE"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

fn first_two<R>(row: Option<R>) -> Option<(Option<i64>, Option<i64>)>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    row.filter(|r| r.len() >= 2)
        .map(|r| (r.try_get(0).ok().flatten(), r.try_get(1).ok().flatten()))
}

pub const NOW: i64 = 1_800_000_000;

pub fn trust_key() -> SigningKey {
    SigningKey::from_seed(&[7u8; 32])
}

pub fn keyring() -> Keyring {
    Keyring::single(trust_key().public_key())
}

pub fn node_key(i: u8) -> SigningKey {
    SigningKey::from_seed(&[100u8.wrapping_add(i); 32])
}

pub fn cert_for(id: &str, key: &SigningKey, region: &str) -> Vec<u8> {
    issue_cert(
        &CertFields {
            node_id: id.into(),
            public_key: key.public_key_hex(),
            region: region.into(),
            address: format!("http://127.0.0.1:1/{id}"),
            issued_at: 1_700_000_000,
        },
        &[&trust_key()],
    )
    .expect("issue cert")
}

pub fn heartbeat(id: &str, seq: u64, sent_at: u64) -> Heartbeat {
    Heartbeat {
        bench: BTreeMap::from([("latency_ms".to_owned(), 12.5)]),
        code_hash: "hash-1".into(),
        epoch: 0,
        exceptions_total: seq * 2,
        floor: 0,
        healthy: true,
        node_id: id.into(),
        requests_total: seq * 100,
        sent_at,
        seq,
        version: "1.2.3".into(),
    }
}

pub fn signed(hb: &Heartbeat, key: &SigningKey) -> Vec<u8> {
    SignedHeartbeat::sign(hb, key).to_json()
}
