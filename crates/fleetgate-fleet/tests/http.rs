//! The fleet HTTP routes over a real socket (127.0.0.1:0) with reqwest, on SQLite and
//! (when FLEETGATE_TEST_PG_URL is set) PostgreSQL; and a canary flow fed by heartbeats
//! that arrive over HTTP.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::*;
use fleetgate_canary::{
    BenchSpec, Command, Direction, Event, FailureKind, Judge, JudgeConfig, select_canary,
};
use fleetgate_fleet::{
    DeployStatus, Heartbeat, HeartbeatPolicy, Registry, SignedHeartbeat, unix_now,
};
use serde_json::Value;

async fn serve(reg: Registry) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, fleetgate_fleet::http::router(reg))
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

async fn post(client: &reqwest::Client, base: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = client
        .post(format!("{base}/api/fleet/heartbeat"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn heartbeat_endpoint_over_a_real_socket() {
    for db in backends().await {
        let reg = db.registry().await;
        let key = node_key(1);
        reg.enroll(&cert_for("n1", &key, "eu"), &keyring(), unix_now())
            .await
            .unwrap();
        let base = serve(reg.clone()).await;
        let client = reqwest::Client::new();
        let now = unix_now() as u64;

        let (s, v) = post(&client, &base, signed(&heartbeat("n1", 1, now), &key)).await;
        assert_eq!((s, v["success"].as_bool()), (200, Some(true)), "{v}");
        assert_eq!(v["seq"], 1);

        let (s, v) = post(&client, &base, signed(&heartbeat("n1", 1, now), &key)).await;
        assert_eq!(s, 409, "{v}");
        // The refusal tells the node how to re-sync.
        assert_eq!(v["reason"], "replayed", "{v}");
        assert_eq!(
            (v["last_epoch"].as_u64(), v["last_seq"].as_u64()),
            (Some(0), Some(1)),
            "{v}"
        );
        assert_eq!(v["success"], false);
        assert!(v["error"].as_str().unwrap().contains("replayed"), "{v}");

        let mut env = SignedHeartbeat::sign(&heartbeat("n1", 2, now), &key);
        env.signature.clear();
        let (s, _) = post(&client, &base, env.to_json()).await;
        assert_eq!(s, 401);

        let (s, _) = post(
            &client,
            &base,
            signed(&heartbeat("n1", 2, now), &node_key(5)),
        )
        .await;
        assert_eq!(s, 401);

        let (s, v) = post(
            &client,
            &base,
            signed(&heartbeat("ghost", 1, now), &node_key(5)),
        )
        .await;
        assert_eq!(s, 403, "{v}");

        let (s, v) = post(&client, &base, vec![b'x'; 20 * 1024]).await;
        assert_eq!(s, 413, "{v}");
        assert_eq!(v["success"], false);

        let (s, _) = post(&client, &base, b"{not json".to_vec()).await;
        assert_eq!(s, 400);

        let (s, _) = post(
            &client,
            &base,
            signed(&heartbeat("n1", 3, now - 3600), &key),
        )
        .await;
        assert_eq!(s, 422);

        let v: Value = client
            .get(format!("{base}/api/fleet/peers"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["success"], true);
        assert_eq!(v["peers"][0]["id"], "n1");
        assert_eq!(v["peers"][0]["last_seq"], 1);
        assert_eq!(v["peers"][0]["master_key_verified"], true);

        let r = client
            .get(format!("{base}/api/fleet/peers/n1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let r = client
            .get(format!("{base}/api/fleet/peers/ghost"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("ghost"));
        db.cleanup().await;
    }
}

/// The endpoint's writers under concurrency (one on SQLite, several on PostgreSQL, racing
/// for the same nodes' rows): every node's heartbeats are POSTed in order by one client
/// and, as replays, by another at the same time, all nodes at once. Each `(node, seq)` is
/// accepted exactly once — one 200 and one 409 `replayed` — and every accepted heartbeat
/// is stored once. A forger per node races them with heartbeats whose signature has one
/// bit flipped (the endpoint checks signatures in batches across requests, so forged and
/// valid ones share batches): each is refused with 401 and none is stored.
#[tokio::test]
async fn racing_posts_of_the_same_heartbeats_are_stored_exactly_once() {
    const NODES: u8 = 8;
    const SEQS: u64 = 25;
    for db in backends().await {
        let reg = db.registry().await;
        let now = unix_now();
        for i in 1..=NODES {
            reg.enroll(
                &cert_for(&format!("n{i}"), &node_key(i), "eu"),
                &keyring(),
                now,
            )
            .await
            .unwrap();
        }
        let base = serve(reg.clone()).await;
        let client = reqwest::Client::new();
        let mut tasks = Vec::new();
        for i in 1..=NODES {
            for _copy in 0..2 {
                let (client, base) = (client.clone(), base.clone());
                tasks.push(tokio::spawn(async move {
                    let mut answers = Vec::new();
                    for seq in 1..=SEQS {
                        let body =
                            signed(&heartbeat(&format!("n{i}"), seq, now as u64), &node_key(i));
                        let (status, v) = post(&client, &base, body).await;
                        answers.push((format!("n{i}"), seq, status, v));
                    }
                    answers
                }));
            }
            let (client, base) = (client.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                for seq in 1..=SEQS {
                    let forged_seq = 1000 + seq;
                    let hb = heartbeat(&format!("n{i}"), forged_seq, now as u64);
                    let mut env = SignedHeartbeat::sign(&hb, &node_key(i));
                    let flipped = if env.signature.starts_with('0') {
                        "1"
                    } else {
                        "0"
                    };
                    env.signature.replace_range(0..1, flipped);
                    let (status, v) = post(&client, &base, env.to_json()).await;
                    answers.push((format!("n{i}"), forged_seq, status, v));
                }
                answers
            }));
        }
        let mut accepted = std::collections::BTreeMap::<(String, u64), u32>::new();
        let (mut replayed, mut forged) = (0, 0);
        for task in tasks {
            for (node, seq, status, v) in task.await.unwrap() {
                match status {
                    200 if seq <= SEQS => *accepted.entry((node, seq)).or_default() += 1,
                    409 if v["reason"] == "replayed" => replayed += 1,
                    401 if seq > SEQS => forged += 1,
                    _ => panic!("{node} seq {seq}: unexpected {status} {v}"),
                }
            }
        }
        let total = usize::from(NODES) * usize::try_from(SEQS).unwrap();
        assert_eq!(accepted.len(), total, "every (node, seq) accepted");
        assert!(accepted.values().all(|n| *n == 1), "none accepted twice");
        assert_eq!(replayed, total, "each copy refused as replayed");
        assert_eq!(forged, total, "each forgery refused");
        let ids: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
        let stored = reg
            .heartbeats_between(&ids, now - 60, now + 60)
            .await
            .unwrap();
        assert_eq!(stored.len(), total, "every accepted heartbeat stored once");
        for id in &ids {
            assert_eq!(
                reg.peer(id).await.unwrap().last_seq,
                i64::try_from(SEQS).unwrap(),
                "{id}"
            );
        }
        db.cleanup().await;
    }
}

/// How the canary nodes misbehave in a scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    Exceptions,
    HealthCheck,
    Silent,
    CodeHash,
    Benchmark,
}

/// A node that heartbeats over HTTP.
struct Node {
    id: String,
    key: fleetgate_trust::SigningKey,
    seq: u64,
    requests: u64,
    exceptions: u64,
}

async fn beat(
    client: &reqwest::Client,
    base: &str,
    node: &mut Node,
    now: i64,
    canary: bool,
    fault: Fault,
) {
    let faulty = canary && fault != Fault::None;
    node.seq += 1;
    node.requests += 1000;
    node.exceptions += if faulty && fault == Fault::Exceptions {
        30
    } else {
        10
    };
    let latency = if faulty && fault == Fault::Benchmark {
        13.0
    } else {
        10.0
    };
    let hb = Heartbeat {
        bench: [("latency_ms".to_owned(), latency)].into(),
        code_hash: if faulty && fault == Fault::CodeHash {
            "other-hash"
        } else {
            "manifest-hash"
        }
        .into(),
        epoch: 0,
        exceptions_total: node.exceptions,
        floor: 0,
        healthy: !(faulty && fault == Fault::HealthCheck),
        node_id: node.id.clone(),
        requests_total: node.requests,
        sent_at: now as u64,
        seq: node.seq,
        version: "2.0.0".into(),
    };
    let (s, v) = post(
        client,
        base,
        SignedHeartbeat::sign(&hb, &node.key).to_json(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

/// One canary window on a fresh database: ten nodes in two regions enroll and
/// heartbeat over HTTP (server clock = a synthetic clock advanced 10 s per interval);
/// the orchestrator takes the lease, selects and persists the canary, and samples the
/// registry every interval into the judge. Returns the final command and the number of
/// intervals it took.
async fn canary_window(db: &Db, fault: Fault) -> (Command, i64) {
    let reg = db.registry().await;
    let start = NOW;
    let clock = Arc::new(AtomicI64::new(start));
    let c2 = clock.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = fleetgate_fleet::http::router_with(
        reg.clone(),
        HeartbeatPolicy::default(),
        Arc::new(move || c2.load(Ordering::SeqCst)),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = reqwest::Client::new();

    let mut nodes: Vec<Node> = (0..10u8)
        .map(|i| Node {
            id: format!("node-{i}"),
            key: node_key(i),
            seq: 0,
            requests: 0,
            exceptions: 0,
        })
        .collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        let region = if i < 4 { "us" } else { "eu" };
        reg.enroll(&cert_for(&n.id, &n.key, region), &keyring(), start)
            .await
            .unwrap();
        beat(&client, &base, n, start, false, Fault::None).await;
    }
    let eligible = reg.eligible_peers(start, 30).await.unwrap();
    assert_eq!(eligible.len(), 10);
    let run = format!("run-{fault:?}");
    let selection = select_canary(run.as_bytes(), &eligible, 0.2, 1).unwrap();
    assert_eq!(selection.nodes.len(), 2);
    // Largest remainder: us 4·2/10 = 0.8, eu 6·2/10 = 1.2 → one each.
    assert_eq!(selection.per_region["us"], 1);
    assert_eq!(selection.per_region["eu"], 1);

    let lease = reg
        .acquire_lease_at("pipeline", "orch-1", Duration::from_secs(600), start)
        .await
        .unwrap()
        .expect("lease free");
    reg.persist_selection(&run, &selection, &lease.fence(), start)
        .await
        .unwrap();
    reg.persist_selection(&run, &selection, &lease.fence(), start)
        .await
        .unwrap();
    assert_eq!(reg.load_selection(&run).await.unwrap().unwrap(), selection);

    let baseline: Vec<String> = eligible
        .iter()
        .map(|e| e.id.clone())
        .filter(|id| !selection.contains(id))
        .collect();
    let config = JudgeConfig {
        window_secs: 120,
        sample_interval_secs: 10,
        heartbeat_timeout_secs: 30,
        benchmarks: vec![BenchSpec {
            name: "latency_ms".into(),
            direction: Direction::LowerIsBetter,
            tolerance: 0.05,
            reference: None,
        }],
        ..JudgeConfig::default()
    };
    let mut judge = Judge::new(
        config,
        "manifest-hash",
        selection.nodes.clone(),
        baseline.clone(),
        start as u64,
    )
    .unwrap();
    for k in 0..30 {
        let now = start + k * 10;
        clock.store(now, Ordering::SeqCst);
        if k > 0 {
            for n in &mut nodes {
                let canary = selection.contains(&n.id);
                if canary && fault == Fault::Silent {
                    continue;
                }
                beat(&client, &base, n, now, canary, fault).await;
            }
        }
        let sample = reg.sample(&selection.nodes, &baseline, now).await.unwrap();
        for c in judge.on_event(Event::Sample(sample)).unwrap() {
            match c {
                Command::Promote { .. } => return (c, k),
                Command::Rollback { .. } => {
                    for id in &selection.nodes {
                        reg.record_deployment_status(
                            &run,
                            id,
                            DeployStatus::RollbackSent,
                            "canary failed",
                            &lease.fence(),
                            now,
                        )
                        .await
                        .unwrap();
                    }
                    let st = reg.deployment_statuses(&run).await.unwrap();
                    assert_eq!(st.len(), 2);
                    return (c, k);
                }
                Command::SampleAt { .. } | Command::ExtendWindow { .. } | Command::Hold { .. } => {}
            }
        }
    }
    panic!("no verdict after 30 intervals")
}

#[tokio::test]
async fn canary_passes_when_healthy_and_rolls_back_for_each_fault() {
    let cases = [
        (Fault::None, None, ""),
        (
            Fault::Exceptions,
            Some(FailureKind::Statistical),
            "baseline",
        ),
        (
            Fault::HealthCheck,
            Some(FailureKind::Statistical),
            "health check",
        ),
        (Fault::Silent, Some(FailureKind::Hard), "lost heartbeat"),
        (
            Fault::CodeHash,
            Some(FailureKind::Hard),
            "integrity mismatch",
        ),
        (
            Fault::Benchmark,
            Some(FailureKind::Statistical),
            "latency_ms regressed by 30.0%",
        ),
    ];
    for (fault, failure, needle) in cases {
        for db in backends().await {
            let (cmd, k) = canary_window(&db, fault).await;
            let verdict = match (&cmd, failure) {
                (Command::Promote { verdict }, None) => verdict,
                (Command::Rollback { verdict }, Some(_)) => verdict,
                _ => panic!("[{}] {fault:?}: unexpected {cmd:?}", db.name),
            };
            assert_eq!(
                verdict.failure, failure,
                "[{}] {fault:?}: {}",
                db.name, verdict.reason
            );
            assert!(
                verdict.reason.contains(needle),
                "[{}] {fault:?}: {}",
                db.name,
                verdict.reason
            );
            eprintln!(
                "[{}] {fault:?}: {:?} after {k} intervals: {}",
                db.name, verdict.decision, verdict.reason
            );
            match fault {
                Fault::None => assert_eq!(k, 12),
                Fault::CodeHash => assert_eq!(k, 1, "hard failure at the next sample"),
                Fault::Silent => assert_eq!(k, 4, "first sample with > 30 s of silence"),
                _ => assert!(k <= 4, "{fault:?} took {k} intervals"),
            }
        }
    }
}

/// Every fleetgate HTTP listener puts the per-source limit in front: one source address
/// over its bucket gets 429 with `Retry-After` (nothing run), another source address is
/// not affected.
#[tokio::test]
async fn a_flooding_source_gets_429_and_others_are_served() {
    let db = backends().await.remove(0);
    let reg = db.registry().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = fleetgate_fleet::limit::per_source(
        fleetgate_fleet::http::router(reg.clone()),
        fleetgate_trust::ratelimit::RateLimit::new(3, 1),
    );
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let (a, b) = (from([127, 0, 0, 1]), from([127, 0, 0, 2]));
    let url = format!("http://{addr}/api/fleet/peers");
    for i in 0..3 {
        let r = a.get(&url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "request {i} within the burst");
    }
    let r = a.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error_kind"], "rate_limited", "{v}");
    // A heartbeat from the limited source is refused before it is read or stored.
    let key = node_key(1);
    reg.enroll(&cert_for("n1", &key, "eu"), &keyring(), unix_now())
        .await
        .unwrap();
    let (s, _) = post(
        &a,
        &format!("http://{addr}"),
        signed(&heartbeat("n1", 1, unix_now() as u64), &key),
    )
    .await;
    assert_eq!(s, 429);
    assert_eq!(reg.peer("n1").await.unwrap().last_seq, 0);
    // Another source is served.
    let r = b.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    db.cleanup().await;
}

#[tokio::test]
async fn artifacts_are_served_by_digest_with_their_length_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    std::fs::write(dir.path().join(&sha), &bytes).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = dir.path().to_owned();
    tokio::spawn(async move {
        axum::serve(listener, fleetgate_fleet::http::artifacts(store))
            .await
            .unwrap();
    });
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap();
            let len = r.content_length();
            (r.status().as_u16(), len, r.bytes().await.unwrap().to_vec())
        }
    };
    let (status, len, body) = get(format!("/artifacts/{sha}")).await;
    assert_eq!((status, len), (200, Some(bytes.len() as u64)));
    assert_eq!(body, bytes);
    // Not a digest (a path trick included): 400; an unknown digest: 404.
    for bad in ["ABC", "..%2F..%2Fetc%2Fpasswd", &sha.to_uppercase()] {
        assert_eq!(get(format!("/artifacts/{bad}")).await.0, 400, "{bad}");
    }
    assert_eq!(get(format!("/artifacts/{}", "0".repeat(64))).await.0, 404);
}

/// Issue 20, pull mode: a node's feed is served with an ETag, `304` for the tag it holds,
/// only ever moves forward, and tells a node with nothing addressed to it so (`404`); on
/// SQLite and PostgreSQL.
#[tokio::test]
async fn a_nodes_feed_is_served_with_an_etag_and_only_moves_forward() {
    for db in backends().await {
        let reg = db.registry().await;
        let key = node_key(1);
        reg.enroll(&cert_for("n1", &key, "eu"), &keyring(), unix_now())
            .await
            .unwrap();
        let base = serve(reg.clone()).await;
        let client = reqwest::Client::new();
        let get = |tag: Option<&str>, node: &str| {
            let mut req = client.get(format!("{base}/api/fleet/feed/{node}"));
            if let Some(t) = tag {
                req = req.header("if-none-match", t);
            }
            async move {
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                let etag = resp
                    .headers()
                    .get("etag")
                    .map(|v| v.to_str().unwrap().to_owned());
                (status, etag, resp.bytes().await.unwrap().to_vec())
            }
        };
        let (s, _, body) = get(None, "n1").await;
        assert_eq!(s, 404, "{}", String::from_utf8_lossy(&body));
        assert_eq!(get(None, "bad%20id").await.0, 400);

        let m5 = br#"{"sequence":5,"version":"v2"}"#;
        assert!(reg.put_feed("n1", 5, m5, unix_now()).await.unwrap());
        let (s, tag, body) = get(None, "n1").await;
        assert_eq!((s, body.as_slice()), (200, &m5[..]));
        let tag = tag.expect("an ETag");
        assert_eq!(
            tag,
            format!("\"{}\"", fleetgate_trust::provenance::sha256_hex(m5))
        );
        let (s, _, body) = get(Some(&tag), "n1").await;
        assert_eq!((s, body.len()), (304, 0));

        // Older or equal sequences change nothing; a newer one replaces it.
        assert!(
            !reg.put_feed("n1", 4, b"{\"sequence\":4}", unix_now())
                .await
                .unwrap()
        );
        assert!(
            !reg.put_feed("n1", 5, b"{\"sequence\":5,\"x\":1}", unix_now())
                .await
                .unwrap()
        );
        assert_eq!(get(Some(&tag), "n1").await.0, 304);
        let m6 = br#"{"sequence":6,"kind":"rollback"}"#;
        assert!(reg.put_feed("n1", 6, m6, unix_now()).await.unwrap());
        let (s, tag6, body) = get(Some(&tag), "n1").await;
        assert_eq!((s, body.as_slice()), (200, &m6[..]));
        assert_ne!(tag6.as_deref(), Some(tag.as_str()));

        // Bounded: a manifest above the limit is refused before it is stored.
        let huge = vec![b' '; fleetgate_fleet::MAX_FEED_MANIFEST + 1];
        assert!(reg.put_feed("n1", 7, &huge, unix_now()).await.is_err());
        assert_eq!(reg.feed("n1").await.unwrap().unwrap().sequence, 6);
    }
}
