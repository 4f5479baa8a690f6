//! fleetgate benchmarks (criterion). Run by hand; CI only compiles them.
//!
//! ```sh
//! cargo bench --bench fleetgate                       # everything
//! cargo bench --bench fleetgate -- manifest           # one group
//! FLEETGATE_BENCH_FILES=10000 FLEETGATE_BENCH_FILE_KIB=20 cargo bench --bench fleetgate -- code_hash
//! ```
//!
//! Each group puts fleetgate next to the well-known alternative measured in the same run:
//! manifest verification next to a raw Ed25519 `verify_strict` of the same bytes, the
//! code hash next to `git ls-files -z | xargs -0 sha256sum` on the same tree.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetgate::core::{Event, GateFacts, PipelineState, Stage, Verdict, Version, handle};
use fleetgate::trust::{Keyring, Manifest, ManifestKind, SigningKey, VerifyOptions};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

fn manifest(key: &SigningKey) -> Manifest {
    let now = fleetgate::trust::unix_now();
    Manifest {
        schema_version: fleetgate::trust::MANIFEST_SCHEMA_VERSION,
        version: "v2.0.0".into(),
        git_sha: "a".repeat(40),
        code_hash: "b".repeat(64),
        file_manifest_hash: "c".repeat(64),
        hash_scheme: fleetgate::trust::HashScheme::Git,
        guardrail_hash: "d".repeat(64),
        built_at: fleetgate::trust::rfc3339_seconds(now),
        master_public_key: key.public_key_hex(),
        sequence: now,
        expires_at: now + 3600,
        kind: ManifestKind::Release,
        rollback_of: None,
        return_to_version: None,
        return_to_code_hash: None,
        return_to_git_sha: None,
        canary_seed: "0f".repeat(16),
        key_ids: vec![key.key_id()],
        fencing_epoch: 0,
        provenance_sha256: None,
        artifacts: Vec::new(),
        extra: serde_json::Map::new(),
    }
}

fn manifest_bench(c: &mut Criterion) {
    let key = SigningKey::generate().expect("randomness");
    let ring = Keyring::single(key.public_key());
    let m = manifest(&key);
    let bytes = fleetgate::trust::sign_manifest(&m, &[&key]).expect("sign");
    let v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).expect("json");
    let canonical = fleetgate::trust::to_canonical_bytes(&serde_json::Value::Object(
        fleetgate::trust::strip_signatures(&v),
    ))
    .expect("canonical");
    let sig = key.sign(&canonical);
    let public = key.public_key();
    let now = fleetgate::trust::unix_now();
    let mut g = c.benchmark_group("manifest");
    g.throughput(Throughput::Elements(1));
    g.bench_function("canonicalise_and_sign", |b| {
        b.iter(|| fleetgate::trust::sign_manifest(black_box(&m), &[&key]))
    });
    g.bench_function(
        "verify_manifest (parse, canonicalise, verify_strict, checks)",
        |b| {
            b.iter(|| {
                fleetgate::trust::verify_manifest(
                    black_box(&bytes),
                    &ring,
                    now,
                    &VerifyOptions::default(),
                )
                .expect("valid")
            })
        },
    );
    g.bench_function("raw ed25519 verify_strict (baseline)", |b| {
        b.iter(|| {
            public
                .verify_strict(black_box(&canonical), &sig)
                .expect("valid")
        })
    });
    g.finish();
}

fn state_bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = fleetgate::store::StateDir::open(dir.path()).expect("state dir");
    let mut s = PipelineState::idle();
    handle(
        &mut s,
        Event::Start {
            version: Version::parse("v1.0.0").expect("v"),
            git_sha: "a".repeat(40),
            run_id: "r".into(),
            channel: None,
            now: 1.0,
        },
    )
    .expect("start");
    store.save(&s).expect("save");
    let mut g = c.benchmark_group("state");
    g.bench_function("durable write (temp, fsync, rename, fsync dir)", |b| {
        b.iter(|| store.save(black_box(&s)).expect("save"))
    });
    g.bench_function("transition via transact (lock, load, handle, save)", |b| {
        b.iter(|| {
            store
                .transact(|st| {
                    // A pending verdict: the stage stays, the record is updated and saved.
                    let (stage, epoch) = (st.stage, st.epoch);
                    handle(
                        st,
                        Event::GateEvaluated {
                            stage,
                            epoch,
                            verdict: Verdict::pending("bench", serde_json::json!({"n": 1})),
                            facts: GateFacts::default(),
                            now: 2.0,
                        },
                    )
                    .map(|_| ())
                })
                .expect("transact")
        })
    });
    g.finish();
    assert_eq!(store.load().expect("load").stage, Stage::Building);
}

fn canary_bench(c: &mut Criterion) {
    let peers: Vec<fleetgate::canary::Eligible> = (0..100_000)
        .map(|i| fleetgate::canary::Eligible {
            id: format!("node-{i:06}"),
            region: ["eu", "us", "ap"][i % 3].into(),
        })
        .collect();
    let mut g = c.benchmark_group("canary");
    g.sample_size(20);
    g.throughput(Throughput::Elements(peers.len() as u64));
    g.bench_function("select 10% of 100k peers", |b| {
        b.iter(|| {
            fleetgate::canary::select_canary(black_box(b"seed"), &peers, 0.10, 1)
                .expect("selection")
        })
    });
    g.finish();
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn make_repo(dir: &Path, files: usize, kib: usize) -> u64 {
    let mut total = 0u64;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..files {
        let p = dir.join(format!("src/m{:03}/f{i:05}.txt", i % 100));
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        let mut buf = Vec::with_capacity(kib * 1024);
        while buf.len() < kib * 1024 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            buf.extend_from_slice(&x.to_le_bytes());
        }
        total += buf.len() as u64;
        std::fs::write(&p, &buf).expect("write");
    }
    let repo = git2::Repository::init(dir).expect("git init");
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .expect("add");
    index.write().expect("index write");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let sig = git2::Signature::now("bench", "bench@fleetgate.invalid").expect("sig");
    repo.commit(Some("HEAD"), &sig, &sig, "bench tree", &tree, &[])
        .expect("commit");
    total
}

fn code_hash_bench(c: &mut Criterion) {
    let files = env_usize("FLEETGATE_BENCH_FILES", 2000);
    let kib = env_usize("FLEETGATE_BENCH_FILE_KIB", 20);
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = make_repo(dir.path(), files, kib);
    let cfg = fleetgate::core::config::CodeHashConfig::default();
    let mut g = c.benchmark_group(format!(
        "code_hash/{files} files, {} MiB",
        bytes / (1024 * 1024)
    ));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("fleetgate code_hash_at (git2, from the commit)", |b| {
        b.iter(|| {
            fleetgate::runtime::codehash::code_hash_at(dir.path(), "HEAD", &cfg).expect("hash")
        })
    });
    g.bench_function("git ls-files -z | xargs -0 sha256sum (baseline)", |b| {
        b.iter(|| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg("git ls-files -z | xargs -0 sha256sum | sha256sum")
                .current_dir(dir.path())
                .output()
                .expect("sh");
            assert!(out.status.success());
            out.stdout
        })
    });
    g.finish();
}

/// Heartbeat ingest: verify the node's signature, check replay, store the time-series
/// row and update the peer, on SQLite (a file in a temp dir) and, when
/// `FLEETGATE_TEST_PG_URL` is set, on PostgreSQL in a fresh schema. Heartbeats are signed
/// before the timer starts (signing is the node's cost, not the orchestrator's).
fn heartbeat_bench(c: &mut Criterion) {
    use fleetgate::fleet::{CertFields, Heartbeat, HeartbeatPolicy, Registry, SignedHeartbeat};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut urls = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("fleet.db").display()),
    )];
    let pg = pg_schema("bench_", "heartbeat ingest");
    if let Some((_, _, url)) = &pg {
        urls.push(("postgres", url.clone()));
    }
    let release = SigningKey::generate().expect("key");
    let ring = Keyring::single(release.public_key());
    const NODES: usize = 100;
    let nodes: Vec<(String, SigningKey)> = (0..NODES)
        .map(|i| (format!("n{i:03}"), SigningKey::generate().expect("key")))
        .collect();
    let mut g = c.benchmark_group("heartbeat_ingest");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30);
    for (name, url) in urls {
        let reg = rt.block_on(Registry::connect(&url)).expect("registry");
        let now = fleetgate::fleet::unix_now();
        for (id, key) in &nodes {
            let fields = CertFields {
                node_id: id.clone(),
                public_key: key.public_key_hex(),
                region: "eu".into(),
                address: "http://127.0.0.1:1".into(),
                issued_at: u64::try_from(now).unwrap_or(0),
            };
            let cert = fleetgate::fleet::issue_cert(&fields, &[&release]).expect("cert");
            rt.block_on(reg.enroll(&cert, &ring, now)).expect("enroll");
        }
        let policy = HeartbeatPolicy::default();
        let mut seq = 0u64;
        g.bench_function(format!("record_heartbeat ({name}, {NODES} nodes)"), |b| {
            b.iter_custom(|iters| {
                let bodies: Vec<Vec<u8>> = (0..iters)
                    .map(|_| {
                        seq += 1;
                        let (id, key) = &nodes[(seq as usize) % NODES];
                        let hb = Heartbeat {
                            bench: Default::default(),
                            code_hash: "ab".repeat(32),
                            exceptions_total: seq,
                            floor: 0,
                            healthy: true,
                            node_id: id.clone(),
                            requests_total: seq * 100,
                            sent_at: u64::try_from(now).unwrap_or(0),
                            seq,
                            epoch: 0,
                            version: "v1.0.0".into(),
                        };
                        SignedHeartbeat::sign(&hb, key).to_json()
                    })
                    .collect();
                let start = std::time::Instant::now();
                for body in &bodies {
                    rt.block_on(reg.record_heartbeat(black_box(body), &policy, now))
                        .expect("accepted");
                }
                start.elapsed()
            })
        });
    }
    g.finish();
    if let Some((base, schema, _)) = pg {
        drop_schema(&base, &schema);
    }
}

/// One peer of [`canary_db_bench`]; [`insert_peers`] stores it as the registry would
/// after its enrollment and a heartbeat.
struct BenchPeer {
    id: String,
    public_key: String,
    region: &'static str,
}

/// Rows bound per multi-row `INSERT` (12 columns: 12,000 binds, below SQLite's 32,766
/// and PostgreSQL's 65,535 limits).
const INSERT_CHUNK: usize = 1000;

/// Inserts `peers` into the registry's own `peers` table in one transaction, in
/// multi-row `INSERT`s of [`INSERT_CHUNK`] rows. Every row is verified, active and
/// heartbeated at `now`; `cert` is a real enrollment certificate (the same one for every
/// row: `eligible_peers` does not read it, it is there so the rows are as wide as an
/// enrolled fleet's).
macro_rules! insert_peers {
    ($pool:expr, $db:ty, $peers:expr, $cert:expr, $now:expr) => {{
        let mut tx = $pool.begin().await?;
        for chunk in $peers.chunks(INSERT_CHUNK) {
            let mut q = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO peers (id, address, public_key, master_key_verified, status, \
                 current_version, code_hash, last_heartbeat, last_seq, region, enrolled_at, cert) ",
            );
            q.push_values(chunk, |mut b, p: &BenchPeer| {
                b.push_bind(p.id.as_str())
                    .push_bind(format!("http://{}.invalid:7070", p.id))
                    .push_bind(p.public_key.as_str())
                    .push_bind(true)
                    .push_bind("active")
                    .push_bind("v1.0.0")
                    .push_bind("ab".repeat(32))
                    .push_bind($now)
                    .push_bind(1_i64)
                    .push_bind(p.region)
                    .push_bind($now)
                    .push_bind($cert);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        // What autovacuum / `PRAGMA optimize` would have done on a long-lived registry.
        sqlx::query("ANALYZE peers").execute(&$pool).await?;
        $pool.close().await;
        Ok::<(), sqlx::Error>(())
    }};
}

/// Canary selection over 100,000 peers read from the registry (issue 7): what the CANARY
/// gate does first — `Registry::eligible_peers` (verified, active, heartbeat within the
/// timeout, by id), then `select_canary` with the default `[canary]` settings (10%, at
/// least 1 node, 60 s timeout) — on SQLite (a file in a temp dir) and, when
/// `FLEETGATE_TEST_PG_URL` is set, on PostgreSQL in a fresh schema dropped afterwards.
/// The rows are bulk-inserted through sqlx after `Registry::connect` ran the migrations.
fn canary_db_bench(c: &mut Criterion) {
    use fleetgate::fleet::{CertFields, Registry};
    const PEERS: usize = 100_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut urls = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("fleet.db").display()),
    )];
    let pg = pg_schema("bench_canary_", "canary_db");
    if let Some((_, _, url)) = &pg {
        urls.push(("postgres", url.clone()));
    }
    let cfg = fleetgate::core::config::CanaryConfig::default();
    let timeout = u64::try_from(cfg.heartbeat_timeout_secs).expect("timeout");
    let min = usize::try_from(cfg.min_nodes).expect("min_nodes");
    // The manifest's `canary_seed` (16 bytes), as the gate decodes it.
    let seed = [0x0f_u8; 16];
    let peers: Vec<BenchPeer> = (0..PEERS)
        .map(|i| BenchPeer {
            id: format!("node-{i:06}"),
            public_key: format!("{i:064x}"),
            region: ["eu", "us", "ap"][i % 3],
        })
        .collect();
    let release = SigningKey::generate().expect("key");
    let node_key = SigningKey::generate().expect("key");
    let mut g = c.benchmark_group("canary_db");
    g.sample_size(10);
    g.throughput(Throughput::Elements(PEERS as u64));
    for (name, url) in urls {
        let reg = rt.block_on(Registry::connect(&url)).expect("registry");
        // The rows heartbeated at `now`; the gate asks at its own `now`, which is within
        // seconds of it. The bench passes `now` so that a long run keeps all 100k rows
        // eligible (the query and its result are the same).
        let now = fleetgate::fleet::unix_now();
        let cert = fleetgate::fleet::issue_cert(
            &CertFields {
                node_id: "node-000000".into(),
                public_key: node_key.public_key_hex(),
                region: "eu".into(),
                address: "http://node-000000.invalid:7070".into(),
                issued_at: u64::try_from(now).expect("now"),
            },
            &[&release],
        )
        .expect("cert");
        let cert = String::from_utf8(cert).expect("utf-8 cert");
        let started = std::time::Instant::now();
        rt.block_on(async {
            if name == "sqlite" {
                let pool = sqlx::SqlitePool::connect(&url).await?;
                insert_peers!(pool, sqlx::Sqlite, peers, cert.as_str(), now)
            } else {
                let pool = sqlx::PgPool::connect(&url).await?;
                insert_peers!(pool, sqlx::Postgres, peers, cert.as_str(), now)
            }
        })
        .expect("bulk insert");
        eprintln!(
            "canary_db: {PEERS} peers inserted into {name} in {:.2?}",
            started.elapsed()
        );
        let eligible = rt
            .block_on(reg.eligible_peers(now, timeout))
            .expect("eligible");
        assert_eq!(eligible.len(), PEERS, "every bench peer is eligible");
        g.bench_function(format!("eligible_peers ({name}, 100k peers)"), |b| {
            b.iter(|| {
                rt.block_on(reg.eligible_peers(black_box(now), timeout))
                    .expect("eligible")
            })
        });
        g.bench_function(
            format!("eligible_peers + select_canary 10% ({name}, 100k peers)"),
            |b| {
                b.iter(|| {
                    let eligible = rt
                        .block_on(reg.eligible_peers(black_box(now), timeout))
                        .expect("eligible");
                    fleetgate::canary::select_canary(&seed, &eligible, cfg.pct, min)
                        .expect("selection")
                })
            },
        );
        rt.block_on(reg.close());
    }
    g.finish();
    if let Some((base, schema, _)) = pg {
        drop_schema(&base, &schema);
    }
}

/// A fresh PostgreSQL schema `PREFIX<pid>` when `FLEETGATE_TEST_PG_URL` is set: the base
/// URL, the schema, and a URL whose connections use it.
fn pg_schema(prefix: &str, label: &str) -> Option<(String, String, String)> {
    let Ok(base) = std::env::var("FLEETGATE_TEST_PG_URL") else {
        eprintln!("{label} on PostgreSQL skipped: FLEETGATE_TEST_PG_URL is not set");
        return None;
    };
    let schema = format!("{prefix}{}", std::process::id());
    let ok = std::process::Command::new("psql")
        .arg(&base)
        .args([
            "-q",
            "-c",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("{label} on PostgreSQL skipped: could not create schema {schema} with psql");
        return None;
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options[search_path]={schema}");
    Some((base, schema, url))
}

/// Drop a benchmark's PostgreSQL schema (they are created per process).
fn drop_schema(base: &str, schema: &str) {
    let dropped = std::process::Command::new("psql")
        .arg(base)
        .args([
            "-q",
            "-c",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !dropped {
        eprintln!("could not drop the benchmark schema {schema}; drop it by hand");
    }
}

/// Heartbeat signatures: `verify_strict` one by one against `verify_strict_batch` over
/// the same entries (distinct keys, ~300-byte messages), per batch size.
fn sig_batch_bench(c: &mut Criterion) {
    use fleetgate::trust::{BatchEntry, PublicKey, verify_strict_batch};
    let entries: Vec<(PublicKey, Vec<u8>, [u8; 64])> = (0..64u8)
        .map(|i| {
            let key = SigningKey::from_seed(&[i.wrapping_add(1); 32]);
            let msg = format!("{{\"node_id\":\"node-{i:05}\",{}}}", "x".repeat(280)).into_bytes();
            let sig = key.sign(&msg);
            (key.public_key(), msg, sig)
        })
        .collect();
    let mut g = c.benchmark_group("sig_batch");
    for n in [1usize, 8, 22, 64] {
        g.throughput(Throughput::Elements(n as u64));
        let batch = &entries[..n];
        g.bench_function(format!("verify_strict x{n} (one by one)"), |b| {
            b.iter(|| {
                batch
                    .iter()
                    .all(|(k, m, s)| k.verify_strict(black_box(m), s).is_ok())
            });
        });
        g.bench_function(format!("verify_strict_batch x{n}"), |b| {
            b.iter(|| {
                let e: Vec<BatchEntry<'_>> = batch
                    .iter()
                    .map(|(key, message, signature)| BatchEntry {
                        key,
                        message: black_box(message),
                        signature,
                    })
                    .collect();
                verify_strict_batch(&e).into_iter().all(|ok| ok)
            });
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    sig_batch_bench,
    manifest_bench,
    state_bench,
    canary_bench,
    code_hash_bench,
    heartbeat_bench,
    canary_db_bench
);
criterion_main!(benches);
