//! # fleetgate-node-api — the node↔orchestrator contract
//!
//! **Where it sits.** Between the node agent (`fleetgate-agent`) and the fleet registry
//! (`fleetgate-fleet`): both depend on this crate, and on nothing of each other, so the
//! wire format is written once and a node binary links neither sqlx nor the gates. The
//! other halves of the contract live in their own small crates, shared the same way:
//! the signed manifest and the anti-rollback floor in `fleetgate-trust`, the code hash in
//! `fleetgate-codehash`.
//!
//! **What it owns.**
//! - [`Heartbeat`] and [`SignedHeartbeat`]: the body of `POST` [`HEARTBEAT_PATH`] — the
//!   heartbeat as compact JSON with sorted keys (the struct's fields are declared in
//!   alphabetical order), Ed25519-signed by the node identity key over exactly those
//!   bytes.
//! - [`validate_node_id`]: the node-id rule (1–128 characters of `[A-Za-z0-9._-]`) the
//!   agent checks in `node.toml` and the registry checks at enrollment and on every
//!   heartbeat.
//!
//! **Invariants.** Pure: no I/O, no clock, no async. A field added to [`Heartbeat`] must
//! be `#[serde(default)]` (older agents omit it) and keep the alphabetical order (the
//! payload's keys are sorted because the fields are).
//!
//! **How to test.** `cargo nextest run -p fleetgate-node-api`; the agent's
//! `tests/network.rs` sends these heartbeats to a real registry.

use fleetgate_trust::SigningKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The registry's heartbeat route, relative to the orchestrator's base URL.
pub const HEARTBEAT_PATH: &str = "/api/fleet/heartbeat";

/// What a node reports. Fields in alphabetical order: the JSON has sorted keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Benchmark figures by name (from the app's health body).
    #[serde(default)]
    pub bench: BTreeMap<String, f64>,
    /// Code hash of what the node runs ("" when nothing is installed).
    pub code_hash: String,
    /// Epoch of `seq` (0 when absent: heartbeats of older agents): bumped at each agent
    /// start and on a refusal as a replay; a higher epoch resets the `seq` window.
    #[serde(default)]
    pub epoch: u64,
    /// Cumulative exceptions the app reported since it started.
    pub exceptions_total: u64,
    /// The node's anti-rollback floor: the highest manifest sequence it committed (0 when
    /// absent). Shows the orchestrator that a pull-mode node obeyed a rollback order it
    /// fetched from its feed, which no push answer reports. Left out of the JSON when 0,
    /// so a node that never committed a manifest sends what older registries accept;
    /// upgrade the fleet endpoint before the agents.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub floor: u64,
    /// The app's own health check passed.
    pub healthy: bool,
    /// Node id ([`validate_node_id`]).
    pub node_id: String,
    /// Cumulative requests the app reported since it started.
    pub requests_total: u64,
    /// Send time (unix seconds, node clock).
    pub sent_at: u64,
    /// Strictly increasing per node within an epoch, from 1.
    pub seq: u64,
    /// Version the node runs ("" when nothing is installed).
    pub version: String,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if signature"
)]
fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A heartbeat with its signature, as sent over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHeartbeat {
    /// The heartbeat JSON, exactly the signed bytes.
    pub payload: String,
    /// Ed25519 signature over `payload`, hex.
    pub signature: String,
}

impl SignedHeartbeat {
    /// Serialises `heartbeat` (compact, sorted keys) and signs it with the node key.
    #[must_use]
    pub fn sign(heartbeat: &Heartbeat, key: &SigningKey) -> Self {
        // A struct of strings, integers, a bool and a map of floats: serde_json only
        // fails on non-finite floats, which it writes as null.
        let payload = serde_json::to_string(heartbeat).unwrap_or_default();
        let signature = hex::encode(key.sign(payload.as_bytes()));
        Self { payload, signature }
    }

    /// The HTTP body.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A node id: 1–128 characters from `[A-Za-z0-9._-]`.
///
/// # Errors
/// A message naming the id and the rule it breaks.
pub fn validate_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err(format!("{id:?} must be 1 to 128 characters long"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{id:?} may only contain letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb() -> Heartbeat {
        Heartbeat {
            bench: BTreeMap::from([("p99_ms".to_owned(), 12.5)]),
            code_hash: "ab".into(),
            epoch: 3,
            exceptions_total: 1,
            floor: 0,
            healthy: true,
            node_id: "web-1".into(),
            requests_total: 10,
            sent_at: 1_700_000_000,
            seq: 7,
            version: "v1.2.3".into(),
        }
    }

    #[test]
    fn the_payload_is_compact_json_with_sorted_keys_and_the_signature_covers_it() {
        let key = SigningKey::from_seed(&[7; 32]);
        let s = SignedHeartbeat::sign(&hb(), &key);
        // The exact bytes: agents and registries of different builds must agree.
        assert_eq!(
            s.payload,
            r#"{"bench":{"p99_ms":12.5},"code_hash":"ab","epoch":3,"exceptions_total":1,"healthy":true,"node_id":"web-1","requests_total":10,"sent_at":1700000000,"seq":7,"version":"v1.2.3"}"#
        );
        let sig: [u8; 64] = hex::decode(&s.signature).unwrap().try_into().unwrap();
        assert!(
            key.public_key()
                .verify_strict(s.payload.as_bytes(), &sig)
                .is_ok()
        );
        // Round trip; an unknown field is refused; a missing epoch is 0.
        let back: Heartbeat = serde_json::from_str(&s.payload).unwrap();
        assert_eq!(back, hb());
        let extra = s.payload.replacen('{', "{\"surprise\":1,", 1);
        assert!(serde_json::from_str::<Heartbeat>(&extra).is_err());
        let old = s.payload.replace("\"epoch\":3,", "");
        assert_eq!(serde_json::from_str::<Heartbeat>(&old).unwrap().epoch, 0);
        // A floor is signed in its sorted place.
        let with_floor = Heartbeat { floor: 5, ..hb() };
        let s = SignedHeartbeat::sign(&with_floor, &key);
        assert!(
            s.payload
                .contains(r#""exceptions_total":1,"floor":5,"healthy":true"#),
            "{}",
            s.payload
        );
        assert_eq!(
            serde_json::from_str::<Heartbeat>(&s.payload).unwrap(),
            with_floor
        );
    }

    #[test]
    fn node_ids_follow_one_rule() {
        for ok in ["n1", "web-eu-1", "a.b_c", &"x".repeat(128)] {
            assert!(validate_node_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "n 1", "n/1", "é", &"x".repeat(129)] {
            let e = validate_node_id(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
