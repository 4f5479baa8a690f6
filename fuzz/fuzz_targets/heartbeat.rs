//! Heartbeats as `fleet serve` and `serve` take them (`POST /api/fleet/heartbeat`):
//! `parse_heartbeat`, then `Registry::record_heartbeat` against a SQLite registry with
//! one enrolled node — the whole check (signature, age, epoch and sequence) and the
//! conditional insert.
//!
//! The body is tried as sent, then with its payload signed by the enrolled node's key, so
//! the fuzzer gets past the signature to the age, epoch and replay checks. Checks: a
//! record is only ever stored for the enrolled node, with the numbers it signed.
#![no_main]

use std::sync::LazyLock;

use fleetgate_fleet::{
    CertFields, HeartbeatPolicy, Registry, SignedHeartbeat, issue_cert, parse_heartbeat,
};
use fleetgate_fuzz::{NODE_ID, NOW, keyring, node_key, trust_key};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    rt: tokio::runtime::Runtime,
    registry: Registry,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = fleetgate_fuzz::scratch_dir("heartbeat");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let url = format!("sqlite://{}", dir.join("fleet.db").display());
    let registry = rt.block_on(async {
        let reg = Registry::connect(&url).await.expect("open the registry");
        let cert = issue_cert(
            &CertFields {
                node_id: NODE_ID.into(),
                public_key: node_key().public_key_hex(),
                region: "eu".into(),
                address: "http://127.0.0.1:1".into(),
                issued_at: NOW - 60,
            },
            &[&trust_key()],
        )
        .expect("issue the certificate");
        let now = i64::try_from(NOW).expect("NOW fits");
        reg.enroll(&cert, &keyring(), now).await.expect("enroll");
        reg
    });
    Fixture { rt, registry }
});

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let policy = HeartbeatPolicy::default();
    let now = i64::try_from(NOW).expect("NOW fits");
    let _ =
        f.rt.block_on(f.registry.record_heartbeat(data, &policy, now));

    let Ok((env, hb)) = parse_heartbeat(data, &policy) else {
        return;
    };
    let signed = SignedHeartbeat {
        signature: hex::encode(node_key().sign(env.payload.as_bytes())),
        payload: env.payload,
    };
    if let Ok(rec) =
        f.rt.block_on(f.registry.record_heartbeat(&signed.to_json(), &policy, now))
    {
        assert_eq!(rec.node_id, NODE_ID, "stored for another node");
        assert_eq!(rec.node_id, hb.node_id);
        assert_eq!(
            u64::try_from(rec.seq).ok(),
            Some(hb.seq),
            "stored another seq"
        );
        assert_eq!(
            u64::try_from(rec.epoch).ok(),
            Some(hb.epoch),
            "stored another epoch"
        );
    }
});
