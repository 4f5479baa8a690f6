//! Benchmark results files (github-action-benchmark format) as the BENCHMARK gate and
//! `bench capture` read them: `parse_results`, then `compare` against a baseline and
//! against themselves. Checks: results whose direction is known (by unit or given)
//! compared with themselves pass (an unknown direction fails closed, by design).
#![no_main]

use fleetgate_core::bench::{
    BenchEntry, ComparePolicy, compare, known_unit_direction, parse_results,
};
use libfuzzer_sys::fuzz_target;

fn baseline() -> Vec<BenchEntry> {
    parse_results(
        r#"[{"name":"parse","unit":"ns/iter","value":1200},{"name":"rps","unit":"ops/s","value":5000.5}]"#,
    )
    .expect("the baseline parses")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(entries) = parse_results(text) else {
        return;
    };
    let policy = ComparePolicy {
        tolerance: 0.05,
        ..ComparePolicy::default()
    };
    let base = baseline();
    let _ = compare(&base, &entries, &policy);
    let _ = compare(&entries, &base, &policy);
    let same = compare(&entries, &entries, &policy);
    let directed = entries
        .iter()
        .all(|e| e.direction.is_some() || known_unit_direction(&e.unit).is_some());
    assert!(
        !directed || same.passed(),
        "results compared with themselves failed: {}",
        same.failure_summary()
    );
});
