//! HTTPS on fleetgate's own listeners (issue 15), through the real binary: `fleet ca
//! init` makes a fleet CA and a server certificate; `fleet serve` and `serve` speak TLS
//! with it; a client that trusts the fleet CA gets through, one that does not — or that
//! speaks plain HTTP — does not; plain HTTP beyond loopback is refused unless loudly
//! allowed.

mod common;
use common::{Env, bin, code, text};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Starts `args` and returns the child and the `https://ADDR` it announced on stderr.
fn spawn_announcing(env: &Env, args: &[&str], prefix: &str) -> (Killed, String) {
    // Killed (and reaped) however this test ends.
    let mut child = Killed(
        env.command(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{args:?} did not announce its address"));
        if let Some(rest) = line.split(prefix).nth(1) {
            let addr = rest.split('/').next().unwrap().to_owned();
            return (child, addr);
        }
    }
}

fn client(ca: Option<&std::path::Path>) -> reqwest::Client {
    let mut b = reqwest::Client::builder().no_proxy();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).unwrap();
        b = b.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap());
    }
    b.build().unwrap()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_fleet_ca_serves_https_and_plain_http_beyond_loopback_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let pki = env.dir.path().join("tls");
    let pki_s = pki.to_str().unwrap();
    let out = Command::new(bin())
        .args([
            "fleet",
            "ca",
            "init",
            "--out-dir",
            pki_s,
            "--host",
            "localhost",
        ])
        .args(["--host", "127.0.0.1", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let written: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        written["hosts"],
        serde_json::json!(["localhost", "127.0.0.1"])
    );
    for (name, mode) in [
        ("ca.pem", 0o644),
        ("ca.key", 0o600),
        ("server.pem", 0o644),
        ("server.key", 0o600),
    ] {
        let meta = std::fs::metadata(pki.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
    }
    // `ca issue`: another certificate from the same CA (for an agent); needs the CA's key.
    let node_dir = env.dir.path().join("node-tls");
    let out = Command::new(bin())
        .args([
            "fleet",
            "ca",
            "issue",
            "--ca-dir",
            pki_s,
            "--host",
            "127.0.0.1",
        ])
        .args(["--out-dir", node_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let meta = std::fs::metadata(node_dir.join("server.key")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let out = Command::new(bin())
        .args([
            "fleet",
            "ca",
            "issue",
            "--ca-dir",
            env.dir.path().to_str().unwrap(),
        ])
        .args([
            "--host",
            "x",
            "--out-dir",
            node_dir.join("b").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("ca.key"), "{}", text(&out));
    // Never overwritten by accident: nodes trust the CA that is there.
    let again = Command::new(bin())
        .args(["fleet", "ca", "init", "--out-dir", pki_s])
        .output()
        .unwrap();
    assert_eq!(code(&again), 1, "{}", text(&again));
    assert!(
        text(&again).contains("exists: nothing was written"),
        "{}",
        text(&again)
    );

    let cert = pki.join("server.pem");
    let key = pki.join("server.key");
    let ca = pki.join("ca.pem");
    let (child, addr) = spawn_announcing(
        &env,
        &[
            "fleet",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        "fleet endpoints on https://",
    );
    let _fleet = child;
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Trusting the fleet CA: through, by IP and by name.
        for host in ["127.0.0.1", "localhost"] {
            let url = format!("https://{host}:{port}/api/fleet/peers");
            let r = client(Some(&ca))
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{url}: {e:?}"));
            assert_eq!(r.status(), 200, "{url}");
            let peers: serde_json::Value = r.json().await.unwrap();
            assert!(peers.is_array() || peers.is_object(), "{peers}");
        }
        // The probes and the metrics of `fleet serve` (heartbeats, peers).
        let base = format!("https://127.0.0.1:{port}");
        let c = client(Some(&ca));
        let r = c.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = c.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let metrics = c
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("fleetgate_heartbeats_accepted_total 0"),
            "{metrics}"
        );
        assert!(
            metrics.contains("# TYPE fleetgate_fleet_peers gauge"),
            "{metrics}"
        );
        // The system roots do not know the fleet CA: refused in the handshake.
        let err = client(None)
            .get(format!("https://127.0.0.1:{port}/api/fleet/peers"))
            .send()
            .await
            .expect_err("an unknown issuer is refused");
        assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
        // Plain HTTP to the TLS port gets no answer of the API.
        let plain = client(None)
            .get(format!("http://127.0.0.1:{port}/api/fleet/peers"))
            .send()
            .await;
        assert!(
            plain.as_ref().map_or(true, |r| r.status() != 200),
            "{plain:?}"
        );
        // …and a handshake that never completes does not stall the others.
        let idle = tokio::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap()))
            .await
            .unwrap();
        let r = client(Some(&ca))
            .get(format!("https://127.0.0.1:{port}/api/fleet/peers"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        drop(idle);
    });

    // Plain HTTP beyond loopback: refused, naming the way out; allowed only loudly.
    let out = env.fg(&["fleet", "serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("refusing plain HTTP"), "{}", text(&out));
    assert!(text(&out).contains("--tls-cert"), "{}", text(&out));
    let token = env.dir.path().join("api.token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    let out = env.fg(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--token-file",
        token.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("refusing plain HTTP"), "{}", text(&out));
    // A key that does not match the certificate is named before anything listens.
    let other = env.dir.path().join("other");
    let out = Command::new(bin())
        .args(["fleet", "ca", "init", "--out-dir", other.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    // `ca issue` with a key that does not belong to ca.pem: refused, nothing written (a
    // certificate the nodes would reject is never handed out).
    let mixed = env.dir.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(pki.join("ca.key"), mixed.join("ca.key")).unwrap();
    std::fs::copy(other.join("ca.pem"), mixed.join("ca.pem")).unwrap();
    let refused_dir = env.dir.path().join("refused");
    let out = Command::new(bin())
        .args(["fleet", "ca", "issue", "--ca-dir", mixed.to_str().unwrap()])
        .args([
            "--host",
            "127.0.0.1",
            "--out-dir",
            refused_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("not a fleet CA made by `fleetgate fleet ca init`")
            && text(&out).contains("does not verify"),
        "{}",
        text(&out)
    );
    assert!(!refused_dir.exists(), "nothing written");
    let out = env.fg(&[
        "fleet",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        other.join("server.key").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("TLS certificate"), "{}", text(&out));

    // The API server speaks HTTPS the same way.
    let (child, addr) = spawn_announcing(
        &env,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            token.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        "fleetgate API on https://",
    );
    let _api = child;
    rt.block_on(async {
        let r = client(Some(&ca))
            .get(format!("https://{addr}/api/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });
}
