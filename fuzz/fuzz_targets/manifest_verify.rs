//! Manifest verification (`fleetgate_trust::verify_manifest`, the HART single-key
//! `verify_with_pubkey`, the detached form with a co-signature file), and signing: any
//! JSON object the product's signer accepts must verify (canonical form, rendering and
//! parsing agree).
//!
//! Input: a manifest (or bundle); a NUL byte, when present, separates a co-signature
//! file after it.
#![no_main]

use fleetgate_fuzz::{NOW, keyring, trust_key};
use fleetgate_trust::{
    VerifyError, VerifyOptions, parse_strict, sign_manifest_value, verify_manifest,
    verify_manifest_detached, verify_with_pubkey,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ring = keyring();
    let key = trust_key();
    let plain = VerifyOptions::default();
    let strict = VerifyOptions {
        floor: Some(3),
        last_verified_at: Some(NOW + 10),
        allow_legacy_hart: false,
    };
    let _ = verify_manifest(data, &ring, NOW, &plain);
    let _ = verify_manifest(data, &ring, NOW, &strict);
    let _ = verify_with_pubkey(data, &key.public_key_hex(), NOW);
    if let Some(at) = data.iter().position(|b| *b == 0) {
        let (manifest, cosig) = (&data[..at], &data[at + 1..]);
        let _ = verify_manifest_detached(manifest, Some(cosig), &ring, NOW, &plain);
    }

    // What the product signs, it must accept.
    let Ok(value) = parse_strict(data) else {
        return;
    };
    let Ok(signed) = sign_manifest_value(&value, &[&key]) else {
        return;
    };
    match verify_manifest(&signed, &ring, NOW, &plain) {
        Ok(v) => {
            let again = verify_with_pubkey(&signed, &key.public_key_hex(), NOW);
            assert!(
                again.is_ok(),
                "verify_with_pubkey refused what verify_manifest accepted ({:?}): {again:?}",
                v.manifest.version
            );
        }
        Err(
            VerifyError::Expired { .. }
            | VerifyError::NotYetValid { .. }
            | VerifyError::TooLarge { .. },
        ) => {}
        Err(e) => panic!(
            "the product signed a manifest it then refuses: {e}\n{}",
            String::from_utf8_lossy(&signed)
        ),
    }
});
