//! Enrollment certificates (`fleetgate_fleet::verify_cert`, what `Registry::enroll`
//! runs), as given and re-signed by the trusted key. Checks: a certificate that verifies
//! can be issued again from its fields, and that one verifies to the same fields.
#![no_main]

use fleetgate_fleet::{issue_cert, verify_cert};
use fleetgate_fuzz::{NOW, keyring, trust_key};
use fleetgate_trust::{parse_strict, sign_document};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let ring = keyring();
    let Ok(fields) = verify_cert(bytes, &ring, NOW) else {
        return;
    };
    let again = issue_cert(&fields, &[&trust_key()]).expect("re-issue a verified certificate");
    assert_eq!(
        verify_cert(&again, &ring, NOW).expect("a re-issued certificate verifies"),
        fields
    );
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Ok(value) = parse_strict(data)
        && let Ok(signed) = sign_document(&value, &[&trust_key()])
    {
        check(&signed);
    }
});
