//! The application's health check and the counters it reports.
//!
//! **How the app reports counters.** With an HTTP health check, the app's health
//! endpoint may answer a JSON object with `exceptions_total` and `requests_total`
//! (cumulative, non-negative integers since the app started), and optionally `bench`
//! (`{"name": number}`, benchmark figures). The agent reads at most
//! [`MAX_HEALTH_BODY`] bytes, ignores other fields and any body that is not such JSON,
//! and forwards the figures in its heartbeats. A command check reports no counters.

use crate::config::HealthConfig;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Largest health response body read.
pub const MAX_HEALTH_BODY: usize = 64 * 1024;

/// One check's result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Probe {
    /// Passed.
    pub healthy: bool,
    /// Why not, when it failed.
    pub detail: String,
    /// Counters, when the app reported them.
    pub counters: Option<Counters>,
}

/// Figures the app reports through its health endpoint.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
pub struct Counters {
    /// Cumulative exceptions.
    #[serde(default)]
    pub exceptions_total: u64,
    /// Cumulative requests.
    #[serde(default)]
    pub requests_total: u64,
    /// Benchmark figures.
    #[serde(default)]
    pub bench: BTreeMap<String, f64>,
}

/// Runs the health check once. `dir` and `env` are used by a command check.
pub async fn probe(
    cfg: &HealthConfig,
    client: &reqwest::Client,
    dir: &Path,
    env: &[(String, String)],
) -> Probe {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    if let Some(url) = &cfg.http {
        return probe_http(client, url, timeout).await;
    }
    if let Some(cmd) = &cfg.command {
        return probe_command(cmd, dir, env, timeout).await;
    }
    Probe {
        healthy: false,
        detail: "no health check configured".into(),
        counters: None,
    }
}

async fn probe_http(client: &reqwest::Client, url: &str, timeout: Duration) -> Probe {
    let fail = |detail: String| Probe {
        healthy: false,
        detail,
        counters: None,
    };
    let mut resp = match client.get(url).timeout(timeout).send().await {
        Ok(r) => r,
        Err(e) => return fail(format!("GET {url}: {e}")),
    };
    let status = resp.status();
    let mut body = Vec::new();
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(timeout, resp.chunk()).await {
        if body.len() + chunk.len() > MAX_HEALTH_BODY {
            body.clear();
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let counters = serde_json::from_slice::<Counters>(&body).ok();
    if status.is_success() {
        Probe {
            healthy: true,
            detail: format!("GET {url}: {status}"),
            counters,
        }
    } else {
        Probe {
            healthy: false,
            detail: format!("GET {url}: {status}"),
            counters,
        }
    }
}

async fn probe_command(
    cmd: &str,
    dir: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> Probe {
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let child = match c.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Probe {
                healthy: false,
                detail: format!("health command {cmd:?}: {e}"),
                counters: None,
            };
        }
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Probe {
            healthy: true,
            detail: format!("health command {cmd:?} exited 0"),
            counters: None,
        },
        Ok(Ok(out)) => Probe {
            healthy: false,
            detail: format!("health command {cmd:?} exited with {}", out.status),
            counters: None,
        },
        Ok(Err(e)) => Probe {
            healthy: false,
            detail: format!("health command {cmd:?}: {e}"),
            counters: None,
        },
        Err(_) => Probe {
            healthy: false,
            detail: format!("health command {cmd:?} timed out after {timeout:?}"),
            counters: None,
        },
    }
}
