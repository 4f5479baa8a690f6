//! Canonical JSON: `parse_strict` (every verifier's parser) and `to_canonical_bytes`
//! (the bytes every signature covers). Checks: the canonical form is ASCII, parses back
//! to the same value, and is a fixed point.
#![no_main]

use fleetgate_trust::{parse_strict, to_canonical_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = parse_strict(data) else {
        return;
    };
    let Ok(canonical) = to_canonical_bytes(&value) else {
        return;
    };
    assert!(canonical.is_ascii(), "canonical JSON must be ASCII");
    let back = parse_strict(&canonical).expect("canonical JSON parses");
    assert_eq!(back, value, "canonical JSON changed the value");
    let twice = to_canonical_bytes(&back).expect("canonical JSON canonicalises");
    assert_eq!(twice, canonical, "canonical JSON is not a fixed point");
});
