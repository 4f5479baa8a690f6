//! The orchestrator's one connection to the fleet: the registry (opened once), the
//! pipeline lease (renewed on every use), the HTTP client, and the classification of node
//! answers into [`NodeAnswer`]s by what the node says it runs now.

use crate::gates::GateContext;
use crate::{RuntimeError, now};
use fleetgate_core::fleet::{NodeAnswer, Observed};
use fleetgate_fleet::{Fence, Registry};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Name of the lease that fences pipeline writes to the registry.
pub const LEASE_NAME: &str = "fleetgate-pipeline";

/// A connection to the fleet: registry, lease, HTTP client, and the small tokio runtime
/// they run on.
pub struct FleetLink {
    rt: tokio::runtime::Runtime,
    registry: Registry,
    http: reqwest::Client,
    holder: String,
    url: String,
    lease_ttl: Duration,
    fence: Mutex<Fence>,
    /// The canary judge as of its last settled sample, kept between checks (see
    /// [`super::canary::JudgeMemo`]).
    pub(crate) judge_memo: Mutex<Option<super::canary::JudgeMemo>>,
}

impl std::fmt::Debug for FleetLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetLink")
            .field("holder", &self.holder)
            .field("fence", &self.fence())
            .finish_non_exhaustive()
    }
}

/// The registry URL of a config: `[fleet] database_url`, else `sqlite://<state_dir>/fleet.db`.
pub fn database_url(ctx: &GateContext) -> String {
    match &ctx.cfg.fleet.database_url {
        Some(u) => match u.strip_prefix("sqlite://") {
            Some(path) if !path.starts_with('/') => {
                format!(
                    "sqlite://{}",
                    crate::gates::resolve(&ctx.base, path).display()
                )
            }
            _ => u.clone(),
        },
        None => format!("sqlite://{}", ctx.state_dir.join("fleet.db").display()),
    }
}

/// A failed fleet operation: what was being done, with the error behind it.
pub(crate) fn fleet_op(action: &'static str, e: impl Into<crate::BoxError>) -> RuntimeError {
    RuntimeError::Fleet(crate::FleetFailure::Op {
        action,
        source: e.into(),
    })
}

/// The orchestrator's fleet connection, opened on first use and kept: one registry pool,
/// one HTTP client and one runtime per orchestrator.
#[derive(Debug, Default)]
pub struct FleetHandle {
    link: Mutex<Option<Arc<FleetLink>>>,
}

impl FleetHandle {
    /// The link, connecting on first use; the pipeline lease is taken or renewed on every
    /// call (a non-holder gets [`RuntimeError::Fenced`]).
    pub fn get(&self, ctx: &GateContext) -> Result<Arc<FleetLink>, RuntimeError> {
        let link = self.connect(ctx)?;
        link.renew_lease()?;
        Ok(link)
    }

    /// The link, connecting on first use, without touching the lease (reads, and a
    /// standby waiting for the lease).
    pub fn connect(&self, ctx: &GateContext) -> Result<Arc<FleetLink>, RuntimeError> {
        let mut slot = self.link.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match slot.as_ref() {
            Some(l) => l.clone(),
            None => {
                let l = Arc::new(FleetLink::open(ctx)?);
                *slot = Some(l.clone());
                l
            }
        })
    }
}

impl FleetLink {
    /// Open the registry and build the HTTP client (no lease yet: see
    /// [`FleetLink::renew_lease`]).
    fn open(ctx: &GateContext) -> Result<FleetLink, RuntimeError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fleet_op("failed to start the async runtime", e))?;
        let url = database_url(ctx);
        let registry = block_on_rt(&rt, Registry::connect(&url))
            .map_err(|e| fleet_op("failed to open the fleet registry", e))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let holder = format!("{}:{}", host.trim(), ctx.state_dir.display());
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(
            u64::try_from(ctx.cfg.canary.apply_timeout_secs).unwrap_or(300),
        ));
        if let Some(ca) = &ctx.cfg.tls.ca_file {
            builder = builder.tls_certs_only(fleet_ca(&crate::gates::resolve(&ctx.base, ca))?);
        }
        let http = builder
            .build()
            .map_err(|e| fleet_op("failed to build the HTTP client", e))?;
        Ok(FleetLink {
            rt,
            registry,
            http,
            holder,
            url,
            lease_ttl: Duration::from_secs(
                u64::try_from(ctx.cfg.fleet.lease_ttl_secs.unwrap_or(120)).unwrap_or(120),
            ),
            fence: Mutex::new(Fence {
                name: LEASE_NAME.to_owned(),
                epoch: 0,
            }),
            judge_memo: Mutex::new(None),
        })
    }

    /// Take or renew the pipeline lease. The holder is this state directory on this host,
    /// so a restarted orchestrator gets its own lease back.
    pub fn renew_lease(&self) -> Result<(), RuntimeError> {
        let lease = self
            .block_on(
                self.registry
                    .acquire_lease(LEASE_NAME, &self.holder, self.lease_ttl),
            )
            .map_err(|e| fleet_op("failed to take the pipeline lease", e))?;
        let Some(lease) = lease else {
            let current = self
                .block_on(self.registry.lease(LEASE_NAME))
                .ok()
                .flatten();
            let now = self.db_now();
            return Err(crate::LeaseHeld {
                registry: fleetgate_fleet::redact_url(&self.url),
                holder: current.as_ref().map(|l| l.holder.clone()),
                lease: current.map(|l| describe_lease(&l, now)).unwrap_or_default(),
            }
            .into());
        };
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = lease.fence();
        Ok(())
    }

    /// The database's clock (unix seconds; this machine's clock if it cannot be read):
    /// the time lease checks are made at.
    pub fn db_now(&self) -> i64 {
        self.block_on(self.registry.db_now())
            .unwrap_or_else(|_| fleetgate_fleet::unix_now())
    }

    /// This orchestrator's name as a lease holder (`host:state_dir`).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The registry URL, password removed.
    pub fn redacted_url(&self) -> String {
        fleetgate_fleet::redact_url(&self.url)
    }

    /// The pipeline lease's lifetime.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// The fence of this orchestrator's lease.
    pub fn fence(&self) -> Fence {
        self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The fencing epoch of this orchestrator's lease.
    pub fn fencing_epoch(&self) -> i64 {
        self.fence().epoch
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The HTTP client (the fleet CA of `[tls] ca_file` when set).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Run a future to completion on the link's runtime. Safe to call from inside another
    /// tokio runtime (it then blocks on a helper thread instead of nesting runtimes).
    pub fn block_on<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        block_on_rt(&self.rt, f)
    }

    /// The latest heartbeat of `node` as an observation.
    pub fn observe(&self, node: &str, at: i64) -> Result<Option<Observed>, RuntimeError> {
        let hb = self
            .block_on(self.registry.latest_heartbeat(node, at))
            .map_err(|e| fleet_op("failed to read heartbeat", e))?;
        let Some(h) = hb else { return Ok(None) };
        let floor = self
            .block_on(self.registry.reported_floor(node))
            .map_err(|e| fleet_op("failed to read the node's reported floor", e))?
            .unwrap_or(0);
        Ok(Some(Observed {
            code_hash: h.code_hash,
            healthy: h.healthy,
            at: h.at,
            floor,
        }))
    }

    /// The latest heartbeat of each of `nodes` as an observation ([`FleetLink::observe`]
    /// for many nodes, a few statements for the lot); nodes that never heartbeated are
    /// left out.
    pub fn observe_many(
        &self,
        nodes: &[String],
        at: i64,
    ) -> Result<BTreeMap<String, Observed>, RuntimeError> {
        let floors = self
            .block_on(self.registry.reported_floors(nodes))
            .map_err(|e| fleet_op("failed to read the nodes' reported floors", e))?;
        // Each heartbeat is cut down to what DEPLOY uses as it is read.
        let mut out = BTreeMap::new();
        self.block_on(self.registry.visit_latest_heartbeats(nodes, at, |h| {
            let floor = floors.get(&h.node_id).copied().unwrap_or(0);
            out.insert(
                h.node_id,
                Observed {
                    code_hash: h.code_hash,
                    healthy: h.healthy,
                    at: h.at,
                    floor,
                },
            );
        }))
        .map_err(|e| fleet_op("failed to read heartbeats", e))?;
        Ok(out)
    }

    /// Put signed manifest bytes in each node's pull feed (`GET /api/fleet/feed/{node}`),
    /// where a node that cannot be pushed to (`mode = "pull"`) fetches it. A feed only
    /// moves forward, so writing it again is harmless. Returns the nodes whose feed could
    /// not be written, with why.
    pub fn put_feeds(&self, nodes: &[String], bytes: &[u8]) -> BTreeMap<String, String> {
        let sequence = serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|v| v.get("sequence").and_then(Value::as_u64));
        let Some(sequence) = sequence else {
            return nodes
                .iter()
                .map(|n| (n.clone(), "the manifest has no sequence".to_owned()))
                .collect();
        };
        let now = self.db_now();
        match self.block_on(self.registry.put_feeds(nodes, sequence, bytes, now)) {
            Ok(w) => w
                .unknown
                .into_iter()
                .map(|n| (n, "the node is not enrolled".to_owned()))
                .collect(),
            Err(e) => {
                tracing::warn!(nodes = nodes.len(), error = %e, "could not write the nodes' pull feeds");
                nodes.iter().map(|n| (n.clone(), e.to_string())).collect()
            }
        }
    }

    /// Put signed manifest bytes in each node's pull feed ([`FleetLink::put_feeds`]), then
    /// POST them to each node's apply endpoint, concurrently, and classify every answer.
    /// A node that cannot be looked up gets [`NodeAnswer::Unknown`]; so does one that
    /// cannot be reached, and its answer says whether the manifest waits in its feed (a
    /// pull-mode node's heartbeats then show when it took it).
    pub fn send(&self, nodes: &[String], bytes: &[u8]) -> BTreeMap<String, NodeAnswer> {
        let unfed = self.put_feeds(nodes, bytes);
        let mut out = self.push(nodes, bytes);
        for (node, answer) in &mut out {
            if let NodeAnswer::Unknown { error } = answer {
                match unfed.get(node) {
                    Some(e) => error.push_str(&format!("; its pull feed was not written: {e}")),
                    None => error.push_str("; the manifest waits in its pull feed"),
                }
            }
        }
        out
    }

    fn push(&self, nodes: &[String], bytes: &[u8]) -> BTreeMap<String, NodeAnswer> {
        let mut out = BTreeMap::new();
        let addresses = match self.block_on(self.registry.addresses(nodes)) {
            Ok(a) => a,
            Err(e) => {
                return nodes
                    .iter()
                    .map(|id| {
                        let error = format!("no address for {id}: {e}");
                        (id.clone(), NodeAnswer::Unknown { error })
                    })
                    .collect();
            }
        };
        let mut addressed = Vec::new();
        for id in nodes {
            match addresses.get(id) {
                Some(a) => addressed.push((id.clone(), a.clone())),
                None => {
                    let error = format!("no address for {id}: it is not enrolled");
                    out.insert(id.clone(), NodeAnswer::Unknown { error });
                }
            }
        }
        let bytes = bytes.to_vec();
        let http = self.http.clone();
        let answers = self.block_on(async move {
            bounded(addressed, PUSH_CONCURRENCY, move |(id, address)| {
                let client = http.clone();
                let body = bytes.clone();
                async move {
                    let base = address.trim_end_matches('/').to_owned();
                    let answer = post_apply(&client, &base, body).await;
                    (id, answer)
                }
            })
            .await
        });
        out.extend(answers);
        out
    }

    /// Of `nodes`, those whose agent lists the release `sequence` among the releases that
    /// failed there (and that it will not retry; `GET /status`), asked concurrently, at
    /// most `limit` of them per call: a window of `limit` consecutive nodes that moves on
    /// by `limit` every second, so over successive passes a large fleet is asked in turn
    /// rather than all at once on every pass.
    pub fn agents_refused(
        &self,
        nodes: &[String],
        sequence: u64,
        limit: usize,
    ) -> std::collections::BTreeSet<String> {
        if nodes.is_empty() {
            return Default::default();
        }
        let start = usize::try_from(now_secs()).unwrap_or(0).wrapping_mul(limit) % nodes.len();
        let asked: Vec<String> = nodes
            .iter()
            .cycle()
            .skip(start)
            .take(limit.min(nodes.len()))
            .cloned()
            .collect();
        let Ok(addresses) = self.block_on(self.registry.addresses(&asked)) else {
            return Default::default();
        };
        let http = self.http.clone();
        self.block_on(async move {
            bounded(
                addresses.into_iter().collect(),
                PUSH_CONCURRENCY,
                move |(id, address): (String, String)| {
                    let client = http.clone();
                    async move {
                        let base = address.trim_end_matches('/').to_owned();
                        let status = agent_status(&client, &base).await;
                        (id, refused(status.as_ref(), sequence))
                    }
                },
            )
            .await
        })
        .into_iter()
        .filter(|(_, r)| *r)
        .map(|(id, _)| id)
        .collect()
    }
}

/// Requests to nodes in flight at once (applies, status checks).
const PUSH_CONCURRENCY: usize = 256;

/// Whether an agent's `/status` lists release `sequence` among its failed releases.
fn refused(status: Option<&Value>, sequence: u64) -> bool {
    status
        .and_then(|s| s.get("bad").and_then(Value::as_array))
        .is_some_and(|bad| {
            bad.iter()
                .any(|b| b.get("sequence").and_then(Value::as_u64) == Some(sequence))
        })
}

/// Runs `task` over `items` with at most `limit` in flight; the results in completion
/// order (a task that panicked is left out).
async fn bounded<I, F, Fut, T>(items: Vec<I>, limit: usize, task: F) -> Vec<T>
where
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut got = Vec::with_capacity(items.len());
    for item in items {
        while set.len() >= limit.max(1) {
            if let Some(Ok(v)) = set.join_next().await {
                got.push(v);
            }
        }
        set.spawn(task(item));
    }
    while let Some(joined) = set.join_next().await {
        if let Ok(v) = joined {
            got.push(v);
        }
    }
    got
}

fn block_on_rt<F>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        // Called from async code: a runtime cannot be nested, so block on a plain thread.
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(f))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    } else {
        rt.block_on(f)
    }
}

async fn agent_status(http: &reqwest::Client, base: &str) -> Option<Value> {
    let resp = http
        .get(format!("{base}/status"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    resp.json().await.ok()
}

fn running_hash(v: &Value) -> Option<String> {
    v.get("running")
        .and_then(|r| r.get("code_hash"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

async fn post_apply(http: &reqwest::Client, base: &str, body: Vec<u8>) -> NodeAnswer {
    let url = format!("{base}/apply");
    let resp = match http
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return NodeAnswer::Unknown {
                error: transport_error(e),
            };
        }
    };
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let mut answer = classify(status.as_u16(), &v, &text);
    // An answer that says the node did not take the manifest but not what it runs: ask it.
    if let NodeAnswer::BelowFloor {
        running_code_hash: r @ None,
        ..
    }
    | NodeAnswer::Failed {
        running_code_hash: r @ None,
        ..
    } = &mut answer
        && let Some(s) = agent_status(http, base).await
    {
        *r = s
            .get("code_hash")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    answer
}

/// A request that got no answer, in a few words: the node's address and what failed
/// (`cannot connect to 127.0.0.1:9: Connection refused (os error 111)`). A DEPLOY keeps
/// one per unreachable node in the state, so reqwest's own text (`error sending request
/// for url (http://…/apply): client error (Connect): tcp connect error: …`, about three
/// times as long) is not kept: the delivery names its node, the address says where it
/// was looked for, the innermost cause says why.
fn transport_error(e: reqwest::Error) -> String {
    let to = e
        .url()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .unwrap_or_else(|| "the node".into());
    let what = if e.is_timeout() {
        "no answer in time from"
    } else if e.is_connect() {
        "cannot connect to"
    } else {
        "request failed to"
    };
    let mut cause = None;
    let mut cur = std::error::Error::source(&e);
    while let Some(s) = cur {
        cause = Some(s.to_string());
        cur = s.source();
    }
    match cause {
        Some(c) => format!("{what} {to}: {c}"),
        None => format!("{what} {to}: {}", e.without_url()),
    }
}

/// Classify a node agent's answer to `POST /apply` by what it says it runs now; the HTTP
/// status only decides when the body says nothing.
pub fn classify(status: u16, body: &Value, text: &str) -> NodeAnswer {
    let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
    let outcome = s("outcome");
    let reason = s("reason");
    let detail = || {
        let d = [s("detail"), s("error")]
            .into_iter()
            .find(|d| !d.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| text.chars().take(400).collect());
        format!("HTTP {status}: {d}")
    };
    match outcome {
        "applied" | "noop" | "already_applied" => {
            return NodeAnswer::Accepted {
                outcome: outcome.to_owned(),
                running_code_hash: running_hash(body),
            };
        }
        "failed" | "rolled_back" | "interrupted" | "refused" => {
            return NodeAnswer::Failed {
                outcome: outcome.to_owned(),
                detail: detail(),
                running_code_hash: running_hash(body),
            };
        }
        _ => {}
    }
    match reason {
        "replayed" => NodeAnswer::BelowFloor {
            floor: body.get("floor").and_then(Value::as_u64),
            running_code_hash: running_hash(body),
        },
        "busy" | "internal" => NodeAnswer::Unknown { error: detail() },
        "too_large" | "malformed" | "unsigned" | "bad_signature" | "unknown_key"
        | "below_threshold" | "dev_mode" | "expired" | "not_yet_valid" | "bad_rollback" => {
            NodeAnswer::Rejected {
                reason: reason.to_owned(),
                detail: detail(),
            }
        }
        _ => NodeAnswer::Unknown {
            error: format!("unrecognised answer: {}", detail()),
        },
    }
}

/// The current time as whole unix seconds.
pub(crate) fn now_secs() -> i64 {
    now() as i64
}

/// The certificates of `[tls] ca_file`: the only roots trusted for `https://` node
/// addresses when it is set.
fn fleet_ca(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, RuntimeError> {
    use crate::CaFileProblem;
    let bad = |problem: CaFileProblem| {
        RuntimeError::Config(crate::ConfigProblem::TlsCa {
            path: path.to_owned(),
            problem,
        })
    };
    let pem = match fleetgate_trust::fsutil::read_capped(path, 1 << 20) {
        Ok(fleetgate_trust::fsutil::Limited::Bytes(b)) => b,
        Ok(fleetgate_trust::fsutil::Limited::TooBig(size)) => {
            return Err(bad(CaFileProblem::TooLarge(
                fleetgate_trust::fsutil::Oversize(size),
            )));
        }
        Err(e) => return Err(bad(CaFileProblem::Unreadable(e))),
    };
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(CaFileProblem::NotPem(e)))?;
    if certs.is_empty() {
        return Err(bad(CaFileProblem::Empty));
    }
    Ok(certs)
}

/// "holder H, epoch N, since T, expires in S s" (times by the database's clock `now`).
pub fn describe_lease(l: &fleetgate_fleet::Lease, now: i64) -> String {
    let left = l.expires_at - now;
    format!(
        "holder {}, epoch {}, held for {} s, {}",
        l.holder,
        l.epoch,
        (now - l.since).max(0),
        if left > 0 {
            format!("expires in {left} s unless renewed")
        } else {
            format!("expired {} s ago", -left)
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_fleet_ca_file_is_read_or_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = fleet_ca(&missing).unwrap_err().to_string();
        assert!(
            err.contains("`tls.ca_file`") && err.contains("missing.pem"),
            "{err}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let err = fleet_ca(&junk).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn answers_are_classified_by_what_the_node_runs() {
        let running = json!({"code_hash": "abc"});
        assert_eq!(
            classify(
                200,
                &json!({"success": true, "outcome": "already_applied", "running": running}),
                ""
            ),
            NodeAnswer::Accepted {
                outcome: "already_applied".into(),
                running_code_hash: Some("abc".into())
            }
        );
        assert_eq!(
            classify(
                409,
                &json!({"success": false, "reason": "replayed", "floor": 7, "running": running}),
                ""
            ),
            NodeAnswer::BelowFloor {
                floor: Some(7),
                running_code_hash: Some("abc".into())
            }
        );
        assert!(matches!(
            classify(
                503,
                &json!({"success": false, "reason": "busy", "retryable": true}),
                ""
            ),
            NodeAnswer::Unknown { .. }
        ));
        assert!(matches!(
            classify(
                409,
                &json!({"success": false, "outcome": "refused", "running": running}),
                ""
            ),
            NodeAnswer::Failed { .. }
        ));
        assert!(matches!(
            classify(
                401,
                &json!({"success": false, "reason": "bad_signature"}),
                ""
            ),
            NodeAnswer::Rejected { .. }
        ));
        // An HTTP 409 alone proves nothing.
        assert!(matches!(
            classify(409, &Value::Null, "conflict"),
            NodeAnswer::Unknown { .. }
        ));
    }
}

#[cfg(test)]
mod transport_tests {
    use super::*;

    /// A node that cannot be reached is reported with its address and the cause (the
    /// connection was refused), not only "error sending request", and in a few words: a
    /// DEPLOY keeps one such error per unreachable node in the state.
    #[tokio::test]
    async fn an_unreachable_node_is_named_with_the_cause() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let NodeAnswer::Unknown { error } = post_apply(&http, &base, b"{}".to_vec()).await else {
            panic!("an unreachable node is an unknown answer");
        };
        assert!(
            error.starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")),
            "{error}"
        );
        assert!(
            error.to_lowercase().contains("connection refused"),
            "{error}"
        );
        assert!(error.len() <= 80, "{} bytes: {error}", error.len());
    }
}
