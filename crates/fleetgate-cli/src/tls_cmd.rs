//! HTTPS for `fleetgate serve` and `fleetgate fleet serve` (`--tls-cert/--tls-key`, plain
//! HTTP refused beyond loopback unless `--insecure-plain-http`), and `fleetgate fleet ca
//! init`: a private fleet CA and a server certificate in one command.

use anyhow::Context;
use fleetgate_fleet::tls::{ServerConfig, TlsListener};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// TLS options of a listening command.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Serve HTTPS with this PEM certificate chain (leaf first), e.g. `server.pem` from
    /// `fleetgate fleet ca init`. Needs --tls-key.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (keep it mode 0600).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allow plain HTTP on an address beyond loopback. Tokens and fleet data then travel
    /// in clear: only behind a TLS-terminating proxy on a network you trust.
    #[arg(long)]
    pub insecure_plain_http: bool,
}

impl TlsArgs {
    /// Fills in `[tls] cert_file` / `key_file` (relative to the config file) when neither
    /// flag was given.
    pub fn or_config(
        mut self,
        cfg: &fleetgate_core::config::Config,
        base: &std::path::Path,
    ) -> Self {
        if self.tls_cert.is_none()
            && self.tls_key.is_none()
            && let (Some(c), Some(k)) = (&cfg.tls.cert_file, &cfg.tls.key_file)
        {
            self.tls_cert = Some(fleetgate_runtime::gates::resolve(base, c));
            self.tls_key = Some(fleetgate_runtime::gates::resolve(base, k));
        }
        self
    }

    /// The server configuration, or `None` for plain HTTP — refused on an address beyond
    /// loopback unless `--insecure-plain-http`.
    pub fn server_config(&self, listen: SocketAddr) -> anyhow::Result<Option<Arc<ServerConfig>>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(fleetgate_fleet::tls::server_config(cert, key)?)),
            _ if listen.ip().is_loopback() => Ok(None),
            _ if self.insecure_plain_http => {
                eprintln!(
                    "WARNING: --insecure-plain-http: listening on {listen} beyond localhost over plain HTTP; tokens and fleet data travel in clear"
                );
                Ok(None)
            }
            _ => anyhow::bail!(
                "refusing plain HTTP on {listen} (beyond localhost): pass --tls-cert and --tls-key (make them with `fleetgate fleet ca init`), or --insecure-plain-http behind a TLS-terminating proxy"
            ),
        }
    }
}

/// The URL scheme a listener serves.
pub fn scheme(tls: &Option<Arc<ServerConfig>>) -> &'static str {
    if tls.is_some() { "https" } else { "http" }
}

/// Serves `app` on `tcp` (HTTPS when `tls` is given) until `shutdown` completes, with the
/// peer address available to the per-source rate limit.
pub async fn serve_router(
    tcp: tokio::net::TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let svc = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => axum::serve(tcp, svc).with_graceful_shutdown(shutdown).await,
        Some(config) => {
            let listener = TlsListener::new(tcp, config)?.tap_io(|_| ());
            axum::serve(listener, svc)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// `fleetgate fleet ca …`.
#[derive(Debug, clap::Subcommand)]
pub enum CaCmd {
    /// Make a private fleet CA and a server certificate for the fleet endpoint / API:
    /// `ca.pem` (give it to the nodes as `tls_ca_file`), `ca.key` (keep it offline),
    /// `server.pem` and `server.key` (for `--tls-cert` / `--tls-key`). Keys are written
    /// 0600; nothing is overwritten without --force.
    Init {
        /// Directory to write into (created if missing).
        #[arg(long, default_value = "keys/tls", value_name = "DIR")]
        out_dir: PathBuf,
        /// A name or IP address the server is reached at (repeatable); the certificate
        /// is valid for exactly these. Default: localhost and 127.0.0.1.
        #[arg(long = "host", value_name = "NAME|IP")]
        hosts: Vec<String>,
        /// Validity of the server certificate in days (the CA's is ten times that).
        #[arg(long, default_value_t = 397)]
        days: u32,
        /// Overwrite files that exist.
        #[arg(long)]
        force: bool,
        /// Machine-readable output (the paths written).
        #[arg(long)]
        json: bool,
    },
    /// Issue another server certificate from the fleet CA that `ca init` made (its
    /// `ca.pem` and `ca.key` in --ca-dir): for a node agent's HTTPS (`tls_cert_file`,
    /// `tls_key_file` in node.toml) or a second endpoint. Writes `server.pem` and
    /// `server.key` (0600) into --out-dir.
    Issue {
        /// Where `ca init` wrote the fleet CA.
        #[arg(long, default_value = "keys/tls", value_name = "DIR")]
        ca_dir: PathBuf,
        /// Directory to write the certificate and key into (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        /// A name or IP address the server is reached at (repeatable, at least one).
        #[arg(long = "host", value_name = "NAME|IP", required = true)]
        hosts: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 397)]
        days: u32,
        /// Overwrite files that exist.
        #[arg(long)]
        force: bool,
        /// Machine-readable output (the paths written).
        #[arg(long)]
        json: bool,
    },
}

/// Run `fleetgate fleet ca …`.
pub fn run_ca(cmd: CaCmd) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        CaCmd::Init {
            out_dir,
            mut hosts,
            days,
            force,
            json,
        } => {
            if hosts.is_empty() {
                hosts = vec!["localhost".into(), "127.0.0.1".into()];
            }
            check_days(days)?;
            refuse_existing(
                &out_dir,
                &["ca.pem", "ca.key", "server.pem", "server.key"],
                force,
                "pass --force to replace the fleet CA; nodes that trust the old ca.pem will refuse the new certificate",
            )?;
            let pki = make_pki(&hosts, days)?;
            check_chain(&pki.ca_pem, &pki.server_pem, &hosts)?;
            write_files(
                &out_dir,
                &[
                    ("ca.pem", &pki.ca_pem, 0o644),
                    ("ca.key", &pki.ca_key, 0o600),
                    ("server.pem", &pki.server_pem, 0o644),
                    ("server.key", &pki.server_key, 0o600),
                ],
            )?;
            let path = |n: &str| out_dir.join(n).display().to_string();
            if json {
                crate::print_json(&serde_json::json!({
                    "ca_cert": path("ca.pem"), "ca_key": path("ca.key"),
                    "server_cert": path("server.pem"), "server_key": path("server.key"),
                    "hosts": hosts, "days": days,
                }))?;
            } else {
                println!(
                    "wrote a fleet CA and a server certificate for {} ({days} days) into {}",
                    hosts.join(", "),
                    out_dir.display()
                );
                println!(
                    "  serve:  fleetgate fleet serve --listen ADDR --tls-cert {} --tls-key {}",
                    path("server.pem"),
                    path("server.key")
                );
                println!(
                    "  nodes:  orchestrator = \"https://{}:PORT\", tls_ca_file = \"{}\" in each node.toml",
                    hosts[0],
                    path("ca.pem")
                );
                println!(
                    "  keep {} offline: whoever holds it can impersonate the endpoint",
                    path("ca.key")
                );
            }
        }
        CaCmd::Issue {
            ca_dir,
            out_dir,
            hosts,
            days,
            force,
            json,
        } => {
            check_days(days)?;
            refuse_existing(
                &out_dir,
                &["server.pem", "server.key"],
                force,
                "pass --force to replace it",
            )?;
            let ca_key_path = ca_dir.join("ca.key");
            let ca_key_pem = std::fs::read_to_string(&ca_key_path).with_context(|| {
                format!(
                    "cannot read the fleet CA's key {} (made by `fleetgate fleet ca init --out-dir {}`)",
                    ca_key_path.display(),
                    ca_dir.display()
                )
            })?;
            let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem)
                .with_context(|| format!("{} is not a PEM private key", ca_key_path.display()))?;
            let ca_pem_path = ca_dir.join("ca.pem");
            let ca_pem = std::fs::read_to_string(&ca_pem_path).with_context(|| {
                format!(
                    "cannot read {} (the nodes trust that file; keep it with ca.key)",
                    ca_pem_path.display()
                )
            })?;
            let (server_pem, server_key) = leaf(&issuer_of(ca_key)?, &hosts, days)?;
            // Only a CA made by `ca init` can be rebuilt as an issuer from its key: a
            // certificate that would not chain to ca.pem is never written.
            check_chain(&ca_pem, &server_pem, &hosts).with_context(|| {
                format!(
                    "{} and {} are not a fleet CA made by `fleetgate fleet ca init`",
                    ca_pem_path.display(),
                    ca_key_path.display()
                )
            })?;
            write_files(
                &out_dir,
                &[
                    ("server.pem", &server_pem, 0o644),
                    ("server.key", &server_key, 0o600),
                ],
            )?;
            let path = |n: &str| out_dir.join(n).display().to_string();
            if json {
                crate::print_json(&serde_json::json!({
                    "server_cert": path("server.pem"), "server_key": path("server.key"),
                    "ca_cert": ca_pem_path.display().to_string(),
                    "hosts": hosts, "days": days,
                }))?;
            } else {
                println!(
                    "wrote a certificate for {} ({days} days), signed by the fleet CA in {}: {} and {}",
                    hosts.join(", "),
                    ca_dir.display(),
                    path("server.pem"),
                    path("server.key")
                );
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn check_days(days: u32) -> anyhow::Result<()> {
    anyhow::ensure!((1..=3650).contains(&days), "--days {days}: give 1 to 3650");
    Ok(())
}

/// Refuses when one of `names` exists in `dir` and `--force` was not given.
fn refuse_existing(
    dir: &std::path::Path,
    names: &[&str],
    force: bool,
    how: &str,
) -> anyhow::Result<()> {
    if !force && let Some(existing) = names.iter().map(|n| dir.join(n)).find(|p| p.exists()) {
        anyhow::bail!("{} exists: nothing was written ({how})", existing.display());
    }
    Ok(())
}

/// The certificate verifies against the CA for every host, as a client will check it.
fn check_chain(ca_pem: &str, leaf_pem: &str, hosts: &[String]) -> anyhow::Result<()> {
    for h in hosts {
        fleetgate_fleet::tls::verify_chain(ca_pem.as_bytes(), leaf_pem.as_bytes(), h)
            .map_err(|e| anyhow::anyhow!("the new certificate does not verify for {h:?}: {e}"))?;
    }
    Ok(())
}

/// Writes each `(name, text, mode)` into `dir` (created if missing), each file atomically.
fn write_files(dir: &std::path::Path, files: &[(&str, &String, u32)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    for (name, body, mode) in files {
        let path = dir.join(name);
        fleetgate_store::write_atomic(&path, body.as_bytes(), Some(*mode))
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(())
}

/// The CA's name and key usages as `ca init` makes them (the issuer of every leaf).
fn ca_params() -> anyhow::Result<rcgen::CertificateParams> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "fleetgate fleet CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(ca)
}

fn issuer_of(key: rcgen::KeyPair) -> anyhow::Result<rcgen::Issuer<'static, rcgen::KeyPair>> {
    Ok(rcgen::Issuer::new(ca_params()?, key))
}

/// A server certificate for `hosts`, valid `days`: (PEM certificate, PEM key).
fn leaf(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    hosts: &[String],
    days: u32,
) -> anyhow::Result<(String, String)> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
    for h in hosts {
        anyhow::ensure!(
            !h.trim().is_empty() && !h.contains(['/', ' ', ':'])
                || h.parse::<std::net::IpAddr>().is_ok(),
            "--host {h:?} is not a host name or an IP address"
        );
    }
    let today = u64::try_from(fleetgate_fleet::unix_now()).unwrap_or(0) / 86_400;
    let day = |d: u64| {
        let (y, m, dd) = civil_from_days(d);
        rcgen::date_time_ymd(y, m, dd)
    };
    let mut server = CertificateParams::new(hosts.to_vec())
        .with_context(|| format!("invalid --host among {hosts:?}"))?;
    server
        .distinguished_name
        .push(DnType::CommonName, hosts[0].clone());
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.not_before = day(today);
    server.not_after = day(today + u64::from(days));
    let key = KeyPair::generate()?;
    let cert = server.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

struct Pki {
    ca_pem: String,
    ca_key: String,
    server_pem: String,
    server_key: String,
}

fn make_pki(hosts: &[String], days: u32) -> anyhow::Result<Pki> {
    let today = u64::try_from(fleetgate_fleet::unix_now()).unwrap_or(0) / 86_400;
    let day = |d: u64| {
        let (y, m, dd) = civil_from_days(d);
        rcgen::date_time_ymd(y, m, dd)
    };
    let mut ca = ca_params()?;
    ca.not_before = day(today);
    ca.not_after = day(today + u64::from(days.saturating_mul(10)));
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let (server_pem, server_key) = leaf(&issuer_of(ca_key)?, hosts, days)?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        ca_key: ca_key_pem,
        server_pem,
        server_key,
    })
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: u64) -> (i32, u8, u8) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(super::civil_from_days(20_789), (2026, 12, 2));
    }
}
