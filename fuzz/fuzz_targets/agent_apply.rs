//! The body of the agent's `POST /apply` (release manifests and rollback orders; gossip
//! deliveries are the same bytes): `check_apply_body`, what `Agent::apply` runs first,
//! then the apply machine's first step on what it asks for, from an idle node and from
//! one that runs a release.
//!
//! The body is tried as sent, then re-signed by the trusted key (when the product's
//! signer accepts it), so the fuzzer reaches what comes after the signature check.
//! Checks: a verified manifest is never an event the machine calls invalid.
#![no_main]

use fleetgate_agent::check_apply_body;
use fleetgate_agent::machine::{self, Event, Installed, Journal, Policy};
use fleetgate_fuzz::{NOW, keyring, trust_key};
use fleetgate_trust::{VerifyOptions, parse_strict, sign_manifest_value};
use libfuzzer_sys::fuzz_target;

fn journals() -> [Journal; 2] {
    let running = Journal {
        current: Some(Installed {
            version: "v1.4.0".into(),
            code_hash: "c".repeat(64),
            git_sha: "a".repeat(40),
            sequence: 4,
            slot: "v1.4.0-4".into(),
            hash_scheme: Default::default(),
        }),
        ..Journal::default()
    };
    [Journal::default(), running]
}

fn drive(body: &[u8]) {
    let Ok((_, target)) = check_apply_body(body, &keyring(), NOW, &VerifyOptions::default()) else {
        return;
    };
    for journal in journals() {
        let _ = machine::already_applied(&journal, &target, NOW);
        for (has_install, backup, previous_slot_present) in
            [(false, false, false), (true, true, true)]
        {
            let event = Event::Verified {
                target: target.clone(),
                previous_slot_present,
            };
            let policy = Policy {
                has_install,
                backup,
            };
            if let Err(e) = machine::step(&policy, &journal, event, NOW) {
                panic!("a verified manifest was an invalid event: {e}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    drive(data);
    if let Ok(value) = parse_strict(data)
        && let Ok(signed) = sign_manifest_value(&value, &[&trust_key()])
    {
        drive(&signed);
    }
});
