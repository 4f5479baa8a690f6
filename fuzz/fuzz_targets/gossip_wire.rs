//! A gossip node fed datagrams from a configured peer and from strangers: the wire
//! decoder (`Message::decode`) and everything `Node::handle` does with what it decodes
//! (verify, store, answer, challenge), as the UDP runtime runs it.
//!
//! Input: records `[selector u8][length u16 BE][datagram]` (the last record takes what
//! is left). Selector bits 0-1: sender (0 = the configured peer, 1-3 = strangers); bit 2:
//! a round (1 s) passes first; bit 3: 70 s pass first (a new cookie window).
//!
//! Checks: a decoded message encodes to exactly its bytes; a stranger never gets more
//! bytes than it sent (no amplification); whatever is delivered verifies.
#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use fleetgate_fuzz::NOW;
use fleetgate_gossip::fixtures::Signer;
use fleetgate_gossip::node::{GossipConfig, Input, Node, Output, PeerList};
use fleetgate_gossip::wire::Message;
use fleetgate_gossip::{TrustVerifier, Verifier};
use libfuzzer_sys::fuzz_target;

const ME: &str = "10.0.0.1:7946";
const PEER: &str = "10.0.0.2:7946";
const STRANGERS: [&str; 3] = ["192.0.2.1:7946", "192.0.2.2:1", "[2001:db8::1]:7946"];

/// A node's held manifest: release sequence 5, signed by the trusted key.
static HELD: LazyLock<Vec<u8>> = LazyLock::new(|| {
    Signer::new(fleetgate_fuzz::TRUST_SEED[0], NOW - 60)
        .release(5, "v1.5.0")
        .expect("sign the held manifest")
});

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("fixture address")
}

fn verifier() -> TrustVerifier {
    TrustVerifier::new(fleetgate_fuzz::keyring())
}

fn records(mut data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while let Some((&sel, rest)) = data.split_first() {
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
            _ => (rest.len(), &rest[rest.len()..]),
        };
        let n = len.min(rest.len());
        out.push((sel, &rest[..n]));
        data = &rest[n..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The decoder alone, on the raw input.
    if let Ok(m) = Message::decode(data) {
        let again = m.encode().expect("a decoded message encodes");
        assert_eq!(again, data, "decode/encode is not the identity");
    }

    let peers = Arc::new(PeerList::new([addr(PEER)]));
    let mut node =
        Node::new(GossipConfig::default(), addr(ME), peers, verifier(), 1).expect("node config");
    let mut now_ms = NOW * 1000;
    node.restore(&HELD, now_ms)
        .expect("restore the held manifest");
    let _ = node.handle(Input::Tick { now_ms });

    let mut sent_by: HashMap<SocketAddr, usize> = HashMap::new();
    let mut sent_to: HashMap<SocketAddr, usize> = HashMap::new();
    for (sel, bytes) in records(data).into_iter().take(64) {
        if sel & 4 != 0 {
            now_ms += 1000;
        }
        if sel & 8 != 0 {
            now_ms += 70_000;
        }
        let mut outs = Vec::new();
        if sel & 12 != 0 {
            outs.extend(node.handle(Input::Tick { now_ms }));
        }
        let from = match sel & 3 {
            0 => addr(PEER),
            i => addr(STRANGERS[usize::from(i) - 1]),
        };
        *sent_by.entry(from).or_default() += bytes.len();
        outs.extend(node.handle(Input::Message {
            from,
            bytes: bytes.to_vec(),
        }));
        for o in outs {
            match o {
                Output::Send { to, bytes, .. } => *sent_to.entry(to).or_default() += bytes.len(),
                Output::Deliver(d) => {
                    verifier()
                        .verify(&d.manifest, now_ms / 1000)
                        .expect("a delivered manifest verifies");
                }
                Output::Published(_) | Output::Drop { .. } => {}
            }
        }
    }
    for s in STRANGERS.map(addr) {
        let (got, out) = (
            sent_by.get(&s).copied().unwrap_or(0),
            sent_to.get(&s).copied().unwrap_or(0),
        );
        assert!(
            out <= got,
            "amplification: {s} sent {got} bytes and got {out}"
        );
    }
});
