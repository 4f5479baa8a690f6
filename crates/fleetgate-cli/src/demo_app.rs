//! `fleetgate demo-app`: the sample application the demo fleet runs on each node.
//!
//! A tiny HTTP service on 127.0.0.1 that reads `app.conf` from its working directory (the
//! node agent's slot) and simulates its own traffic: `requests_per_sec` requests per
//! second, a fraction `error_rate` of which raise an exception. `GET /health` answers
//! `{"status": "ok", "version", "requests_total", "exceptions_total"}` (503 when
//! `healthy=false` in app.conf): the counters the node agent forwards in its heartbeats.
//! `DEMO_ERROR_SCALE` in the environment (a per-node setting) multiplies `error_rate`.
//! The traffic is synthetic on purpose, so the demo needs no load generator; the counts
//! are drawn from a seeded generator, so the statistics are real draws, not constants.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Options of `fleetgate demo-app`.
#[derive(Debug, clap::Args)]
pub struct DemoAppArgs {
    /// Port on 127.0.0.1 (default: $PORT).
    #[arg(long, env = "PORT")]
    pub port: u16,
}

fn conf(key: &str) -> Option<String> {
    let text = std::fs::read_to_string("app.conf").ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(&format!("{key}="))
            .map(|v| v.trim().to_owned())
    })
}

/// Run the app until killed.
pub fn run(args: DemoAppArgs) -> anyhow::Result<std::process::ExitCode> {
    let rps: u64 = conf("requests_per_sec")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let error_rate: f64 = conf("error_rate")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.01);
    // The node's own factor (its hardware, region, tenant mix): set per node in the node
    // agent's `[env]` by `demo --node-error-spread`.
    let error_rate = match std::env::var("DEMO_ERROR_SCALE") {
        Ok(v) => match v.parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 && f <= 100.0 => error_rate * f,
            _ => anyhow::bail!("DEMO_ERROR_SCALE={v:?} is not a factor between 0 and 100"),
        },
        Err(_) => error_rate,
    };
    let healthy = conf("healthy").is_none_or(|v| v != "false");
    let version = std::env::var("FLEETGATE_VERSION").unwrap_or_else(|_| "dev".into());
    let requests = Arc::new(AtomicU64::new(0));
    let exceptions = Arc::new(AtomicU64::new(0));
    {
        let (requests, exceptions) = (requests.clone(), exceptions.clone());
        let seed = u64::from(args.port) ^ std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
        std::thread::spawn(move || {
            let mut x = seed;
            loop {
                std::thread::sleep(Duration::from_millis(100));
                let n = rps / 10;
                let mut errs = 0;
                for _ in 0..n {
                    // SplitMix64: a seeded, uniform draw per simulated request.
                    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let mut z = x;
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    z ^= z >> 31;
                    if ((z >> 11) as f64 / (1u64 << 53) as f64) < error_rate {
                        errs += 1;
                    }
                }
                requests.fetch_add(n, Ordering::Relaxed);
                exceptions.fetch_add(errs, Ordering::Relaxed);
            }
        });
    }
    let listener = TcpListener::bind(("127.0.0.1", args.port))?;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf);
        let body = serde_json::json!({
            "status": if healthy { "ok" } else { "unhealthy" },
            "version": version,
            "requests_total": requests.load(Ordering::Relaxed),
            "exceptions_total": exceptions.load(Ordering::Relaxed),
        })
        .to_string();
        let status = if healthy {
            "200 OK"
        } else {
            "503 Service Unavailable"
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
