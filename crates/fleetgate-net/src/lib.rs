//! # fleetgate-net — the HTTP edge every fleetgate listener shares
//!
//! **Where it sits.** In front of every HTTP listener of fleetgate: the orchestrator's
//! (`fleetgate serve`, `fleetgate fleet serve`, through `fleetgate-fleet`, which re-exports
//! both modules as `fleetgate_fleet::{tls, limit}`) and the node agent's (`POST /apply`).
//! It is its own crate so that the agent gets HTTPS and rate limiting without the fleet
//! registry (sqlx, migrations) it would otherwise pull: a node runtime that embeds only the
//! agent builds this, not the orchestrator. It depends on `fleetgate-trust` (the token
//! bucket), axum, tokio and tokio-rustls only.
//!
//! **What it owns.**
//! * [`tls`]: a rustls server configuration from PEM files ([`tls::server_config`]), the
//!   HTTPS listener ([`tls::TlsListener`]: handshakes in their own tasks, 10 s limit, 256 at
//!   once) and [`tls::verify_chain`] (a certificate checked as a client trusting a CA will).
//! * [`limit`]: the per-source-IP token bucket ([`limit::per_source`]: 429 with
//!   `Retry-After`) and the limits of each listener ([`limit::AGENT_LIMIT`], …).
//! * [`prom`]: the Prometheus text format (escaping, `# HELP`/`# TYPE`, samples) for the
//!   `/metrics` of `serve`, `fleet serve` and the agent.
//!
//! **What it must never do.** Let a slow or hostile client stall other connections; log a
//! key; trust a forwarded-for header; decide anything beyond "too many requests".
//!
//! **How to test.** `cargo nextest run -p fleetgate-net` (the limiter's unit tests); the
//! listeners are tested where they are served: `fleetgate-fleet`'s `tests/http.rs`,
//! `fleetgate-agent`'s `tests/tls.rs`, `fleetgate-tools`' `tests/http.rs`.

pub mod limit;
pub mod prom;
pub mod tls;
