//! Two orchestrators on one PostgreSQL registry: only the lease holder advances the fleet
//! stages; the other is refused (and changes nothing) until the lease expires, then takes
//! over with a higher fencing epoch and the first one is fenced out.

mod common;
use common::{Env, code, history, text};

fn pg_schema() -> Option<String> {
    common::pg_schema("the two-orchestrator test needs it")
}

fn on_pg(env: &Env, url: &str) {
    let p = env.config();
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str(&format!(
        "\n[fleet]\ndatabase_url = {url:?}\nlease_ttl_secs = 10\n"
    ));
    std::fs::write(p, text).unwrap();
}

/// Advance one gate at a time until the run waits at SIGN (BUILD…BENCHMARK need no lease).
fn walk_to_signing(env: &Env) {
    while env.status()["stage"] != "signing" {
        let out = env.fg(&["advance"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        let stage = env.status()["stage"].clone();
        assert!(
            stage
                .as_str()
                .is_some_and(|s| s != "rolled_back" && s != "failed"),
            "{stage}: {}",
            text(&out)
        );
    }
}

#[test]
fn only_the_lease_holder_advances_and_a_takeover_fences_the_old_leader_out() {
    let Some(url) = pg_schema() else { return };
    let a = Env::new();
    let b = Env::new();
    on_pg(&a, &url);
    on_pg(&b, &url);

    // B walks BUILD…BENCHMARK first (no lease needed there), so that its SIGN comes right
    // after A's run however slow the machine is: the lease is still A's then.
    assert_eq!(code(&b.fg(&["start", "v1.0.0"])), 0);
    walk_to_signing(&b);

    // A signs first and takes the lease (the empty fleet then fails its canary).
    assert_eq!(code(&a.fg(&["start", "v1.0.0"])), 0);
    let out = a.fg(&["run"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        a.status()["failure_detail"]
            .as_str()
            .unwrap()
            .contains("no fleet")
    );

    // B is refused at SIGN (only the lease holder signs for the fleet): exit 5, its run
    // untouched at `signing`.
    let out = b.fg(&["run"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(
        text(&out).contains("another orchestrator holds the pipeline lease"),
        "{}",
        text(&out)
    );
    let s = b.status();
    assert_eq!(s["stage"], "signing");
    assert!(
        s["gate_results"].get("signing").is_none(),
        "the refused orchestrator recorded nothing"
    );

    // A's next run walks to SIGN now, so that its SIGN comes right after B's takeover.
    assert_eq!(code(&a.fg(&["start", "v1.0.0"])), 0);
    walk_to_signing(&a);

    // After the lease expires, B takes over (epoch 2) and advances.
    // Until then each attempt is refused the same way and records nothing.
    let t = std::time::Instant::now();
    let out = loop {
        let out = b.fg(&["run"]);
        if code(&out) != 5 {
            break out;
        }
        assert!(
            text(&out).contains("another orchestrator holds the pipeline lease"),
            "{}",
            text(&out)
        );
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "B is still refused {:?} later: {}",
            t.elapsed(),
            text(&out)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert_eq!(
        history(&b.status()).last().map(String::as_str),
        Some("rolled_back")
    );

    // A is now fenced out (its next run was walked to SIGN while B waited).
    let out = a.fg(&["run"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(text(&out).contains("epoch 2"), "{}", text(&out));
    assert_eq!(a.status()["stage"], "signing");
    // The manifest B signed carries its fencing epoch.
    assert_eq!(b.status()["manifest"]["fencing_epoch"], 2);
}
