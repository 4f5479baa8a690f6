//! The HTTP API over a real socket: a real git repository (a commit tagged v1.0.0), a
//! minimal config, `fleetgate_tools::http::router` served by axum on 127.0.0.1:0, and
//! reqwest as the client.

use fleetgate_tools::Toolbox;
use fleetgate_tools::http::{ApiAuth, MAX_BODY_BYTES, router};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

const TOKEN: &str = "test-token-0123456789abcdef";

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t.invalid",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Server {
    _dir: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
}

impl Server {
    async fn start(open_reads: bool) -> Server {
        Server::with_build(open_reads, "true").await
    }

    async fn with_build(open_reads: bool, build: &str) -> Server {
        Server::with_config(
            open_reads,
            &format!("[stages.build]\ncommand = {build:?}\n"),
            &[],
        )
        .await
    }

    /// A server whose config ends with `stages` (TOML), over a repository whose first
    /// commit is tagged v1.0.0 and each of `more_tags` tags one more commit.
    async fn with_config(open_reads: bool, stages: &str, more_tags: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        git(repo, &["init", "-q"]);
        std::fs::write(repo.join("app.txt"), "hello\n").unwrap();
        std::fs::write(repo.join(".gitignore"), "state/\nfleetgate.toml\n").unwrap();
        git(repo, &["add", "-A"]);
        git(repo, &["commit", "-q", "-m", "v1"]);
        git(repo, &["tag", "v1.0.0"]);
        for tag in more_tags {
            std::fs::write(repo.join("app.txt"), format!("{tag}\n")).unwrap();
            git(repo, &["commit", "-q", "-am", tag]);
            git(repo, &["tag", tag]);
        }
        let config = repo.join("fleetgate.toml");
        std::fs::write(
            &config,
            format!("repo = \".\"\nstate_dir = \"state\"\n\n{stages}"),
        )
        .unwrap();
        let registry = fleetgate_fleet::Registry::connect(&format!(
            "sqlite://{}",
            repo.join("state/fleet.db").display()
        ))
        .await
        .unwrap();
        let auth = ApiAuth::new(TOKEN, "the test")
            .unwrap()
            .with_open_reads(open_reads);
        let app = router(Toolbox::new(Some(config)), Some(registry), auth);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server {
            _dir: dir,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{status}: the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, headers, body)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let (s, _, b) = self.send(req).await;
        (s, b)
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let (s, _, b) = self.send(req).await;
        (s, b)
    }

    async fn stage(&self) -> String {
        let (s, b) = self.get("/api/upgrades/status", Some(TOKEN)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["stage"].as_str().unwrap().to_owned()
    }
}

fn error(b: &Value) -> &str {
    assert_eq!(b["success"], json!(false), "{b}");
    b["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {b}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn start_needs_the_token_and_runs_nothing_without_it() {
    let srv = Server::start(false).await;
    let start = json!({"new_version": "v1.0.0"});

    // No token: 401 with a Bearer challenge, and nothing ran.
    let (s, h, b) = srv
        .send(
            srv.http
                .post(srv.url("/api/upgrades/start"))
                .body(start.to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"),
        "{h:?}"
    );
    assert!(error(&b).contains("Authorization: Bearer"), "{b}");
    assert_eq!(srv.stage().await, "idle");

    // Wrong token, a prefix of the token, another scheme: 401.
    for bad in [
        "wrong-token-0123456789abcdef",
        &TOKEN[..TOKEN.len() - 1],
        "",
    ] {
        let (s, b) = srv.post("/api/upgrades/start", Some(bad), &start).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{bad:?}: {b}");
    }
    let (s, h, b) = srv
        .send(
            srv.http
                .post(srv.url("/api/upgrades/start"))
                .header("authorization", format!("Basic {TOKEN}"))
                .body(start.to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(h.contains_key("www-authenticate"));
    let (s, h, b) = srv
        .send(
            srv.http
                .post(srv.url("/api/upgrades/start"))
                .bearer_auth("wrong-token-0123456789abcdef")
                .body(start.to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token"),
        "{h:?}"
    );
    assert!(!b.to_string().contains(TOKEN));
    assert_eq!(srv.stage().await, "idle");

    // The right token (scheme case-insensitive): the run starts.
    let (s, _, b) = srv
        .send(
            srv.http
                .post(srv.url("/api/upgrades/start"))
                .header("authorization", format!("bearer {TOKEN}"))
                .body(start.to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["success"], json!(true));
    assert_eq!(b["stage"], json!("building"));
    assert_eq!(b["version"], json!("v1.0.0"));
    assert_eq!(srv.stage().await, "building");

    // A second start while the run is in progress: the pipeline refuses, 409.
    let (s, b) = srv.post("/api/upgrades/start", Some(TOKEN), &start).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error_kind"], json!("refused"), "{b}");
    error(&b);
}

#[tokio::test(flavor = "multi_thread")]
async fn advance_runs_the_build_gate_then_rollback_ends_the_run() {
    let srv = Server::start(false).await;
    // Nothing to advance yet: a refusal (409), not a server fault.
    let (s, b) = srv
        .post("/api/upgrades/advance", Some(TOKEN), &json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error_kind"], "refused", "{b}");
    assert!(error(&b).contains("no run in progress"), "{b}");
    let (s, b) = srv
        .post(
            "/api/upgrades/start",
            Some(TOKEN),
            &json!({"new_version": "v1.0.0"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // Advance takes an empty body; without the token it runs nothing.
    let (s, _, b) = srv
        .send(srv.http.post(srv.url("/api/upgrades/advance")))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert_eq!(srv.stage().await, "building");
    // What a crash left in the work directory: an older run's checkout, a half-made
    // clone, a capture's checkout. The orchestrator removes the first two when it starts;
    // captures clean their own.
    let work = srv._dir.path().join("state/work");
    for d in [
        "1700-v0.9.0-dead",
        ".1700-v0.9.0-dead.partial-00ff",
        "bench-v0.9.0-0011",
    ] {
        std::fs::create_dir_all(work.join(d).join("sub")).unwrap();
    }
    let (s, _, b) = srv
        .send(
            srv.http
                .post(srv.url("/api/upgrades/advance"))
                .bearer_auth(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(!work.join("1700-v0.9.0-dead").exists());
    assert!(!work.join(".1700-v0.9.0-dead.partial-00ff").exists());
    assert!(
        work.join("bench-v0.9.0-0011").exists(),
        "not the orchestrator's"
    );
    assert_eq!(b["stage_evaluated"], json!("building"), "{b}");
    assert_eq!(b["outcome"], json!("passed"), "{b}");
    assert_eq!(b["stage"], json!("testing"), "{b}");

    // Rollback: needs the token; an over-long reason is refused (an empty one is HART's
    // default and allowed).
    let reason = json!({"reason": "canary looked wrong"});
    let (s, b) = srv.post("/api/upgrades/rollback", None, &reason).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert_eq!(srv.stage().await, "testing");
    let (s, b) = srv
        .post(
            "/api/upgrades/rollback",
            Some(TOKEN),
            &json!({"reason": "x".repeat(2001)}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(error(&b).contains("reason"), "{b}");
    assert_eq!(srv.stage().await, "testing");
    let (s, b) = srv
        .post("/api/upgrades/rollback", Some(TOKEN), &reason)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["stage"], json!("rolled_back"), "{b}");
    assert_eq!(b["rollback_reason"], json!("canary looked wrong"), "{b}");
    assert_eq!(srv.stage().await, "rolled_back");

    // The same through the generic route.
    let (s, b) = srv
        .post(
            "/api/tools/start_upgrade",
            None,
            &json!({"new_version": "v1.0.0"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    let (s, b) = srv
        .post(
            "/api/tools/start_upgrade",
            Some(TOKEN),
            &json!({"new_version": "v1.0.0"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["stage"], json!("building"), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_holds_the_run_resume_lets_it_go_and_promote_is_refused_outside_canary() {
    let srv = Server::start(false).await;
    let (s, b) = srv
        .post(
            "/api/upgrades/start",
            Some(TOKEN),
            &json!({"new_version": "v1.0.0"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let why = json!({"reason": "freeze"});
    let (s, b) = srv.post("/api/upgrades/pause", None, &why).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    let (s, b) = srv.post("/api/upgrades/pause", Some(TOKEN), &why).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["paused"]["reason"], json!("freeze"), "{b}");
    assert!(
        b["paused"]["by"]
            .as_str()
            .unwrap()
            .contains("(tool pause_upgrade)"),
        "{b}"
    );
    // A paused run evaluates nothing.
    let (s, b) = srv
        .post("/api/upgrades/advance", Some(TOKEN), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["committed"], json!(false), "{b}");
    assert_eq!(b["stage"], json!("building"), "{b}");
    assert!(b["next_step"].as_str().unwrap().contains("paused"), "{b}");
    // Pausing again and promoting are refused (409).
    let (s, b) = srv.post("/api/upgrades/pause", Some(TOKEN), &why).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(error(&b).contains("already paused"), "{b}");
    let (s, b) = srv
        .post("/api/upgrades/promote", Some(TOKEN), &json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, b) = srv
        .post("/api/upgrades/resume", Some(TOKEN), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b["paused"].is_null(), "{b}");
    let (s, b) = srv
        .post("/api/upgrades/advance", Some(TOKEN), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["stage"], json!("testing"), "{b}");
    // Promote outside an open canary window is refused and names why.
    let (s, b) = srv
        .post("/api/upgrades/promote", Some(TOKEN), &json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(error(&b).contains("only an open CANARY window"), "{b}");
    assert_eq!(srv.stage().await, "testing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_targets_a_channel_and_only_a_completed_release_is_promoted_to_another() {
    let srv = Server::start(false).await;
    // Nothing completed anywhere: nothing to promote (409, names what is there).
    let to_stable = json!({"version": "v1.0.0", "to": "stable"});
    let (s, b) = srv
        .post("/api/upgrades/promote-channel", None, &to_stable)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    let (s, b) = srv
        .post("/api/upgrades/promote-channel", Some(TOKEN), &to_stable)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(error(&b).contains("(completed: none)"), "{b}");
    let (s, b) = srv
        .post(
            "/api/upgrades/promote-channel",
            Some(TOKEN),
            &json!({"version": "v1.0.0", "to": "Not A Channel"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["error_kind"], json!("invalid_arguments"), "{b}");
    // A run on a named channel; a channel name that is not one is refused by name.
    let (s, b) = srv
        .post(
            "/api/upgrades/start",
            Some(TOKEN),
            &json!({"new_version": "v1.0.0", "channel": "beta/../x"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(error(&b).contains("channel"), "{b}");
    let (s, b) = srv
        .post(
            "/api/upgrades/start",
            Some(TOKEN),
            &json!({"new_version": "v1.0.0", "channel": "beta"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["channel"], json!("beta"), "{b}");
    assert_eq!(b["stage"], json!("building"), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_gate_blocks_neither_the_server_nor_reads() {
    let srv = Server::with_build(false, "sleep 3").await;
    let (s, b) = srv
        .post(
            "/api/upgrades/start",
            Some(TOKEN),
            &json!({"new_version": "v1.0.0"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let advance = {
        let req = srv
            .http
            .post(srv.url("/api/upgrades/advance"))
            .bearer_auth(TOKEN);
        tokio::spawn(async move { req.send().await.unwrap().json::<Value>().await.unwrap() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let t = std::time::Instant::now();
    assert_eq!(srv.stage().await, "building");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
    // A second orchestrator is refused (the first holds the lock): 409, said so.
    let (s, b) = srv
        .post("/api/upgrades/advance", Some(TOKEN), &json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error_kind"], json!("locked"), "{b}");
    error(&b);
    assert!(!advance.is_finished());
    let done = advance.await.unwrap();
    assert_eq!(done["success"], json!(true), "{done}");
    assert_eq!(done["stage"], json!("testing"), "{done}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_need_the_token_unless_open() {
    let closed = Server::start(false).await;
    for path in [
        "/api/upgrades/status",
        "/api/upgrades/canary-health",
        "/api/benchmarks",
        "/api/benchmarks/history",
        "/api/fleet/peers",
    ] {
        let (s, b) = closed.get(path, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}: {b}");
        let (s, b) = closed.get(path, Some("not-the-token-at-all")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}: {b}");
    }
    let (s, b) = closed
        .post("/api/tools/check_upgrade_status", None, &json!({}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    let (s, b) = closed.get("/api/upgrades/status", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["stage"], json!("idle"));
    let (s, b) = closed.get("/api/fleet/peers", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["peers"], json!([]));
    let (s, b) = closed.get("/api/fleet/peers/nobody", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");

    let open = Server::start(true).await;
    let (s, b) = open.get("/api/upgrades/status", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["stage"], json!("idle"));
    assert_eq!(b["new_version_detected"], json!(true), "{b}");
    let (s, b) = open.get("/api/benchmarks", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = open.get("/api/benchmarks/history", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["count"], json!(0));
    let (s, b) = open.get("/api/fleet/peers", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // No canary yet: HART's answer, `canary_active: false`.
    let (s, b) = open.get("/api/upgrades/canary-health", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["canary_active"], json!(false), "{b}");
    assert!(b["message"].as_str().unwrap().contains("CANARY"), "{b}");
    let (s, b) = open
        .post("/api/tools/check_upgrade_status", None, &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Open reads open nothing else.
    for (path, body) in [
        ("/api/upgrades/start", json!({"new_version": "v1.0.0"})),
        ("/api/upgrades/advance", json!({})),
        ("/api/upgrades/rollback", json!({"reason": "x"})),
        ("/api/benchmarks/capture", json!({"version": "v1.0.0"})),
        (
            "/api/benchmarks",
            json!({"name": "b", "command": ["true"], "results": "r.json"}),
        ),
        ("/api/tools/start_upgrade", json!({"new_version": "v1.0.0"})),
    ] {
        let (s, b) = open.post(path, None, &body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}: {b}");
    }
    assert_eq!(open.stage().await, "idle");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_json_errors() {
    let srv = Server::start(false).await;

    // Not JSON: 400 naming the problem (after the token check: 401 without it).
    let not_json = srv
        .http
        .post(srv.url("/api/upgrades/start"))
        .body("new_version=v1.0.0");
    let (s, _, b) = srv.send(not_json.try_clone().unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    let (s, _, b) = srv.send(not_json.bearer_auth(TOKEN)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(error(&b).contains("not valid JSON"), "{b}");
    assert_eq!(b["error_kind"], "invalid_request", "{b}");

    // Too large: 413.
    let big = json!({"reason": "x".repeat(100 * 1024)}).to_string();
    assert!(big.len() > MAX_BODY_BYTES);
    let (s, _, b) = srv
        .send(
            srv.http
                .post(srv.url("/api/upgrades/rollback"))
                .bearer_auth(TOKEN)
                .body(big),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    error(&b);

    // Unknown argument: 422 naming it; nothing started.
    let (s, b) = srv
        .post(
            "/api/upgrades/start",
            Some(TOKEN),
            &json!({"new_version": "v1.0.0", "git_shaa": "HEAD"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(error(&b).contains("git_shaa"), "{b}");
    assert_eq!(b["error_kind"], json!("invalid_arguments"), "{b}");
    let (s, b) = srv
        .post("/api/upgrades/start", Some(TOKEN), &json!([1]))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let (s, b) = srv.get("/api/upgrades/status?verbose=1", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(error(&b).contains("verbose"), "{b}");
    assert_eq!(srv.stage().await, "idle");

    // Query arguments of GET routes.
    let (s, b) = srv
        .get(
            "/api/benchmarks/compare?old_version=v1.0.0&new_version=v2.0.0",
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert!(error(&b).contains("no benchmark snapshot"), "{b}");
    let (s, b) = srv
        .get(
            "/api/benchmarks/compare?old_version=v1.0.0&old_version=v2.0.0",
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = srv
        .get("/api/benchmarks/compare?old_version=v1.0.0", Some(TOKEN))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(error(&b).contains("new_version"), "{b}");
    // POST arguments belong in the body.
    let (s, b) = srv
        .post(
            "/api/upgrades/start?new_version=v1.0.0",
            Some(TOKEN),
            &json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    // Unknown routes and tools, wrong methods: JSON too.
    let (s, b) = srv.get("/api/nope", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert!(error(&b).contains("openapi"), "{b}");
    let (s, b) = srv.get("/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    let (s, b) = srv.post("/api/tools/rm_rf", Some(TOKEN), &json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert!(error(&b).contains("start_upgrade"), "{b}");
    let (s, b) = srv.get("/api/upgrades/start", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{b}");
    error(&b);
    let (s, b) = srv
        .post("/api/upgrades/status", Some(TOKEN), &json!({}))
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{b}");

    // Odd Authorization headers never panic.
    for value in [
        "Bearer",
        "Bearer ",
        "Bearer  ",
        "bearer\tx",
        &"B".repeat(5000),
    ] {
        let (s, _, b) = srv
            .send(
                srv.http
                    .post(srv.url("/api/upgrades/advance"))
                    .header("authorization", value),
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{value:?}: {b}");
    }
    let (s, _, b) = srv
        .send(
            srv.http
                .post(srv.url("/api/upgrades/advance"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("authorization", format!("Bearer {TOKEN}")),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert_eq!(srv.stage().await, "idle");
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_heartbeat_is_mounted_without_the_token() {
    let srv = Server::start(false).await;
    let (s, _, b) = srv
        .send(
            srv.http
                .post(srv.url("/api/fleet/heartbeat"))
                .body("garbage"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    error(&b);
    // Well-formed but unsigned by any enrolled key: refused by the fleet crate.
    let (s, b) = srv
        .post(
            "/api/fleet/heartbeat",
            None,
            &json!({"payload": "{}", "signature": "00"}),
        )
        .await;
    assert!(
        s.is_client_error() && s != StatusCode::NOT_FOUND,
        "{s}: {b}"
    );
    // The heartbeat route keeps the fleet crate's own, smaller body limit.
    let policy = fleetgate_fleet::HeartbeatPolicy::default();
    let (s, _, b) = srv
        .send(
            srv.http
                .post(srv.url("/api/fleet/heartbeat"))
                .body("x".repeat(policy.max_bytes + 1)),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");

    // Those refusals are counted; /metrics is a read (the token), the probes are open.
    let get = |path: &str, token: bool| {
        let mut r = srv.http.get(srv.url(path));
        if token {
            r = r.bearer_auth(TOKEN);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status();
            let ctype = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, ctype, r.text().await.unwrap())
        }
    };
    let (s, _, _) = get("/metrics", false).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, ctype, text) = get("/metrics", true).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert!(ctype.unwrap().starts_with("text/plain; version=0.0.4"));
    for line in [
        "fleetgate_pipeline_stage{stage=\"idle\"} 1",
        "fleetgate_outbox_depth 0",
        "fleetgate_heartbeats_accepted_total 0",
        // "garbage" and the payload without a node: both malformed.
        "fleetgate_heartbeats_refused_total{reason=\"malformed\"} 2",
        "fleetgate_heartbeats_refused_total{reason=\"too_large\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    let (s, _, text) = get("/healthz", false).await;
    assert_eq!((s, text.as_str()), (StatusCode::OK, "ok\n"));
    let (s, _, text) = get("/readyz", false).await;
    assert_eq!((s, text.as_str()), (StatusCode::OK, "ready\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_describes_every_route() {
    for open_reads in [false, true] {
        let srv = Server::start(open_reads).await;
        let (s, doc) = srv.get("/api/openapi.json", None).await;
        assert_eq!(s, StatusCode::OK, "{doc}");
        assert_eq!(doc["openapi"], json!("3.1.0"));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
            json!("bearer")
        );
        let bearer = json!([{"bearerAuth": []}]);
        let read_security = if open_reads {
            json!([])
        } else {
            bearer.clone()
        };
        let expected = [
            ("get", "/api/upgrades/status", Some("check_upgrade_status")),
            ("post", "/api/upgrades/start", Some("start_upgrade")),
            (
                "post",
                "/api/upgrades/advance",
                Some("advance_upgrade_pipeline"),
            ),
            ("post", "/api/upgrades/rollback", Some("rollback_upgrade")),
            ("post", "/api/upgrades/pause", Some("pause_upgrade")),
            ("post", "/api/upgrades/resume", Some("resume_upgrade")),
            ("post", "/api/upgrades/promote", Some("promote_upgrade")),
            ("post", "/api/upgrades/approve", Some("approve_upgrade")),
            (
                "post",
                "/api/upgrades/promote-channel",
                Some("promote_channel"),
            ),
            (
                "get",
                "/api/upgrades/canary-health",
                Some("check_canary_health"),
            ),
            ("get", "/api/benchmarks", Some("list_benchmarks")),
            ("post", "/api/benchmarks", Some("register_benchmark")),
            (
                "get",
                "/api/benchmarks/history",
                Some("get_benchmark_history"),
            ),
            ("get", "/api/benchmarks/compare", Some("compare_benchmarks")),
            ("post", "/api/benchmarks/capture", Some("capture_benchmark")),
            ("post", "/api/tools/{name}", None),
            ("post", "/api/fleet/heartbeat", None),
            ("get", "/api/fleet/peers", None),
            ("get", "/api/fleet/peers/{id}", None),
            ("get", "/api/openapi.json", None),
        ];
        let mut tools_seen = Vec::new();
        for (method, path, tool) in expected {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} is missing");
            assert!(op["summary"].is_string(), "{method} {path}");
            assert!(op["responses"]["200"].is_object(), "{method} {path}");
            let Some(tool) = tool else { continue };
            tools_seen.push(tool);
            let def = fleetgate_tools::find(tool).unwrap();
            assert_eq!(op["operationId"], json!(tool));
            assert_eq!(op["description"], json!(def.description));
            if def.read_only {
                assert_eq!(op["security"], read_security, "{path}");
            } else {
                assert_eq!(op["security"], bearer, "{path}");
                assert!(op["responses"]["401"].is_object(), "{path}");
            }
            if method == "post" {
                let schema = &op["requestBody"]["content"]["application/json"]["schema"];
                assert_eq!(schema, &def.input_schema, "{path}");
                jsonschema::validator_for(schema)
                    .unwrap_or_else(|e| panic!("{path}: request schema does not compile: {e}"));
                assert!(op["responses"]["413"].is_object(), "{path}");
            }
        }
        let mut all: Vec<&str> = fleetgate_tools::definitions()
            .iter()
            .map(|d| d.name)
            .collect();
        all.sort_unstable();
        tools_seen.sort_unstable();
        assert_eq!(tools_seen, all, "every tool has its own route");
        // The compare arguments are query parameters.
        let params = doc["paths"]["/api/benchmarks/compare"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["old_version", "new_version"]);
        assert!(
            params
                .iter()
                .all(|p| p["in"] == "query" && p["required"] == true)
        );
        assert_eq!(
            doc["paths"]["/api/fleet/heartbeat"]["post"]["security"],
            json!([])
        );
        assert_eq!(
            doc["paths"]["/api/fleet/peers"]["get"]["security"],
            read_security
        );
    }
}

#[test]
fn tokens_are_checked_and_never_shown() {
    assert!(ApiAuth::new("", "x").is_err());
    assert!(ApiAuth::new("   \n", "x").is_err());
    let short = ApiAuth::new("short-token", "x").unwrap_err().to_string();
    assert!(short.contains("at least 16"), "{short}");
    assert!(ApiAuth::new("has a space in the middle!", "x").is_err());
    assert!(ApiAuth::new(&"x".repeat(5000), "x").is_err());

    let auth = ApiAuth::new(&format!("  {TOKEN}\n"), "x").unwrap();
    assert!(auth.verify(TOKEN.as_bytes()));
    assert!(!auth.verify(&TOKEN.as_bytes()[..TOKEN.len() - 1]));
    assert!(!auth.verify(format!("{TOKEN}0").as_bytes()));
    assert!(!auth.verify(b""));
    assert!(!auth.verify(&[b'x'; 5000]));
    let debug = format!("{auth:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api.token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let from_file = ApiAuth::from_file(&file).unwrap();
    assert!(from_file.verify(TOKEN.as_bytes()));
    assert!(!from_file.open_reads());
    assert!(from_file.origin().contains("api.token"));
    let missing = ApiAuth::from_file(&dir.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope"), "{missing}");
    let unset = ApiAuth::from_env("FLEETGATE_TEST_SURELY_UNSET_TOKEN_VAR")
        .unwrap_err()
        .to_string();
    assert!(
        unset.contains("FLEETGATE_TEST_SURELY_UNSET_TOKEN_VAR"),
        "{unset}"
    );
}

/// Issue 13: 40 concurrent `capture_benchmark` calls over two versions whose names share
/// a stem (`v4.0.3`, `v4.0.5`) used to collide in one temporary checkout directory
/// (`bench-v4.0.partial`): none succeeded, 16 failed with "Directory not empty". Now
/// every call either succeeds or is refused at once with a clear `locked` (a capture of
/// the same version is running) or busy (503, too many calls) answer; none fails on the
/// filesystem, and no work directory is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_captures_never_collide() {
    let srv = Server::with_config(
        false,
        "[stages.benchmark]\ncommand = \"sleep 0.2; printf '[{\\\"name\\\":\\\"op\\\",\\\"unit\\\":\\\"ns\\\",\\\"value\\\":5}]' > bench.json\"\nresults = \"bench.json\"\n",
        &["v4.0.3", "v4.0.5"],
    )
    .await;
    let versions = ["v4.0.3", "v4.0.5"];
    let mut calls = Vec::new();
    for i in 0..40 {
        let req = srv
            .http
            .post(srv.url("/api/benchmarks/capture"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(json!({"version": versions[i % 2]}).to_string());
        calls.push(tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let retry_after = resp.headers().get("retry-after").is_some();
            let body: Value = resp.json().await.unwrap();
            (i, status, retry_after, body)
        }));
    }
    let mut results = Vec::new();
    for c in calls {
        results.push(c.await.unwrap());
    }
    let mut summary: std::collections::BTreeMap<u16, (usize, String)> = Default::default();
    for (_, status, _, body) in &results {
        let e = summary
            .entry(status.as_u16())
            .or_insert((0, body["error"].as_str().unwrap_or("").to_owned()));
        e.0 += 1;
    }
    eprintln!("40 concurrent captures: {summary:#?}");
    let mut ok = [0usize; 2];
    let (mut locked, mut busy) = (0, 0);
    for (i, status, retry_after, body) in results {
        match status {
            StatusCode::OK => {
                assert_eq!(body["version"], json!(versions[i % 2]), "{body}");
                assert_eq!(body["benchmarks"][0]["value"], json!(5.0), "{body}");
                ok[i % 2] += 1;
            }
            StatusCode::CONFLICT => {
                assert_eq!(body["error_kind"], json!("locked"), "{body}");
                assert!(error(&body).contains(versions[i % 2]), "{body}");
                locked += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry_after, "503 without Retry-After: {body}");
                assert_eq!(body["error_kind"], json!("busy"), "{body}");
                busy += 1;
            }
            other => panic!("call {i} ({}): {other}: {body}", versions[i % 2]),
        }
    }
    assert!(
        ok[0] >= 1 && ok[1] >= 1,
        "each version captured at least once: {ok:?}"
    );
    assert_eq!(ok[0] + ok[1] + locked + busy, 40);
    // Once they are done, a capture of each version succeeds again, and nothing is left
    // in the work directory but (free) lock files.
    for v in versions {
        let (s, b) = srv
            .post(
                "/api/benchmarks/capture",
                Some(TOKEN),
                &json!({"version": v}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let work = srv._dir.path().join("state/work");
    let left: Vec<String> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", work.display());
}

/// The API is rate-limited per source address before anything else: a client that keeps
/// calling gets 429 with `Retry-After` and `error_kind` `rate_limited` (even without the
/// token: nothing was checked or run).
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_from_one_source_gets_429() {
    let srv = Server::start(false).await;
    let limit = fleetgate_fleet::limit::API_LIMIT;
    let mut limited = None;
    for i in 0..(limit.burst * 4) {
        let (s, h, b) = srv.send(srv.http.get(srv.url("/api/openapi.json"))).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((i, h, b));
            break;
        }
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (i, h, b) = limited.expect("a 429 after the burst");
    assert!(i >= limit.burst, "limited after {i} requests");
    assert!(h.get("retry-after").is_some());
    assert_eq!(b["error_kind"], json!("rate_limited"), "{b}");
    // Checked before the token: a call without one is limited too. (On a loaded machine
    // the bucket may have refilled a token or two since: those calls get 401; a 429
    // must follow within the burst. Were the token checked first, none would.)
    let mut unauthorized = 0;
    loop {
        let (s, b) = srv.get("/api/upgrades/status", None).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
        unauthorized += 1;
        assert!(
            unauthorized <= limit.burst,
            "{unauthorized} calls without the token were not rate-limited"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_updates_page_loads_without_the_token_and_its_runs_route_needs_it() {
    let srv = Server::start(false).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/updates.js", "text/javascript"),
        ("/ui/updates.css", "text/css"),
    ] {
        let r = srv.http.get(srv.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        let body = r.text().await.unwrap();
        assert!(!body.contains(TOKEN), "the page holds no secret");
    }
    // The page's data comes from the API under its rules.
    let (s, b) = srv.get("/api/upgrades/runs", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    let (s, b) = srv.get("/api/upgrades/runs", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["runs"], json!([]), "no run finished yet: {b}");
    // A run rolled back is archived and listed.
    let (s, b) = srv
        .post(
            "/api/upgrades/start",
            Some(TOKEN),
            &json!({"new_version": "v1.0.0"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = srv
        .post(
            "/api/upgrades/rollback",
            Some(TOKEN),
            &json!({"reason": "listed in the runs"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = srv.get("/api/upgrades/runs", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let runs = b["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{b}");
    assert_eq!(runs[0]["version"], "v1.0.0");
    assert_eq!(runs[0]["stage"], "rolled_back");
    assert_eq!(runs[0]["channel"], "stable");
    assert!(
        runs[0]["rollback_reason"]
            .as_str()
            .unwrap()
            .contains("listed in the runs"),
        "{b}"
    );
}
