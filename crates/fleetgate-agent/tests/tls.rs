//! Heartbeats over HTTPS to an orchestrator stand-in whose certificate a private CA signs
//! (generated here with rcgen, served by axum through fleetgate's own TLS listener on
//! 127.0.0.1): trusted with the right `tls_ca_file`, refused with a clear error under a
//! wrong one.

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use common::*;
use fleetgate_agent::heartbeat::{Heartbeat, SignedHeartbeat};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA: its PEM certificate and an issuer for leaf certificates.
fn make_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// Serves `POST /api/fleet/heartbeat` over HTTPS with a certificate for 127.0.0.1 issued
/// by `issuer`; returns the port and the received bodies.
fn serve_https(
    rt: &tokio::runtime::Runtime,
    issuer: &Issuer<'static, KeyPair>,
) -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = got.clone();
    let app = Router::new().route(
        "/api/fleet/heartbeat",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body.to_vec());
                axum::Json(serde_json::json!({"success": true}))
            }
        }),
    );
    let tcp = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
        .unwrap();
    let port = tcp.local_addr().unwrap().port();
    // The listener `fleetgate serve` and `fleetgate fleet serve` use.
    let listener = rt
        .block_on(async { fleetgate_net::tls::TlsListener::new(tcp, Arc::new(config)) })
        .unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    (port, got)
}

fn fixture(port: u16, ca_file: &Path) -> Fixture {
    Fixture::new(Opts {
        orchestrator: Some(format!("https://127.0.0.1:{port}")),
        extra: format!("tls_ca_file = {:?}\n", ca_file.display().to_string()),
        ..Opts::default()
    })
}

#[test]
fn heartbeats_reach_an_https_orchestrator_signed_by_the_configured_ca_only() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let (fleet_ca_pem, fleet_ca) = make_ca("fleet CA");
    let (other_ca_pem, _other) = make_ca("some other CA");
    let fleet_ca_file = pki.path().join("fleet-ca.pem");
    let other_ca_file = pki.path().join("other-ca.pem");
    std::fs::write(&fleet_ca_file, fleet_ca_pem).unwrap();
    std::fs::write(&other_ca_file, other_ca_pem).unwrap();
    let (port, got) = serve_https(&rt, &fleet_ca);

    // The fleet CA: signed heartbeats arrive over TLS.
    let f = fixture(port, &fleet_ca_file);
    let node = rt
        .block_on(fleetgate_agent::RunningNode::start(f.config()))
        .unwrap();
    wait_until(Duration::from_secs(20), "two heartbeats over https", || {
        got.lock().unwrap().len() >= 2
    });
    let s = status(&f);
    assert_eq!(s["heartbeats"]["consecutive_failures"], 0, "{s}");
    rt.block_on(node.shutdown()).unwrap();
    let bodies = got.lock().unwrap().clone();
    for b in &bodies {
        let env: SignedHeartbeat = serde_json::from_slice(b).expect("envelope");
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&env.signature, &mut sig).expect("hex signature");
        f.identity
            .public_key()
            .verify_strict(env.payload.as_bytes(), &sig)
            .expect("signed by the node identity key");
        let hb: Heartbeat = serde_json::from_str(&env.payload).expect("payload");
        assert_eq!(hb.node_id, "node-1");
    }
    let received = bodies.len();

    // Another CA: the handshake is refused, the error says why, nothing is delivered.
    let g = fixture(port, &other_ca_file);
    let node = rt
        .block_on(fleetgate_agent::RunningNode::start(g.config()))
        .unwrap();
    wait_until(Duration::from_secs(20), "two refused heartbeats", || {
        status(&g)["heartbeats"]["failed"].as_u64().unwrap_or(0) >= 2
    });
    let s = status(&g);
    let err = s["heartbeats"]["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("certificate") && err.contains("UnknownIssuer"),
        "the error names the certificate problem: {err}"
    );
    assert_eq!(s["heartbeats"]["sent"], 0, "{s}");
    rt.block_on(node.shutdown()).unwrap();
    assert_eq!(got.lock().unwrap().len(), received, "nothing delivered");
}

#[test]
fn an_unreadable_or_empty_ca_file_stops_the_agent_naming_the_key() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let missing = pki.path().join("missing.pem");
    let f = fixture(free_port(), &missing);
    let Err(err) = rt.block_on(fleetgate_agent::RunningNode::start(f.config())) else {
        panic!("a missing CA file is refused");
    };
    let err = err.to_string();
    assert!(
        err.contains("tls_ca_file") && err.contains("missing.pem"),
        "{err}"
    );

    let empty = pki.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let g = fixture(free_port(), &empty);
    let Err(err) = rt.block_on(fleetgate_agent::RunningNode::start(g.config())) else {
        panic!("a file without certificates is refused");
    };
    let err = err.to_string();
    assert!(
        err.contains("tls_ca_file") && err.contains("empty.pem"),
        "{err}"
    );
}

/// The agent's own endpoint over HTTPS (`tls_cert_file`/`tls_key_file`): a client that
/// trusts the fleet CA — as the orchestrator does through `[tls] ca_file` — reads
/// `/status`; plain HTTP gets no answer of the agent; a half-configured pair is refused.
#[test]
fn the_agent_serves_its_endpoint_over_https_with_the_fleet_certificate() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let (ca_pem, ca) = make_ca("fleet CA");
    let ca_file = pki.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let (cert_file, key_file) = (pki.path().join("node.pem"), pki.path().join("node.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();

    let f = Fixture::new(Opts {
        extra: format!(
            "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
            cert_file.display().to_string(),
            key_file.display().to_string()
        ),
        ..Opts::default()
    });
    let node = rt
        .block_on(fleetgate_agent::RunningNode::start(f.config()))
        .unwrap();
    let https = f.agent_url("/status").replace("http://", "https://");
    let trusted = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let status: serde_json::Value = rt.block_on(async {
        let r = trusted.get(&https).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    });
    assert_eq!(status["node_id"], "node-1", "{status}");
    assert!(
        http_get(&f.agent_url("/status")).is_none_or(|(code, _)| code != 200),
        "plain HTTP is not served on the TLS port"
    );
    rt.block_on(node.shutdown()).unwrap();

    // Half a pair: named, nothing starts.
    let g = Fixture::new(Opts {
        extra: format!("tls_cert_file = {:?}\n", cert_file.display().to_string()),
        ..Opts::default()
    });
    let err = fleetgate_agent::NodeConfig::load(&g.config_path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("tls_key_file"), "{err}");
}
