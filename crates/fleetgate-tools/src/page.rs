//! The Updates page `fleetgate serve` answers at `/`: a static page (HTML, CSS, JS
//! embedded in the binary, no build step) that reads and acts through the same HTTP API as
//! everything else. It holds no data and needs no token to load; the API calls it makes
//! carry the token the operator signs in with (kept in the tab's `sessionStorage`, sent as
//! `Authorization: Bearer`, never in a URL), under the API's own rules.
//!
//! Served with a strict Content-Security-Policy (scripts, styles and connections only
//! from this origin; no inline script; no framing).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const HTML: &str = include_str!("../assets/updates.html");
const JS: &str = include_str!("../assets/updates.js");
const CSS: &str = include_str!("../assets/updates.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `/`, `/ui/updates.js`, `/ui/updates.css`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", HTML) }),
        )
        .route(
            "/ui/updates.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .route(
            "/ui/updates.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
}
