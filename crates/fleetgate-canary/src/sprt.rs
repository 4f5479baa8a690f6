//! The sequential test behind the exception-rate criterion.
//!
//! **Hypotheses (honest thresholds).** `r` is how many times the canary's exception
//! rate exceeds what it would be running the baseline's code. H0: `r = 1 + tolerance`
//! (`canary.max_exception_rate_increase`: the largest increase that must still pass)
//! against H1: `r = 1 + detect` (`canary.detect_exception_rate_increase`: the increase
//! that must be caught). Every `r ≤ 1 + tolerance` fails with probability at most α,
//! every `r ≥ 1 + detect` passes with probability at most β; the indifference zone lies
//! between them.
//!
//! **Difference in differences (used when every canary node has pre-update history).**
//! Each canary node `c` is compared with *its own* rate before the update: `A_c`
//! exceptions in `m_c` requests before, `B_c` in `n_c` after. The baseline nodes give
//! the fleet-wide change over the same time, `g = Σ_b e_b,post / Σ_b (A_b/m_b)·n_b,post`
//! (each baseline node against its own pre-update rate, so a changing traffic mix
//! does not move `g`). Model: `B_c ~ Poisson(r·g·λ_c·n_c)`, `A_c ~ Poisson(λ_c·m_c)`,
//! with the node's own rate `λ_c` unknown — a persistent node-to-node difference
//! cancels. `λ_c` has the fleet's spread as its prior, `Gamma(κ, κ/μ)` from every
//! node's history ([`RateTest::fleet_prior`]; Jeffreys `Gamma(½, 0)` when it cannot be
//! estimated), updated by the node's own history to `Gamma(κ + A_c, κ/μ + m_c)`.
//! Integrating `λ_c` over it gives the likelihood ratio in closed form (with
//! `a + ½ = κ + A_c`, `m = κ/μ + m_c`, `n = g·n_c`):
//! `S = Σ_c [B_c·ln(r1/r0) − (a + B_c + ½)·ln((r1·n + m)/(r0·n + m))]`.
//! `exp(S)` is a Bayes factor, a martingale under H0 (averaged over the history's
//! noise), so Ville's inequality bounds the false-rollback rate by α however often it
//! is looked at. `S` stays bounded as the window grows when the canary's rate is its
//! own old rate: the history's uncertainty is carried, not ignored.
//!
//! **Cross-section with the fleet's spread (fallback without history).** The same
//! ratio with the prior from the baseline nodes' window counts over the same time
//! (`a + ½ = κ`, `m = κ/μ`, `n = n_c`): the canary is a node drawn from the fleet's
//! spread, running the release (negative binomial). `1/κ` is a high estimate of the
//! squared coefficient of variation between nodes, so an ordinary node that happens
//! to be high is not read as a regression; a canary no worse than an ordinary node
//! ends inconclusive rather than rolled back. With fewer than two baseline nodes no
//! spread can be estimated, and the plain conditional binomial test is used: per
//! interval, conditional on the total, `e_c ~ Binomial(e, p)` with
//! `p = r·n_c / (r·n_c + n_b)`; Wald's SPRT sums
//! `e_c·ln(p1/p0) + e_b·ln((1−p1)/(1−p0))`.
//!
//! An interval without baseline traffic uses, when configured, a fixed reference rate
//! `λ0 = baseline_exception_rate` and the one-sample Poisson increment
//! `e_c·ln(r1/r0) − (r1 − r0)·λ0·n_c`.
//!
//! * `max S ≥ ln(1/α)` → **fail** (stays failed).
//! * `S ≤ ln(β/(1−α))` → the canary is not `1+detect` times worse; the criterion
//!   counts as passed (sampling continues: a later degradation can still fail).
//! * in between → not enough data yet.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which statistic the test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateMethod {
    /// Each canary node against its own pre-update rate, corrected by the baseline's
    /// change over the same time.
    DiffInDiff,
    /// Canary against the baseline in the same intervals, scaled by the baseline's
    /// between-node dispersion.
    #[default]
    CrossSection,
}

/// Per-node counts before and after the window start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct NodeCounts {
    /// Canary (true) or baseline node.
    pub canary: bool,
    /// Exceptions in the pre-update history.
    pub pre_exceptions: u64,
    /// Requests in the pre-update history.
    pub pre_requests: u64,
    /// Exceptions since the window start.
    pub exceptions: u64,
    /// Requests since the window start.
    pub requests: u64,
}

/// The current estimate of the canary's increase, with a 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateEstimate {
    /// Estimated rate ratio `r` minus 1 (0.3 = +30%).
    pub increase: f64,
    /// Lower end of the two-sided 95% interval of the increase.
    pub low: f64,
    /// Upper end (may be infinite with very few exceptions).
    pub high: f64,
    /// How it was estimated.
    pub method: RateMethod,
}

/// State of the exception-rate test; serialisable so a restarted orchestrator resumes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateTest {
    /// Tolerance: H0 is `r = 1 + tolerance`.
    #[serde(default)]
    pub tolerance: f64,
    /// Detect: H1 is `r = 1 + delta`.
    pub delta: f64,
    /// Upper (fail) boundary, `ln(1/α)`.
    pub upper: f64,
    /// Lower (accept) boundary, `ln(β/(1−α))`.
    pub lower: f64,
    /// The statistic in force `S` (see [`RateTest::method`]).
    pub llr: f64,
    /// Highest `S` seen.
    pub max_llr: f64,
    /// The plain conditional-binomial sum (used only when no spread between nodes can
    /// be estimated: fewer than two baseline nodes, or a fixed reference rate).
    #[serde(default)]
    pub cross_llr: f64,
    /// The squared coefficient of variation assumed for a node's own rate between
    /// nodes (`1/κ` of [`RateTest::fleet_prior`], a high estimate); 0 when none.
    #[serde(default)]
    pub dispersion: f64,
    /// The statistic in force.
    #[serde(default)]
    pub method: RateMethod,
    /// Per node: history and window counts.
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeCounts>,
    /// Exceptions raised by the canary nodes since the window started.
    pub canary_exceptions: u64,
    /// Requests served by the canary nodes since the window started.
    pub canary_requests: u64,
    /// Exceptions raised by the baseline nodes since the window started.
    pub baseline_exceptions: u64,
    /// Requests served by the baseline nodes since the window started.
    pub baseline_requests: u64,
    /// Intervals that carried information.
    pub informative_intervals: u64,
    /// Intervals judged against the configured reference rate (no baseline traffic).
    pub reference_intervals: u64,
}

/// Where the test stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateDecision {
    /// `S` reached the upper boundary: the canary's rate is above `(1+tolerance)` × its
    /// reference.
    Fail,
    /// `S` is at or below the lower boundary.
    Accept,
    /// Neither boundary reached.
    Continue,
}

/// The 5% quantile of χ² with `df` degrees of freedom (`df ≥ 1`): tabulated up to 5
/// (Wilson–Hilferty is poor there: it gives 3·10⁻⁸ for 1, not 0.0039), Wilson–Hilferty
/// above (within 1% from 6 on).
fn chi2_lower_05(df: usize) -> f64 {
    const TABLE: [f64; 5] = [0.003_932, 0.102_587, 0.351_846, 0.710_723, 1.145_476];
    if let Some(q) = df.checked_sub(1).and_then(|i| TABLE.get(i)) {
        return *q;
    }
    let d = df as f64;
    let h = 2.0 / (9.0 * d);
    d * (1.0 - h - 1.645 * h.sqrt()).powi(3)
}

/// Canary-side sufficient statistics of the difference-in-differences test.
#[derive(Debug, Clone, Copy)]
struct DidNode {
    a: f64,
    m: f64,
    b: f64,
    n: f64,
}

impl RateTest {
    /// A fresh test: H0 `r = 1 + tolerance`, H1 `r = 1 + detect`, error bounds
    /// `alpha`, `beta` (validated by the caller; `detect > tolerance ≥ 0`).
    pub fn new(tolerance: f64, detect: f64, alpha: f64, beta: f64) -> Self {
        Self {
            tolerance,
            delta: detect,
            upper: (1.0 / alpha).ln(),
            lower: (beta / (1.0 - alpha)).ln(),
            llr: 0.0,
            max_llr: 0.0,
            cross_llr: 0.0,
            dispersion: 0.0,
            method: RateMethod::CrossSection,
            nodes: BTreeMap::new(),
            canary_exceptions: 0,
            canary_requests: 0,
            baseline_exceptions: 0,
            baseline_requests: 0,
            informative_intervals: 0,
            reference_intervals: 0,
        }
    }

    fn r0(&self) -> f64 {
        1.0 + self.tolerance
    }

    fn r1(&self) -> f64 {
        1.0 + self.delta
    }

    /// Adds pre-update history of one node (before the window start). Call
    /// [`RateTest::recompute`] once the history sample's nodes are all in.
    pub fn add_history(&mut self, node: &str, canary: bool, exceptions: u64, requests: u64) {
        let c = self.nodes.entry(node.to_owned()).or_default();
        c.canary = canary;
        c.pre_requests = c.pre_requests.saturating_add(requests.max(exceptions));
        c.pre_exceptions = c.pre_exceptions.saturating_add(exceptions);
    }

    /// Recomputes the statistic in force from the counts (done by
    /// [`RateTest::update`]; needed after [`RateTest::add_history`]).
    pub fn recompute(&mut self) {
        self.refresh();
    }

    /// Records one node's counts of one interval in the window. Call it for every node
    /// of a sample, then [`RateTest::update`] with the sums.
    pub fn observe_node(&mut self, node: &str, canary: bool, exceptions: u64, requests: u64) {
        let c = self.nodes.entry(node.to_owned()).or_default();
        c.canary = canary;
        c.requests = c.requests.saturating_add(requests.max(exceptions));
        c.exceptions = c.exceptions.saturating_add(exceptions);
    }

    /// Adds one interval's summed counts (canary, baseline). Counts where exceptions
    /// exceed requests are treated as if every request had failed.
    pub fn update(
        &mut self,
        canary_exceptions: u64,
        canary_requests: u64,
        baseline_exceptions: u64,
        baseline_requests: u64,
        reference_rate: Option<f64>,
    ) {
        let ec = canary_exceptions;
        let nc = canary_requests.max(ec);
        let eb = baseline_exceptions;
        let nb = baseline_requests.max(eb);
        self.canary_exceptions = self.canary_exceptions.saturating_add(ec);
        self.canary_requests = self.canary_requests.saturating_add(nc);
        self.baseline_exceptions = self.baseline_exceptions.saturating_add(eb);
        self.baseline_requests = self.baseline_requests.saturating_add(nb);
        let (r0, r1) = (self.r0(), self.r1());
        let inc = if nc == 0 {
            None
        } else if nb == 0 {
            match reference_rate {
                Some(l0) if l0 > 0.0 => {
                    self.reference_intervals += 1;
                    Some(ec as f64 * (r1 / r0).ln() - (r1 - r0) * l0 * nc as f64)
                }
                _ => None,
            }
        } else if ec.saturating_add(eb) == 0 {
            // No exception anywhere: the conditional test has nothing to condition on.
            None
        } else {
            let (ncf, nbf) = (nc as f64, nb as f64);
            let p0 = r0 * ncf / (r0 * ncf + nbf);
            let p1 = r1 * ncf / (r1 * ncf + nbf);
            Some(ec as f64 * (p1 / p0).ln() + eb as f64 * ((1.0 - p1) / (1.0 - p0)).ln())
        };
        if let Some(inc) = inc {
            self.informative_intervals += 1;
            self.cross_llr += inc;
        }
        self.refresh();
    }

    /// Whether every canary node has pre-update history (the difference in
    /// differences is then in force).
    fn every_canary_has_history(&self) -> bool {
        let mut canaries = self.nodes.values().filter(|c| c.canary).peekable();
        canaries.peek().is_some() && canaries.all(|c| c.pre_requests > 0)
    }

    /// The fleet's spread between nodes, as a gamma prior for one node's own rate: from
    /// every node's history (`pre`; before the update they all ran the same code) or
    /// from the baseline nodes' window counts, for one node's own
    /// rate: `(shape κ, rate κ/μ)` with `μ` the baseline's pooled rate and `1/κ` a
    /// deliberately high estimate of the squared coefficient of variation of the
    /// nodes' natural rates. `None` with fewer than two baseline nodes or no exception.
    ///
    /// Method of moments for Poisson counts (DerSimonian & Laird 1986): the variance of
    /// the nodes' true rates is `τ² = μ·(X² − (k−1)) / (N − Σnᵢ²/N)`, Pearson's `X²` of
    /// the `k` nodes' counts around `μ`. With few nodes `X²` is itself noisy, so it is
    /// first raised to its one-sided 95% upper bound `X²·(k−1)/χ²_{k−1, 0.05}`: an underestimated spread would read a naturally high node as
    /// a regression. The uncertainty of `μ` (`τ²/k` between nodes, `1/Σe` Poisson) is
    /// added, since the canary is compared with the estimate, not the true mean.
    pub fn fleet_prior(&self, pre: bool) -> Option<(f64, f64)> {
        self.fleet_prior_at(pre, 1.0)
    }

    /// [`RateTest::fleet_prior`] with the window's counts scaled by `k` but Pearson's
    /// `X²` kept as observed: what the prior becomes if the baseline goes on as alike
    /// as it looks now (for [`RateTest::requests_to_accept`]).
    fn fleet_prior_at(&self, pre: bool, scale: f64) -> Option<(f64, f64)> {
        let counts: Vec<(f64, f64)> = self
            .nodes
            .values()
            // Before the update every node ran the same code: all histories count.
            .filter(|c| pre || !c.canary)
            .map(|c| {
                if pre {
                    (c.pre_exceptions as f64, c.pre_requests as f64)
                } else {
                    (c.exceptions as f64, c.requests as f64)
                }
            })
            .filter(|&(_, n)| n > 0.0)
            .collect();
        let k = counts.len();
        let e: f64 = counts.iter().map(|c| c.0).sum();
        let n: f64 = counts.iter().map(|c| c.1).sum();
        if k < 2 || e <= 0.0 {
            return None;
        }
        let mu = e / n;
        let x2: f64 = counts
            .iter()
            .map(|&(ei, ni)| (ei - mu * ni).powi(2) / (mu * ni))
            .sum();
        let (e, n, counts) = if pre || scale == 1.0 {
            (e, n, counts)
        } else {
            let scaled = counts.iter().map(|&(ei, ni)| (ei * scale, ni * scale));
            (e * scale, n * scale, scaled.collect())
        };
        let df = (k - 1) as f64;
        let q05 = chi2_lower_05(k - 1);
        let x2_high = x2 * df / q05;
        let n_eff = n - counts.iter().map(|c| c.1 * c.1).sum::<f64>() / n;
        if n_eff <= 0.0 {
            return None;
        }
        let cv2 = (x2_high - df).max(0.0) / (mu * n_eff);
        let cv2 = cv2 * (1.0 + 1.0 / k as f64) + 1.0 / e;
        let shape = 1.0 / cv2;
        Some((shape, shape / mu))
    }

    /// The canary nodes' sufficient statistics for the likelihood ratio: each node's own
    /// rate has a gamma posterior `Gamma(a + ½, m)` and served `n` requests' worth of
    /// exposure (scaled by the baseline's change `g` when judged against history).
    ///
    /// With history (every canary node has some): the fleet prior from the baseline's
    /// histories updated by the node's own history, `a + ½ = κ + A_c`, `m = κ/μ + m_c`
    /// (Jeffreys, `A_c + ½` and `m_c`, when the baseline gives no prior), `n = g·n_c`.
    /// Without: the fleet prior from the baseline's window counts alone, `n = n_c`
    /// (the canary against the spread of the baseline nodes over the same time).
    fn test_nodes(&self) -> Option<Vec<DidNode>> {
        self.test_nodes_at(1.0)
    }

    /// [`RateTest::test_nodes`] with the window's counts scaled by `scale` (and the
    /// prior from the scaled window, see [`RateTest::fleet_prior_at`]).
    fn test_nodes_at(&self, scale: f64) -> Option<Vec<DidNode>> {
        let did = self.every_canary_has_history();
        let prior = self.fleet_prior_at(did, scale);
        if !did && prior.is_none() {
            return None;
        }
        let g = if did { self.baseline_change() } else { 1.0 };
        Some(
            self.nodes
                .values()
                .filter(|c| c.canary)
                .map(|c| {
                    let (a, m) = if did {
                        (c.pre_exceptions as f64, c.pre_requests as f64)
                    } else {
                        (0.0, 0.0)
                    };
                    let (a, m) = match prior {
                        Some((shape, rate)) => (a + shape - 0.5, m + rate),
                        None => (a, m),
                    };
                    DidNode {
                        a,
                        m,
                        b: c.exceptions as f64 * scale,
                        n: g * c.requests as f64 * scale,
                    }
                })
                .collect(),
        )
    }

    /// The baseline's change since its history (observed / expected at each baseline
    /// node's own pre-update rate); 1 without baseline history or data.
    pub fn baseline_change(&self) -> f64 {
        let (mut observed, mut expected) = (0.0, 0.0);
        for c in self.nodes.values().filter(|c| !c.canary) {
            if c.pre_requests > 0 {
                observed += c.exceptions as f64;
                expected += c.pre_exceptions as f64 / c.pre_requests as f64 * c.requests as f64;
            }
        }
        if expected > 0.0 && observed > 0.0 {
            observed / expected
        } else {
            1.0
        }
    }

    fn did_llr(nodes: &[DidNode], r0: f64, r1: f64) -> f64 {
        nodes
            .iter()
            .map(|d| {
                d.b * (r1 / r0).ln()
                    - (d.a + d.b + 0.5) * ((r1 * d.n + d.m) / (r0 * d.n + d.m)).ln()
            })
            .sum()
    }

    fn refresh(&mut self) {
        let did = self.every_canary_has_history();
        if let Some(d) = self.test_nodes() {
            self.method = if did {
                RateMethod::DiffInDiff
            } else {
                RateMethod::CrossSection
            };
            self.dispersion = self.fleet_prior(did).map_or(0.0, |(shape, _)| 1.0 / shape);
            self.llr = Self::did_llr(&d, self.r0(), self.r1());
        } else {
            // No baseline to compare with: the fixed reference rate's increments, if any.
            self.method = RateMethod::CrossSection;
            self.dispersion = 0.0;
            self.llr = self.cross_llr;
        }
        if self.llr.is_finite() && self.llr > self.max_llr {
            self.max_llr = self.llr;
        }
    }

    /// Where the test stands now. Once the upper boundary has been reached the test
    /// stays failed.
    pub fn decision(&self) -> RateDecision {
        if self.max_llr >= self.upper {
            RateDecision::Fail
        } else if self.llr <= self.lower {
            RateDecision::Accept
        } else {
            RateDecision::Continue
        }
    }

    /// The estimated increase `r − 1` with a two-sided 95% interval (log-scale Wald),
    /// `None` before the canary and its reference have raised any exception.
    pub fn estimate(&self) -> Option<RateEstimate> {
        const Z: f64 = 1.96;
        let (ratio, var, method) = if let Some(d) = self.test_nodes() {
            // Observed over expected at each node's own rate (its posterior mean).
            let b: f64 = d.iter().map(|x| x.b).sum();
            let e: Vec<f64> = d.iter().map(|x| (x.a + 0.5) / x.m * x.n).collect();
            let et: f64 = e.iter().sum();
            if b <= 0.0 || !(et > 0.0 && et.is_finite()) {
                return None;
            }
            // The posterior's squared coefficient of variation is 1/(a + ½).
            let var_ref: f64 = d
                .iter()
                .zip(&e)
                .map(|(x, ei)| ei * ei / (x.a + 0.5))
                .sum::<f64>()
                / (et * et);
            (b / et, 1.0 / b + var_ref, self.method)
        } else {
            let (ec, eb) = (
                self.canary_exceptions as f64,
                self.baseline_exceptions as f64,
            );
            if ec <= 0.0 || eb <= 0.0 || self.canary_requests == 0 {
                return None;
            }
            let ratio = (ec / self.canary_requests as f64) / (eb / self.baseline_requests as f64);
            (ratio, 1.0 / ec + 1.0 / eb, RateMethod::CrossSection)
        };
        let half = Z * var.sqrt();
        // Four decimals: enough to read, and exact through a JSON round trip (a
        // persisted verdict compares equal to the live one).
        let round = |x: f64| {
            if x.is_finite() {
                (x * 1e4).round() / 1e4
            } else {
                x
            }
        };
        Some(RateEstimate {
            increase: round(ratio - 1.0),
            low: round(ratio * (-half).exp() - 1.0),
            high: round(ratio * half.exp() - 1.0),
            method,
        })
    }

    /// Expected number of further canary requests before `S` reaches the accept
    /// boundary, if the exception rates and the traffic mix stay as observed so far.
    ///
    /// Against history or the fleet's spread: the window's counts scaled up until `S`
    /// reaches the boundary (bisection; the spread between baseline nodes taken as it
    /// looks now). The plain conditional test (one baseline node, or a fixed reference
    /// rate): `(S − lower) / −d`, where `d` is the expected increment of `S` per canary
    /// request, `d = λc·ln(p1/p0) + λb·ρ·ln((1−p1)/(1−p0))` with `ρ = n_b/n_c`,
    /// `p0 = r0/(r0+ρ)`, `p1 = r1/(r1+ρ)` and `λc`, `λb` the observed rates (against
    /// the reference rate `λ0` without baseline traffic: `d = λc·ln(r1/r0) − (r1−r0)·λ0`).
    ///
    /// `Some(0)` when `S` is already at or below the boundary; `None` when the canary
    /// served nothing yet, when nothing can inform the test, or when at the observed
    /// rates the test drifts towards failing, not passing.
    pub fn requests_to_accept(&self, reference_rate: Option<f64>) -> Option<u64> {
        if self.llr <= self.lower {
            return Some(0);
        }
        if self.canary_requests == 0 {
            return None;
        }
        let (r0, r1) = (self.r0(), self.r1());
        if self.test_nodes().is_some() {
            let at = |k: f64| {
                self.test_nodes_at(k)
                    .map_or(f64::INFINITY, |d| Self::did_llr(&d, r0, r1))
            };
            let mut hi = 2.0;
            while at(hi) > self.lower {
                hi *= 2.0;
                if hi > 1e9 {
                    return None;
                }
            }
            let mut lo = 1.0;
            for _ in 0..60 {
                let mid = (lo + hi) / 2.0;
                if at(mid) > self.lower {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let n = ((hi - 1.0) * self.canary_requests as f64).ceil();
            return n.is_finite().then_some(n as u64);
        }
        let nc = self.canary_requests as f64;
        let lc = self.canary_exceptions as f64 / nc;
        let drift = if self.baseline_requests == 0 {
            match reference_rate {
                Some(l0) if l0 > 0.0 && l0.is_finite() => lc * (r1 / r0).ln() - (r1 - r0) * l0,
                _ => return None,
            }
        } else {
            let nb = self.baseline_requests as f64;
            let lb = self.baseline_exceptions as f64 / nb;
            let rho = nb / nc;
            let p0 = r0 / (r0 + rho);
            let p1 = r1 / (r1 + rho);
            lc * (p1 / p0).ln() + lb * rho * ((1.0 - p1) / (1.0 - p0)).ln()
        };
        if !(drift.is_finite() && drift < 0.0) {
            return None;
        }
        let n = ((self.llr - self.lower) / -drift).ceil();
        // `as` saturates at u64::MAX for a huge estimate.
        n.is_finite().then_some(n as u64)
    }

    /// Canary exception rate so far (exceptions per request), if it served any.
    pub fn canary_rate(&self) -> Option<f64> {
        (self.canary_requests > 0)
            .then(|| self.canary_exceptions as f64 / self.canary_requests as f64)
    }

    /// Baseline exception rate so far, if it served any.
    pub fn baseline_rate(&self) -> Option<f64> {
        (self.baseline_requests > 0)
            .then(|| self.baseline_exceptions as f64 / self.baseline_requests as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_follow_alpha_and_beta() {
        let t = RateTest::new(0.0, 0.5, 0.01, 0.05);
        assert!((t.upper - 100f64.ln()).abs() < 1e-12);
        assert!((t.lower - (0.05f64 / 0.99).ln()).abs() < 1e-12);
    }

    #[test]
    fn equal_rates_drift_down_and_doubled_rate_fails() {
        let mut same = RateTest::new(0.0, 0.5, 0.01, 0.05);
        let mut double = RateTest::new(0.0, 0.5, 0.01, 0.05);
        for _ in 0..5 {
            same.update(10, 1000, 90, 9000, None);
            double.update(20, 1000, 90, 9000, None);
        }
        assert_eq!(same.decision(), RateDecision::Accept, "{same:?}");
        assert_eq!(double.decision(), RateDecision::Fail, "{double:?}");
    }

    #[test]
    fn small_numbers_are_not_a_verdict() {
        // 2 canary exceptions against 1 in the baseline is a raw ratio of 18x,
        // but far too little evidence either way.
        let mut t = RateTest::new(0.0, 0.5, 0.01, 0.05);
        t.update(2, 100, 1, 900, None);
        assert_eq!(t.decision(), RateDecision::Continue);
    }

    #[test]
    fn no_baseline_uses_the_reference_rate_only_when_configured() {
        let mut t = RateTest::new(0.0, 0.5, 0.01, 0.05);
        t.update(50, 1000, 0, 0, None);
        assert_eq!(t.informative_intervals, 0);
        t.update(50, 1000, 0, 0, Some(0.01));
        assert_eq!(t.reference_intervals, 1);
        assert_eq!(t.decision(), RateDecision::Fail);
    }

    #[test]
    fn requests_to_accept_matches_the_drift_of_the_test() {
        // A/A at 1% with 9× the canary's traffic in the baseline: each canary request
        // moves S by 0.01·(ln(p1/p0) + 9·ln((1−p1)/(1−p0))) on average.
        let mut t = RateTest::new(0.0, 0.5, 0.01, 0.05);
        t.update(1, 100, 9, 900, None);
        let (p0, p1) = (0.1f64, 1.5 / 10.5);
        let drift = 0.01 * ((p1 / p0).ln() + 9.0 * ((1.0 - p1) / (1.0 - p0)).ln());
        let expect = ((t.llr - t.lower) / -drift).ceil() as u64;
        assert_eq!(t.requests_to_accept(None), Some(expect));
        assert!((3000..4000).contains(&expect), "{expect}");
        // Feeding that many requests at exactly those rates reaches the boundary.
        t.update(expect / 100, expect, 9 * expect / 100, 9 * expect, None);
        assert_eq!(t.decision(), RateDecision::Accept, "{t:?}");
        assert_eq!(t.requests_to_accept(None), Some(0));
    }

    #[test]
    fn requests_to_accept_is_none_without_a_way_to_pass() {
        let mut t = RateTest::new(0.0, 0.5, 0.01, 0.05);
        assert_eq!(t.requests_to_accept(None), None, "no canary traffic");
        t.update(0, 100, 0, 900, None);
        assert_eq!(t.requests_to_accept(None), None, "no exception anywhere");
        // Canary at 2× the baseline: the test drifts towards failing.
        let mut bad = RateTest::new(0.0, 0.5, 0.01, 0.05);
        bad.update(2, 100, 9, 900, None);
        assert_eq!(bad.requests_to_accept(None), None, "{bad:?}");
        // No baseline: only with a reference rate.
        let mut alone = RateTest::new(0.0, 0.5, 0.01, 0.05);
        alone.update(1, 100, 0, 0, Some(0.01));
        assert_eq!(alone.requests_to_accept(None), None);
        assert!(alone.requests_to_accept(Some(0.01)).is_some());
    }

    /// One canary at `canary` per 1000 before and `after` per 1000 in the window, nine
    /// baseline nodes at 10 per 1000 throughout; 60 intervals of history, `k` in the window.
    fn did(canary: u64, after: u64, k: u64) -> RateTest {
        let mut t = RateTest::new(0.1, 0.5, 0.01, 0.05);
        t.add_history("c", true, 60 * canary, 60_000);
        for b in 0..9 {
            t.add_history(&format!("b{b}"), false, 600, 60_000);
        }
        t.recompute();
        for _ in 0..k {
            t.observe_node("c", true, after, 1000);
            for b in 0..9 {
                t.observe_node(&format!("b{b}"), false, 10, 1000);
            }
            t.update(after, 1000, 90, 9000, None);
        }
        t
    }

    #[test]
    fn a_node_is_judged_against_its_own_history() {
        // Always 3× the baseline: unchanged by the update, so it passes…
        let same = did(30, 30, 20);
        assert_eq!(same.method, RateMethod::DiffInDiff);
        assert_eq!(same.decision(), RateDecision::Accept, "{same:?}");
        let e = same.estimate().unwrap();
        assert!(
            e.increase.abs() < 0.01 && e.low < 0.0 && e.high > 0.0,
            "{e:?}"
        );
        // …while the plain comparison with the baseline fails it.
        assert!(same.cross_llr > same.upper, "{}", same.cross_llr);
        // Half the baseline before, the baseline's rate after: 2× its own, caught.
        let worse = did(5, 10, 20);
        assert_eq!(worse.decision(), RateDecision::Fail, "{worse:?}");
        let e = worse.estimate().unwrap();
        assert!((e.increase - 1.0).abs() < 0.05 && e.low > 0.1, "{e:?}");
    }

    /// Baseline nodes at the given per-1000 rates over `k` intervals, no history; one
    /// canary at `canary` per 1000.
    fn cross(baseline: &[u64], canary: u64, k: u64) -> RateTest {
        let mut t = RateTest::new(0.1, 0.5, 0.01, 0.05);
        for _ in 0..k {
            for (i, e) in baseline.iter().enumerate() {
                t.observe_node(&format!("b{i}"), false, *e, 1000);
            }
            t.observe_node("c", true, canary, 1000);
            let eb = baseline.iter().sum();
            t.update(canary, 1000, eb, 1000 * baseline.len() as u64, None);
        }
        t
    }

    #[test]
    fn persistent_spread_between_baseline_nodes_widens_the_cross_section() {
        // Baseline nodes at 5, 10 and 20 per 1000, no history: a canary at 20 is an
        // ordinary node of this fleet, so it is not rolled back however long it runs.
        let spread = cross(&[5, 10, 20, 5, 10, 20], 20, 200);
        assert_eq!(spread.method, RateMethod::CrossSection);
        assert!(spread.dispersion > 0.25, "{}", spread.dispersion);
        assert_ne!(spread.decision(), RateDecision::Fail, "{spread:?}");
        // The plain binomial test would have failed it long ago.
        assert!(spread.cross_llr > spread.upper, "{}", spread.cross_llr);
        // On a fleet of alike nodes the same canary (2× the rest) fails…
        let alike = cross(&[10, 10, 10, 10, 10, 10], 20, 20);
        assert!(alike.dispersion < 0.01, "{}", alike.dispersion);
        assert_eq!(alike.decision(), RateDecision::Fail, "{alike:?}");
        // …and one like the rest passes.
        let same = cross(&[10, 10, 10, 10, 10, 10], 10, 40);
        assert_eq!(same.decision(), RateDecision::Accept, "{same:?}");
        let e = same.estimate().unwrap();
        assert!(e.low < 0.0 && e.high > 0.0, "{e:?}");
    }

    #[test]
    fn the_fleet_prior_needs_two_baseline_nodes() {
        let mut t = RateTest::new(0.1, 0.5, 0.01, 0.05);
        t.observe_node("b0", false, 10, 1000);
        t.observe_node("c", true, 10, 1000);
        t.update(10, 1000, 10, 1000, None);
        assert_eq!(t.fleet_prior(false), None);
        // The plain conditional binomial sum is then in force.
        assert_eq!(t.llr, t.cross_llr);
        t.observe_node("b1", false, 10, 1000);
        t.recompute();
        let (shape, rate) = t.fleet_prior(false).unwrap();
        assert!(
            shape > 0.0 && (shape / rate - 0.01).abs() < 1e-12,
            "{shape} {rate}"
        );
    }

    #[test]
    fn chi2_quantiles_match_the_tables() {
        // R: qchisq(0.05, df).
        for (df, q) in [
            (1, 0.003932),
            (2, 0.102587),
            (6, 1.635383),
            (8, 2.732637),
            (30, 18.49266),
        ] {
            let got = chi2_lower_05(df);
            assert!((got - q).abs() / q < 0.01, "df {df}: {got} vs {q}");
        }
    }

    #[test]
    fn inconsistent_counts_do_not_panic() {
        let mut t = RateTest::new(0.0, 0.5, 0.01, 0.05);
        t.update(u64::MAX, 0, u64::MAX, 0, Some(1.0));
        t.update(5, 0, 0, 0, None);
        assert!(t.llr.is_finite());
    }
}
