//! The TEST gate's JUnit XML report: `fleetgate_runtime::junit::parse_counts`, what
//! `read_counts` runs on the file's text.
#![no_main]

use fleetgate_runtime::junit::parse_counts;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_counts(text);
    }
});
