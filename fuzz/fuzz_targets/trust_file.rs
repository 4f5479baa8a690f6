//! Trust files (`Keyring::from_bytes`, what the orchestrator and the agent load) and
//! signed rotation (`Keyring::rotate`), with the input as given and signed by the
//! trusted key. Checks: a parsed keyring writes out to bytes that parse to it again.
#![no_main]

use fleetgate_fuzz::{NOW, keyring, trust_key};
use fleetgate_trust::{Keyring, parse_strict, sign_document};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Ok(ring) = Keyring::from_bytes(bytes, "fuzz") {
        let again =
            Keyring::from_bytes(&ring.to_bytes(), "fuzz").expect("a written keyring parses");
        assert_eq!(again.to_bytes(), ring.to_bytes(), "keyring round trip");
    }
    let _ = keyring().rotate(bytes, NOW);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Ok(value) = parse_strict(data)
        && let Ok(signed) = sign_document(&value, &[&trust_key()])
    {
        check(&signed);
    }
});
