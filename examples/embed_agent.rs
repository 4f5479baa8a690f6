//! A node runtime that embeds the fleetgate agent next to its own work — built with only
//! the `agent` feature, so it pulls no orchestrator, sqlx registry or MCP server:
//!
//! ```toml
//! fleetgate = { version = "0.1", default-features = false, features = ["agent"] }
//! ```
//!
//! Run it with a node config, the same file `fleetgate node run --config` reads
//! (`crates/fleetgate-agent/node.example.toml` is a commented one):
//!
//! ```sh
//! cargo run --example embed_agent --no-default-features --features agent -- node.toml
//! ```
//!
//! The agent serves `/apply` and `/status` (HTTPS with `tls_cert_file`), heartbeats to the
//! orchestrator, joins gossip and applies only releases whose signed manifest verifies
//! against the node's trust file. The runtime's "own work" here is a status line every
//! 30 s; SIGINT or SIGTERM shuts the agent down, waiting for an apply in flight.

use std::path::PathBuf;
use std::time::Duration;

use fleetgate::{NodeConfig, RunningNode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: embed_agent NODE_TOML")?;
    let config = NodeConfig::load(&path)?;
    // The node runtime's own tokio runtime: the agent runs on it, it is not nested.
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let node = RunningNode::start(config).await?;
        println!(
            "agent on {} (node {})",
            node.addr(),
            node.agent().status().node_id
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    // … the node runtime's own work …
                    let status = node.agent().status();
                    println!(
                        "running {} (floor {})",
                        status.version.as_deref().unwrap_or("nothing yet"),
                        status.floor
                    );
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            }
        }
        node.shutdown().await?;
        Ok(())
    })
}
