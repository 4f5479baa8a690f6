//! `[artifacts] base_url`: the release's built artifacts must be where the nodes fetch
//! them before any node is sent the release. [`artifacts_missing`] asks the server for
//! each one (`HEAD {base_url}/{sha256}`) and holds the gate (pending, naming what is
//! missing, nothing sent) until every one answers 200 at its signed size. Only the size is
//! checked here: the nodes check the SHA-256 of what they download, and refuse a file
//! that does not match.

use super::link::FleetLink;
use crate::RuntimeError;
use crate::gates::GateContext;
use fleetgate_core::Verdict;
use fleetgate_trust::Artifact;
use std::time::Duration;

/// How long one `HEAD` may take.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The gate's hold while artifacts of `manifest` are not served at `[artifacts]
/// base_url`; `None` when none is configured, the release ships none, or all are there.
///
/// # Errors
/// [`RuntimeError::Fleet`] when the signed manifest or its artifact list does not parse.
pub(crate) fn artifacts_missing(
    ctx: &GateContext,
    link: &FleetLink,
    manifest: &[u8],
) -> Result<Option<Verdict>, RuntimeError> {
    let Some(base) = ctx.cfg.artifacts.base() else {
        return Ok(None);
    };
    // Fail closed: a manifest that does not parse holds nothing back silently; it is an
    // error (the gate fails and says so) rather than "no artifacts to check".
    let doc = serde_json::from_slice::<serde_json::Value>(manifest)
        .map_err(|e| super::link::fleet_op("failed to read the signed manifest", e))?;
    let listed: Vec<Artifact> = doc
        .get("artifacts")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| super::link::fleet_op("failed to read the signed manifest's artifacts", e))?
        .unwrap_or_default();
    if listed.is_empty() {
        return Ok(None);
    }
    let http = link.http().clone();
    let total = listed.len();
    let (missing, confirmed) = link.block_on(async move {
        let mut missing: Vec<(String, String)> = Vec::new();
        let mut confirmed = 0usize;
        for (i, a) in listed.iter().enumerate() {
            let url = format!("{base}/{}", a.sha256);
            let answer = http.head(&url).timeout(HEAD_TIMEOUT).send().await;
            let unreachable = answer.is_err();
            let why = match answer {
                Err(e) => Some(format!(
                    "not reachable: {}",
                    fleetgate_core::error_chain(&e)
                )),
                Ok(r) if !r.status().is_success() => Some(format!("HTTP {}", r.status())),
                // The header itself: a HEAD response has no body, so the body's length
                // is 0 whatever the server says.
                Ok(r) => match r
                    .headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                {
                    Some(n) if n == a.size => None,
                    Some(n) => Some(format!("{n} bytes, signed size {}", a.size)),
                    None => Some("no Content-Length (its size cannot be checked)".to_owned()),
                },
            };
            match why {
                None => confirmed += 1,
                Some(why) => missing.push((
                    format!(
                        "{} ({}…, {} bytes) at {url}",
                        a.name,
                        a.sha256.get(..12).unwrap_or(&a.sha256),
                        a.size
                    ),
                    why,
                )),
            }
            // A server that does not answer is not asked for the others (each would wait
            // out its timeout): the pass reports it and the next one asks again.
            if unreachable {
                let left = listed.len() - (i + 1);
                if left > 0 {
                    missing.push((
                        format!("{left} more artifact(s)"),
                        "not asked: the server did not answer".to_owned(),
                    ));
                }
                break;
            }
        }
        (missing, confirmed)
    });
    if confirmed == total {
        return Ok(None);
    }
    let detail = format!(
        "waiting for {} of {total} artifact(s) to be published at [artifacts] base_url {base} (copy them with `fleetgate artifacts export DIR` and upload DIR there; nothing is sent until every one is served): {}",
        total - confirmed,
        missing
            .iter()
            .map(|(what, why)| format!("{what}: {why}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(Some(Verdict::pending(
        detail,
        serde_json::json!({
            "artifacts_base_url": base,
            "artifacts_missing": missing.iter().map(|(what, why)| serde_json::json!({"artifact": what, "why": why})).collect::<Vec<_>>(),
        }),
    )))
}
