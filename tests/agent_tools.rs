//! The agent tools through the real binary: an MCP client session against `fleetgate mcp`
//! (spawned, spoken to in JSON-RPC over its stdin/stdout, as Claude or Cursor would),
//! `fleetgate tools export`, and a registered benchmark that runs only once allowed, and
//! then without a shell.

mod common;
use common::{Env, bin, code, text};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A minimal MCP client over a child's stdio.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    next_id: u64,
}

impl Client {
    fn spawn(env: &Env) -> Client {
        let mut cmd = env.command(&["mcp"]);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Client {
            child,
            stdin,
            lines,
            next_id: 1,
        }
    }

    fn send(&mut self, msg: &Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
    }

    /// Send a request and wait for the response with its id (skipping notifications).
    fn request(&mut self, method: &str, params: Value) -> Value {
        self.request_collect(method, params).0
    }

    /// Send a request; return the response and the notifications that came before it.
    fn request_collect(&mut self, method: &str, params: Value) -> (Value, Vec<Value>) {
        let mut notes = Vec::new();
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("no answer to {method} within 120 s"));
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout carried a non-JSON line {line:?}: {e}"));
            if v["id"] == json!(id) {
                return (v, notes);
            }
            if v.get("id").is_none() {
                notes.push(v);
            }
        }
    }

    /// `tools/call`, returning the tool's structured result and the `isError` flag.
    fn call(&mut self, tool: &str, args: Value) -> (Value, bool) {
        let r = self.request("tools/call", json!({"name": tool, "arguments": args}));
        let result = &r["result"];
        assert!(result.is_object(), "{tool}: {r}");
        let structured = result["structuredContent"].clone();
        // The text content carries the same JSON, for clients that read only text.
        let text = result["content"][0]["text"].as_str().unwrap();
        assert_eq!(serde_json::from_str::<Value>(text).unwrap(), structured);
        (structured, result["isError"] == true)
    }
}

#[test]
fn an_mcp_session_starts_advances_inspects_and_rolls_back_a_run() {
    let env = Env::new();
    let mut c = Client::spawn(&env);
    let init = c.request(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "e2e-agent", "version": "0"}}),
    );
    let info = &init["result"];
    assert_eq!(info["serverInfo"]["name"], "fleetgate", "{init}");
    assert!(info["capabilities"]["tools"].is_object(), "{init}");
    assert!(
        info["instructions"]
            .as_str()
            .unwrap()
            .contains("rollback_upgrade")
    );
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));

    let list = c.request("tools/list", json!({}));
    let tools = list["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names.len(),
        15,
        "HART's ten + pause, resume, promote, approve, promote_channel: {names:?}"
    );
    for t in tools {
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert!(!t["description"].as_str().unwrap().is_empty());
    }
    let start = tools.iter().find(|t| t["name"] == "start_upgrade").unwrap();
    assert_eq!(start["inputSchema"]["required"], json!(["new_version"]));
    let rb = tools
        .iter()
        .find(|t| t["name"] == "rollback_upgrade")
        .unwrap();
    assert_eq!(rb["annotations"]["destructiveHint"], true);

    // Nothing running yet; the tag v1.0.0 is waiting.
    let (s, err) = c.call("check_upgrade_status", json!({}));
    assert!(!err, "{s}");
    assert_eq!(s["stage"], "idle");
    assert_eq!(s["new_version_detected"], true, "{s}");
    assert_eq!(s["new_version"]["version"], "v1.0.0");

    let (s, err) = c.call("start_upgrade", json!({"new_version": "v1.0.0"}));
    assert!(!err, "{s}");
    assert_eq!(s["success"], true);
    assert_eq!(s["stage"], "building");
    assert_eq!(s["git_sha"].as_str().unwrap().len(), 40);
    let run_id = s["run_id"].as_str().unwrap().to_owned();

    let (s, _) = c.call("check_upgrade_status", json!({}));
    assert_eq!(s["stage"], "building");
    assert_eq!(s["version"], "v1.0.0");
    assert_eq!(s["active"], true);
    assert_eq!(s["run_id"], run_id.as_str());

    // One real gate: BUILD runs build.sh in a clean checkout and passes. With a progress
    // token the steps arrive as notifications before the result.
    let (r, notes) = c.request_collect(
        "tools/call",
        json!({"name": "advance_upgrade_pipeline", "arguments": {}, "_meta": {"progressToken": "adv-1"}}),
    );
    let progress: Vec<&Value> = notes
        .iter()
        .filter(|n| n["method"] == "notifications/progress")
        .collect();
    assert!(
        progress
            .iter()
            .any(|n| n["params"]["progressToken"] == "adv-1"
                && n["params"]["message"].as_str().unwrap().contains("BUILD")),
        "{notes:?}"
    );
    let s = r["result"]["structuredContent"].clone();
    let err = r["result"]["isError"] == true;
    assert!(!err, "{s}");
    assert!(s["progress"].as_array().unwrap().len() >= 2, "{s}");
    assert_eq!(s["stage_evaluated"], "building");
    assert_eq!(s["outcome"], "passed", "{s}");
    assert_eq!(s["committed"], true);
    assert_eq!(s["stage"], "testing");
    assert_eq!(s["code_hash"].as_str().unwrap().len(), 64);

    // Refusals come back as tool errors with a message, not protocol failures.
    let (s, err) = c.call("start_upgrade", json!({"new_version": "v1.0.0"}));
    assert!(err);
    assert_eq!(s["success"], false);
    assert!(
        s["error"].as_str().unwrap().contains("testing"),
        "names the active stage: {s}"
    );
    assert_eq!(s["error_kind"], "refused");
    let (s, err) = c.call("start_upgrade", json!({"new_version": 5}));
    assert!(err, "{s}");
    assert!(s["error"].as_str().unwrap().contains("invalid"), "{s}");
    // No canary in this run yet: HART's answer, not an error.
    let (s, err) = c.call("check_canary_health", json!({}));
    assert!(!err, "{s}");
    assert_eq!(s["canary_active"], false, "{s}");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("CANARY gate has not run")
    );
    let (s, err) = c.call("rollback_upgrade", json!({"reason": 7}));
    assert!(err, "{s}");
    assert_eq!(s["error_kind"], "invalid_arguments", "{s}");

    let (s, err) = c.call(
        "rollback_upgrade",
        json!({"reason": "agent saw p99 latency up 40%"}),
    );
    assert!(!err, "{s}");
    assert_eq!(s["stage"], "rolled_back");
    assert_eq!(s["rollback_reason"], "agent saw p99 latency up 40%");
    assert_eq!(s["rolled_back_from"], "testing", "{s}");
    assert_eq!(s["rollback_order_queued"], false, "no node had the release");

    let unknown = c.request(
        "tools/call",
        json!({"name": "drop_tables", "arguments": {}}),
    );
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");

    // The session's effects are in the state file, as the CLI shows them.
    let st = env.status();
    assert_eq!(st["stage"], "rolled_back");
    assert_eq!(st["run_id"], run_id.as_str());
    assert_eq!(st["rollback_reason"], "agent saw p99 latency up 40%");

    // Closing stdin ends the server cleanly.
    drop(c.stdin.take());
    let status = c.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn tools_export_gives_plain_function_definitions() {
    let env = Env::new();
    let out = env.fg(&["tools", "export", "--format", "openai"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 15);
    assert_eq!(v[3]["function"]["name"], "start_upgrade");
    assert_eq!(v[3]["function"]["parameters"]["type"], "object");

    let out = env.fg(&["tools", "export", "--format", "anthropic"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[6]["name"], "rollback_upgrade");
    // HART: `reason` is optional (default "").
    assert_eq!(v[6]["input_schema"]["required"], Value::Null);
    assert_eq!(v[6]["input_schema"]["properties"]["reason"]["default"], "");

    let out = env.fg(&["tools", "export", "--format", "json-schema"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("crates/fleetgate-tools/schemas/tools.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(v, committed);

    let out = env.fg(&["tools", "export", "--format", "yaml"]);
    assert_eq!(code(&out), 2, "{}", text(&out));

    // `tools call` is the same dispatcher from a shell.
    let out = env.fg(&["tools", "call", "check_upgrade_status"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["success"], true);
    let out = env.fg(&[
        "tools",
        "call",
        "rollback_upgrade",
        "--args",
        "{\"reason\":\"x\"}",
    ]);
    assert_eq!(code(&out), 1, "nothing to roll back: {}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["success"], false);
}

#[test]
fn a_registered_benchmark_runs_only_once_allowed_repeated_and_without_a_shell() {
    let env = Env::new();
    // A benchmark script committed in the release (v1.0.1). Its second argument would
    // create `pwned` if anything interpreted it with a shell.
    env.commit_tag("v1.0.1", |app| {
        std::fs::write(
            app.join("regbench.sh"),
            // Noisy, as real benchmarks are: 12, 30, 13 ms on its 1st, 2nd, 3rd run
            // (then again), so the repeats' median is 13 whatever run a capture starts at.
            "#!/bin/sh\nset -eu\nmkdir -p target\nn=$(cat target/runs 2>/dev/null || echo 0)\nn=$((n + 1))\necho $n > target/runs\n\
             case $((n % 3)) in 1) v=12 ;; 2) v=30 ;; *) v=13 ;; esac\n\
             printf '[{\"name\":\"p99\",\"unit\":\"ms\",\"value\":%s}]' \"$v\" > \"$1\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            app.join("regbench.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    });
    let tb = |tool: &str, args: Value| -> Value {
        let out = env.fg(&["tools", "call", tool, "--args", &args.to_string()]);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{tool}: {e}: {}", text(&out)))
    };
    let r = tb(
        "register_benchmark",
        json!({"name": "latency", "command": ["./regbench.sh", "target/reg.json", "$(touch pwned)"],
               "results": "target/reg.json", "tier": "fast",
               "repo_url": "https://example.invalid/bench.git"}),
    );
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["allowed"], false);
    let hash = r["definition_hash"].as_str().unwrap().to_owned();
    assert!(r["note"].as_str().unwrap().contains(&hash), "{r}");

    // Not allowed yet: capture runs the configured command only and says what it left out.
    let r = tb(
        "capture_benchmark",
        json!({"version": "v1.0.1", "tier": "fast"}),
    );
    assert_eq!(r["success"], true, "{r}");
    let names: Vec<&str> = r["benchmarks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["startup", "throughput"]);
    assert_eq!(r["not_run"][0]["name"], "latency");
    let list = tb("list_benchmarks", json!({}));
    assert_eq!(list["benchmarks"][0]["allowed"], false);
    assert_eq!(
        list["benchmarks"][0]["repo_url"],
        "https://example.invalid/bench.git"
    );

    // The operator allows exactly this definition.
    let cfg = std::fs::read_to_string(env.config()).unwrap();
    std::fs::write(
        env.config(),
        format!("{cfg}\n[benchmarks.allowed]\nlatency = \"{hash}\"\n"),
    )
    .unwrap();
    let r = tb(
        "capture_benchmark",
        json!({"version": "v1.0.1", "tier": "fast"}),
    );
    assert_eq!(r["success"], true, "{r}");
    let entry = r["benchmarks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "latency/p99")
        .unwrap_or_else(|| panic!("the registered benchmark ran: {r}"));
    // Run `[stages.benchmark] repeats` (default 3) times: the median, every repeat kept.
    assert_eq!(entry["value"], 13.0, "{entry}");
    let mut samples: Vec<f64> = entry["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("samples: {entry}"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    samples.sort_by(f64::total_cmp);
    assert_eq!(samples, [12.0, 13.0, 30.0]);
    assert_eq!(r["registered"], json!(["latency"]));
    let work = env.state_dir().join("work");
    let pwned: Vec<_> = walk(&work)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "pwned"))
        .collect();
    assert!(
        pwned.is_empty(),
        "an argument was run by a shell: {pwned:?}"
    );
    // A heavy-tier capture leaves the fast benchmark out.
    let r = tb(
        "capture_benchmark",
        json!({"version": "v1.0.1", "tier": "heavy"}),
    );
    assert_eq!(r["registered"], Value::Null, "{r}");

    // Changing the definition withdraws the approval.
    let r = tb(
        "register_benchmark",
        json!({"name": "latency", "command": ["./regbench.sh", "target/reg.json", "--other"],
               "results": "target/reg.json", "tier": "fast"}),
    );
    assert_eq!(r["replaced"], true);
    assert_eq!(r["allowed"], false);
    let list = tb("list_benchmarks", json!({}));
    assert!(
        list["benchmarks"][0]["not_allowed_because"]
            .as_str()
            .unwrap()
            .contains("changed"),
        "{list}"
    );
    // The CLI view of the same registry.
    let out = env.fg(&["bench", "list"]);
    assert!(text(&out).contains("NOT allowed"), "{}", text(&out));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn mcp_serves_nothing_but_protocol_on_stdout_even_without_a_config() {
    // A client started in a directory with no fleetgate.toml still gets a working
    // session; each tool then says what is missing.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .arg("mcp")
        .current_dir(dir.path())
        .env_remove("FLEETGATE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let msgs = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "check_upgrade_status", "arguments": {}}}),
    ];
    for m in &msgs {
        writeln!(stdin, "{m}").unwrap();
    }
    stdin.flush().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut answered = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let v: Value = serde_json::from_str(&line).expect("only JSON-RPC on stdout");
        if v["id"] == 2 {
            answered = Some(v);
            break;
        }
    }
    drop(stdin);
    let v = answered.expect("an answer to tools/call");
    assert_eq!(v["result"]["isError"], true, "{v}");
    let err = v["result"]["structuredContent"]["error"].as_str().unwrap();
    assert!(err.contains("fleetgate.toml"), "{err}");
    assert!(child.wait().unwrap().success());
}

/// One HTTP/1.1 request over a fresh connection; returns (status, JSON body).
fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status: u16 = raw.split(' ').nth(1).unwrap().parse().unwrap();
    let json = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim())
        .unwrap_or("");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

#[test]
fn fleetgate_serve_refuses_mutations_without_the_token() {
    let env = Env::new();
    // No token configured: it does not start.
    let out = env.fg(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("token"), "{}", text(&out));

    let token = "e2e-token-0123456789abcdef";
    let token_file = env.dir.path().join("api.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = env
        .command(&["serve", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(&token_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("http://") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "serve exited");
        assert!(!line.contains(token), "the token is never printed: {line}");
    }
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();

    let start = r#"{"new_version": "v1.0.0"}"#;
    let (status, body) = http(&addr, "POST", "/api/upgrades/start", None, start);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["success"], false);
    let (status, _) = http(
        &addr,
        "POST",
        "/api/upgrades/start",
        Some("wrong-token-0123456789"),
        start,
    );
    assert_eq!(status, 401);
    assert_eq!(env.status()["stage"], "idle", "nothing ran");

    let (status, body) = http(&addr, "POST", "/api/upgrades/start", Some(token), start);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stage"], "building");
    let (status, body) = http(&addr, "GET", "/api/upgrades/status", Some(token), "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "v1.0.0");
    let (status, body) = http(&addr, "GET", "/api/openapi.json", None, "");
    assert_eq!(status, 200);
    assert!(
        body["paths"]["/api/upgrades/rollback"]["post"].is_object(),
        "{body}"
    );
    let (status, body) = http(
        &addr,
        "POST",
        "/api/upgrades/rollback",
        Some(token),
        r#"{"reason": "http e2e"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(env.status()["stage"], "rolled_back");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}
