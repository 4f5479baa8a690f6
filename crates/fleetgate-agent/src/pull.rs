//! Pull mode (`mode = "pull"`): the agent polls its feed — the latest signed manifest
//! the orchestrator addressed to this node, `GET {orchestrator}/api/fleet/feed/{node_id}`
//! by default — with `If-None-Match`, and hands what it gets to [`Agent::apply`], the
//! same path as a pushed manifest: keyring, floor, expiry and revocations are checked
//! there, so the feed is trusted for nothing and no valid signed manifest means no
//! update. Only outbound HTTP(S) is needed (a node behind NAT); heartbeats carry the
//! outcome back (the code hash it runs and its floor).
//!
//! A manifest whose outcome is final (applied, already there, rolled back, refused, or
//! refused by verification) is not tried again until the feed changes; one that failed
//! for a reason that may pass (the node was busy, a download or a disk failed) is tried
//! at the next poll.
//!
//! Push mode catches up from the same feed ([`catch_up`]): a node with an `orchestrator`
//! reads its feed once when it starts, before its `/apply` endpoint serves anything, and
//! again when its heartbeats get through after failing. The orchestrator writes every
//! order it sends into the feed, delivered or not, so a node that was down or cut off
//! while a rollback order went out obeys it (its floor rises past the revoked release)
//! before anyone can hand it that release's still-valid signed manifest.

use crate::agent::{Agent, ApplyError};
use crate::machine::Outcome;
use serde::Serialize;
use std::time::Duration;

/// Feed polling figures (shown in `GET /status` as `pull`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PullStats {
    /// Polls made.
    pub polls: u64,
    /// Polls that failed (unreachable, an error status, too large).
    pub failed: u64,
    /// Manifests fetched and handed to the apply path.
    pub fetched: u64,
    /// Of those, refused by verification (signature, keyring, expiry, floor).
    pub refused: u64,
    /// When the last poll ended (unix seconds).
    pub last_poll_at: Option<u64>,
    /// The last fetched manifest's outcome (`applied`, `refused: …`, …).
    pub last_outcome: Option<String>,
    /// The last poll's error.
    pub last_error: Option<String>,
}

/// The feed a pull-mode node polls: `feed_url`, else `{orchestrator}/api/fleet/feed/{node_id}`.
#[must_use]
pub fn feed_url(cfg: &crate::NodeConfig) -> Option<String> {
    cfg.feed_url.clone().or_else(|| {
        cfg.orchestrator
            .as_ref()
            .map(|o| format!("{}/api/fleet/feed/{}", o.trim_end_matches('/'), cfg.node_id))
    })
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// The feed is unchanged since the last final outcome (304).
    Unchanged,
    /// Nothing was addressed to this node yet (404).
    Empty,
    /// A manifest was fetched and handed to the apply path; `final` says whether it is
    /// settled (not tried again until the feed changes).
    Applied {
        /// The apply's outcome, or the refusal.
        outcome: String,
        /// Settled.
        settled: bool,
    },
}

/// Polls once: fetches the feed (conditional on `etag`), applies what changed, and
/// updates `etag` when the outcome is final.
///
/// # Errors
/// A message when the feed could not be read (unreachable, an error status, too large).
pub async fn poll_once(
    agent: &Agent,
    url: &str,
    etag: &mut Option<String>,
) -> Result<Poll, String> {
    poll_once_within(agent, url, etag, Duration::from_secs(30))
        .await
        .map(|(poll, _)| poll)
}

/// How long a catch-up may wait for the feed (a node starting up waits this long at most
/// before serving when its orchestrator does not answer).
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Push mode's catch-up read of the feed (see the module docs): one [`poll_once`], the
/// request bounded by [`CATCH_UP_TIMEOUT`] (an apply it starts runs to its end), recorded
/// in the node's pull figures. A feed that cannot be read is logged, not an error: the
/// node serves anyway, and tries again when its heartbeats next recover.
pub async fn catch_up(agent: &Agent, url: &str, etag: &mut Option<String>, when: &str) {
    let polled = poll_once_within(agent, url, etag, CATCH_UP_TIMEOUT).await;
    // What was taken from the feed is what gossip would have delivered: handed to the
    // running gossip node (which spreads it and keeps it as the held manifest), or, before
    // gossip starts, kept as the manifest it holds, so that it serves it to its peers
    // (and does not wait for one it can no longer accept at its floor).
    let polled = match polled {
        Ok((poll, Some(manifest))) => {
            if agent.config().gossip_listen.is_some() && !agent.offer_to_gossip(&manifest) {
                let held = agent.config().state_dir.join(crate::gossip::HELD_FILE);
                if let Err(e) = crate::write_atomic(&held, &manifest, 0o644) {
                    tracing::warn!(error = %e, "failed to keep the manifest taken from the feed for gossip");
                }
            }
            Ok(poll)
        }
        other => other.map(|(poll, _)| poll),
    };
    record(agent, &polled);
    match polled {
        Ok(Poll::Applied { outcome, .. }) => {
            tracing::info!(url, when, outcome, "caught up with the feed");
        }
        Ok(Poll::Unchanged | Poll::Empty) => {
            tracing::debug!(url, when, "feed read: nothing new");
        }
        Err(e) => tracing::warn!(
            error = %e,
            when,
            "could not read the feed to catch up with orders sent while this node was unreachable; tried again when heartbeats next recover"
        ),
    }
}

fn record(agent: &Agent, polled: &Result<Poll, String>) {
    agent.record_poll(|s| {
        s.polls += 1;
        s.last_poll_at = Some(fleetgate_trust::unix_now());
        match polled {
            Ok(Poll::Applied { outcome, .. }) => {
                s.fetched += 1;
                s.refused += u64::from(outcome.starts_with("refused"));
                s.last_outcome = Some(outcome.clone());
                s.last_error = None;
            }
            Ok(Poll::Unchanged | Poll::Empty) => s.last_error = None,
            Err(e) => {
                s.failed += 1;
                s.last_error = Some(e.clone());
            }
        }
    });
}

/// [`poll_once`] with the request bounded by `timeout`; with the poll, the manifest when
/// the apply path took it (applied, already there, or nothing to switch).
async fn poll_once_within(
    agent: &Agent,
    url: &str,
    etag: &mut Option<String>,
    timeout: Duration,
) -> Result<(Poll, Option<Vec<u8>>), String> {
    let mut req = agent.http_client().get(url).timeout(timeout);
    if let Some(tag) = etag.as_deref() {
        req = req.header(reqwest::header::IF_NONE_MATCH, tag);
    }
    let mut resp = req.send().await.map_err(|e| crate::error_chain(&e))?;
    match resp.status() {
        reqwest::StatusCode::NOT_MODIFIED => return Ok((Poll::Unchanged, None)),
        reqwest::StatusCode::NOT_FOUND => return Ok((Poll::Empty, None)),
        s if !s.is_success() => return Err(format!("GET {url}: HTTP {s}")),
        _ => {}
    }
    let tag = resp
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let limit = fleetgate_trust::MAX_MANIFEST_BYTES;
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?
    {
        if body.len() + chunk.len() > limit {
            return Err(format!(
                "GET {url}: the feed's manifest is larger than {limit} bytes; refused"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let mut taken = false;
    let (outcome, settled) = match agent.apply(&body).await {
        Ok(report) => {
            let settled = !matches!(report.outcome, Outcome::Failed | Outcome::Interrupted);
            taken = report.success;
            tracing::info!(
                sequence = report.sequence,
                version = %report.version,
                outcome = report.outcome.as_str(),
                detail = %report.detail,
                "pulled manifest applied"
            );
            (report.outcome.as_str().to_owned(), settled)
        }
        Err(
            e @ (ApplyError::Verify(_)
            | ApplyError::BadRollback { .. }
            | ApplyError::SelfUpdate {
                retryable: false, ..
            }),
        ) => {
            tracing::warn!(error = %e, url, "pulled manifest refused");
            (format!("refused: {e}"), true)
        }
        Err(
            e @ (ApplyError::Busy { .. }
            | ApplyError::Agent(_)
            | ApplyError::SelfUpdate {
                retryable: true, ..
            }),
        ) => {
            tracing::warn!(error = %e, url, "pulled manifest not applied; tried again at the next poll");
            (format!("not applied: {e}"), false)
        }
    };
    if settled {
        *etag = tag;
    }
    Ok((Poll::Applied { outcome, settled }, taken.then_some(body)))
}

/// `base` scaled by a factor in [0.8, 1.2), different on every call.
fn jittered(base: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    base.mul_f64(0.8 + 0.4 * unit)
}

/// Polls the feed every `poll_interval_secs` (jittered) until `shutdown` turns true.
pub async fn run(agent: Agent, url: String, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let interval = Duration::from_secs(agent.config().poll_interval_secs);
    let mut etag = None;
    tracing::info!(url = %url, every = ?interval, "pull mode: polling the release feed");
    loop {
        let polled = poll_once(&agent, &url, &mut etag).await;
        record(&agent, &polled);
        match polled {
            Ok(Poll::Applied { outcome, settled }) => {
                tracing::debug!(outcome, settled, "feed polled");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "feed poll failed; tried again at the next poll"),
        }
        tokio::select! {
            () = tokio::time::sleep(jittered(interval)) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::jittered;
    use std::time::Duration;

    #[test]
    fn jitter_stays_within_twenty_percent_and_varies() {
        let base = Duration::from_secs(30);
        let got: Vec<Duration> = (0..200).map(|_| jittered(base)).collect();
        assert!(
            got.iter()
                .all(|d| *d >= Duration::from_secs(24) && *d < Duration::from_secs(36))
        );
        let distinct: std::collections::BTreeSet<Duration> = got.iter().copied().collect();
        assert!(distinct.len() > 150, "{} distinct pauses", distinct.len());
    }
}
