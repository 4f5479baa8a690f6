//! `fleetgate fleet simulate`: virtual nodes heartbeating to a fleet endpoint, to size a
//! fleet and to measure the endpoint. It enrolls `--nodes` virtual nodes in the registry
//! of the config (certificates signed with the release key, each node's identity key
//! derived from its id, so a second run reuses the enrollment), then sends each node's
//! signed heartbeat every `--interval` seconds — faster when the endpoint cannot keep up
//! it simply falls behind — from `--concurrency` connections for `--duration` seconds,
//! and prints what was sent, accepted and refused, the accepted rate and the latency
//! percentiles.
//!
//! The virtual nodes only heartbeat: they do not apply releases (the heartbeat reports
//! the code hash given with `--code-hash`).

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
    let mut summary = rt.block_on(send(&args, &base, &ids))?;
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

async fn send(args: &SimulateArgs, base: &str, ids: &[String]) -> anyhow::Result<Summary> {
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
    let url = format!("{base}/api/fleet/heartbeat");
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
        let (client, url, version, code_hash) = (
            client_for(w)?,
            url.clone(),
            args.version.clone(),
            args.code_hash.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<f64> = Vec::new();
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut errors = 0u64;
            let mut round = 0u32;
            // A round starts at or after `stop`: done (also when this worker has no node).
            'rounds: while start + interval * round < stop {
                for node in &mine {
                    let due = start + interval * round + node.offset;
                    if due >= stop {
                        break 'rounds;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    let k = u64::from(round) + 1;
                    let requests = k * 1000;
                    let hb = Heartbeat {
                        bench: Default::default(),
                        code_hash: code_hash.clone(),
                        epoch: 0,
                        exceptions_total: if node.bad {
                            requests / 10
                        } else {
                            requests / 200
                        },
                        floor: 0,
                        healthy: !node.bad,
                        node_id: node.id.clone(),
                        requests_total: requests,
                        sent_at: u64::try_from(fleetgate_fleet::unix_now()).unwrap_or(0),
                        seq: seq0 + k,
                        version: version.clone(),
                    };
                    let body = SignedHeartbeat::sign(&hb, &node.key).to_json();
                    let t = Instant::now();
                    match client
                        .post(&url)
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
            (lat, statuses, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors = 0;
    for t in tasks {
        let (l, s, e) = t.await?;
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
    })
}
