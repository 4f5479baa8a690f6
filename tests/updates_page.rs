//! The Updates page in a real browser: headless Chromium (Debian's `chromium`; `.ci/run`
//! installs it), driven over the DevTools protocol, against `fleetgate serve` on a real
//! demo fleet of four agents. It signs in with the API token, watches a run reach CANARY
//! (a chart per criterion over time), pauses, resumes and promotes it from the page,
//! approves DEPLOY from the page with an approval signed by the approver's key (a tampered
//! one refused) and sees `completed`; then rolls a second run back from the page. A screenshot of each step is written under
//! `target/updates-page/`.

mod common;
use common::{Fleet, code, git, text};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const TOKEN: &str = "page-test-token-0123456789abcdef";

fn chromium() -> Option<String> {
    if let Ok(p) = std::env::var("FLEETGATE_TEST_CHROMIUM") {
        return Some(p);
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(str::to_owned)
}

/// A headless Chromium and one page of it, over the DevTools protocol.
struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    shots: std::path::PathBuf,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch(program: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(program)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,1800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Chromium prints its DevTools endpoint on stderr.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium printed its DevTools endpoint");
        let (ws, _) = tungstenite::connect(url.as_str()).unwrap();
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        }
        let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/updates-page");
        std::fs::create_dir_all(&shots).unwrap();
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            shots,
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_owned();
        b
    }

    /// One DevTools command (on the page's session once attached); events are skipped.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::Text(msg.to_string().into())).unwrap();
        loop {
            let m = self.ws.read().unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `js` in the page; its value (promises awaited).
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "{js}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    fn text(&mut self, id: &str) -> String {
        self.eval(&format!(
            "(document.getElementById({id:?}) || {{}}).textContent || ''"
        ))
        .as_str()
        .unwrap_or("")
        .to_owned()
    }

    /// Waits until `js` is true in the page, failing with `what` and the page's stage.
    fn wait(&mut self, what: &str, js: &str, limit: Duration) {
        let t = Instant::now();
        loop {
            if self.eval(js) == json!(true) {
                return;
            }
            if t.elapsed() > limit {
                let stage = self.text("stage");
                let message = self.text("message");
                self.screenshot(&format!("timeout-{}", what.replace(' ', "-")));
                panic!("page: {what} not seen in {limit:?} (stage `{stage}`, message `{message}`)");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn click(&mut self, id: &str) {
        self.eval(&format!("document.getElementById({id:?}).click(); true"));
    }

    fn screenshot(&mut self, name: &str) {
        use base64::Engine as _;
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stage_is(stage: &str) -> String {
    format!("document.getElementById('stage').textContent === {stage:?}")
}

#[test]
fn an_operator_drives_runs_from_the_updates_page_in_a_real_browser() {
    let Some(program) = chromium() else {
        fleetgate_testkit::skip(
            "a headless browser (chromium)",
            "install Debian's `chromium` package (or set FLEETGATE_TEST_CHROMIUM)",
        );
        return;
    };
    let fleet = Fleet::prepare(4);
    // A canary window of an hour: the page is looked at while the run is in CANARY.
    let conf = std::fs::read_to_string(fleet.config()).unwrap();
    let edited = conf.replacen("window_secs = 15\n", "window_secs = 3600\n", 1);
    let edited = edited.replacen("max_window_secs = 120\n", "max_window_secs = 3600\n", 1);
    assert!(
        edited.contains("\nwindow_secs = 3600\n") && edited.contains("\nmax_window_secs = 3600\n"),
        "{edited}"
    );
    // DEPLOY waits for one signed approval: the page shows the request, the approver signs
    // it with the binary (their machine, their key), and the page submits it.
    let key = fleet.dir.path().join("approver.key");
    let out = fleet.fg(&["keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let approver = std::fs::read_to_string(fleet.dir.path().join("approver.key.pub")).unwrap();
    let edited = format!(
        "{edited}\n[approval]\nbefore = [\"deploy\"]\nrequired = 1\nkeys = [{:?}]\n",
        approver.trim()
    );
    std::fs::write(fleet.config(), edited).unwrap();
    let token = fleet.dir.path().join("api.token");
    std::fs::write(&token, TOKEN).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _serve = fleet.background(&[
        "serve",
        "--listen",
        &addr,
        "--token-file",
        token.to_str().unwrap(),
    ]);
    let base = format!("http://{addr}");
    let t = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut b = Browser::launch(&program);
    b.call("Page.enable", json!({}));
    b.call("Page.navigate", json!({"url": format!("{base}/")}));
    b.wait(
        "the sign-in form",
        "document.readyState === 'complete' && !!document.getElementById('token')",
        Duration::from_secs(30),
    );
    b.screenshot("01-sign-in");
    // A wrong token is refused and nothing is shown.
    b.eval("document.getElementById('token').value = 'not-the-token-at-all'; true");
    b.click("login");
    b.wait(
        "the refusal",
        "document.getElementById('login-error').textContent.includes('not valid')",
        Duration::from_secs(15),
    );
    assert!(b.eval("document.getElementById('app').hidden") == json!(true));
    b.eval(&format!(
        "document.getElementById('token').value = {TOKEN:?}; true"
    ));
    b.click("login");
    b.wait(
        "the idle pipeline",
        &stage_is("idle"),
        Duration::from_secs(15),
    );
    assert!(
        !b.eval("location.href").as_str().unwrap().contains(TOKEN),
        "the token never goes into the URL"
    );
    b.wait(
        "the fleet table",
        "document.querySelectorAll('#fleet tbody tr').length === 4",
        Duration::from_secs(30),
    );
    // Each node's health, as its last signed heartbeat reported it.
    b.wait(
        "the fleet's health",
        "[...document.querySelectorAll('#fleet tbody tr')].every((r) => r.children[6].textContent === 'healthy') \
         && document.getElementById('by-version').textContent.includes('4 healthy, 0 unhealthy')",
        Duration::from_secs(30),
    );
    b.screenshot("02-signed-in");

    // A good release: the page sees it reach CANARY; pause, resume, promote from the page.
    let app = fleet.dir.path().join("sample-app");
    std::fs::write(app.join("NOTES"), "page release\n").unwrap();
    git(&app, &["add", "NOTES"]);
    git(&app, &["commit", "-qm", "v4.1.0"]);
    git(&app, &["tag", "v4.1.0"]);
    let out = fleet.fg(&["start", "v4.1.0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let run = fleet.background(&["run"]);
    b.wait("CANARY", &stage_is("canary"), Duration::from_secs(240));
    b.eval("document.getElementById('reason').value = 'checking the dashboards'; true");
    b.click("btn-pause");
    b.wait(
        "the pause",
        "document.getElementById('paused').textContent.startsWith('PAUSED')",
        Duration::from_secs(15),
    );
    let s = fleet.status();
    assert_eq!(s["paused"]["reason"], "checking the dashboards", "{s}");
    b.screenshot("03-paused");
    b.click("btn-resume");
    b.wait(
        "the resume",
        "document.getElementById('paused').textContent === 'running'",
        Duration::from_secs(15),
    );
    // The canary window opens once every canary node reports the release (1 h here):
    // only promote ends it.
    let t = Instant::now();
    while fleet.status()["canary"]["window_start"].is_null() {
        assert!(t.elapsed() < Duration::from_secs(120), "canary window");
        std::thread::sleep(Duration::from_millis(200));
    }
    b.wait(
        "the canary criteria",
        "document.querySelectorAll('#criteria tbody tr').length === 5",
        Duration::from_secs(30),
    );
    // Each criterion over time: one chart per criterion, filled by successive checks; the
    // exception rate's has its statistic (the SPRT's log likelihood ratio) as a line.
    b.wait(
        "a chart per criterion with two checks or more",
        "(() => { const s = [...document.querySelectorAll('#criteria svg.spark')]; \
           return s.length === 5 && s.every((x) => +x.dataset.points >= 2); })()",
        Duration::from_secs(120),
    );
    assert_eq!(
        b.eval(
            "[...document.querySelectorAll('#criteria svg.spark')].map((x) => x.dataset.criterion).sort().join(',')"
        ),
        json!("benchmark,exception_rate,health_check,heartbeat,integrity")
    );
    b.wait(
        "the exception-rate statistic over time",
        "!!document.querySelector('#criteria svg.spark[data-criterion=exception_rate] polyline')",
        Duration::from_secs(60),
    );
    assert_eq!(
        b.eval("getComputedStyle(document.getElementById('approval-box')).display"),
        json!("none"),
        "the approval form shows only once a request is asked for"
    );
    b.screenshot("04-canary");
    b.eval("document.getElementById('reason').value = 'healthy on the dashboards'; true");
    b.click("btn-promote");
    // DEPLOY waits for its approval: asked for on the page, signed with the approver's
    // key, submitted from the page.
    b.wait(
        "DEPLOY waiting for its approval",
        "document.getElementById('stage').textContent === 'deploying' \
         && document.getElementById('gates').textContent.includes('waiting for approvals: 0 of 1 before DEPLOY')",
        Duration::from_secs(120),
    );
    b.click("btn-approve");
    b.wait(
        "the approval request",
        "document.getElementById('approval-request').textContent.includes('\"deploy\"')",
        Duration::from_secs(30),
    );
    assert_ne!(
        b.eval("getComputedStyle(document.getElementById('approval-box')).display"),
        json!("none")
    );
    let request = b.eval("document.getElementById('approval-request').textContent");
    let request_file = fleet.dir.path().join("request.json");
    std::fs::write(&request_file, request.as_str().unwrap()).unwrap();
    let signed_file = fleet.dir.path().join("signed.json");
    let out = fleet.fg(&[
        "approve",
        "--sign",
        request_file.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
        "--out",
        signed_file.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let signed = std::fs::read_to_string(&signed_file).unwrap();
    // Tampered on the way (another version): the page shows the refusal, nothing counts.
    let mut forged: Value = serde_json::from_str(&signed).unwrap();
    forged["version"] = json!("v9.9.9");
    b.eval(&format!(
        "document.getElementById('approval').value = {:?}; true",
        forged.to_string()
    ));
    b.click("btn-submit-approval");
    b.wait(
        "the refused approval",
        "document.getElementById('message').textContent.startsWith('approval refused')",
        Duration::from_secs(30),
    );
    assert_eq!(fleet.status()["stage"], "deploying");
    b.eval(&format!(
        "document.getElementById('approval').value = {signed:?}; true"
    ));
    b.click("btn-submit-approval");
    b.wait(
        "the recorded approval",
        "document.getElementById('message').textContent.startsWith('approval recorded: 1 of 1 before deploy')",
        Duration::from_secs(30),
    );
    b.screenshot("05-approved");
    b.wait(
        "completed",
        &stage_is("completed"),
        Duration::from_secs(240),
    );
    assert!(
        b.text("gates").contains("passed (promoted)"),
        "{}",
        b.text("gates")
    );
    b.wait(
        "the approval form gone with the run",
        "getComputedStyle(document.getElementById('approval-box')).display === 'none'",
        Duration::from_secs(15),
    );
    b.screenshot("06-completed");
    let out = run.wait_within(Duration::from_secs(60));
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = fleet.status();
    assert_eq!(
        s["gate_results"]["canary"]["promoted"]["reason"],
        "healthy on the dashboards"
    );

    // A second run, rolled back from the page.
    let out = fleet.fg(&["start", "v3.0.0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let run = fleet.background(&["run"]);
    b.wait("the second run", "['building','testing','auditing','benchmarking','signing','canary'].includes(document.getElementById('stage').textContent)", Duration::from_secs(60));
    b.eval("window.confirm = () => true; document.getElementById('reason').value = 'not this one'; true");
    b.click("btn-rollback");
    b.wait(
        "rolled_back",
        &stage_is("rolled_back"),
        Duration::from_secs(120),
    );
    b.screenshot("07-rolled-back");
    let out = run.wait_within(Duration::from_secs(120));
    assert!(matches!(code(&out), 0 | 4), "{}", text(&out));
    let s = fleet.status();
    assert_eq!(s["stage"], "rolled_back", "{s}");
    assert!(
        s["rollback_reason"]
            .as_str()
            .unwrap_or("")
            .contains("not this one"),
        "{s}"
    );
    // Both finished runs are listed, newest first.
    b.wait(
        "the runs table",
        "(() => { const r = [...document.querySelectorAll('#runs tbody tr')].map(t => t.children[3].textContent); return r.length === 2 && r[0] === 'rolled_back' && r[1] === 'completed'; })()",
        Duration::from_secs(30),
    );
    assert!(
        b.text("runs").contains("not this one"),
        "{}",
        b.text("runs")
    );
    b.screenshot("08-runs");
    println!("screenshots in {}", b.shots.display());
}
