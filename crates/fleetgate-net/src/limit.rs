//! Per-source rate limiting for the HTTP listeners (`fleet serve`, `serve`, the node
//! agent): a token bucket per source address ([`fleetgate_trust::ratelimit`]) checked
//! before anything else; over the limit, `429 Too Many Requests` with `Retry-After`
//! (seconds) and `{"success": false, "error_kind": "rate_limited", "error"}`, and nothing
//! runs.
//!
//! The source is the TCP peer address (serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`; without it every request shares
//! one bucket). IPv6 sources are grouped by /64, the block one host usually holds.
//! Forwarded-for headers are not trusted: behind a reverse proxy every request comes
//! from the proxy, so rate-limit there or raise the limit.
//!
//! Limits are generous on purpose — a whole fleet may run on one host in a demo, every
//! node heartbeating from 127.0.0.1 — and only stop floods.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::http::header::{HeaderValue, RETRY_AFTER};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fleetgate_trust::ratelimit::{RateLimit, RateLimiter};
use serde_json::json;

/// Default for `fleet serve`: heartbeats of a whole fleet may share one address.
pub const FLEET_LIMIT: RateLimit = RateLimit {
    burst: 400,
    per_sec: 200,
    max_sources: 4096,
};

/// Default for the tool API (`serve`).
pub const API_LIMIT: RateLimit = RateLimit {
    burst: 120,
    per_sec: 60,
    max_sources: 4096,
};

/// Default for a node agent's endpoint.
pub const AGENT_LIMIT: RateLimit = RateLimit {
    burst: 60,
    per_sec: 30,
    max_sources: 4096,
};

#[derive(Clone)]
struct Limiter {
    table: Arc<Mutex<RateLimiter<IpAddr>>>,
    epoch: Instant,
    limit: RateLimit,
}

/// The key of a source address: the IPv4 address, or the IPv6 /64 (IPv4-mapped IPv6
/// addresses count as IPv4).
pub fn source_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// `router` with a per-source `limit` in front of every route.
pub fn per_source(router: Router, limit: RateLimit) -> Router {
    let l = Limiter {
        table: Arc::new(Mutex::new(RateLimiter::new(limit))),
        epoch: Instant::now(),
        limit,
    };
    router.layer(axum::middleware::from_fn_with_state(l, check))
}

async fn check(State(l): State<Limiter>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let key = source_key(ip);
    let now_ms = u64::try_from(l.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    let verdict = match l.table.lock() {
        Ok(mut t) => t.check(&key, now_ms),
        Err(poisoned) => poisoned.into_inner().check(&key, now_ms),
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(wait_ms) => {
            let secs = wait_ms.div_ceil(1000).max(1);
            tracing::debug!(source = %ip, retry_after_secs = secs, "HTTP request over the per-source rate limit");
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({
                    "success": false,
                    "error_kind": "rate_limited",
                    "error": format!(
                        "rate limited: more than {} requests at once or {} per second from {}; nothing was run, retry in {secs}s",
                        l.limit.burst, l.limit.per_sec, key
                    ),
                })),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(RETRY_AFTER, v);
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_are_grouped_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
