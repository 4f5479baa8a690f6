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
    /// `ok`, `improved`, `regressed`, `new`, `missing`, `unit_changed`, `unknown_direction`.
    pub status: String,
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
        }
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
