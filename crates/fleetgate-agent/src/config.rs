//! `node.toml`: the agent's configuration (see `node.example.toml` beside this crate).
//!
//! Relative paths are resolved against the directory of the config file. Every value is
//! checked at load time; an invalid one is refused with an error naming its key.

use fleetgate_codehash::CodeHashConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read node config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The file is larger than the limit.
    #[error("failed to read node config {}: it is {size}, more than the {MAX_CONFIG_BYTES}-byte limit", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: fleetgate_trust::fsutil::Oversize,
    },
    /// Not valid TOML, an unknown key, or a wrong type.
    #[error("failed to parse node config {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// A key has an invalid value.
    #[error("invalid node config: `{key}` = {value:?}: {reason}")]
    Invalid {
        /// The key, dotted (`health.http`).
        key: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

fn invalid(key: &'static str, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// The application's health check: exactly one of `http` or `command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// `GET` this URL; 2xx is healthy. The body may carry the app's counters
    /// (`{"exceptions_total": n, "requests_total": m}`), forwarded in heartbeats.
    #[serde(default)]
    pub http: Option<String>,
    /// Run this with `sh -c` in the slot directory; exit 0 is healthy.
    #[serde(default)]
    pub command: Option<String>,
    /// Timeout of one check, milliseconds (default 2000).
    #[serde(default = "default_health_timeout_ms")]
    pub timeout_ms: u64,
    /// Pause between checks while waiting for health, milliseconds (default 500).
    #[serde(default = "default_health_interval_ms")]
    pub interval_ms: u64,
}

fn default_health_timeout_ms() -> u64 {
    2000
}
fn default_health_interval_ms() -> u64 {
    500
}
fn default_grace() -> u64 {
    30
}
fn default_drain() -> u64 {
    10
}
fn default_crash_loop() -> u32 {
    3
}
/// How releases reach a node (`mode` in node.toml).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// The orchestrator pushes to `/apply`; gossip spreads.
    #[default]
    Push,
    /// The agent polls its feed as well.
    Pull,
}

fn default_self_update_grace() -> u64 {
    60
}

fn default_poll_interval() -> u64 {
    30
}

fn default_heartbeat_interval() -> u64 {
    10
}
fn default_heartbeat_backoff() -> u64 {
    60
}
fn default_gossip_round_ms() -> u64 {
    1000
}
fn default_gossip_anti_entropy() -> u64 {
    10
}
fn default_install_timeout() -> u64 {
    600
}

fn default_backup_keep() -> u32 {
    3
}

/// `[backup]`: what the agent copies before a new version starts, and restores when the
/// apply is undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Files or directories of the app's data (relative to the config file's
    /// directory), outside the state directory; at most 64, none inside another.
    pub paths: Vec<PathBuf>,
    /// Newest complete backups kept under `<state_dir>/backups` (default 3, 1..=100).
    #[serde(default = "default_backup_keep")]
    pub keep: u32,
}

/// The node configuration (`node.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node id (`[A-Za-z0-9._-]`, 1–128 characters), as enrolled in the fleet.
    pub node_id: String,
    /// The node's Ed25519 identity key (hex seed file, mode 0600); signs heartbeats.
    pub identity_key: PathBuf,
    /// The enrollment certificate issued by the trust keys (optional until the node is
    /// enrolled). When set, it is verified at start against `trust_file` and must name
    /// this `node_id` and the public key of `identity_key`.
    #[serde(default)]
    pub enrollment_cert: Option<PathBuf>,
    /// The trust file (keyring) every manifest must verify against.
    pub trust_file: PathBuf,
    /// State directory: `slots/`, `current`, `journal.json`, the anti-rollback floor.
    pub state_dir: PathBuf,
    /// Git remote of the release repository (a path or `file://` URL), for source
    /// releases.
    pub remote: String,
    /// Base URL of the built artifacts (`http://` or `https://`; TLS trusts `tls_ca_file`
    /// when set): a release that lists artifacts is downloaded from
    /// `{artifacts_url}/{sha256}` — e.g. the orchestrator's `fleet serve` at
    /// `https://fleet.example.com:7000/artifacts` — instead of checked out. Unset: such a
    /// release fails on this node (nothing is applied).
    #[serde(default)]
    pub artifacts_url: Option<String>,
    /// Address of the apply endpoint (`POST /apply`, `GET /status`, `GET /health`).
    pub listen: SocketAddr,
    /// Install step, run with `sh -c` in the new slot before the switch (optional).
    #[serde(default)]
    pub install: Option<String>,
    /// Seconds the install step may take (default 600); also the limit of each hook.
    #[serde(default = "default_install_timeout")]
    pub install_timeout_secs: u64,
    /// Hook run with `sh -c` in the new slot after the old app stopped, before the
    /// backup is taken and the new version starts (e.g. dump a database into a backed-up
    /// path). Exit non-zero: the apply is abandoned and the old version restarts.
    #[serde(default)]
    pub pre_apply: Option<String>,
    /// Hook run with `sh -c` in the previous slot when an apply is undone, after the
    /// backed-up paths were restored and before the previous version starts. A failure
    /// is reported; the previous version starts anyway.
    #[serde(default)]
    pub post_rollback: Option<String>,
    /// Data backed up before each apply and restored when it is undone (optional).
    #[serde(default)]
    pub backup: Option<BackupConfig>,
    /// Start command of the application, run with `sh -c` in the slot directory. The agent
    /// supervises it (own process group), with `FLEETGATE_SLOT`, `FLEETGATE_VERSION`,
    /// `FLEETGATE_CODE_HASH` and the `[env]` table in its environment.
    pub start: String,
    /// Extra environment for install, start and health commands (e.g. `PORT`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The application's health check.
    pub health: HealthConfig,
    /// Seconds the new version has to become healthy (default 30).
    #[serde(default = "default_grace")]
    pub health_grace_secs: u64,
    /// Seconds between SIGTERM and SIGKILL of the app's process group (default 10).
    #[serde(default = "default_drain")]
    pub drain_secs: u64,
    /// Exits within the grace window that count as a crash loop (default 3).
    #[serde(default = "default_crash_loop")]
    pub crash_loop: u32,
    /// Orchestrator base URL (`http://` or `https://`); heartbeats go to
    /// `{orchestrator}/api/fleet/heartbeat`. Unset: no heartbeats.
    #[serde(default)]
    pub orchestrator: Option<String>,
    /// PEM file of the CA certificate(s) that sign the orchestrator's (and the artifact
    /// server's) TLS certificate (a private fleet CA). When set, only these roots are trusted for `https://`; unset, the
    /// platform's trust store is used.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Serve the agent's endpoint (`/apply`, `/status`) over HTTPS with this PEM
    /// certificate chain (e.g. one made by `fleetgate fleet ca init --host NODE`); with
    /// `tls_key_file`. The orchestrator trusts it through `[tls] ca_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of `tls_cert_file` (keep it mode 0600).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// How releases reach this node: `"push"` (the default: the orchestrator POSTs them
    /// to `/apply`, gossip spreads them) or `"pull"` (the agent also polls its feed, for a
    /// node the orchestrator cannot reach, e.g. behind NAT). Either way every manifest is
    /// verified the same (keyring, floor, expiry, revocations): no valid signed manifest,
    /// no update.
    #[serde(default)]
    pub mode: DeliveryMode,
    /// The feed a pull-mode node polls (default `{orchestrator}/api/fleet/feed/{node_id}`,
    /// served by `fleetgate fleet serve`); `http://` or `https://` (TLS trusts
    /// `tls_ca_file` when set).
    #[serde(default)]
    pub feed_url: Option<String>,
    /// Seconds between two polls of the feed in pull mode (default 30), each pause
    /// jittered by ±20% so a fleet does not poll in step.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_secs: u64,
    /// Let signed agent updates (manifest kind `agent`) replace this agent's own binary
    /// (default false: such manifests are refused). The new build is downloaded from
    /// `artifacts_url`, checked against the signed size and SHA-256, kept beside the old
    /// one, and exec'd; it must confirm itself healthy within `self_update_grace_secs`,
    /// or the agent returns to the old binary. Run the agent under a service manager that
    /// restarts it (systemd `Restart=always`): a new build that crashes is undone when the
    /// old binary starts again.
    #[serde(default)]
    pub self_update: bool,
    /// Seconds a new agent build has to confirm itself (its endpoint serves and the app it
    /// supervises, if any, is healthy) before the agent returns to the old one (default 60).
    #[serde(default = "default_self_update_grace")]
    pub self_update_grace_secs: u64,
    /// Seconds between heartbeats (default 10).
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval_secs: u64,
    /// Longest pause between heartbeat attempts while the orchestrator is unreachable
    /// (default 60).
    #[serde(default = "default_heartbeat_backoff")]
    pub heartbeat_max_backoff_secs: u64,
    /// Gossip seed addresses (`host:port`).
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Gossip listen address (UDP).
    #[serde(default)]
    pub gossip_listen: Option<SocketAddr>,
    /// Gossip round interval, milliseconds (default 1000).
    #[serde(default = "default_gossip_round_ms")]
    pub gossip_round_ms: u64,
    /// Gossip pull anti-entropy interval, seconds (default 10).
    #[serde(default = "default_gossip_anti_entropy")]
    pub gossip_anti_entropy_secs: u64,
    /// Which tracked files the code hash covers; must match the orchestrator's.
    #[serde(default)]
    pub code_hash: CodeHashConfig,
}

impl NodeConfig {
    /// Reads, parses, resolves relative paths against the file's directory, and validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or the key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let bytes = match fleetgate_trust::fsutil::read_capped(path, MAX_CONFIG_BYTES) {
            Ok(fleetgate_trust::fsutil::Limited::Bytes(b)) => b,
            Ok(fleetgate_trust::fsutil::Limited::TooBig(size)) => {
                return Err(ConfigError::TooLarge {
                    path: path.to_owned(),
                    size: fleetgate_trust::fsutil::Oversize(size),
                });
            }
            Err(e) => return Err(read_err(e)),
        };
        let text = String::from_utf8(bytes)
            .map_err(|e| read_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text; relative paths are resolved against `base`.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        cfg.resolve(base);
        cfg.validate()?;
        Ok(cfg)
    }

    fn resolve(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.identity_key);
        abs(&mut self.trust_file);
        abs(&mut self.state_dir);
        if let Some(c) = &mut self.enrollment_cert {
            abs(c);
        }
        if let Some(b) = &mut self.backup {
            b.paths.iter_mut().for_each(abs);
        }
        for c in [
            &mut self.tls_ca_file,
            &mut self.tls_cert_file,
            &mut self.tls_key_file,
        ]
        .into_iter()
        .flatten()
        {
            abs(c);
        }
        if !self.remote.contains("://") && Path::new(&self.remote).is_relative() {
            self.remote = base.join(&self.remote).to_string_lossy().into_owned();
        }
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_node_id(&self.node_id).map_err(|r| invalid("node_id", &self.node_id, r))?;
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            let (key, other) = if self.tls_cert_file.is_some() {
                ("tls_key_file", "tls_cert_file")
            } else {
                ("tls_cert_file", "tls_key_file")
            };
            return Err(invalid(
                key,
                "",
                format!("must be set together with `{other}`"),
            ));
        }
        if self.remote.trim().is_empty() {
            return Err(invalid(
                "remote",
                &self.remote,
                "set the release repository",
            ));
        }
        if self.remote.contains("://") && !self.remote.starts_with("file://") {
            return Err(invalid(
                "remote",
                &self.remote,
                "only local paths and file:// URLs are supported (git2 is built without network transports)",
            ));
        }
        if self.start.trim().is_empty() {
            return Err(invalid("start", &self.start, "set the app's start command"));
        }
        if self.install.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err(invalid(
                "install",
                "",
                "empty install command; remove the key instead",
            ));
        }
        for (key, hook) in [
            ("pre_apply", &self.pre_apply),
            ("post_rollback", &self.post_rollback),
        ] {
            if hook.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return Err(invalid(key, "", "empty command; remove the key instead"));
            }
        }
        if let Some(b) = &self.backup {
            self.validate_backup(b)?;
        }
        for k in self.env.keys() {
            if k.is_empty()
                || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || k.starts_with("FLEETGATE_")
            {
                return Err(invalid(
                    "env",
                    k,
                    "variable names are [A-Za-z0-9_] and must not start with FLEETGATE_ (reserved)",
                ));
            }
        }
        match (&self.health.http, &self.health.command) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid(
                    "health",
                    format!(
                        "http={:?} command={:?}",
                        self.health.http, self.health.command
                    ),
                    "set exactly one of health.http or health.command",
                ));
            }
            (Some(url), None) => {
                let ok = url
                    .strip_prefix("http://")
                    .is_some_and(|rest| !rest.is_empty() && reqwest::Url::parse(url).is_ok());
                if !ok {
                    return Err(invalid(
                        "health.http",
                        url,
                        "expected an http:// URL such as http://127.0.0.1:8080/health",
                    ));
                }
            }
            (None, Some(cmd)) => {
                if cmd.trim().is_empty() {
                    return Err(invalid("health.command", cmd, "empty command"));
                }
            }
        }
        range("health.timeout_ms", self.health.timeout_ms, 1, 600_000)?;
        range("health.interval_ms", self.health.interval_ms, 10, 600_000)?;
        range("install_timeout_secs", self.install_timeout_secs, 1, 86_400)?;
        range("health_grace_secs", self.health_grace_secs, 1, 86_400)?;
        range("drain_secs", self.drain_secs, 0, 3_600)?;
        range("crash_loop", u64::from(self.crash_loop), 1, 1_000)?;
        range(
            "heartbeat_interval_secs",
            self.heartbeat_interval_secs,
            1,
            86_400,
        )?;
        range(
            "heartbeat_max_backoff_secs",
            self.heartbeat_max_backoff_secs,
            1,
            86_400,
        )?;
        if let Some(url) = &self.orchestrator {
            let ok = reqwest::Url::parse(url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
                    && (url.starts_with("http://") || url.starts_with("https://"))
            });
            if !ok {
                return Err(invalid(
                    "orchestrator",
                    url,
                    "expected an http:// or https:// base URL such as https://fleet.example.com:7000",
                ));
            }
        }
        if let Some(url) = &self.artifacts_url {
            let ok = reqwest::Url::parse(url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
                    && u.query().is_none()
            });
            if !ok {
                return Err(invalid(
                    "artifacts_url",
                    url,
                    "expected an http:// or https:// base URL without a query, such as https://fleet.example.com:7000/artifacts",
                ));
            }
        }
        if let Some(url) = &self.feed_url {
            let ok = reqwest::Url::parse(url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                return Err(invalid(
                    "feed_url",
                    url,
                    "expected an http:// or https:// URL such as https://fleet.example.com:7000/api/fleet/feed/web-eu-1",
                ));
            }
        }
        if self.mode == DeliveryMode::Pull && self.feed_url.is_none() && self.orchestrator.is_none()
        {
            return Err(invalid(
                "mode",
                "pull",
                "a pull-mode node needs `feed_url` or `orchestrator` (its feed is then {orchestrator}/api/fleet/feed/{node_id})",
            ));
        }
        range("poll_interval_secs", self.poll_interval_secs, 1, 86_400)?;
        range(
            "self_update_grace_secs",
            self.self_update_grace_secs,
            2,
            3600,
        )?;
        if self.self_update && self.artifacts_url.is_none() {
            return Err(invalid(
                "self_update",
                "true",
                "an agent update is a built binary: set `artifacts_url` too",
            ));
        }
        if let Some(ca) = &self.tls_ca_file
            && self.orchestrator.is_none()
            && self.artifacts_url.is_none()
            && self.feed_url.is_none()
        {
            return Err(invalid(
                "tls_ca_file",
                ca.display(),
                "set only with `orchestrator`, `artifacts_url` or `feed_url` (it verifies their certificates)",
            ));
        }
        range("gossip_round_ms", self.gossip_round_ms, 10, 600_000)?;
        range(
            "gossip_anti_entropy_secs",
            self.gossip_anti_entropy_secs,
            1,
            86_400,
        )?;
        for s in &self.seeds {
            if s.parse::<SocketAddr>().is_err() {
                return Err(invalid(
                    "seeds",
                    s,
                    "expected host:port, e.g. 10.0.0.2:7401",
                ));
            }
        }
        Ok(())
    }

    fn validate_backup(&self, b: &BackupConfig) -> Result<(), ConfigError> {
        range("backup.keep", u64::from(b.keep), 1, 100)?;
        if b.paths.is_empty() || b.paths.len() > 64 {
            return Err(invalid(
                "backup.paths",
                b.paths.len(),
                "name 1 to 64 files or directories (or remove [backup])",
            ));
        }
        let clean = |p: &Path| -> PathBuf { p.components().collect() };
        let state = clean(&self.state_dir);
        for (i, p) in b.paths.iter().enumerate() {
            let c = clean(p);
            let shown = p.display();
            if c.components()
                .any(|x| matches!(x, std::path::Component::ParentDir))
                || c.file_name().is_none()
            {
                return Err(invalid(
                    "backup.paths",
                    shown,
                    "a path with a final name and no `..` is expected",
                ));
            }
            if c.starts_with(&state) || state.starts_with(&c) {
                return Err(invalid(
                    "backup.paths",
                    shown,
                    format!(
                        "must lie outside the state directory {} (the backups are kept there) and not contain it",
                        self.state_dir.display()
                    ),
                ));
            }
            for q in &b.paths[..i] {
                let d = clean(q);
                if c.starts_with(&d) || d.starts_with(&c) {
                    return Err(invalid(
                        "backup.paths",
                        shown,
                        format!("overlaps {}; name each path once", q.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `<state_dir>/slots`.
    #[must_use]
    pub fn slots_dir(&self) -> PathBuf {
        self.state_dir.join("slots")
    }
}

fn range(key: &'static str, v: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if v < min || v > max {
        return Err(invalid(key, v, format!("expected {min}..={max}")));
    }
    Ok(())
}

pub use fleetgate_node_api::validate_node_id;

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
node_id = "n1"
identity_key = "keys/node.key"
trust_file = "keys/trust.json"
state_dir = "state"
remote = "release.git"
listen = "127.0.0.1:7400"
start = "exec ./app"
[health]
http = "http://127.0.0.1:8080/health"
"#;

    fn check_err(extra_top: &str, extra_health: &str, key: &str) {
        let text = BASE
            .replace("start = ", &format!("{extra_top}\nstart = "))
            .replace("[health]\n", &format!("[health]\n{extra_health}\n"));
        match NodeConfig::from_toml(&text, Path::new("/etc/fg")) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
            Err(ConfigError::Parse { message, .. }) => {
                assert!(message.contains(key), "{key} not in {message}");
            }
            Ok(_) => panic!("accepted {text}"),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    /// A config path with no size (a symlink to a device) is read only up to the limit.
    #[test]
    fn an_endless_config_file_is_refused_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let err = NodeConfig::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("more than the"), "{err}");
    }

    #[test]
    fn loads_and_resolves_relative_paths() {
        let c = NodeConfig::from_toml(BASE, Path::new("/etc/fg")).unwrap();
        assert_eq!(c.identity_key, Path::new("/etc/fg/keys/node.key"));
        assert_eq!(c.state_dir, Path::new("/etc/fg/state"));
        assert_eq!(c.remote, "/etc/fg/release.git");
        assert_eq!(c.health_grace_secs, 30);
        assert_eq!(c.crash_loop, 3);
    }

    #[test]
    fn accepts_https_orchestrators_and_resolves_the_ca_file() {
        let text = BASE.replace(
            "start = ",
            "orchestrator = \"https://fleet.example.com:7000\"\ntls_ca_file = \"tls/ca.pem\"\nstart = ",
        );
        let c = NodeConfig::from_toml(&text, Path::new("/etc/fg")).unwrap();
        assert_eq!(
            c.orchestrator.as_deref(),
            Some("https://fleet.example.com:7000")
        );
        assert_eq!(
            c.tls_ca_file.as_deref(),
            Some(Path::new("/etc/fg/tls/ca.pem"))
        );
        // The agent's own certificate and key, relative to the file too.
        let text = BASE.replace(
            "start = ",
            "tls_cert_file = \"tls/node.pem\"\ntls_key_file = \"tls/node.key\"\nstart = ",
        );
        let c = NodeConfig::from_toml(&text, Path::new("/etc/fg")).unwrap();
        assert_eq!(
            c.tls_cert_file.as_deref(),
            Some(Path::new("/etc/fg/tls/node.pem"))
        );
        assert_eq!(
            c.tls_key_file.as_deref(),
            Some(Path::new("/etc/fg/tls/node.key"))
        );
    }

    #[test]
    fn backup_paths_resolve_and_overlaps_or_the_state_dir_are_refused() {
        let with = |table: &str| {
            let text = format!("{BASE}\n[backup]\n{table}\n");
            NodeConfig::from_toml(&text, Path::new("/etc/fg"))
        };
        let c = with("paths = [\"data\", \"/var/lib/app.db\"]").unwrap();
        let b = c.backup.unwrap();
        assert_eq!(
            b.paths,
            vec![
                PathBuf::from("/etc/fg/data"),
                PathBuf::from("/var/lib/app.db")
            ]
        );
        assert_eq!(b.keep, 3);
        for (table, why) in [
            ("paths = []", "1 to 64"),
            ("paths = [\"data\"]\nkeep = 0", "1..=100"),
            ("paths = [\"state/x\"]", "outside the state directory"),
            ("paths = [\".\"]", "outside the state directory"),
            ("paths = [\"data\", \"data/db\"]", "overlaps"),
            ("paths = [\"../up\"]", "no `..`"),
        ] {
            match with(table) {
                Err(ConfigError::Invalid { key, reason, .. }) => {
                    assert!(key.starts_with("backup."), "{table}: {key}");
                    assert!(reason.contains(why), "{table}: {reason}");
                }
                other => panic!("{table}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../node.example.toml");
        let c = NodeConfig::from_toml(text, Path::new("/etc/fg")).unwrap();
        assert_eq!(c.node_id, "web-eu-1");
        assert_eq!(c.seeds.len(), 2);
        assert_eq!(c.env.get("PORT").map(String::as_str), Some("8080"));
    }

    #[test]
    fn refuses_bad_values_naming_the_key() {
        check_err("node_id2 = 1", "", "node_id2");
        check_err("drain_secs = 99999", "", "drain_secs");
        check_err("crash_loop = 0", "", "crash_loop");
        check_err("orchestrator = \"ftp://x\"", "", "orchestrator");
        check_err("orchestrator = \"https://\"", "", "orchestrator");
        check_err("tls_ca_file = \"ca.pem\"", "", "tls_ca_file");
        check_err("seeds = [\"nope\"]", "", "seeds");
        check_err("", "command = \"true\"", "health");
        check_err("", "timeout_ms = 0", "health.timeout_ms");
        check_err("env = { FLEETGATE_SLOT = \"x\" }", "", "env");
        check_err("pre_apply = \" \"", "", "pre_apply");
        check_err("artifacts_url = \"ftp://x/a\"", "", "artifacts_url");
        check_err("artifacts_url = \"https://x/a?q=1\"", "", "artifacts_url");
        check_err("mode = \"pull\"", "", "mode");
        check_err("mode = \"poll\"", "", "mode");
        check_err("feed_url = \"ftp://x/feed\"", "", "feed_url");
        check_err("poll_interval_secs = 0", "", "poll_interval_secs");
        check_err("self_update = true", "", "self_update");
        check_err("self_update_grace_secs = 1", "", "self_update_grace_secs");
        let bad_id = BASE.replace("\"n1\"", "\"n 1\"");
        assert!(matches!(
            NodeConfig::from_toml(&bad_id, Path::new("/")),
            Err(ConfigError::Invalid { key: "node_id", .. })
        ));
        let bad_url = BASE.replace("http://127.0.0.1:8080/health", "ftp://x");
        assert!(matches!(
            NodeConfig::from_toml(&bad_url, Path::new("/")),
            Err(ConfigError::Invalid {
                key: "health.http",
                ..
            })
        ));
    }
}
