//! The sequential test behind the exception-rate criterion.
//!
//! Model: in one sampling interval the canary nodes serve `n_c` requests and raise
//! `e_c` exceptions, the baseline (non-canary) nodes `n_b` and `e_b`; exceptions are
//! Poisson with rates `λ_c·n_c` and `λ_b·n_b`. Conditional on the total `e = e_c + e_b`,
//! `e_c ~ Binomial(e, p)` with `p = r·n_c / (r·n_c + n_b)` and `r = λ_c / λ_b` — the
//! baseline's rate (which drifts with traffic) cancels out, the exposures (requests)
//! weight the comparison.
//!
//! Hypotheses: H0: `r = 1` (r ≤ 1 is only easier) against H1: `r = 1 + δ`, with
//! `δ = max_exception_rate_increase`. Each interval adds the log likelihood ratio
//! `e_c·ln(p1/p0) + e_b·ln((1−p1)/(1−p0))` to a running sum `S` (Wald's SPRT).
//!
//! * `S ≥ ln(1/α)` → **fail**. Under H0, `exp(S)` is a non-negative martingale whatever
//!   the exposures of each interval, so by Ville's inequality
//!   `P(S ever reaches ln(1/α)) ≤ α` — looking at every sample, for as long as the window
//!   lasts (extensions included), does not inflate the false alarm rate. (Wald's
//!   textbook boundary `ln((1−β)/α)` is 0.05 lower; we use the bound that is exact.)
//! * `S ≤ ln(β/(1−α))` → the data are enough to say the canary is not `1+δ` times
//!   worse (power `1−β`); the criterion counts as passed. Sampling continues, so a
//!   canary that degrades later in the window can still cross the upper boundary.
//! * in between → not enough data yet; at the end of the window this is "insufficient
//!   data", except when the canary raised no exception at all in at least
//!   `min_canary_requests` requests.
//!
//! An interval without baseline traffic uses, when configured, a fixed reference rate
//! `λ0 = baseline_exception_rate` and the one-sample Poisson SPRT increment
//! `e_c·ln(1+δ) − δ·λ0·n_c` (same boundaries, same guarantee). Without it the interval
//! carries no information.
//!
//! Assumptions: within an interval the baseline nodes share one rate (strongly
//! over-dispersed baselines — one baseline node far noisier than the rest — make the
//! test more eager to fail; that errs on the side of rolling back).

use serde::{Deserialize, Serialize};

/// State of the exception-rate SPRT; serialisable so a restarted orchestrator resumes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateTest {
    /// δ: the relative increase H1 stands for.
    pub delta: f64,
    /// Upper (fail) boundary, `ln(1/α)`.
    pub upper: f64,
    /// Lower (accept) boundary, `ln(β/(1−α))`.
    pub lower: f64,
    /// Running log likelihood ratio `S`.
    pub llr: f64,
    /// Highest `S` seen.
    pub max_llr: f64,
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
    /// `S` reached the upper boundary: the canary's rate is above `(1+δ)` × baseline.
    Fail,
    /// `S` is at or below the lower boundary.
    Accept,
    /// Neither boundary reached.
    Continue,
}

impl RateTest {
    /// A fresh test for `delta`, `alpha`, `beta` (validated by the caller).
    pub fn new(delta: f64, alpha: f64, beta: f64) -> Self {
        Self {
            delta,
            upper: (1.0 / alpha).ln(),
            lower: (beta / (1.0 - alpha)).ln(),
            llr: 0.0,
            max_llr: 0.0,
            canary_exceptions: 0,
            canary_requests: 0,
            baseline_exceptions: 0,
            baseline_requests: 0,
            informative_intervals: 0,
            reference_intervals: 0,
        }
    }

    /// Adds one interval's counts. Counts where exceptions exceed requests are treated
    /// as if every request had failed (requests are raised to the exception count).
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
        if nc == 0 {
            return;
        }
        let inc = if nb == 0 {
            match reference_rate {
                Some(l0) if l0 > 0.0 => {
                    self.reference_intervals += 1;
                    ec as f64 * (1.0 + self.delta).ln() - self.delta * l0 * nc as f64
                }
                _ => return,
            }
        } else {
            if ec.saturating_add(eb) == 0 {
                // No exception anywhere: the conditional test has nothing to condition on.
                return;
            }
            let (ncf, nbf) = (nc as f64, nb as f64);
            let p0 = ncf / (ncf + nbf);
            let p1 = (1.0 + self.delta) * ncf / ((1.0 + self.delta) * ncf + nbf);
            ec as f64 * (p1 / p0).ln() + eb as f64 * ((1.0 - p1) / (1.0 - p0)).ln()
        };
        self.informative_intervals += 1;
        self.llr += inc;
        if self.llr > self.max_llr {
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

    /// Expected number of further canary requests before `S` reaches the accept
    /// boundary, if the exception rates and the baseline/canary traffic ratio stay as
    /// observed so far: `(S − lower) / −d`, where `d` is the expected increment of `S`
    /// per canary request,
    /// `d = λc·ln(p1/p0) + λb·ρ·ln((1−p1)/(1−p0))` with `ρ = n_b/n_c`,
    /// `p0 = 1/(1+ρ)`, `p1 = (1+δ)/(1+δ+ρ)`, and `λc`, `λb` the observed rates (against
    /// the reference rate `λ0` without baseline traffic: `d = λc·ln(1+δ) − δ·λ0`).
    ///
    /// `Some(0)` when `S` is already at or below the boundary; `None` when the canary
    /// served nothing yet, when nothing can inform the test (no exception anywhere, or no
    /// baseline traffic and no reference rate), or when `d ≥ 0` (at the observed rates
    /// the test drifts towards failing, not passing).
    pub fn requests_to_accept(&self, reference_rate: Option<f64>) -> Option<u64> {
        if self.llr <= self.lower {
            return Some(0);
        }
        if self.canary_requests == 0 {
            return None;
        }
        let nc = self.canary_requests as f64;
        let lc = self.canary_exceptions as f64 / nc;
        let drift = if self.baseline_requests == 0 {
            match reference_rate {
                Some(l0) if l0 > 0.0 && l0.is_finite() => {
                    lc * (1.0 + self.delta).ln() - self.delta * l0
                }
                _ => return None,
            }
        } else {
            let nb = self.baseline_requests as f64;
            let lb = self.baseline_exceptions as f64 / nb;
            let rho = nb / nc;
            let p0 = 1.0 / (1.0 + rho);
            let p1 = (1.0 + self.delta) / (1.0 + self.delta + rho);
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
        let t = RateTest::new(0.5, 0.01, 0.05);
        assert!((t.upper - 100f64.ln()).abs() < 1e-12);
        assert!((t.lower - (0.05f64 / 0.99).ln()).abs() < 1e-12);
    }

    #[test]
    fn equal_rates_drift_down_and_doubled_rate_fails() {
        let mut same = RateTest::new(0.5, 0.01, 0.05);
        let mut double = RateTest::new(0.5, 0.01, 0.05);
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
        let mut t = RateTest::new(0.5, 0.01, 0.05);
        t.update(2, 100, 1, 900, None);
        assert_eq!(t.decision(), RateDecision::Continue);
    }

    #[test]
    fn no_baseline_uses_the_reference_rate_only_when_configured() {
        let mut t = RateTest::new(0.5, 0.01, 0.05);
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
        let mut t = RateTest::new(0.5, 0.01, 0.05);
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
        let mut t = RateTest::new(0.5, 0.01, 0.05);
        assert_eq!(t.requests_to_accept(None), None, "no canary traffic");
        t.update(0, 100, 0, 900, None);
        assert_eq!(t.requests_to_accept(None), None, "no exception anywhere");
        // Canary at 2× the baseline: the test drifts towards failing.
        let mut bad = RateTest::new(0.5, 0.01, 0.05);
        bad.update(2, 100, 9, 900, None);
        assert_eq!(bad.requests_to_accept(None), None, "{bad:?}");
        // No baseline: only with a reference rate.
        let mut alone = RateTest::new(0.5, 0.01, 0.05);
        alone.update(1, 100, 0, 0, Some(0.01));
        assert_eq!(alone.requests_to_accept(None), None);
        assert!(alone.requests_to_accept(Some(0.01)).is_some());
    }

    #[test]
    fn inconsistent_counts_do_not_panic() {
        let mut t = RateTest::new(0.5, 0.01, 0.05);
        t.update(u64::MAX, 0, u64::MAX, 0, Some(1.0));
        t.update(5, 0, 0, 0, None);
        assert!(t.llr.is_finite());
    }
}
