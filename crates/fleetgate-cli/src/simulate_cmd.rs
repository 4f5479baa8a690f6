//! `fleetgate fleet simulate`: virtual nodes heartbeating to a fleet endpoint, to size a
//! fleet and to measure the endpoint. It enrolls `--nodes` virtual nodes in the registry
//! of the config (certificates signed with the release key, each node's identity key
//! derived from its id, so a second run reuses the enrollment), then sends each node's
//! signed heartbeat every `--interval` seconds — faster when the endpoint cannot keep up
//! it simply falls behind — from `--concurrency` connections for `--duration` seconds,
//! and prints what was sent, accepted and refused, the accepted rate and the latency
//! percentiles.
//!
//! With `--pull-every N` the virtual nodes also behave like pull-mode agents towards the
//! orchestrator: every N heartbeats each polls its feed (`GET /api/fleet/feed/{id}` with
//! `If-None-Match`), verifies a new manifest against the config's trust file exactly as
//! an agent does (signature, keyring, expiry, and its own anti-rollback floor), "applies"
//! it — a release's version and code hash, or a rollback order's `return_to_*` — and
//! reports it in its next heartbeats, floor included. Each distinct manifest is verified
//! once (by its SHA-256) for all nodes; the floor is checked per node. The summary then
//! says, per code hash, how many nodes took it and when the first, 50%, 99.9% and last of
//! them did. Without it the nodes only heartbeat the code hash given with `--code-hash`.

use anyhow::Context;
use fleetgate_fleet::{CertFields, Heartbeat, Registry, SignedHeartbeat};
use fleetgate_runtime::Orchestrator;
use fleetgate_runtime::gates::resolve;
use fleetgate_trust::SigningKey;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `fleetgate fleet simulate` options.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Virtual nodes.
    #[arg(long, default_value_t = 1000)]
    pub nodes: u32,
    /// The fleet endpoint's base URL (`fleetgate fleet serve` or `serve`), e.g.
    /// http://127.0.0.1:7300.
    #[arg(long)]
    pub endpoint: String,
    /// Seconds between two heartbeats of one node (the offered load is nodes / interval
    /// per second).
    #[arg(long, default_value_t = 10.0)]
    pub interval: f64,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Requests in flight at once (HTTP connections).
    #[arg(long, default_value_t = 64)]
    pub concurrency: u32,
    /// Percentage of nodes that misbehave: a 10% exception rate and a failing health
    /// check in their heartbeats.
    #[arg(long, default_value_t = 0.0)]
    pub bad_pct: f64,
    /// Node id prefix (ids are PREFIX00001…).
    #[arg(long, default_value = "sim-")]
    pub prefix: String,
    /// Region label of the virtual nodes.
    #[arg(long, default_value = "sim")]
    pub region: String,
    /// The version and code hash the nodes report.
    #[arg(long, default_value = "v1.0.0")]
    pub version: String,
    /// The code hash the nodes report.
    #[arg(long, default_value = "simulated")]
    pub code_hash: String,
    /// Behave like pull-mode agents: poll the feed every N heartbeats and apply what
    /// verifies (0 = never; the nodes then report `--version` / `--code-hash` throughout).
    #[arg(long, default_value_t = 0)]
    pub pull_every: u32,
    /// Machine-readable summary.
    #[arg(long)]
    pub json: bool,
}

/// What one run measured.
#[derive(Debug, Default, serde::Serialize)]
struct Summary {
    nodes: u32,
    offered_per_sec: f64,
    duration_secs: f64,
    sent: u64,
    accepted: u64,
    refused: BTreeMap<String, u64>,
    errors: u64,
    accepted_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    enrolled_new: u32,
    /// Feed polls (with `--pull-every`): made, failed, answered with a manifest.
    feed_polls: u64,
    feed_errors: u64,
    feed_fetched: u64,
    /// Manifests refused (verification or the node's floor), by reason.
    feed_refused: BTreeMap<String, u64>,
    /// Per code hash the nodes took from their feeds: how many and when.
    applied: BTreeMap<String, Applied>,
}

/// When the nodes took one code hash from their feeds (unix seconds, fractional).
#[derive(Debug, Default, serde::Serialize)]
struct Applied {
    version: String,
    nodes: u64,
    first_at: f64,
    p50_at: f64,
    p999_at: f64,
    last_at: f64,
}

fn node_key(id: &str) -> SigningKey {
    let seed: [u8; 32] = Sha256::digest(format!("fleetgate-simulated-node:{id}")).into();
    SigningKey::from_seed(&seed)
}

/// `fleetgate fleet simulate`.
pub fn run(o: &Orchestrator, args: SimulateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.nodes > 0, "--nodes must be at least 1");
    anyhow::ensure!(
        args.interval.is_finite() && args.interval > 0.0,
        "--interval must be a positive number of seconds"
    );
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(
        (0.0..=100.0).contains(&args.bad_pct),
        "--bad-pct must be a percentage from 0 to 100"
    );
    let base = args.endpoint.trim_end_matches('/').to_owned();
    anyhow::ensure!(
        base.starts_with("http://") || base.starts_with("https://"),
        "--endpoint {:?} must be an http:// or https:// URL",
        args.endpoint
    );
    // Parsed once, before any node is enrolled: a load generator that parses its URL per
    // request spends its share of the machine's cores on that instead of on the endpoint
    // it measures, and a bad URL is named before anything is written.
    let url = reqwest::Url::parse(&format!("{base}/api/fleet/heartbeat"))
        .with_context(|| format!("--endpoint {base}: not a URL"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ids: Vec<String> = (1..=args.nodes)
        .map(|i| format!("{}{i:05}", args.prefix))
        .collect();
    let enrolled_new = rt.block_on(enroll(o, &args, &ids))?;
    if !args.json {
        eprintln!(
            "simulate: {} virtual nodes ({} newly enrolled), {:.0} heartbeats/s offered for {} s through {} connections",
            args.nodes,
            enrolled_new,
            f64::from(args.nodes) / args.interval,
            args.duration,
            args.concurrency
        );
    }
    let keyring = if args.pull_every > 0 {
        let trust = o.config().signing.trust_file.as_deref().context(
            "set `[signing] trust_file`: --pull-every verifies the feed's manifests against it",
        )?;
        Some(Arc::new(fleetgate_trust::Keyring::load(&resolve(
            &o.context().base,
            trust,
        ))?))
    } else {
        None
    };
    let mut summary = rt.block_on(send(&args, &base, url, &ids, keyring))?;
    summary.enrolled_new = enrolled_new;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "sent {}, accepted {} ({:.0}/s), refused {:?}, transport errors {}; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            summary.sent,
            summary.accepted,
            summary.accepted_per_sec,
            summary.refused,
            summary.errors,
            summary.p50_ms,
            summary.p99_ms,
            summary.max_ms
        );
        if args.pull_every > 0 {
            println!(
                "feed: {} polls, {} errors, {} manifests fetched, refused {:?}",
                summary.feed_polls, summary.feed_errors, summary.feed_fetched, summary.feed_refused
            );
            for (hash, a) in &summary.applied {
                println!(
                    "applied {} ({hash}) on {} nodes: first at {:.1}, 50% at {:.1}, 99.9% at {:.1}, last at {:.1} (unix s)",
                    a.version, a.nodes, a.first_at, a.p50_at, a.p999_at, a.last_at
                );
            }
        }
    }
    Ok(if summary.accepted > 0 && summary.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Enroll the nodes the registry does not know yet; returns how many.
async fn enroll(o: &Orchestrator, args: &SimulateArgs, ids: &[String]) -> anyhow::Result<u32> {
    let url = fleetgate_runtime::fleet::database_url(o.context());
    let reg = Registry::connect(&url).await.with_context(|| {
        format!(
            "failed to open the fleet registry {}",
            fleetgate_fleet::redact_url(&url)
        )
    })?;
    let known: std::collections::BTreeSet<String> =
        reg.list_peers().await?.into_iter().map(|p| p.id).collect();
    let cfg = o.config();
    let key_file = cfg
        .signing
        .key_file
        .as_deref()
        .map(|k| resolve(&o.context().base, k));
    let key = SigningKey::load(key_file.as_deref())
        .context("enrollment certificates are signed with the release key")?;
    let trust = cfg
        .signing
        .trust_file
        .as_deref()
        .context("set `[signing] trust_file`: certificates are verified against it")?;
    let keyring = fleetgate_trust::Keyring::load(&resolve(&o.context().base, trust))?;
    let now = fleetgate_fleet::unix_now();
    let mut new = 0;
    for id in ids.iter().filter(|id| !known.contains(*id)) {
        let fields = CertFields {
            node_id: id.clone(),
            public_key: node_key(id).public_key_hex(),
            region: args.region.clone(),
            address: "http://127.0.0.1:9".into(),
            issued_at: u64::try_from(now).unwrap_or(0),
        };
        let cert = fleetgate_fleet::issue_cert(&fields, &[&key])?;
        reg.enroll(&cert, &keyring, now).await?;
        new += 1;
    }
    Ok(new)
}

struct Node {
    id: String,
    key: SigningKey,
    bad: bool,
    /// Offset of its heartbeats within the interval.
    offset: Duration,
}

/// What a virtual node runs and has seen of its feed.
#[derive(Debug, Clone)]
struct Running {
    version: String,
    code_hash: String,
    floor: u64,
    etag: Option<String>,
}

/// A verified manifest as a node takes it.
#[derive(Debug, Clone)]
struct Take {
    version: String,
    code_hash: String,
    sequence: u64,
    /// The manifest's expiry (unix seconds): a cached verification holds until then.
    expires_at: u64,
}

/// Each distinct manifest body (by SHA-256) verified once for every node, until it
/// expires: a manifest taken before its expiry is verified afresh after it (and refused,
/// as an agent would).
type VerifyCache = std::sync::Mutex<std::collections::HashMap<[u8; 32], Result<Take, String>>>;

/// Feed figures of one worker.
#[derive(Debug, Default)]
struct FeedStats {
    polls: u64,
    errors: u64,
    fetched: u64,
    refused: BTreeMap<String, u64>,
    /// (code hash, version, unix time) of each apply.
    applied: Vec<(String, String, f64)>,
}

fn verify_feed(
    body: &[u8],
    keyring: &fleetgate_trust::Keyring,
    cache: &VerifyCache,
    now: u64,
) -> Result<Take, String> {
    let digest: [u8; 32] = Sha256::digest(body).into();
    if let Some(hit) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&digest)
        && match hit {
            Ok(t) => now < t.expires_at,
            Err(_) => true,
        }
    {
        return hit.clone();
    }
    let taken = fleetgate_trust::verify_manifest(body, keyring, now, &Default::default())
        .map_err(|e| e.to_string())
        .and_then(|v| {
            let m = v.manifest;
            match m.kind {
                fleetgate_trust::ManifestKind::Release => Ok(Take {
                    version: m.version,
                    code_hash: m.code_hash,
                    sequence: m.sequence,
                    expires_at: m.expires_at,
                }),
                fleetgate_trust::ManifestKind::Rollback => Ok(Take {
                    version: m.return_to_version.unwrap_or_default(),
                    code_hash: m.return_to_code_hash.unwrap_or_default(),
                    sequence: m.sequence,
                    expires_at: m.expires_at,
                }),
                other => Err(format!("a {other:?} manifest is not simulated")),
            }
        });
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(digest, taken.clone());
    taken
}

/// One poll of `node`'s feed; applies what verifies and is above the node's floor.
async fn poll_feed(
    client: &reqwest::Client,
    url: &str,
    run: &mut Running,
    keyring: &fleetgate_trust::Keyring,
    cache: &VerifyCache,
    stats: &mut FeedStats,
) {
    stats.polls += 1;
    let mut req = client.get(url);
    if let Some(tag) = &run.etag {
        req = req.header("if-none-match", tag.as_str());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(_) => {
            stats.errors += 1;
            return;
        }
    };
    match resp.status().as_u16() {
        304 | 404 => {
            let _ = resp.bytes().await;
            return;
        }
        200 => {}
        _ => {
            stats.errors += 1;
            let _ = resp.bytes().await;
            return;
        }
    }
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Ok(body) = resp.bytes().await else {
        stats.errors += 1;
        return;
    };
    stats.fetched += 1;
    // Settled either way: not fetched again until the feed changes (as the agent).
    run.etag = etag;
    let now = u64::try_from(fleetgate_fleet::unix_now()).unwrap_or(0);
    match verify_feed(&body, keyring, cache, now) {
        Ok(t) if t.sequence > run.floor => {
            run.version = t.version;
            run.code_hash = t.code_hash;
            run.floor = t.sequence;
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            stats
                .applied
                .push((run.code_hash.clone(), run.version.clone(), at));
        }
        Ok(_) => *stats.refused.entry("replayed".into()).or_default() += 1,
        Err(e) => *stats.refused.entry(e).or_default() += 1,
    }
}

async fn send(
    args: &SimulateArgs,
    base: &str,
    url: reqwest::Url,
    ids: &[String],
    keyring: Option<Arc<fleetgate_trust::Keyring>>,
) -> anyhow::Result<Summary> {
    let cache: Arc<VerifyCache> = Arc::default();
    let interval = Duration::from_secs_f64(args.interval);
    let bad_every = if args.bad_pct > 0.0 {
        (100.0 / args.bad_pct).round().max(1.0) as usize
    } else {
        usize::MAX
    };
    let n = ids.len();
    let nodes: Vec<Arc<Node>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            Arc::new(Node {
                id: id.clone(),
                key: node_key(id),
                bad: bad_every != usize::MAX && i % bad_every == 0,
                offset: interval.mul_f64(i as f64 / n as f64),
            })
        })
        .collect();
    // Real nodes each have their own address, and every listener limits requests per
    // source address: against a loopback endpoint each connection sends from its own
    // 127.0.x.y (the whole 127.0.0.0/8 is local), as that many hosts would.
    let loopback = base.starts_with("http://127.") || base.starts_with("https://127.");
    let client_for = |w: usize| -> anyhow::Result<reqwest::Client> {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1);
        if loopback {
            let lo = u8::try_from(w % 250).unwrap_or(0) + 1;
            let hi = u8::try_from((w / 250) % 250).unwrap_or(0) + 1;
            b = b.local_address(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                127, 0, hi, lo,
            )));
        }
        Ok(b.build()?)
    };
    // Sequence numbers above any earlier run's: milliseconds since the epoch × 1000.
    let seq0 = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?
    .saturating_mul(1000);
    let start = Instant::now();
    let stop = start + Duration::from_secs(args.duration);
    let workers = args.concurrency as usize;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mine: Vec<Arc<Node>> = nodes.iter().skip(w).step_by(workers).cloned().collect();
        let (client, url, keyring, cache) =
            (client_for(w)?, url.clone(), keyring.clone(), cache.clone());
        let feed_base = format!("{base}/api/fleet/feed/");
        let pull_every = args.pull_every;
        let mut running: Vec<Running> = mine
            .iter()
            .map(|_| Running {
                version: args.version.clone(),
                code_hash: args.code_hash.clone(),
                floor: 0,
                etag: None,
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut feed = FeedStats::default();
            let mut lat: Vec<f64> = Vec::new();
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut errors = 0u64;
            let mut round = 0u32;
            // A round starts at or after `stop`: done (also when this worker has no node).
            'rounds: while start + interval * round < stop {
                for (node, run) in mine.iter().zip(running.iter_mut()) {
                    let due = start + interval * round + node.offset;
                    if due >= stop {
                        break 'rounds;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    if let Some(keyring) = &keyring
                        && round.is_multiple_of(pull_every)
                    {
                        let url = format!("{feed_base}{}", node.id);
                        poll_feed(&client, &url, run, keyring, &cache, &mut feed).await;
                    }
                    let k = u64::from(round) + 1;
                    let requests = k * 1000;
                    let hb = Heartbeat {
                        bench: Default::default(),
                        code_hash: run.code_hash.clone(),
                        epoch: 0,
                        exceptions_total: if node.bad {
                            requests / 10
                        } else {
                            requests / 200
                        },
                        floor: run.floor,
                        healthy: !node.bad,
                        node_id: node.id.clone(),
                        requests_total: requests,
                        sent_at: u64::try_from(fleetgate_fleet::unix_now()).unwrap_or(0),
                        seq: seq0 + k,
                        version: run.version.clone(),
                    };
                    let body = SignedHeartbeat::sign(&hb, &node.key).to_json();
                    let t = Instant::now();
                    match client
                        .post(url.clone())
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                    {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let _ = r.bytes().await;
                            lat.push(t.elapsed().as_secs_f64() * 1000.0);
                            *statuses.entry(status).or_default() += 1;
                        }
                        Err(_) => errors += 1,
                    }
                }
                round += 1;
            }
            (lat, statuses, errors, feed)
        }));
    }
    let mut lat = Vec::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors = 0;
    let mut feed = FeedStats::default();
    for t in tasks {
        let (l, s, e, f) = t.await?;
        feed.polls += f.polls;
        feed.errors += f.errors;
        feed.fetched += f.fetched;
        for (k, v) in f.refused {
            *feed.refused.entry(k).or_default() += v;
        }
        feed.applied.extend(f.applied);
        lat.extend(l);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i.min(lat.len() - 1)]
    };
    let accepted = statuses.get(&200).copied().unwrap_or(0);
    Ok(Summary {
        nodes: u32::try_from(n).unwrap_or(u32::MAX),
        offered_per_sec: n as f64 / args.interval,
        duration_secs: elapsed,
        sent: statuses.values().sum::<u64>() + errors,
        accepted,
        refused: statuses
            .iter()
            .filter(|(k, _)| **k != 200)
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        errors,
        accepted_per_sec: accepted as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: lat.last().copied().unwrap_or(0.0),
        enrolled_new: 0,
        feed_polls: feed.polls,
        feed_errors: feed.errors,
        feed_fetched: feed.fetched,
        feed_refused: feed.refused,
        applied: applied_figures(feed.applied),
    })
}

/// Per code hash: how many applies and when the first, 50%, 99.9% and last happened.
fn applied_figures(mut applies: Vec<(String, String, f64)>) -> BTreeMap<String, Applied> {
    applies.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.total_cmp(&b.2)));
    let mut out = BTreeMap::new();
    for chunk in applies.chunk_by(|a, b| a.0 == b.0) {
        let at =
            |q: f64| chunk[((chunk.len() as f64 * q).ceil() as usize).clamp(1, chunk.len()) - 1].2;
        out.insert(
            chunk[0].0.clone(),
            Applied {
                version: chunk[0].1.clone(),
                nodes: chunk.len() as u64,
                first_at: chunk[0].2,
                p50_at: at(0.5),
                p999_at: at(0.999),
                last_at: at(1.0),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetgate_trust::{Keyring, Manifest, SigningKey, TrustedKey, sign_manifest};

    const NOW: u64 = 1_800_000_000;

    /// A manifest verified once is taken from the cache only until it expires; after its
    /// expiry a simulated node refuses it, as an agent would.
    #[test]
    fn a_cached_manifest_is_refused_once_it_expires() {
        let key = SigningKey::from_seed(&[7; 32]);
        let ring = Keyring::new(1, 1, vec![TrustedKey::new(key.public_key())]).expect("ring");
        let manifest = Manifest {
            version: "v1.2.3".into(),
            git_sha: "a".repeat(40),
            code_hash: "c".repeat(64),
            file_manifest_hash: "f".repeat(64),
            guardrail_hash: "9".repeat(64),
            built_at: fleetgate_trust::rfc3339_seconds(NOW - 60),
            sequence: 5,
            expires_at: NOW + 100,
            canary_seed: "0123abcd".into(),
            ..Manifest::default()
        };
        let body = sign_manifest(&manifest, &[&key]).expect("sign");
        let cache = VerifyCache::default();
        let taken = verify_feed(&body, &ring, &cache, NOW).expect("valid before its expiry");
        assert_eq!(
            (taken.sequence, taken.code_hash.as_str()),
            (5, "c".repeat(64).as_str())
        );
        assert!(verify_feed(&body, &ring, &cache, NOW + 99).is_ok());
        let refused = verify_feed(&body, &ring, &cache, NOW + 100)
            .expect_err("the cached verification does not outlive the manifest");
        assert!(refused.contains("expire"), "{refused}");
        // The refusal is what the cache holds from then on.
        let digest: [u8; 32] = Sha256::digest(&body).into();
        let held = cache.lock().expect("cache").get(&digest).cloned();
        assert!(matches!(held, Some(Err(_))), "{held:?}");
        assert!(verify_feed(&body, &ring, &cache, NOW + 101).is_err());
    }
}
