//! Benchmark snapshots (github-action-benchmark format) and their comparison.
//!
//! A snapshot is the JSON array github-action-benchmark reads:
//! `[{"name": "...", "unit": "...", "value": 1.5}]`. fleetgate adds an optional
//! `"direction": "bigger_is_better" | "smaller_is_better"` per entry; otherwise the
//! direction comes from the config's per-unit table, then from well-known units. A
//! benchmark whose direction cannot be told fails the gate (it is never guessed).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Throughput-like: higher is better.
    BiggerIsBetter,
    /// Latency/size-like: lower is better.
    SmallerIsBetter,
}

/// One benchmark result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BenchEntry {
    /// Benchmark name (unique in a snapshot).
    pub name: String,
    /// Unit, e.g. `ns/iter`, `ops/s`.
    pub unit: String,
    /// Measured value.
    pub value: f64,
    /// Optional explicit direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Optional range text (github-action-benchmark's `range`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// Optional extra text (github-action-benchmark's `extra`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<String>,
    /// Every repeat's value when the benchmark ran more than once
    /// (`[stages.benchmark] repeats`); `value` is then their median.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<Vec<f64>>,
}

/// Why a results file was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BenchError {
    /// Not the expected JSON shape.
    #[error(
        "benchmark results are not in github-action-benchmark format ([{{\"name\",\"unit\",\"value\"}}]): {0}"
    )]
    Format(String),
    /// Empty array.
    #[error("benchmark results contain no benchmark")]
    Empty,
    /// Same name twice.
    #[error("benchmark {0:?} appears more than once in the results")]
    Duplicate(String),
    /// NaN, infinite or negative.
    #[error("the benchmark's repeats disagree: {0}")]
    Repeats(String),
    #[error("benchmark {name:?} has value {value}, which is not a finite non-negative number")]
    BadValue {
        /// Benchmark.
        name: String,
        /// Value.
        value: f64,
    },
}

/// Parse and check a results file's contents.
pub fn parse_results(json: &str) -> Result<Vec<BenchEntry>, BenchError> {
    let entries: Vec<BenchEntry> =
        serde_json::from_str(json).map_err(|e| BenchError::Format(e.to_string()))?;
    if entries.is_empty() {
        return Err(BenchError::Empty);
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in &entries {
        if !seen.insert(e.name.as_str()) {
            return Err(BenchError::Duplicate(e.name.clone()));
        }
        if !e.value.is_finite() || e.value < 0.0 {
            return Err(BenchError::BadValue {
                name: e.name.clone(),
                value: e.value,
            });
        }
    }
    Ok(entries)
}

/// How to compare.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ComparePolicy {
    /// Default relative tolerance (0.05 = 5%).
    pub tolerance: f64,
    /// Per-benchmark tolerance overrides.
    pub tolerances: BTreeMap<String, f64>,
    /// Per-unit directions.
    pub directions: BTreeMap<String, Direction>,
}

/// The direction of well-known units.
pub fn known_unit_direction(unit: &str) -> Option<Direction> {
    let u = unit.trim().to_ascii_lowercase();
    let bigger = [
        "ops/s",
        "ops/sec",
        "req/s",
        "requests/s",
        "msg/s",
        "items/s",
        "b/s",
        "kb/s",
        "mb/s",
        "gb/s",
        "mib/s",
        "gib/s",
        "bytes/s",
        "iter/s",
        "tps",
        "qps",
        "hz",
        "%hit",
        "score",
    ];
    let smaller = [
        "ns",
        "us",
        "µs",
        "ms",
        "s",
        "ns/iter",
        "us/iter",
        "ms/iter",
        "s/iter",
        "bytes",
        "b",
        "kb",
        "mb",
        "gb",
        "kib",
        "mib",
        "gib",
        "cycles",
        "instructions",
        "allocs",
        "%err",
    ];
    if bigger.contains(&u.as_str())
        || u.ends_with("/s")
        || u.ends_with("/sec")
        || u.ends_with("per second")
    {
        Some(Direction::BiggerIsBetter)
    } else if smaller.contains(&u.as_str()) {
        Some(Direction::SmallerIsBetter)
    } else {
        None
    }
}

/// The verdict on one benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BenchComparison {
    /// Benchmark name.
    pub name: String,
    /// Unit.
    pub unit: String,
    /// Baseline value (absent for a new benchmark).
    pub baseline: Option<f64>,
    /// New value (absent when the benchmark disappeared).
    pub current: Option<f64>,
    /// Relative change (current/baseline − 1).
    pub change: Option<f64>,
    /// Tolerance applied.
    pub tolerance: f64,
    /// Direction applied.
    pub direction: Option<Direction>,
    /// `ok`, `improved`, `regressed`, `within_noise` (beyond the tolerance, but the
    /// repeats overlap: not a failure), `new`, `missing`, `unit_changed`,
    /// `unknown_direction`.
    pub status: String,
    /// Lowest and highest baseline repeat, when the baseline ran more than once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_range: Option<[f64; 2]>,
    /// Lowest and highest repeat of the new version, when it ran more than once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_range: Option<[f64; 2]>,
}

/// The lowest and highest of an entry's repeats (two or more), else `None`.
fn range_of(e: &BenchEntry) -> Option<[f64; 2]> {
    let s = e.samples.as_deref().filter(|s| s.len() >= 2)?;
    let lo = s.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some([lo, hi])
}

/// The median of non-empty `v`.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Combines the results of repeated runs of one benchmark command: per benchmark the
/// median of the repeats as `value`, every repeat's value in `samples`. Every run must
/// report the same benchmarks in the same units (a benchmark that appears in some runs
/// only is an error naming it).
pub fn combine_repeats(runs: &[Vec<BenchEntry>]) -> Result<Vec<BenchEntry>, BenchError> {
    let Some(first) = runs.first() else {
        return Err(BenchError::Empty);
    };
    if runs.len() == 1 {
        return Ok(first.clone());
    }
    let mut out = Vec::with_capacity(first.len());
    for e in first {
        let mut samples = Vec::with_capacity(runs.len());
        for (i, run) in runs.iter().enumerate() {
            let Some(r) = run.iter().find(|r| r.name == e.name) else {
                return Err(BenchError::Repeats(format!(
                    "benchmark {:?} is missing from repeat {} of {}",
                    e.name,
                    i + 1,
                    runs.len()
                )));
            };
            if r.unit != e.unit {
                return Err(BenchError::Repeats(format!(
                    "benchmark {:?} is in {:?} in repeat 1 and in {:?} in repeat {}",
                    e.name,
                    e.unit,
                    r.unit,
                    i + 1
                )));
            }
            samples.push(r.value);
        }
        let mut combined = e.clone();
        combined.value = median(&samples);
        combined.samples = Some(samples);
        out.push(combined);
    }
    for (i, run) in runs.iter().enumerate().skip(1) {
        if let Some(extra) = run.iter().find(|r| !first.iter().any(|e| e.name == r.name)) {
            return Err(BenchError::Repeats(format!(
                "benchmark {:?} appears in repeat {} but not in repeat 1",
                extra.name,
                i + 1
            )));
        }
    }
    Ok(out)
}

/// The comparison of a snapshot against a baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CompareReport {
    /// Every benchmark of either snapshot.
    pub benchmarks: Vec<BenchComparison>,
    /// Names that failed (regressed, missing, unit changed, unknown direction).
    pub failures: Vec<String>,
}

impl CompareReport {
    /// True when nothing failed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// One line per failing benchmark with its figures.
    pub fn failure_summary(&self) -> String {
        self.benchmarks
            .iter()
            .filter(|b| self.failures.contains(&b.name))
            .map(|b| match (b.baseline, b.current, b.change) {
                (Some(base), Some(cur), Some(ch)) => format!(
                    "{}: {} {} -> {} {} ({:+.1}%, tolerance {:.1}%, {})",
                    b.name,
                    base,
                    b.unit,
                    cur,
                    b.unit,
                    ch * 100.0,
                    b.tolerance * 100.0,
                    b.status
                ),
                _ => format!("{}: {}", b.name, b.status),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Compare `current` against `baseline`, direction-aware, within tolerance.
pub fn compare(
    baseline: &[BenchEntry],
    current: &[BenchEntry],
    policy: &ComparePolicy,
) -> CompareReport {
    let mut benchmarks = Vec::new();
    let mut failures = Vec::new();
    let cur: BTreeMap<&str, &BenchEntry> = current.iter().map(|e| (e.name.as_str(), e)).collect();
    let base: BTreeMap<&str, &BenchEntry> = baseline.iter().map(|e| (e.name.as_str(), e)).collect();
    for (name, b) in &base {
        let tolerance = policy
            .tolerances
            .get(*name)
            .copied()
            .unwrap_or(policy.tolerance);
        let Some(c) = cur.get(name) else {
            failures.push((*name).to_owned());
            benchmarks.push(BenchComparison {
                name: (*name).to_owned(),
                unit: b.unit.clone(),
                baseline: Some(b.value),
                current: None,
                change: None,
                tolerance,
                direction: None,
                status: "missing".into(),
                baseline_range: range_of(b),
                current_range: None,
            });
            continue;
        };
        let direction = c
            .direction
            .or(b.direction)
            .or_else(|| policy.directions.get(&c.unit).copied())
            .or_else(|| known_unit_direction(&c.unit));
        let change = if b.value == 0.0 {
            if c.value == 0.0 { Some(0.0) } else { None }
        } else {
            Some(c.value / b.value - 1.0)
        };
        let status = if c.unit != b.unit {
            "unit_changed"
        } else {
            match (direction, change) {
                (None, _) => "unknown_direction",
                (Some(Direction::BiggerIsBetter), Some(ch)) if ch < -tolerance => "regressed",
                (Some(Direction::SmallerIsBetter), Some(ch)) if ch > tolerance => "regressed",
                (Some(Direction::SmallerIsBetter), None) => "regressed", // 0 -> >0
                (Some(Direction::BiggerIsBetter), None) => "improved",   // 0 -> >0
                (Some(Direction::BiggerIsBetter), Some(ch)) if ch > 0.0 => "improved",
                (Some(Direction::SmallerIsBetter), Some(ch)) if ch < 0.0 => "improved",
                (Some(_), Some(_)) => "ok",
            }
        };
        let (baseline_range, current_range) = (range_of(b), range_of(c));
        // With repeats on both sides, a change beyond the tolerance fails only when every
        // new repeat is worse than every baseline repeat: under no change that happens by
        // chance with probability 1/C(m+n, n) (1 in 20 for 3 and 3), a permutation test.
        let status = match (status, direction, baseline_range, current_range) {
            ("regressed", Some(Direction::SmallerIsBetter), Some([_, b_hi]), Some([c_lo, _]))
                if c_lo <= b_hi =>
            {
                "within_noise"
            }
            ("regressed", Some(Direction::BiggerIsBetter), Some([b_lo, _]), Some([_, c_hi]))
                if c_hi >= b_lo =>
            {
                "within_noise"
            }
            (s, ..) => s,
        };
        if matches!(status, "regressed" | "unit_changed" | "unknown_direction") {
            failures.push((*name).to_owned());
        }
        benchmarks.push(BenchComparison {
            name: (*name).to_owned(),
            unit: c.unit.clone(),
            baseline: Some(b.value),
            current: Some(c.value),
            change,
            tolerance,
            direction,
            status: status.into(),
            baseline_range,
            current_range,
        });
    }
    for (name, c) in &cur {
        if !base.contains_key(name) {
            benchmarks.push(BenchComparison {
                name: (*name).to_owned(),
                unit: c.unit.clone(),
                baseline: None,
                current: Some(c.value),
                change: None,
                tolerance: policy
                    .tolerances
                    .get(*name)
                    .copied()
                    .unwrap_or(policy.tolerance),
                direction: c.direction.or_else(|| known_unit_direction(&c.unit)),
                status: "new".into(),
                baseline_range: None,
                current_range: range_of(c),
            });
        }
    }
    CompareReport {
        benchmarks,
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, unit: &str, value: f64) -> BenchEntry {
        BenchEntry {
            name: name.into(),
            unit: unit.into(),
            value,
            direction: None,
            range: None,
            extra: None,
            samples: None,
        }
    }

    fn runs(name: &str, unit: &str, values: &[f64]) -> Vec<Vec<BenchEntry>> {
        values.iter().map(|v| vec![e(name, unit, *v)]).collect()
    }

    #[test]
    fn repeats_combine_to_the_median_with_their_samples() {
        let c = combine_repeats(&runs("lat", "ms", &[12.0, 10.0, 30.0])).unwrap();
        assert_eq!(c[0].value, 12.0);
        assert_eq!(c[0].samples.as_deref(), Some(&[12.0, 10.0, 30.0][..]));
        let c = combine_repeats(&runs("lat", "ms", &[1.0, 2.0, 3.0, 10.0])).unwrap();
        assert_eq!(c[0].value, 2.5);
        // One run: as it was, no samples.
        let c = combine_repeats(&runs("lat", "ms", &[7.0])).unwrap();
        assert_eq!((c[0].value, c[0].samples.clone()), (7.0, None));
        // Repeats that disagree on what they measure are named.
        let mut r = runs("lat", "ms", &[1.0, 2.0]);
        r[1][0].unit = "s".into();
        let err = combine_repeats(&r).unwrap_err().to_string();
        assert!(err.contains("\"lat\"") && err.contains("repeat 2"), "{err}");
        let mut r = runs("lat", "ms", &[1.0, 2.0]);
        r[1][0].name = "other".into();
        let err = combine_repeats(&r).unwrap_err().to_string();
        assert!(err.contains("missing from repeat 2"), "{err}");
        let mut r = runs("lat", "ms", &[1.0, 2.0]);
        r[1].push(e("extra", "ms", 1.0));
        let err = combine_repeats(&r).unwrap_err().to_string();
        assert!(err.contains("\"extra\" appears in repeat 2"), "{err}");
    }

    #[test]
    fn a_change_the_repeats_overlap_is_noise_and_a_clean_shift_is_a_regression() {
        // Unchanged code, noisy: medians 8.5% apart, but the repeats overlap.
        let base = combine_repeats(&runs("lat", "ms", &[100.0, 108.0, 95.0])).unwrap();
        let noisy = combine_repeats(&runs("lat", "ms", &[108.5, 97.0, 112.0])).unwrap();
        let r = compare(&base, &noisy, &policy());
        assert!(r.passed(), "{r:?}");
        assert_eq!(r.benchmarks[0].status, "within_noise");
        assert_eq!(r.benchmarks[0].baseline_range, Some([95.0, 108.0]));
        assert_eq!(r.benchmarks[0].current_range, Some([97.0, 112.0]));
        // Every new repeat slower than every old one, beyond the tolerance: regressed.
        let slow = combine_repeats(&runs("lat", "ms", &[120.0, 118.0, 125.0])).unwrap();
        let r = compare(&base, &slow, &policy());
        assert_eq!(r.failures, ["lat"], "{r:?}");
        // Bigger is better, the same rule mirrored.
        let base = combine_repeats(&runs("tput", "ops/s", &[1000.0, 950.0, 1040.0])).unwrap();
        let noisy = combine_repeats(&runs("tput", "ops/s", &[900.0, 960.0, 880.0])).unwrap();
        assert!(compare(&base, &noisy, &policy()).passed());
        let low = combine_repeats(&runs("tput", "ops/s", &[900.0, 920.0, 880.0])).unwrap();
        assert_eq!(compare(&base, &low, &policy()).failures, ["tput"]);
        // A single-shot baseline (an older snapshot): the tolerance alone decides.
        let old = vec![e("lat", "ms", 100.0)];
        let r = compare(&old, &noisy_lat(), &policy());
        assert_eq!(r.failures, ["lat"], "{r:?}");
    }

    fn noisy_lat() -> Vec<BenchEntry> {
        combine_repeats(&runs("lat", "ms", &[108.5, 97.0, 112.0])).unwrap()
    }

    fn policy() -> ComparePolicy {
        ComparePolicy {
            tolerance: 0.05,
            ..Default::default()
        }
    }

    #[test]
    fn direction_aware_within_tolerance() {
        let base = [e("lat", "ns/iter", 100.0), e("tput", "ops/s", 1000.0)];
        // 4% slower latency and 4% lower throughput: inside 5%.
        let ok = compare(
            &base,
            &[e("lat", "ns/iter", 104.0), e("tput", "ops/s", 960.0)],
            &policy(),
        );
        assert!(ok.passed(), "{ok:?}");
        // 6% slower latency: regression.
        let bad = compare(
            &base,
            &[e("lat", "ns/iter", 106.0), e("tput", "ops/s", 2000.0)],
            &policy(),
        );
        assert_eq!(bad.failures, ["lat"]);
        assert!(
            bad.failure_summary()
                .contains("lat: 100 ns/iter -> 106 ns/iter (+6.0%"),
            "{}",
            bad.failure_summary()
        );
        // 6% lower throughput: regression; faster latency is an improvement.
        let bad = compare(
            &base,
            &[e("lat", "ns/iter", 50.0), e("tput", "ops/s", 940.0)],
            &policy(),
        );
        assert_eq!(bad.failures, ["tput"]);
        assert_eq!(bad.benchmarks[0].status, "improved");
    }

    #[test]
    fn missing_unknown_and_unit_changes_fail_closed() {
        let base = [e("a", "ns", 1.0), e("b", "widgets", 1.0), e("c", "ms", 1.0)];
        let r = compare(
            &base,
            &[e("b", "widgets", 1.0), e("c", "s", 1.0), e("d", "ns", 5.0)],
            &policy(),
        );
        assert_eq!(r.failures, ["a", "b", "c"]);
        assert!(
            r.benchmarks
                .iter()
                .any(|b| b.name == "d" && b.status == "new")
        );
        let mut p = policy();
        p.directions
            .insert("widgets".into(), Direction::BiggerIsBetter);
        p.tolerances.insert("a".into(), 1.0);
        let r = compare(&base[1..2], &[e("b", "widgets", 1.0)], &p);
        assert!(r.passed());
    }

    #[test]
    fn parse_rejects_bad_files() {
        assert!(parse_results(r#"[{"name":"x","unit":"ns","value":1}]"#).is_ok());
        assert_eq!(parse_results("[]"), Err(BenchError::Empty));
        assert!(matches!(parse_results("{}"), Err(BenchError::Format(_))));
        assert!(matches!(
            parse_results(
                r#"[{"name":"x","unit":"ns","value":1},{"name":"x","unit":"ns","value":2}]"#
            ),
            Err(BenchError::Duplicate(_))
        ));
        assert!(matches!(
            parse_results(r#"[{"name":"x","unit":"ns","value":-1}]"#),
            Err(BenchError::BadValue { .. })
        ));
    }
}
