//! A seeded, deterministic, synchronous simulator of whole gossip clusters.
//!
//! Time is virtual: one [`Simulation::step`] is one push round. In a round every online
//! node is ticked (in index order), then every message in flight is delivered in FIFO
//! order, including answers produced while delivering (network latency is taken to be
//! well under a round, as on a LAN with 1 s rounds). Each send is lost with the
//! configured probability, decided by the [`LinkModel`] from the run's seed; messages to
//! an offline node are lost; an offline node is not ticked (it keeps its state, as a
//! node that was powered off and comes back with its disk).
//!
//! Everything random derives from the seed, so a run is replayed exactly from it.
//! [`check_seeds`] runs a scenario over many seeds and panics with the failing seeds and
//! the command to replay them.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::node::{GossipConfig, Input, Node, NodeError, Output, PeerAddr, PeerList, Stats};
use crate::rng::Rng;
use crate::transport::LinkModel;
use crate::verify::{Verified, Verifier};

/// Simulated time of round 0, unix milliseconds (2026-01-15T08:00:00Z).
pub const SIM_EPOCH_MS: u64 = 1_768_464_000_000;

/// Address of simulated node `i` (`10.x.y.z:7946`, up to 2²⁴ nodes).
pub fn sim_addr(i: usize) -> PeerAddr {
    let i = i as u32;
    SocketAddr::from((
        Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8),
        7946,
    ))
}

fn sim_index(a: PeerAddr) -> Option<usize> {
    match a {
        SocketAddr::V4(v4) if v4.port() == 7946 => {
            let [x, b, c, d] = v4.ip().octets();
            (x == 10).then_some(((b as usize) << 16) | ((c as usize) << 8) | d as usize)
        }
        SocketAddr::V4(_) | SocketAddr::V6(_) => None,
    }
}

/// A whole simulated cluster.
pub struct Simulation<V> {
    nodes: Vec<Node<V>>,
    online: Vec<bool>,
    link: LinkModel,
    queue: VecDeque<(usize, usize, Arc<[u8]>)>,
    round: u64,
    round_ms: u64,
    tracked: Option<u64>,
    reached_at: Vec<Option<u64>>,
    lost: u64,
    seed: u64,
}

impl<V: Verifier> Simulation<V> {
    /// `n` nodes that all know each other, with `cfg`, one verifier per node from
    /// `verifier(i)`, a message loss rate `loss`, all randomness from `seed`. Every node
    /// gets its first tick (round 0) before this returns.
    pub fn new(
        n: usize,
        cfg: &GossipConfig,
        loss: f64,
        seed: u64,
        mut verifier: impl FnMut(usize) -> V,
    ) -> Result<Self, NodeError> {
        let peers = Arc::new(PeerList::new((0..n).map(sim_addr)));
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let node_seed = Rng::derive(seed, i as u64 + 1).next_u64();
            nodes.push(Node::new(
                cfg.clone(),
                sim_addr(i),
                Arc::clone(&peers),
                verifier(i),
                node_seed,
            )?);
        }
        let mut sim = Self {
            nodes,
            online: vec![true; n],
            link: LinkModel::new(Rng::derive(seed, 0).next_u64(), loss),
            queue: VecDeque::new(),
            round: 0,
            round_ms: cfg.round_interval_ms,
            tracked: None,
            reached_at: vec![None; n],
            lost: 0,
            seed,
        };
        sim.run_round();
        Ok(sim)
    }

    /// The seed this run derives from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Rounds completed since the start.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Virtual time now, unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        SIM_EPOCH_MS + self.round * self.round_ms
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// No nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A node, to inspect.
    pub fn node(&self, i: usize) -> &Node<V> {
        &self.nodes[i]
    }

    /// Change the message loss rate.
    pub fn set_loss(&mut self, loss: f64) {
        self.link.set_loss(loss);
    }

    /// Take node `i` offline (not ticked, messages to it lost) or bring it back.
    pub fn set_online(&mut self, i: usize, online: bool) {
        self.online[i] = online;
        self.link.set_down(sim_addr(i), !online);
    }

    /// Cut node `i` off the network (or reconnect it) while it keeps running.
    pub fn set_isolated(&mut self, i: usize, isolated: bool) {
        self.link.set_down(sim_addr(i), isolated);
    }

    /// Is node `i` online?
    pub fn is_online(&self, i: usize) -> bool {
        self.online[i]
    }

    /// Cut (or restore) the link between `a` and `b`, both directions.
    pub fn set_link(&mut self, a: usize, b: usize, up: bool) {
        self.link.set_cut(sim_addr(a), sim_addr(b), !up);
    }

    /// Node `i` publishes `manifest`; from now on coverage of its sequence is tracked.
    /// Returns the verified facts, or `None` if node `i` refused it.
    pub fn publish(&mut self, i: usize, manifest: &[u8]) -> Option<Verified> {
        let outs = self.nodes[i].handle(Input::Publish {
            manifest: manifest.to_vec(),
        });
        let published = outs.iter().find_map(|o| match o {
            Output::Published(v) => Some(*v),
            Output::Send { .. } | Output::Deliver(_) | Output::Drop { .. } => None,
        });
        self.route(i, outs);
        if let Some(v) = published {
            self.track(v.sequence);
            self.reached_at[i] = Some(self.round);
        }
        published
    }

    /// Deliver raw bytes to node `i` as if sent by `from` (an attacker, a test).
    pub fn inject(&mut self, from: PeerAddr, i: usize, bytes: Vec<u8>) -> Vec<Output> {
        let outs = self.nodes[i].handle(Input::Message { from, bytes });
        self.route(i, outs.clone());
        self.drain();
        outs
    }

    /// Track coverage of `sequence` (nodes holding it or anything newer).
    pub fn track(&mut self, sequence: u64) {
        self.tracked = Some(sequence);
        for (i, r) in self.reached_at.iter_mut().enumerate() {
            *r = self.nodes[i]
                .head()
                .filter(|h| h.sequence >= sequence)
                .map(|_| self.round);
        }
    }

    /// Run one push round.
    pub fn step(&mut self) {
        self.round += 1;
        self.run_round();
    }

    /// Step until every node is covered or `max_rounds` more rounds have passed; returns
    /// the round of full coverage.
    pub fn run_until_covered(&mut self, max_rounds: u64) -> Option<u64> {
        let end = self.round + max_rounds;
        while self.covered() < self.len() && self.round < end {
            self.step();
        }
        (self.covered() == self.len()).then_some(self.round)
    }

    /// Step until no online node is still making start-up catch-up pulls (at most 100
    /// rounds), so that what follows is measured on a settled cluster.
    pub fn settle(&mut self) {
        for _ in 0..100 {
            if !(0..self.len()).any(|i| self.online[i] && self.nodes[i].catching_up()) {
                break;
            }
            self.step();
        }
    }

    /// Step `rounds` rounds.
    pub fn run(&mut self, rounds: u64) {
        for _ in 0..rounds {
            self.step();
        }
    }

    fn run_round(&mut self) {
        let now_ms = self.now_ms();
        for i in 0..self.nodes.len() {
            if self.online[i] {
                let outs = self.nodes[i].handle(Input::Tick { now_ms });
                self.route(i, outs);
            }
        }
        self.drain();
    }

    fn drain(&mut self) {
        // Bounded: no protocol exchange is longer than three messages, but guard anyway.
        let mut budget = 64 * self.nodes.len() as u64 + 1024;
        while let Some((from, to, bytes)) = self.queue.pop_front() {
            if budget == 0 {
                self.lost += 1 + self.queue.len() as u64;
                self.queue.clear();
                break;
            }
            budget -= 1;
            let outs = self.nodes[to].handle(Input::Message {
                from: sim_addr(from),
                bytes: bytes.to_vec(),
            });
            self.route(to, outs);
        }
    }

    fn route(&mut self, i: usize, outs: Vec<Output>) {
        for o in outs {
            match o {
                Output::Send { to, bytes, kind: _ } => {
                    let from = sim_addr(i);
                    match sim_index(to).filter(|&j| j < self.nodes.len()) {
                        Some(j) if self.link.delivers(from, to) => {
                            self.queue.push_back((i, j, bytes));
                        }
                        Some(_) | None => self.lost += 1,
                    }
                }
                Output::Deliver(d) => {
                    if let Some(t) = self.tracked
                        && d.verified.sequence >= t
                        && self.reached_at[i].is_none()
                    {
                        self.reached_at[i] = Some(self.round);
                    }
                }
                Output::Published(_) | Output::Drop { .. } => {}
            }
        }
    }

    /// Nodes holding the tracked sequence (or newer).
    pub fn covered(&self) -> usize {
        self.reached_at.iter().filter(|r| r.is_some()).count()
    }

    /// Round at which node `i` first held the tracked sequence.
    pub fn reached_at(&self, i: usize) -> Option<u64> {
        self.reached_at[i]
    }

    /// First round at which at least `fraction` of the nodes held the tracked sequence.
    pub fn rounds_to(&self, fraction: f64) -> Option<u64> {
        let need = ((fraction * self.len() as f64) - 1e-9).ceil().max(1.0) as usize;
        let mut rounds: Vec<u64> = self.reached_at.iter().flatten().copied().collect();
        if rounds.len() < need {
            return None;
        }
        rounds.sort_unstable();
        Some(rounds[need - 1])
    }

    /// Nodes that still have push transmissions left.
    pub fn pushing(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.push_budget_left() > 0)
            .count()
    }

    /// Messages lost in the network so far (loss, offline destination, cut link).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Sum of every node's counters.
    pub fn total_stats(&self) -> Stats {
        let mut t = Stats::default();
        for n in &self.nodes {
            t.add(n.stats());
        }
        t
    }
}

/// What one broadcast achieved, in rounds after the publish and messages per node.
#[derive(Clone, Debug, PartialEq)]
pub struct BroadcastFigures {
    /// Nodes.
    pub n: usize,
    /// Seed of the run.
    pub seed: u64,
    /// Rounds until 99.9% of nodes held the manifest.
    pub rounds_999: Option<u64>,
    /// Rounds until every node held it.
    pub rounds_100: Option<u64>,
    /// All messages sent until full coverage (or until `max_rounds` gave up), per node.
    pub to_full_per_node: f64,
    /// Push-phase messages sent, per node, until every rumor ran out.
    pub push_per_node: f64,
    /// All messages sent (push and anti-entropy) over the same period, per node.
    pub total_per_node: f64,
}

/// Publish `manifest` at node 0 of a fresh `n`-node cluster and run push rounds until
/// full coverage or `max_rounds`.
pub fn broadcast<V: Verifier>(
    n: usize,
    cfg: &GossipConfig,
    loss: f64,
    seed: u64,
    manifest: &[u8],
    max_rounds: u64,
    verifier: impl FnMut(usize) -> V,
) -> Result<BroadcastFigures, NodeError> {
    let mut sim = Simulation::new(n, cfg, loss, seed, verifier)?;
    sim.settle();
    let before = sim.total_stats();
    let start = sim.round();
    sim.publish(0, manifest);
    sim.run_until_covered(max_rounds);
    let rounds_999 = sim.rounds_to(0.999).map(|r| r - start);
    let rounds_100 = sim.rounds_to(1.0).map(|r| r - start);
    let at_full = sim.total_stats();
    // Let every rumor run out so the whole push phase is counted.
    let end = sim.round() + max_rounds;
    while sim.pushing() > 0 && sim.round() < end {
        sim.step();
    }
    let after = sim.total_stats();
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / n as f64;
    Ok(BroadcastFigures {
        n,
        seed,
        rounds_999,
        rounds_100,
        to_full_per_node: per(at_full.sent_total(), before.sent_total()),
        push_per_node: per(after.sent_push, before.sent_push),
        total_per_node: per(after.sent_total(), before.sent_total()),
    })
}

/// Seeds to run: `FLEETGATE_SIM_SEEDS` (comma-separated, to replay) or `default`.
pub fn seeds(default: impl IntoIterator<Item = u64>) -> Vec<u64> {
    match std::env::var("FLEETGATE_SIM_SEEDS") {
        Ok(s) if !s.trim().is_empty() => {
            s.split(',').filter_map(|x| x.trim().parse().ok()).collect()
        }
        Ok(_) | Err(_) => default.into_iter().collect(),
    }
}

/// Run `scenario` for every seed; collect results; on any failure panic naming every
/// failing seed and how to replay it.
pub fn check_seeds<T>(
    name: &str,
    seeds: &[u64],
    mut scenario: impl FnMut(u64) -> Result<T, String>,
) -> Vec<T> {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for &seed in seeds {
        match scenario(seed) {
            Ok(t) => ok.push(t),
            Err(e) => failed.push(format!("  seed {seed}: {e}")),
        }
    }
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .filter_map(|f| {
                f.split(':')
                    .next()
                    .map(|s| s.trim().trim_start_matches("seed ").to_owned())
            })
            .collect();
        panic!(
            "simulation `{name}` failed for {} of {} seeds:\n{}\nreplay with: FLEETGATE_SIM_SEEDS={} cargo nextest run -p fleetgate-gossip {name}",
            failed.len(),
            seeds.len(),
            failed.join("\n"),
            list.join(",")
        );
    }
    ok
}

/// Median of `xs` (upper median for even lengths); `None` sorts last (never reached).
pub fn median(xs: &[Option<u64>]) -> Option<u64> {
    let mut v: Vec<u64> = xs.iter().map(|x| x.unwrap_or(u64::MAX)).collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().filter(|&x| x != u64::MAX)
}
