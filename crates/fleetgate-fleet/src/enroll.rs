//! Enrollment certificates: a node's identity key, id, region and address, signed by
//! the trust keys (through `fleetgate-trust`'s signed-document primitive).
//!
//! Wire form: a JSON object
//! `{"type": "fleetgate-enrollment", "node_id", "public_key" (hex), "region", "address",
//! "issued_at" (unix seconds), "master_signature", ["signatures"]}`. The `type` field
//! keeps a signed manifest (or any other signed document) from passing as a certificate.

use fleetgate_trust::{Keyring, PublicKey, SigningKey, sign_document, verify_document};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::EnrollError;
use crate::registry::{Peer, Registry};

/// Value of the certificate's `type` field.
pub const CERT_TYPE: &str = "fleetgate-enrollment";
/// Longest node id, region or address accepted.
pub const MAX_FIELD_LEN: usize = 256;

/// The content of an enrollment certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertFields {
    /// Node id (letters, digits, `-`, `_`, `.`; at most 128 characters).
    pub node_id: String,
    /// The node's Ed25519 public key, 64 hex characters.
    pub public_key: String,
    /// Region label.
    pub region: String,
    /// Base URL of the node agent.
    pub address: String,
    /// Issue time (unix seconds).
    pub issued_at: u64,
}

pub use fleetgate_node_api::validate_node_id;

impl CertFields {
    fn validate(&self) -> Result<PublicKey, EnrollError> {
        let field = |field: &'static str, reason: String| EnrollError::Field { field, reason };
        validate_node_id(&self.node_id).map_err(|r| field("node_id", r))?;
        let pk = PublicKey::from_hex(&self.public_key)
            .map_err(|e| field("public_key", format!("{:?}: {e}", self.public_key)))?;
        for (name, v) in [("region", &self.region), ("address", &self.address)] {
            if v.is_empty() || v.len() > MAX_FIELD_LEN || v.chars().any(char::is_control) {
                return Err(field(
                    name,
                    format!("{v:?} must be 1 to {MAX_FIELD_LEN} printable characters"),
                ));
            }
        }
        Ok(pk)
    }
}

/// Issues (signs) an enrollment certificate with the trust keys; returns the bytes to
/// hand to the node (or to [`Registry::enroll`]).
pub fn issue_cert(fields: &CertFields, keys: &[&SigningKey]) -> Result<Vec<u8>, EnrollError> {
    let pk = fields.validate()?;
    let value = json!({
        "type": CERT_TYPE,
        "node_id": fields.node_id,
        "public_key": pk.to_hex(),
        "region": fields.region,
        "address": fields.address,
        "issued_at": fields.issued_at,
    });
    Ok(sign_document(&value, keys)?)
}

/// Verifies a certificate against the trust keyring at `now`; returns its fields.
pub fn verify_cert(bytes: &[u8], keyring: &Keyring, now: u64) -> Result<CertFields, EnrollError> {
    let doc = verify_document(bytes, keyring, now)?;
    let payload = doc.payload();
    let s = |name: &'static str| -> Result<String, EnrollError> {
        payload
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| EnrollError::Field {
                field: name,
                reason: "missing or not a string".into(),
            })
    };
    let kind = s("type")?;
    if kind != CERT_TYPE {
        return Err(EnrollError::Field {
            field: "type",
            reason: format!(
                "{kind:?} is not {CERT_TYPE:?}: this document is not an enrollment certificate"
            ),
        });
    }
    let issued_at = payload
        .get("issued_at")
        .and_then(Value::as_u64)
        .ok_or_else(|| EnrollError::Field {
            field: "issued_at",
            reason: "missing or not a non-negative integer".into(),
        })?;
    let known = [
        "type",
        "node_id",
        "public_key",
        "region",
        "address",
        "issued_at",
    ];
    if let Some(extra) = payload.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(EnrollError::Field {
            field: "(unknown)",
            reason: format!("unexpected field {extra:?}"),
        });
    }
    let mut fields = CertFields {
        node_id: s("node_id")?,
        public_key: s("public_key")?,
        region: s("region")?,
        address: s("address")?,
        issued_at,
    };
    fields.public_key = fields.validate()?.to_hex();
    if issued_at > now.saturating_add(300) {
        return Err(EnrollError::Field {
            field: "issued_at",
            reason: format!("{issued_at} is in the future (now {now})"),
        });
    }
    Ok(fields)
}

impl Registry {
    /// Enrolls (or re-enrolls) the node a valid certificate describes: it becomes
    /// `master_key_verified` and `active`, with the certificate's key, region and address.
    pub async fn enroll(
        &self,
        cert: &[u8],
        keyring: &Keyring,
        now: i64,
    ) -> Result<Peer, EnrollError> {
        let now_u = u64::try_from(now).unwrap_or(0);
        let fields = verify_cert(cert, keyring, now_u)?;
        let cert_text = String::from_utf8_lossy(cert).into_owned();
        self.upsert_peer(
            &fields.node_id,
            &fields.address,
            &fields.public_key,
            &fields.region,
            true,
            Some(&cert_text),
            now,
        )
        .await?;
        Ok(self.peer(&fields.node_id).await?)
    }
}
