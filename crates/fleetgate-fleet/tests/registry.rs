//! Registry behaviour on SQLite (always) and PostgreSQL (when FLEETGATE_TEST_PG_URL is set).

mod common;

use std::time::Duration;

use common::*;
use fleetgate_fleet::{
    Backend, DeployStatus, EnrollError, FleetError, Heartbeat, HeartbeatError, HeartbeatPolicy,
    PeerStatus, Registry, SignedHeartbeat,
};
use fleetgate_trust::{SigningKey, sign_document};
use serde_json::json;

#[tokio::test]
async fn connect_creates_the_database_and_migrations_are_idempotent() {
    for db in backends().await {
        let a = db.registry().await;
        let b = db.registry().await; // migrations already applied: no error
        assert_eq!(a.list_peers().await.unwrap(), vec![]);
        assert_eq!(b.backend(), a.backend());
        if a.backend() == Backend::Sqlite {
            let path = db.url.trim_start_matches("sqlite://");
            assert!(std::path::Path::new(path).exists(), "{path} not created");
        }
        db.cleanup().await;
    }
}

#[tokio::test]
async fn unsupported_url_is_named() {
    let err = Registry::connect("mysql://root:pw@host/db")
        .await
        .unwrap_err();
    assert!(matches!(err, FleetError::UnsupportedUrl { .. }));
    let msg = err.to_string();
    assert!(msg.contains("mysql://root:***@host/db"), "{msg}");
    assert!(!msg.contains("pw"), "{msg}");
}

#[tokio::test]
async fn enrollment_verifies_the_certificate() {
    for db in backends().await {
        let reg = db.registry().await;
        let peer = reg
            .enroll(&cert_for("node-1", &node_key(1), "eu"), &keyring(), NOW)
            .await
            .unwrap();
        assert!(peer.master_key_verified);
        assert_eq!(peer.status, PeerStatus::Active);
        assert_eq!(peer.region, "eu");
        assert_eq!(peer.public_key, node_key(1).public_key_hex());

        // Signed by a key the trust file does not hold.
        let rogue = SigningKey::from_seed(&[9u8; 32]);
        let bad = fleetgate_fleet::issue_cert(
            &fleetgate_fleet::CertFields {
                node_id: "node-2".into(),
                public_key: node_key(2).public_key_hex(),
                region: "eu".into(),
                address: "http://x".into(),
                issued_at: NOW as u64,
            },
            &[&rogue],
        )
        .unwrap();
        let err = reg.enroll(&bad, &keyring(), NOW).await.unwrap_err();
        assert!(matches!(err, EnrollError::Verify(_)), "{err}");

        // Tampered after signing: region changed.
        let good = String::from_utf8(cert_for("node-3", &node_key(3), "eu")).unwrap();
        let tampered = good.replace("\"eu\"", "\"us\"");
        let err = reg
            .enroll(tampered.as_bytes(), &keyring(), NOW)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");

        // A correctly signed document that is not an enrollment certificate.
        let other = sign_document(
            &json!({"type": "release", "node_id": "node-4", "public_key": node_key(4).public_key_hex(),
                    "region": "eu", "address": "http://x", "issued_at": 1}),
            &[&trust_key()],
        )
        .unwrap();
        let err = reg.enroll(&other, &keyring(), NOW).await.unwrap_err();
        assert!(
            err.to_string().contains("not an enrollment certificate"),
            "{err}"
        );

        let ids: Vec<String> = reg
            .list_peers()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(ids, vec!["node-1"]);

        reg.remove_peer("node-1").await.unwrap();
        assert_eq!(
            reg.peer("node-1").await.unwrap().status,
            PeerStatus::Removed
        );
        assert!(matches!(
            reg.remove_peer("ghost").await.unwrap_err(),
            FleetError::UnknownPeer(id) if id == "ghost"
        ));
        db.cleanup().await;
    }
}

#[tokio::test]
async fn heartbeats_are_verified_and_replay_protected() {
    let policy = HeartbeatPolicy::default();
    for db in backends().await {
        let reg = db.registry().await;
        let key = node_key(1);
        reg.enroll(&cert_for("n1", &key, "eu"), &keyring(), NOW)
            .await
            .unwrap();
        let now = NOW;
        let t = now as u64;
        assert_eq!(
            reg.peer("n1").await.unwrap().healthy,
            None,
            "no heartbeat yet"
        );

        let rec = reg
            .record_heartbeat(&signed(&heartbeat("n1", 1, t), &key), &policy, now)
            .await
            .unwrap();
        assert_eq!((rec.seq, rec.requests_total), (1, 100));
        // The peer row carries the health of its last accepted heartbeat.
        assert_eq!(reg.peer("n1").await.unwrap().healthy, Some(true));

        // Replayed (same seq) and non-increasing seq.
        let err = reg
            .record_heartbeat(&signed(&heartbeat("n1", 1, t), &key), &policy, now + 1)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                HeartbeatError::Replayed {
                    seq: 1,
                    last_seq: 1,
                    ..
                }
            ),
            "{err}"
        );
        let unhealthy = Heartbeat {
            healthy: false,
            ..heartbeat("n1", 5, t)
        };
        reg.record_heartbeat(&signed(&unhealthy, &key), &policy, now + 2)
            .await
            .unwrap();
        assert_eq!(reg.peer("n1").await.unwrap().healthy, Some(false));
        let err = reg
            .record_heartbeat(&signed(&heartbeat("n1", 4, t), &key), &policy, now + 3)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                HeartbeatError::Replayed {
                    seq: 4,
                    last_seq: 5,
                    ..
                }
            ),
            "{err}"
        );

        // Signed with another key.
        let err = reg
            .record_heartbeat(&signed(&heartbeat("n1", 6, t), &node_key(2)), &policy, now)
            .await
            .unwrap_err();
        assert!(matches!(err, HeartbeatError::BadSignature { .. }), "{err}");

        // Payload changed after signing.
        let mut env = SignedHeartbeat::sign(&heartbeat("n1", 7, t), &key);
        env.payload = env.payload.replace("\"healthy\":true", "\"healthy\":false");
        let err = reg
            .record_heartbeat(&env.to_json(), &policy, now)
            .await
            .unwrap_err();
        assert!(matches!(err, HeartbeatError::BadSignature { .. }), "{err}");

        // Unsigned.
        let mut env = SignedHeartbeat::sign(&heartbeat("n1", 8, t), &key);
        env.signature.clear();
        let err = reg
            .record_heartbeat(&env.to_json(), &policy, now)
            .await
            .unwrap_err();
        assert!(matches!(err, HeartbeatError::Unsigned { .. }), "{err}");

        // Unknown node.
        let err = reg
            .record_heartbeat(&signed(&heartbeat("n9", 1, t), &node_key(9)), &policy, now)
            .await
            .unwrap_err();
        assert!(
            matches!(err, HeartbeatError::UnknownNode(ref id) if id == "n9"),
            "{err}"
        );

        // Too old / from the future.
        let err = reg
            .record_heartbeat(&signed(&heartbeat("n1", 9, t - 301), &key), &policy, now)
            .await
            .unwrap_err();
        assert!(matches!(err, HeartbeatError::TooOld { .. }), "{err}");
        let err = reg
            .record_heartbeat(&signed(&heartbeat("n1", 9, t + 61), &key), &policy, now)
            .await
            .unwrap_err();
        assert!(matches!(err, HeartbeatError::FromFuture { .. }), "{err}");

        // Too large, refused before parsing.
        let big = vec![b' '; policy.max_bytes + 1];
        let err = reg.record_heartbeat(&big, &policy, now).await.unwrap_err();
        assert!(matches!(err, HeartbeatError::TooLarge { .. }), "{err}");

        // Unknown field in the payload.
        let env = SignedHeartbeat {
            payload: r#"{"node_id":"n1","extra":1}"#.into(),
            signature: "00".repeat(64),
        };
        let err = reg
            .record_heartbeat(&env.to_json(), &policy, now)
            .await
            .unwrap_err();
        assert!(matches!(err, HeartbeatError::Malformed(_)), "{err}");

        // Removed node.
        reg.remove_peer("n1").await.unwrap();
        let err = reg
            .record_heartbeat(&signed(&heartbeat("n1", 10, t), &key), &policy, now)
            .await
            .unwrap_err();
        assert!(matches!(err, HeartbeatError::Removed(_)), "{err}");

        // Only the two accepted heartbeats are stored.
        let series = reg
            .heartbeats_between(&["n1".into()], now - 10, now + 10)
            .await
            .unwrap();
        assert_eq!(series.iter().map(|h| h.seq).collect::<Vec<_>>(), vec![1, 5]);
        assert_eq!(series[1].bench["latency_ms"], 12.5);
        let peer = reg.peer("n1").await.unwrap();
        assert_eq!(peer.last_seq, 5);
        assert_eq!(reg.prune_heartbeats(now + 1).await.unwrap(), 1);
        let latest = reg
            .latest_heartbeat("n1", now + 100)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(latest.seq, 5);
        assert_eq!(peer.current_version.as_deref(), Some("1.2.3"));
        db.cleanup().await;
    }
}

/// The endpoint caches node keys (issue 18: no registry read per heartbeat); another
/// process (a second handle on the same database) re-enrolling a node with a new key or
/// removing it is still obeyed at once: the old key's heartbeats are refused, the new
/// key's accepted, a removed node's refused, though the key was cached.
#[tokio::test]
async fn cached_node_keys_never_outlive_a_reenrollment_or_removal_elsewhere() {
    let policy = HeartbeatPolicy::default();
    for db in backends().await {
        let reg = db.registry().await;
        let other = db.registry().await;
        let (old, new) = (node_key(1), node_key(2));
        reg.enroll(&cert_for("n1", &old, "eu"), &keyring(), NOW)
            .await
            .unwrap();
        let t = NOW as u64;
        let hb = |seq| heartbeat("n1", seq, t);
        reg.record_heartbeat(&signed(&hb(1), &old), &policy, NOW)
            .await
            .unwrap();

        // Enrolled again with a new key by the other process: the cached old key no
        // longer lets a heartbeat in, the new key's heartbeat is accepted.
        other
            .enroll(&cert_for("n1", &new, "eu"), &keyring(), NOW)
            .await
            .unwrap();
        let err = reg
            .record_heartbeat(&signed(&hb(2), &old), &policy, NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, HeartbeatError::BadSignature { .. }), "{err}");
        let rec = reg
            .record_heartbeat(&signed(&hb(3), &new), &policy, NOW)
            .await
            .unwrap();
        assert_eq!(rec.seq, 3);
        // The old key is refused from now on too (verified against the cache first).
        let err = reg
            .record_heartbeat(&signed(&hb(4), &old), &policy, NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, HeartbeatError::BadSignature { .. }), "{err}");

        // Removed by the other process while cached here: refused, and stays refused.
        other.remove_peer("n1").await.unwrap();
        for seq in [5, 6] {
            let err = reg
                .record_heartbeat(&signed(&hb(seq), &new), &policy, NOW)
                .await
                .unwrap_err();
            assert!(matches!(err, HeartbeatError::Removed(_)), "{err}");
        }
        let series = reg
            .heartbeats_between(&["n1".into()], NOW - 10, NOW + 10)
            .await
            .unwrap();
        assert_eq!(series.iter().map(|h| h.seq).collect::<Vec<_>>(), vec![1, 3]);
        db.cleanup().await;
    }
}

/// A forged heartbeat (signed with a key the node was never enrolled with) is refused and
/// leaves the node's cached key in place: forgeries cannot make the node's real
/// heartbeats miss the cache, and the next real one is accepted.
#[tokio::test]
async fn a_forged_heartbeat_is_refused_and_does_not_evict_the_cached_key() {
    let policy = HeartbeatPolicy::default();
    for db in backends().await {
        let reg = db.registry().await;
        let (real, forger) = (node_key(1), node_key(9));
        reg.enroll(&cert_for("n1", &real, "eu"), &keyring(), NOW)
            .await
            .unwrap();
        let t = NOW as u64;
        reg.record_heartbeat(&signed(&heartbeat("n1", 1, t), &real), &policy, NOW)
            .await
            .unwrap();
        assert_eq!(reg.cached_node_keys(), 1, "{}", db.name);
        for seq in 2..5 {
            let err = reg
                .record_heartbeat(&signed(&heartbeat("n1", seq, t), &forger), &policy, NOW)
                .await
                .unwrap_err();
            assert!(matches!(err, HeartbeatError::BadSignature { .. }), "{err}");
            assert_eq!(
                reg.cached_node_keys(),
                1,
                "{}: the forgery evicted the cached key",
                db.name
            );
        }
        let rec = reg
            .record_heartbeat(&signed(&heartbeat("n1", 5, t), &real), &policy, NOW)
            .await
            .unwrap();
        assert_eq!(rec.seq, 5);
        let series = reg
            .heartbeats_between(&["n1".into()], NOW - 10, NOW + 10)
            .await
            .unwrap();
        assert_eq!(series.iter().map(|h| h.seq).collect::<Vec<_>>(), vec![1, 5]);
        db.cleanup().await;
    }
}

/// Feeds written for many nodes at once (issue 18): one transaction, the manifest stored
/// once; each feed only moves forward; unknown nodes are named, not written.
#[tokio::test]
async fn feeds_for_many_nodes_are_written_at_once_and_only_move_forward() {
    for db in backends().await {
        let reg = db.registry().await;
        let mut nodes = Vec::new();
        for i in 1..=3u8 {
            let id = format!("n{i}");
            reg.enroll(&cert_for(&id, &node_key(i), "eu"), &keyring(), NOW)
                .await
                .unwrap();
            nodes.push(id);
        }
        // n3 already holds a later manifest.
        assert!(
            reg.put_feed("n3", 9, b"{\"sequence\":9}", NOW)
                .await
                .unwrap()
        );
        let mut targets = nodes.clone();
        targets.push("ghost".into());
        let m5 = b"{\"sequence\":5}";
        let w = reg.put_feeds(&targets, 5, m5, NOW).await.unwrap();
        assert_eq!(w.changed, 2, "n1 and n2; n3 holds sequence 9");
        assert_eq!(w.unknown, vec!["ghost".to_owned()]);
        for (node, seq, body) in [
            ("n1", 5, &m5[..]),
            ("n2", 5, &m5[..]),
            ("n3", 9, &b"{\"sequence\":9}"[..]),
        ] {
            let f = reg.feed(node).await.unwrap().unwrap();
            assert_eq!((f.sequence, f.manifest.as_slice()), (seq, body), "{node}");
        }
        assert!(reg.feed("ghost").await.unwrap().is_none());
        // Written again: nothing changes; a later one raises all three.
        assert_eq!(reg.put_feeds(&nodes, 5, m5, NOW).await.unwrap().changed, 0);
        let m10 = b"{\"sequence\":10}";
        assert_eq!(
            reg.put_feeds(&nodes, 10, m10, NOW).await.unwrap().changed,
            3
        );
        for node in &nodes {
            assert_eq!(reg.feed(node).await.unwrap().unwrap().manifest, m10);
        }
        let e = reg.put_feed("ghost", 11, m10, NOW).await.unwrap_err();
        assert!(
            matches!(e, FleetError::UnknownPeer(ref n) if n == "ghost"),
            "{e}"
        );
        db.cleanup().await;
    }
}

/// Issue 18: a canary sample or a DEPLOY pass over a large fleet reads every node's
/// latest heartbeat, floor and address a few thousand nodes per statement. The batched
/// reads give exactly what the one-node reads give, at every cut-off time, with ties on
/// the receive time broken by (epoch, seq), across statement boundaries, for nodes that
/// never heartbeated and for ids that are not enrolled.
#[tokio::test]
async fn batched_latest_heartbeats_match_the_one_node_reads_at_every_cutoff() {
    let policy = HeartbeatPolicy::default();
    for db in backends().await {
        let reg = db.registry().await;
        for i in 1..=3u8 {
            reg.enroll(
                &cert_for(&format!("n{i}"), &node_key(i), "eu"),
                &keyring(),
                NOW,
            )
            .await
            .unwrap();
        }
        let t = NOW as u64;
        let mut n1_late = heartbeat("n1", 1, t + 10);
        n1_late.epoch = 1; // a restarted node: same receive time, later epoch
        n1_late.code_hash = "hash-2".into();
        n1_late.floor = 7;
        for (body, at) in [
            (signed(&heartbeat("n1", 1, t), &node_key(1)), NOW),
            (signed(&heartbeat("n1", 2, t + 10), &node_key(1)), NOW + 10),
            (signed(&n1_late, &node_key(1)), NOW + 10),
            (signed(&heartbeat("n2", 1, t + 20), &node_key(2)), NOW + 20),
        ] {
            let r = reg.record_heartbeats(&[body], &policy, at).await.unwrap();
            assert!(r[0].is_ok(), "{r:?}");
        }
        // n1 and n2 fall in different statements; n3 never heartbeated; the rest are
        // not enrolled.
        let mut ids: Vec<String> = (0..2100).map(|i| format!("n1-{i:04}")).collect();
        ids.extend(["n3", "n2", "n1", "ghost"].map(str::to_owned));
        for at in [NOW - 1, NOW, NOW + 9, NOW + 10, NOW + 20, NOW + 1000] {
            let batch = reg.latest_heartbeats(&ids, at).await.unwrap();
            let mut one_by_one = std::collections::BTreeMap::new();
            for id in &ids {
                if let Some(h) = reg.latest_heartbeat(id, at).await.unwrap() {
                    one_by_one.insert(id.clone(), h);
                }
            }
            assert_eq!(batch, one_by_one, "at {at}");
        }
        let latest = reg.latest_heartbeats(&ids, NOW + 10).await.unwrap();
        assert_eq!(
            (latest["n1"].epoch, latest["n1"].code_hash.as_str()),
            (1, "hash-2"),
            "the later epoch wins a tie on the receive time"
        );
        let floors = reg.reported_floors(&ids).await.unwrap();
        assert_eq!(
            floors,
            std::collections::BTreeMap::from([
                ("n1".to_owned(), 7),
                ("n2".to_owned(), 0),
                ("n3".to_owned(), 0)
            ])
        );
        let addresses = reg.addresses(&ids).await.unwrap();
        assert_eq!(
            addresses.keys().collect::<Vec<_>>(),
            ["n1", "n2", "n3"],
            "only enrolled nodes have an address"
        );
        for (id, a) in &addresses {
            assert_eq!(a, &reg.peer(id).await.unwrap().address);
        }
        db.cleanup().await;
    }
}

/// Issue 13: one validly signed heartbeat with an inflated `seq` used to lock the node
/// out until its counter caught up. A higher epoch resets the window; replays of any
/// accepted `(epoch, seq)` and anything below it stay refused; the epoch cannot jump
/// arbitrarily far; heartbeats without an epoch are epoch 0.
#[tokio::test]
async fn an_inflated_seq_is_recovered_by_an_epoch_bump_and_replays_stay_refused() {
    let policy = HeartbeatPolicy::default();
    for db in backends().await {
        let reg = db.registry().await;
        let key = node_key(1);
        reg.enroll(&cert_for("n1", &key, "eu"), &keyring(), NOW)
            .await
            .unwrap();
        let t = NOW as u64;
        let hb = |epoch: u64, seq: u64| {
            let mut h = heartbeat("n1", seq, t);
            h.epoch = epoch;
            signed(&h, &key)
        };
        // An old agent (no epoch field): epoch 0.
        let legacy = {
            let h = heartbeat("n1", 1, t);
            let mut v = serde_json::to_value(&h).unwrap();
            v.as_object_mut().unwrap().remove("epoch");
            let payload = serde_json::to_string(&v).unwrap();
            assert!(!payload.contains("epoch"));
            let sig = hex::encode(key.sign(payload.as_bytes()));
            serde_json::to_vec(&SignedHeartbeat {
                payload,
                signature: sig,
            })
            .unwrap()
        };
        let rec = reg.record_heartbeat(&legacy, &policy, NOW).await.unwrap();
        assert_eq!((rec.epoch, rec.seq), (0, 1), "[{}]", db.name);
        // The poison: validly signed, seq far ahead.
        let inflated = hb(0, 4_000_000_000_000);
        reg.record_heartbeat(&inflated, &policy, NOW).await.unwrap();
        // Locked out within epoch 0 ...
        let err = reg
            .record_heartbeat(&hb(0, 2), &policy, NOW + 1)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                HeartbeatError::Replayed {
                    epoch: 0,
                    seq: 2,
                    last_epoch: 0,
                    last_seq: 4_000_000_000_000,
                    ..
                }
            ),
            "[{}] {err}",
            db.name
        );
        // ... recovered by the next epoch, seq from 1.
        let rec = reg
            .record_heartbeat(&hb(1, 1), &policy, NOW + 2)
            .await
            .unwrap();
        assert_eq!((rec.epoch, rec.seq), (1, 1), "[{}]", db.name);
        reg.record_heartbeat(&hb(1, 2), &policy, NOW + 3)
            .await
            .unwrap();
        // Replays stay refused: the poison, an accepted one, an older epoch.
        for (body, what) in [
            (&inflated, "the inflated heartbeat"),
            (&hb(1, 2), "an accepted heartbeat"),
            (&hb(1, 1), "a lower seq"),
            (
                &hb(0, 5_000_000_000_000),
                "an older epoch with a higher seq",
            ),
        ] {
            let err = reg
                .record_heartbeat(body, &policy, NOW + 4)
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    HeartbeatError::Replayed {
                        last_epoch: 1,
                        last_seq: 2,
                        ..
                    }
                ),
                "[{}] {what}: {err}",
                db.name
            );
        }
        // The epoch cannot be pushed out of reach in one step.
        let err = reg
            .record_heartbeat(&hb(u64::MAX / 4, 1), &policy, NOW + 5)
            .await
            .unwrap_err();
        assert!(
            matches!(err, HeartbeatError::EpochJump { last_epoch: 1, .. }),
            "[{}] {err}",
            db.name
        );
        let peer = reg.peer("n1").await.unwrap();
        assert_eq!((peer.last_epoch, peer.last_seq), (1, 2), "[{}]", db.name);
        let series = reg
            .heartbeats_between(&["n1".into()], NOW - 10, NOW + 10)
            .await
            .unwrap();
        assert_eq!(
            series.iter().map(|h| (h.epoch, h.seq)).collect::<Vec<_>>(),
            vec![(0, 1), (0, 4_000_000_000_000), (1, 1), (1, 2)],
            "[{}]",
            db.name
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn concurrent_copies_of_one_heartbeat_are_accepted_once() {
    let policy = HeartbeatPolicy::default();
    for db in backends().await {
        let reg = db.registry().await;
        let key = node_key(1);
        reg.enroll(&cert_for("n1", &key, "eu"), &keyring(), NOW)
            .await
            .unwrap();
        let body = signed(&heartbeat("n1", 1, NOW as u64), &key);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (reg, body, policy) = (reg.clone(), body.clone(), policy.clone());
            tasks.push(tokio::spawn(async move {
                reg.record_heartbeat(&body, &policy, NOW).await.is_ok()
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        assert_eq!(ok, 1, "[{}] {ok} copies accepted", db.name);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn eligible_peers_are_verified_active_and_recent() {
    let policy = HeartbeatPolicy::default();
    for db in backends().await {
        let reg = db.registry().await;
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            reg.enroll(&cert_for(id, &node_key(i as u8), "eu"), &keyring(), NOW)
                .await
                .unwrap();
        }
        reg.register_unverified("u", "http://u", &node_key(20).public_key_hex(), "eu", NOW)
            .await
            .unwrap();
        for (i, id) in ["a", "b", "c", "d", "u"].iter().enumerate() {
            let key = if *id == "u" {
                node_key(20)
            } else {
                node_key(i as u8)
            };
            let at = if *id == "b" { NOW - 100 } else { NOW };
            reg.record_heartbeat(&signed(&heartbeat(id, 1, at as u64), &key), &policy, at)
                .await
                .unwrap();
        }
        reg.set_status("c", PeerStatus::Inactive).await.unwrap();
        // a: eligible; b: stale; c: inactive; d: eligible; e: never heartbeated; u: unverified.
        let ids: Vec<String> = reg
            .eligible_peers(NOW, 60)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec!["a", "d"], "[{}]", db.name);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn channels_place_nodes_and_a_paused_channel_has_no_eligible_node() {
    let policy = HeartbeatPolicy::default();
    for db in backends().await {
        let reg = db.registry().await;
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            reg.enroll(&cert_for(id, &node_key(i as u8), "eu"), &keyring(), NOW)
                .await
                .unwrap();
            reg.record_heartbeat(
                &signed(&heartbeat(id, 1, NOW as u64), &node_key(i as u8)),
                &policy,
                NOW,
            )
            .await
            .unwrap();
        }
        assert_eq!(reg.peer("a").await.unwrap().channel, "stable");
        reg.set_peer_channel("a", "beta").await.unwrap();
        reg.set_peer_channel("b", "beta").await.unwrap();
        assert!(matches!(
            reg.set_peer_channel("zz", "beta").await.unwrap_err(),
            FleetError::UnknownPeer(_)
        ));
        assert!(matches!(
            reg.set_peer_channel("a", "Beta!").await.unwrap_err(),
            FleetError::Invalid { .. }
        ));
        let of =
            |v: Vec<fleetgate_canary::Eligible>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(
            of(reg
                .eligible_in_channel(NOW, 60, Some("beta"))
                .await
                .unwrap()),
            ["a", "b"],
            "[{}]",
            db.name
        );
        assert_eq!(
            of(reg
                .eligible_in_channel(NOW, 60, Some("stable"))
                .await
                .unwrap()),
            ["c", "d"]
        );
        assert_eq!(
            of(reg.eligible_in_channel(NOW, 60, None).await.unwrap()),
            ["a", "b", "c", "d"]
        );

        reg.set_channel_paused("beta", true, "freeze", NOW)
            .await
            .unwrap();
        assert!(reg.channel_paused("beta").await.unwrap());
        assert!(!reg.channel_paused("stable").await.unwrap());
        assert!(
            reg.eligible_in_channel(NOW, 60, Some("beta"))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            of(reg.eligible_in_channel(NOW, 60, None).await.unwrap()),
            ["c", "d"]
        );
        let channels = reg.channels().await.unwrap();
        let beta = channels.iter().find(|c| c.name == "beta").unwrap();
        assert_eq!(
            (beta.nodes, beta.paused, beta.reason.as_str()),
            (2, true, "freeze")
        );
        let stable = channels.iter().find(|c| c.name == "stable").unwrap();
        assert_eq!((stable.nodes, stable.paused), (2, false));

        reg.set_channel_paused("beta", false, "", NOW + 1)
            .await
            .unwrap();
        assert_eq!(
            of(reg
                .eligible_in_channel(NOW, 60, Some("beta"))
                .await
                .unwrap()),
            ["a", "b"]
        );

        // What a release or a rollback order goes to: active, verified, by channel, in id
        // order, whatever their heartbeats (no recency, unlike eligibility) — never an
        // unverified or removed node.
        reg.register_unverified("u", "http://u", &node_key(20).public_key_hex(), "eu", NOW)
            .await
            .unwrap();
        reg.remove_peer("d").await.unwrap();
        assert_eq!(reg.release_targets(Some("stable")).await.unwrap(), ["c"]);
        assert_eq!(reg.release_targets(Some("beta")).await.unwrap(), ["a", "b"]);
        assert!(reg.release_targets(Some("none")).await.unwrap().is_empty());
        assert_eq!(
            reg.release_targets(None).await.unwrap(),
            ["a", "b", "c"],
            "[{}]",
            db.name
        );
        assert_eq!(reg.peer_count().await.unwrap(), 5);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn two_orchestrators_one_lease_and_fencing() {
    let ttl = Duration::from_secs(30);
    for db in backends().await {
        let one = db.registry().await;
        let two = db.registry().await;

        let a = one
            .acquire_lease_at("pipeline", "orch-A", ttl, NOW)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.epoch, 1);
        assert!(
            two.acquire_lease_at("pipeline", "orch-B", ttl, NOW + 1)
                .await
                .unwrap()
                .is_none()
        );
        // A renews and keeps its epoch; B still cannot take it.
        let a = one.renew_lease_at(&a, ttl, NOW + 20).await.unwrap();
        assert_eq!(a.epoch, 1);
        assert!(
            two.acquire_lease_at("pipeline", "orch-B", ttl, NOW + 40)
                .await
                .unwrap()
                .is_none()
        );
        one.check_fence_at(&a.fence(), NOW + 40).await.unwrap();
        one.record_deployment_status("run1", "n1", DeployStatus::Sent, "", &a.fence(), NOW + 40)
            .await
            .unwrap();

        // A stalls past its expiry; B takes over with a higher epoch.
        let b = two
            .acquire_lease_at("pipeline", "orch-B", ttl, NOW + 51)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.epoch, 2);
        assert!(
            one.acquire_lease_at("pipeline", "orch-A", ttl, NOW + 52)
                .await
                .unwrap()
                .is_none()
        );

        // A wakes up: fenced out everywhere.
        let err = one.renew_lease_at(&a, ttl, NOW + 52).await.unwrap_err();
        assert!(matches!(err, FleetError::Fenced { epoch: 1, .. }), "{err}");
        assert!(
            err.to_string().contains("held by \"orch-B\" at epoch 2"),
            "{err}"
        );
        assert!(one.check_fence_at(&a.fence(), NOW + 52).await.is_err());
        let err = one
            .record_deployment_status(
                "run1",
                "n1",
                DeployStatus::Applied,
                "late",
                &a.fence(),
                NOW + 52,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, FleetError::Fenced { .. }), "{err}");

        // B's writes go through.
        two.record_deployment_status(
            "run1",
            "n1",
            DeployStatus::RollbackSent,
            "",
            &b.fence(),
            NOW + 53,
        )
        .await
        .unwrap();
        let st = two.deployment_statuses("run1").await.unwrap();
        assert_eq!(st.len(), 1);
        assert_eq!(
            (st[0].status, st[0].fence_epoch),
            (DeployStatus::RollbackSent, 2)
        );

        // Release lets A back in at once, with a new epoch.
        two.release_lease(&b).await.unwrap();
        let a2 = one
            .acquire_lease_at("pipeline", "orch-A", ttl, NOW + 54)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a2.epoch, 3);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn racing_orchestrators_get_the_lease_once() {
    let ttl = Duration::from_secs(30);
    for db in backends().await {
        let regs = [db.registry().await, db.registry().await];
        for round in 0..5i64 {
            let name = format!("race-{round}");
            let mut tasks = Vec::new();
            for (i, reg) in regs.iter().enumerate() {
                for j in 0..3 {
                    let (reg, name) = (reg.clone(), name.clone());
                    tasks.push(tokio::spawn(async move {
                        reg.acquire_lease_at(&name, &format!("orch-{i}-{j}"), ttl, NOW)
                            .await
                            .unwrap()
                    }));
                }
            }
            let mut winners = Vec::new();
            for t in tasks {
                if let Some(l) = t.await.unwrap() {
                    winners.push(l);
                }
            }
            assert_eq!(winners.len(), 1, "[{}] winners: {winners:?}", db.name);
            assert_eq!(winners[0].epoch, 1);
        }
        db.cleanup().await;
    }
}

#[tokio::test]
async fn the_shared_run_state_is_written_only_by_the_lease_holder_at_the_revision_it_read() {
    use fleetgate_fleet::{SharedFile, SharedWriteError};
    let ttl = Duration::from_secs(30);
    let file = |path: &str, body: &str| SharedFile {
        path: path.into(),
        sha256: format!("{:064x}", body.len()),
        bytes: body.as_bytes().to_vec(),
    };
    for db in backends().await {
        let reg = db.registry().await;
        assert_eq!(reg.shared_state("pipeline").await.unwrap(), None);
        // The database's clock is the lease's clock.
        let t = reg.db_now().await.unwrap();
        assert!((t - fleetgate_fleet::unix_now()).abs() < 5, "{t}");
        let a = reg
            .acquire_lease("lease", "orch-A", ttl)
            .await
            .unwrap()
            .unwrap();
        assert!(a.since >= t && a.expires_at > a.since, "{a:?}");

        // Not the holder (or a stale epoch): refused, nothing written.
        for (holder, epoch) in [("orch-B", a.epoch), ("orch-A", a.epoch + 1)] {
            let err = reg
                .put_shared_state("pipeline", "lease", holder, epoch, 0, "{}", &[])
                .await
                .unwrap_err();
            assert!(matches!(err, SharedWriteError::Fenced(_)), "{err}");
        }
        assert_eq!(reg.shared_state("pipeline").await.unwrap(), None);

        // The holder writes revision 1 with a file, then 2 from 1.
        let rev = reg
            .put_shared_state(
                "pipeline",
                "lease",
                "orch-A",
                a.epoch,
                0,
                r#"{"stage":"canary"}"#,
                &[file("manifests/1.json", "m1")],
            )
            .await
            .unwrap();
        assert_eq!(rev, 1);
        let rev = reg
            .put_shared_state(
                "pipeline",
                "lease",
                "orch-A",
                a.epoch,
                1,
                r#"{"stage":"deploying"}"#,
                &[],
            )
            .await
            .unwrap();
        assert_eq!(rev, 2);
        // A write from a stale read is refused (compare-and-swap on the revision).
        let err = reg
            .put_shared_state("pipeline", "lease", "orch-A", a.epoch, 1, "{}", &[])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SharedWriteError::Conflict {
                    expected: 1,
                    current: 2
                }
            ),
            "{err}"
        );

        // B takes over once A's lease is gone: a higher epoch; A is fenced out.
        reg.release_lease(&a).await.unwrap();
        let b = reg
            .acquire_lease("lease", "orch-B", ttl)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.epoch, a.epoch + 1);
        let err = reg
            .put_shared_state("pipeline", "lease", "orch-A", a.epoch, 2, "{}", &[])
            .await
            .unwrap_err();
        assert!(matches!(err, SharedWriteError::Fenced(_)), "{err}");
        let rev = reg
            .put_shared_state(
                "pipeline",
                "lease",
                "orch-B",
                b.epoch,
                2,
                r#"{"stage":"completed"}"#,
                &[file("manifests/1.json", "m1"), file("releases.json", "r")],
            )
            .await
            .unwrap();
        assert_eq!(rev, 3);
        let doc = reg.shared_state("pipeline").await.unwrap().unwrap();
        assert_eq!(
            (
                doc.doc.as_str(),
                doc.rev,
                doc.holder.as_str(),
                doc.fence_epoch
            ),
            (r#"{"stage":"completed"}"#, 3, "orch-B", b.epoch)
        );
        let files = reg.shared_files("pipeline").await.unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["manifests/1.json", "releases.json"]);
        assert_eq!(files[0].bytes, b"m1");
        // Listed without content, then read one at a time.
        let index = reg.shared_file_index("pipeline").await.unwrap();
        let listed: Vec<(String, String)> = files
            .iter()
            .map(|f| (f.path.clone(), f.sha256.clone()))
            .collect();
        assert_eq!(index, listed);
        let one = reg
            .shared_file("pipeline", "manifests/1.json")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(one, files[0]);
        assert_eq!(
            reg.shared_file("pipeline", "manifests/2.json")
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            reg.shared_file("other", "releases.json").await.unwrap(),
            None
        );
        db.cleanup().await;
    }
}

/// A large file beside the run state (the archive of a run over a large fleet) is stored
/// gzip-compressed and its content read back whole, checked against its digest; a small
/// one is stored as it is; a damaged row is an error naming the file.
#[tokio::test]
async fn a_large_shared_file_is_stored_compressed_and_its_content_checked() {
    use fleetgate_fleet::SharedFile;
    let ttl = Duration::from_secs(30);
    let archive = format!(
        "[{}]",
        (0..20_000)
            .map(|i| format!(r#"{{"node":"sim-{i:06}","status":"done"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(archive.len() > fleetgate_fleet::COMPRESS_ABOVE);
    let file = |path: &str, body: &[u8]| SharedFile {
        path: path.into(),
        sha256: fleetgate_trust::provenance::sha256_hex(body),
        bytes: body.to_vec(),
    };
    for db in backends().await {
        let reg = db.registry().await;
        let a = reg
            .acquire_lease("lease", "orch-A", ttl)
            .await
            .unwrap()
            .unwrap();
        let files = [
            file("manifests/1.json", b"{\"sequence\":1}"),
            file("runs/r1.json", archive.as_bytes()),
        ];
        reg.put_shared_state("pipeline", "lease", "orch-A", a.epoch, 0, "{}", &files)
            .await
            .unwrap();
        let stored = reg.shared_files("pipeline").await.unwrap();
        assert_eq!(
            stored[0].bytes, b"{\"sequence\":1}",
            "[{}] small: as it is",
            db.name
        );
        // Stored compressed (about 9-fold for this archive; the ratio depends on the
        // deflate backend the build links, so only "well under" is asserted).
        assert!(
            stored[1].bytes.len() * 4 < archive.len(),
            "[{}] {} stored bytes for {}",
            db.name,
            stored[1].bytes.len(),
            archive.len()
        );
        let contents: Vec<Vec<u8>> = stored.into_iter().map(|f| f.content().unwrap()).collect();
        assert_eq!(contents[0], b"{\"sequence\":1}");
        assert!(contents[1] == archive.as_bytes(), "[{}] differs", db.name);

        // Damaged (a truncated stream, then bytes that are not the recorded ones).
        for garbage in [
            ("'\\x1f8b0800deadbeef'::bytea", "X'1f8b0800deadbeef'"),
            ("'\\x7b7d'::bytea", "X'7b7d'"),
        ] {
            let value = if db.name == "postgres" {
                garbage.0
            } else {
                garbage.1
            };
            db.raw(&format!(
                "UPDATE pipeline_files SET bytes = {value} WHERE path = 'runs/r1.json'"
            ))
            .await;
            let damaged = reg
                .shared_files("pipeline")
                .await
                .unwrap()
                .into_iter()
                .find(|f| f.path == "runs/r1.json")
                .unwrap();
            let err = damaged.content().unwrap_err().to_string();
            assert!(
                err.contains("pipeline_files.bytes") && err.contains("runs/r1.json"),
                "[{}] {err}",
                db.name
            );
        }
        db.cleanup().await;
    }
}

/// A large fleet's run state (tens of MB of JSON) is stored gzip-compressed and read back
/// whole; a small one stays plain text; a damaged compressed document is an error that
/// names the column, not a panic or an empty state.
#[tokio::test]
async fn a_large_shared_run_state_is_stored_compressed_and_read_back_whole() {
    let ttl = Duration::from_secs(30);
    let delivery = |i: usize| {
        format!(
            r#"{{"node":"sim-{i:06}","status":"done","attempts":1,"next_attempt_at":1765000000,"required":true,"detail":"reports the release's code hash"}}"#
        )
    };
    let big = format!(
        r#"{{"deploy":{{"deliveries":[{}]}}}}"#,
        (0..20_000).map(delivery).collect::<Vec<_>>().join(",")
    );
    assert!(big.len() > fleetgate_fleet::COMPRESS_ABOVE, "{}", big.len());
    for db in backends().await {
        let reg = db.registry().await;
        let a = reg
            .acquire_lease("lease", "orch-A", ttl)
            .await
            .unwrap()
            .unwrap();
        let lengths = "SELECT CAST(length(doc) AS BIGINT), CAST(length(doc_gzip) AS BIGINT) FROM pipeline_state WHERE name = 'pipeline'";
        let rev = reg
            .put_shared_state("pipeline", "lease", "orch-A", a.epoch, 0, &big, &[])
            .await
            .unwrap();
        let read = reg.shared_state("pipeline").await.unwrap().unwrap();
        assert_eq!(
            (read.rev, read.doc.len()),
            (rev, big.len()),
            "[{}]",
            db.name
        );
        assert!(
            read.doc == big,
            "[{}] the document read back differs",
            db.name
        );
        let (text, gz) = db.raw(lengths).await.expect("a row");
        let gz = gz.expect("stored compressed");
        assert_eq!(text, Some(0), "[{}]", db.name);
        assert!(
            gz * 10 < i64::try_from(big.len()).unwrap(),
            "[{}] {gz} compressed bytes for {}",
            db.name,
            big.len()
        );

        // A small document is plain text again (and the compressed copy is gone).
        let rev = reg
            .put_shared_state("pipeline", "lease", "orch-A", a.epoch, rev, "{}", &[])
            .await
            .unwrap();
        assert_eq!(
            db.raw(lengths).await,
            Some((Some(2), None)),
            "[{}]",
            db.name
        );
        assert_eq!(
            reg.shared_state("pipeline").await.unwrap().unwrap().doc,
            "{}"
        );

        // Damaged: an error naming the column.
        let garbage = if db.name == "postgres" {
            "UPDATE pipeline_state SET doc = '', doc_gzip = '\\x1f8b0800deadbeef'::bytea"
        } else {
            "UPDATE pipeline_state SET doc = '', doc_gzip = X'1f8b0800deadbeef'"
        };
        db.raw(garbage).await;
        let err = reg.shared_state("pipeline").await.unwrap_err().to_string();
        assert!(err.contains("doc_gzip"), "[{}] {err}", db.name);
        assert!(rev > 1);
        db.cleanup().await;
    }
}

/// Batched ingest under concurrency: each node's heartbeats go in order through one
/// writer and all of them again (replays) through another, in batches, four writers at
/// once. Every `(node, seq)` is accepted exactly once (never lost, never double-counted:
/// one of each pair passes, the other is refused as replayed) and every accepted one is
/// readable afterwards, on both backends.
#[tokio::test]
async fn batched_heartbeats_are_stored_exactly_once_under_concurrent_replays() {
    const NODES: u8 = 8;
    const SEQS: u64 = 40;
    let policy = HeartbeatPolicy::default();
    for db in backends().await {
        let reg = db.registry().await;
        let t = NOW as u64;
        for i in 1..=NODES {
            reg.enroll(
                &cert_for(&format!("n{i}"), &node_key(i), "eu"),
                &keyring(),
                NOW,
            )
            .await
            .unwrap();
        }
        let mut streams: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 4];
        for i in 1..=NODES {
            for seq in 1..=SEQS {
                let body = signed(&heartbeat(&format!("n{i}"), seq, t), &node_key(i));
                streams[usize::from(i) % 4].push(body.clone());
                streams[(usize::from(i) + 1) % 4].push(body);
            }
        }
        let mut tasks = Vec::new();
        for stream in streams {
            let (reg, policy) = (reg.clone(), policy.clone());
            tasks.push(tokio::spawn(async move {
                let mut results = Vec::new();
                for chunk in stream.chunks(37) {
                    results.extend(reg.record_heartbeats(chunk, &policy, NOW).await.unwrap());
                }
                results
            }));
        }
        let mut accepted = std::collections::BTreeMap::<(String, i64), u32>::new();
        let mut refused = 0;
        for task in tasks {
            for r in task.await.unwrap() {
                match r {
                    Ok(rec) => *accepted.entry((rec.node_id, rec.seq)).or_default() += 1,
                    Err(HeartbeatError::Replayed { .. }) => refused += 1,
                    Err(e) => panic!("unexpected refusal: {e}"),
                }
            }
        }
        let total = usize::from(NODES) * usize::try_from(SEQS).unwrap();
        assert_eq!(accepted.len(), total, "every (node, seq) accepted");
        assert!(accepted.values().all(|n| *n == 1), "none accepted twice");
        assert_eq!(refused, total, "each replay refused");
        let ids: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
        let stored = reg.heartbeats_between(&ids, NOW, NOW).await.unwrap();
        assert_eq!(
            stored.len(),
            total,
            "every accepted heartbeat is stored, once"
        );
        for id in &ids {
            let p = reg.peer(id).await.unwrap();
            assert_eq!(p.last_seq, i64::try_from(SEQS).unwrap(), "{id}");
        }
        db.cleanup().await;
    }
}

/// The largest batch the endpoint's writer forms ([`fleetgate_fleet::ingest::MAX_BATCH`]
/// heartbeats, each from another node — a large fleet under load) is stored whole, in one
/// transaction, on both backends: no statement of the batch has a per-node clause that a
/// database limits (SQLite allows 500 terms in a compound `SELECT`).
#[tokio::test]
async fn the_largest_batch_from_as_many_nodes_is_stored_whole() {
    let n = fleetgate_fleet::ingest::MAX_BATCH;
    let policy = HeartbeatPolicy::default();
    let keys: Vec<SigningKey> = (0..n)
        .map(|i| {
            let mut seed = [3u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            SigningKey::from_seed(&seed)
        })
        .collect();
    for db in backends().await {
        let reg = db.registry().await;
        for (i, key) in keys.iter().enumerate() {
            reg.enroll(&cert_for(&format!("big{i}"), key, "eu"), &keyring(), NOW)
                .await
                .unwrap();
        }
        let bodies: Vec<Vec<u8>> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| signed(&heartbeat(&format!("big{i}"), 1, NOW as u64), key))
            .collect();
        let results = reg.record_heartbeats(&bodies, &policy, NOW).await;
        let results = results.unwrap_or_else(|e| panic!("[{}] a batch of {n}: {e}", db.name));
        assert_eq!(results.len(), n);
        for r in &results {
            assert!(r.is_ok(), "[{}] {r:?}", db.name);
        }
        let ids: Vec<String> = (0..n).map(|i| format!("big{i}")).collect();
        let stored = reg.heartbeats_between(&ids, NOW, NOW).await.unwrap();
        assert_eq!(stored.len(), n, "[{}] every heartbeat stored", db.name);
        for id in [&ids[0], &ids[n - 1]] {
            assert_eq!(
                reg.peer(id).await.unwrap().last_seq,
                1,
                "[{}] {id}",
                db.name
            );
        }
        db.cleanup().await;
    }
}

/// Bounded storage: five nodes heartbeat every 10 s for three simulated hours, old
/// heartbeats pruned every minute with a 10-minute retention (as the endpoint's writer
/// does). Each node's stored heartbeats stay at about retention / interval however long
/// the fleet runs; a node that went silent keeps its last ones.
#[tokio::test]
async fn pruning_keeps_storage_per_node_bounded_over_time() {
    const RETENTION: i64 = 600;
    const EVERY: i64 = 10;
    let policy = HeartbeatPolicy::default();
    for db in backends().await {
        let reg = db.registry().await;
        for i in 1..=5u8 {
            reg.enroll(
                &cert_for(&format!("n{i}"), &node_key(i), "eu"),
                &keyring(),
                NOW,
            )
            .await
            .unwrap();
        }
        let bound = RETENTION / EVERY + 60 / EVERY + 1;
        let mut at_one_hour = None;
        for tick in 0..(3 * 3600 / EVERY) {
            let now = NOW + tick * EVERY;
            let seq = u64::try_from(tick).unwrap() + 1;
            // n5 goes silent after the first hour.
            let nodes = if now - NOW < 3600 { 5u8 } else { 4 };
            let bodies: Vec<Vec<u8>> = (1..=nodes)
                .map(|i| {
                    let hb = heartbeat(&format!("n{i}"), seq, u64::try_from(now).unwrap());
                    signed(&hb, &node_key(i))
                })
                .collect();
            for r in reg.record_heartbeats(&bodies, &policy, now).await.unwrap() {
                r.unwrap();
            }
            if tick % (60 / EVERY) == 0 {
                reg.prune_heartbeats(now - RETENTION).await.unwrap();
                let counts = reg.heartbeat_counts().await.unwrap();
                assert!(
                    counts.values().all(|n| *n <= bound),
                    "at +{} s: {counts:?} (bound {bound})",
                    now - NOW
                );
                if now - NOW == 3600 {
                    at_one_hour = Some(counts);
                }
            }
        }
        let end = reg.heartbeat_counts().await.unwrap();
        let hour = at_one_hour.unwrap();
        // The active nodes hold as many rows after three hours as after one.
        for i in 1..=4 {
            let id = format!("n{i}");
            assert!(
                (end[&id] - hour[&id]).abs() <= 60 / EVERY,
                "{id}: {hour:?} → {end:?}"
            );
        }
        // The silent node keeps what it last sent (its latest heartbeat is still there).
        assert!(end["n5"] > 0, "{end:?}");
        let last = reg
            .latest_heartbeat("n5", NOW + 4 * 3600)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(last.seq, 360, "its last heartbeat, at +3590 s");
        db.cleanup().await;
    }
}

/// Issue 18: a registry whose heartbeats were stored before the table took its one-index
/// layout (PostgreSQL's migration 0010 dropped the `id` serial, the (node_id, epoch, seq)
/// unique index and the (node_id, at) index for the primary key (node_id, at, epoch,
/// seq); SQLite's 0007 did the same) keeps every one of them through the migration,
/// reads them in order, still refuses their replays and stores the next.
#[tokio::test]
async fn heartbeats_stored_in_the_old_layout_survive_the_migration() {
    let policy = HeartbeatPolicy::default();
    for db in backends().await {
        let before = if db.name == "postgres" { 9 } else { 6 };
        let mut old = vec![format!(
            "INSERT INTO peers (id, address, public_key, master_key_verified, status, \
             last_seq, region, enrolled_at) VALUES ('n1', 'http://127.0.0.1:1', '{}', \
             TRUE, 'active', 3, 'eu', {NOW})",
            node_key(1).public_key_hex()
        )];
        for seq in 1..=3i64 {
            old.push(format!(
                "INSERT INTO heartbeats (node_id, at, sent_at, seq, version, code_hash, \
                 healthy, exceptions_total, requests_total, bench) VALUES ('n1', {at}, \
                 {at}, {seq}, '1.2.3', 'hash-1', TRUE, {exc}, {req}, '{{}}')",
                at = NOW - 40 + seq * 10,
                exc = seq * 2,
                req = seq * 100,
            ));
        }
        db.at_migration(before, &old).await;
        let reg = db.registry().await;
        // One B-tree per stored heartbeat: the table's primary key and no other index.
        let indexes = if db.name == "postgres" {
            "SELECT count(*), count(*) FROM pg_indexes WHERE tablename = 'heartbeats' \
             AND schemaname = current_schema()"
        } else {
            "SELECT count(*), count(*) FROM sqlite_master WHERE type = 'index' \
             AND tbl_name = 'heartbeats'"
        };
        let expected = if db.name == "postgres" { 1 } else { 0 };
        assert_eq!(
            db.raw(indexes).await,
            Some((Some(expected), Some(expected))),
            "[{}] indexes on heartbeats",
            db.name
        );
        let ids = vec!["n1".to_owned()];
        let stored = reg.heartbeats_between(&ids, NOW - 60, NOW).await.unwrap();
        let seqs: Vec<(i64, i64, i64)> = stored
            .iter()
            .map(|h| (h.at, h.seq, h.requests_total))
            .collect();
        assert_eq!(
            seqs,
            vec![(NOW - 30, 1, 100), (NOW - 20, 2, 200), (NOW - 10, 3, 300)],
            "[{}] the old rows, in order",
            db.name
        );
        let t = u64::try_from(NOW).unwrap();
        let bodies = [
            signed(&heartbeat("n1", 3, t), &node_key(1)),
            signed(&heartbeat("n1", 4, t), &node_key(1)),
        ];
        let results = reg.record_heartbeats(&bodies, &policy, NOW).await.unwrap();
        assert!(
            matches!(results[0], Err(HeartbeatError::Replayed { .. })),
            "[{}] a replay of an old heartbeat: {:?}",
            db.name,
            results[0]
        );
        assert_eq!(
            results[1].as_ref().map(|r| r.seq).ok(),
            Some(4),
            "[{}]",
            db.name
        );
        let stored = reg.heartbeats_between(&ids, NOW - 60, NOW).await.unwrap();
        assert_eq!(stored.len(), 4, "[{}] {stored:?}", db.name);
        db.cleanup().await;
    }
}

/// Issue 18: on PostgreSQL the heartbeat writer and a feed or status write can deadlock
/// on the same peers (seen once in 5,000,000 heartbeats of the 100,000-node run: a batch
/// of 5 answered 500). The database aborts one of the two and writes nothing of it; the
/// writer runs such a batch again. A real deadlock between two transactions here must be
/// classified as that kind of error, and an ordinary error must not.
#[tokio::test]
async fn a_deadlock_is_a_transient_error_and_a_constraint_error_is_not() {
    use sqlx::Connection;
    let Some(base) = fleetgate_testkit::postgres_url("the deadlock is a PostgreSQL one") else {
        return;
    };
    let mut setup = sqlx::PgConnection::connect(&base).await.unwrap();
    let table = format!("deadlock_{}", std::process::id());
    for sql in [
        format!("CREATE TABLE {table} (id INT PRIMARY KEY, v INT NOT NULL)"),
        format!("INSERT INTO {table} VALUES (1, 0), (2, 0)"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut setup)
            .await
            .unwrap();
    }
    let (mut a, mut b) = (
        sqlx::PgConnection::connect(&base).await.unwrap(),
        sqlx::PgConnection::connect(&base).await.unwrap(),
    );
    let update = |id: i32| format!("UPDATE {table} SET v = v + 1 WHERE id = {id}");
    sqlx::query("BEGIN").execute(&mut a).await.unwrap();
    sqlx::query("BEGIN").execute(&mut b).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(update(1)))
        .execute(&mut a)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(update(2)))
        .execute(&mut b)
        .await
        .unwrap();
    // a waits for row 2 (held by b), b for row 1 (held by a), in whichever order the two
    // statements arrive: PostgreSQL aborts one. The victim's locks go only with its
    // ROLLBACK, so each side ends its transaction.
    let (ra, rb) = tokio::join!(
        async {
            let r = sqlx::query(sqlx::AssertSqlSafe(update(2)))
                .execute(&mut a)
                .await;
            sqlx::query("ROLLBACK").execute(&mut a).await.unwrap();
            r
        },
        async {
            let r = sqlx::query(sqlx::AssertSqlSafe(update(1)))
                .execute(&mut b)
                .await;
            sqlx::query("ROLLBACK").execute(&mut b).await.unwrap();
            r
        }
    );
    let victim = match (ra, rb) {
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => e,
        other => panic!("expected exactly one transaction aborted: {other:?}"),
    };
    let e = FleetError::Db {
        what: "test",
        source: victim,
    };
    assert!(e.is_transient(), "{e:?}");
    let dup = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} VALUES (1, 0)"
    )))
    .execute(&mut setup)
    .await
    .unwrap_err();
    let e = FleetError::Db {
        what: "test",
        source: dup,
    };
    assert!(!e.is_transient(), "a duplicate key is not transient: {e:?}");
    drop((a, b));
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&mut setup)
        .await
        .unwrap();
}
