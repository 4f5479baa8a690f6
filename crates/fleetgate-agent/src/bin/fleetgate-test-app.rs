//! A tiny application for the agent's tests (std only, no shell tricks): serves HTTP on
//! `127.0.0.1:$PORT` from its working directory (the slot).
//!
//! Behaviour is read from the file `MODE` in the working directory at start:
//! `healthy` (default) — `GET /health` answers 200 with
//! `{"status":"ok","version":…,"exceptions_total":n,"requests_total":m}`;
//! `unhealthy` — `GET /health` answers 503; `crash` — exits with status 3 at once.
//! `GET /version` answers `<VERSION file> <FLEETGATE_SLOT> <pid>`. The exception count is
//! the number in the file `EXCEPTIONS` (default 0).
//!
//! A data migration, for the backup tests: when the file `MIGRATE` exists and `DATA_DIR`
//! is set, the app at start rewrites `$DATA_DIR/schema` to its version, writes
//! `$DATA_DIR/<VERSION>.log`, removes `$DATA_DIR/sub`, and appends `migrated <VERSION>` to
//! `$DATA_DIR/../migrations.log` (outside the data, as proof the migration ran).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

fn main() {
    let mode = std::fs::read_to_string("MODE").unwrap_or_else(|_| "healthy".into());
    let mode = mode.trim().to_owned();
    if mode == "crash" {
        eprintln!("test app: MODE=crash, exiting");
        std::process::exit(3);
    }
    let version = std::fs::read_to_string("VERSION").unwrap_or_default();
    let version = version.trim().to_owned();
    if std::path::Path::new("MIGRATE").exists()
        && let Some(data) = std::env::var_os("DATA_DIR")
    {
        migrate(std::path::Path::new(&data), &version);
    }
    let exceptions: u64 = std::fs::read_to_string("EXCEPTIONS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let slot = std::env::var("FLEETGATE_SLOT").unwrap_or_default();
    let port = std::env::var("PORT").unwrap_or_else(|_| "0".into());
    let listener = match TcpListener::bind(format!("127.0.0.1:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("test app: bind 127.0.0.1:{port}: {e}");
            std::process::exit(4);
        }
    };
    let mut requests: u64 = 0;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        requests += 1;
        let mut line = String::new();
        let mut reader = BufReader::new(match stream.try_clone() {
            Ok(s) => s,
            Err(_) => continue,
        });
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        // Drain the headers.
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) | Err(_) => break,
                Ok(_) if h == "\r\n" || h == "\n" => break,
                Ok(_) => {}
            }
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = match path {
            "/health" if mode == "unhealthy" => (
                "503 Service Unavailable",
                "{\"status\":\"sick\"}".to_owned(),
            ),
            "/health" => (
                "200 OK",
                format!(
                    "{{\"status\":\"ok\",\"version\":\"{version}\",\"exceptions_total\":{exceptions},\"requests_total\":{requests}}}"
                ),
            ),
            "/version" => ("200 OK", format!("{version} {slot} {}", std::process::id())),
            _ => ("404 Not Found", String::new()),
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

fn migrate(data: &std::path::Path, version: &str) {
    let _ = std::fs::write(data.join("schema"), format!("{version}\n"));
    let _ = std::fs::write(data.join(format!("{version}.log")), "migrated\n");
    let _ = std::fs::remove_dir_all(data.join("sub"));
    if let Some(parent) = data.parent()
        && let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(parent.join("migrations.log"))
    {
        let _ = writeln!(log, "migrated {version}");
    }
}
