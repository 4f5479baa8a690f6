//! Issue 13: anti-entropy must not amplify. A 6-byte digest request from any address
//! used to be answered with the full signed manifest, so a spoofed source made a node
//! send a victim many times what the attacker sent. A sender that is not a verified
//! member (not in the node's peer list, and without a valid address cookie) now gets at
//! most as many bytes as it sent, or nothing, and is not learned as a peer (so later
//! push rounds do not send it manifests either).

use std::net::SocketAddr;
use std::sync::Arc;

use fleetgate_gossip::fixtures::Signer;
use fleetgate_gossip::{GossipConfig, Head, Input, Message, Node, Output, PeerAddr, PeerList};

const NOW: u64 = 1_700_000_000;

fn member(i: u8) -> PeerAddr {
    SocketAddr::from(([10, 0, 0, i], 7000))
}

fn bytes_to(out: &[Output], to: PeerAddr) -> usize {
    out.iter()
        .map(|o| match o {
            Output::Send { to: t, bytes, .. } if *t == to => bytes.len(),
            _ => 0,
        })
        .sum()
}

#[test]
fn a_non_member_never_gets_more_bytes_than_it_sent() {
    let signer = Signer::new(3, NOW - 60);
    let old = signer.release(4, "v1.0.0").unwrap();
    let current = signer.release(5, "v1.0.1").unwrap();
    let peers = Arc::new(PeerList::new((1..=5).map(member)));
    let mut node = Node::new(
        GossipConfig::default(),
        member(1),
        peers,
        signer.verifier(),
        7,
    )
    .unwrap();
    node.handle(Input::Tick { now_ms: NOW * 1000 });
    assert!(matches!(
        node.handle(Input::Publish {
            manifest: current.clone()
        })
        .as_slice(),
        [Output::Published(_)]
    ));
    let victim: PeerAddr = "198.51.100.7:4444".parse().unwrap();
    let probes: Vec<(&str, Vec<u8>)> = vec![
        (
            "digest, holds nothing",
            Message::Digest(None).encode().unwrap(),
        ),
        (
            "digest, older head",
            Message::Digest(Some(Head {
                sequence: 1,
                manifest_hash: [0; 32],
            }))
            .encode()
            .unwrap(),
        ),
        (
            "probe without a cookie",
            Message::Probe {
                head: None,
                cookie: [0; 16],
            }
            .encode()
            .unwrap(),
        ),
        (
            "probe with a forged cookie, older head",
            Message::Probe {
                head: Some(Head {
                    sequence: 1,
                    manifest_hash: [0; 32],
                }),
                cookie: [7; 16],
            }
            .encode()
            .unwrap(),
        ),
        (
            "stale push (replayed old release)",
            Message::Push(old.clone()).encode().unwrap(),
        ),
        (
            "stale manifest",
            Message::Manifest(old.clone()).encode().unwrap(),
        ),
    ];
    let (mut total_in, mut total_out) = (0, 0);
    let mut amplified = Vec::new();
    eprintln!("request from a non-member                 bytes in   bytes out");
    for (label, bytes) in &probes {
        let out = node.handle(Input::Message {
            from: victim,
            bytes: bytes.clone(),
        });
        let sent = bytes_to(&out, victim);
        eprintln!("{label:<40} {:>9} {:>11}", bytes.len(), sent);
        total_in += bytes.len();
        total_out += sent;
        if sent > bytes.len() {
            amplified.push(format!(
                "{label}: {} bytes in, {sent} bytes out",
                bytes.len()
            ));
        }
    }
    eprintln!("total                                    {total_in:>9} {total_out:>11}");
    assert!(amplified.is_empty(), "amplification: {amplified:?}");
    // The spoofed address was not learned: a newer release is pushed to members only.
    let newer = signer.release(6, "v1.0.2").unwrap();
    node.handle(Input::Publish { manifest: newer });
    for r in 1..=20 {
        let out = node.handle(Input::Tick {
            now_ms: NOW * 1000 + r * 1000,
        });
        assert_eq!(bytes_to(&out, victim), 0, "round {r} sent to the victim");
    }
}

/// A node that is not in the holder's peer list still pulls the manifest: its probe is
/// challenged (21 bytes for 22), it sends the cookie back, and is answered in full.
#[test]
fn a_new_node_proves_its_address_and_then_pulls() {
    let signer = Signer::new(3, NOW - 60);
    let m = signer.release(5, "v1.0.1").unwrap();
    let (a, b) = (member(1), member(9));
    // `a` holds the manifest and does not know `b`; `b` knows `a`.
    let mut holder = Node::new(
        GossipConfig::default(),
        a,
        Arc::new(PeerList::new([a, member(2)])),
        signer.verifier(),
        1,
    )
    .unwrap();
    holder.handle(Input::Tick { now_ms: NOW * 1000 });
    holder.handle(Input::Publish {
        manifest: m.clone(),
    });
    let mut newcomer = Node::new(
        GossipConfig::default(),
        b,
        Arc::new(PeerList::new([a])),
        signer.verifier(),
        2,
    )
    .unwrap();
    let mut to_holder = newcomer.handle(Input::Tick { now_ms: NOW * 1000 });
    let mut delivered = false;
    let mut trace = Vec::new();
    for _ in 0..4 {
        let mut to_newcomer = Vec::new();
        for o in to_holder.drain(..) {
            if let Output::Send { to, bytes, .. } = o {
                assert_eq!(to, a);
                let answer = holder.handle(Input::Message {
                    from: b,
                    bytes: bytes.to_vec(),
                });
                let out_bytes = bytes_to(&answer, b);
                trace.push((Message::decode(&bytes).unwrap(), bytes.len(), out_bytes));
                to_newcomer.extend(answer);
            }
        }
        for o in to_newcomer {
            if let Output::Send { bytes, .. } = o {
                for r in newcomer.handle(Input::Message {
                    from: a,
                    bytes: bytes.to_vec(),
                }) {
                    match r {
                        Output::Deliver(d) => {
                            assert_eq!(&*d.manifest, m.as_slice());
                            delivered = true;
                        }
                        other => to_holder.push(other),
                    }
                }
            }
        }
    }
    assert!(delivered, "the newcomer got the manifest: {trace:?}");
    // First probe: no cookie, challenged with fewer bytes than it carried.
    assert!(matches!(trace[0].0, Message::Probe { cookie, .. } if cookie == [0; 16]));
    assert!(trace[0].2 <= trace[0].1, "{trace:?}");
    // Second probe: the cookie, answered with the manifest.
    assert!(matches!(trace[1].0, Message::Probe { cookie, .. } if cookie != [0; 16]));
    assert!(trace[1].2 > m.len(), "{trace:?}");
    // The proven newcomer is now a member of the holder's pushes.
    assert_eq!(holder.peer_count(), 2);
}

/// Over real UDP: a six-byte digest from a stranger gets nothing, a probe gets a
/// challenge no larger than itself, a flood from one source address is cut to the
/// per-source rate, and another source on the same IP is not affected by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_udp_strangers_get_no_amplification_and_floods_are_cut() {
    use std::time::{Duration, Instant};
    use tokio::net::UdpSocket;
    let signer = Signer::new(3, fleetgate_gossip::runtime::unix_ms() / 1000 - 60);
    let m = signer.release(5, "v1.0.1").unwrap();
    let cfg = GossipConfig {
        round_interval_ms: 1000,
        anti_entropy_interval_ms: None,
        ..GossipConfig::default()
    };
    let handle = fleetgate_gossip::spawn_udp(
        cfg.clone(),
        "127.0.0.1:0".parse().unwrap(),
        Vec::<PeerAddr>::new(),
        signer.verifier(),
        Some(&m),
    )
    .await
    .unwrap();
    let node = handle.addr();
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 70_000];
    async fn next(sock: &UdpSocket, buf: &mut [u8]) -> Message {
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        Message::decode(&buf[..n]).unwrap()
    }
    let legacy = Message::Digest(None).encode().unwrap();
    let probe = Message::Probe {
        head: None,
        cookie: [0; 16],
    }
    .encode()
    .unwrap();
    stranger.send_to(&legacy, node).await.unwrap();
    stranger.send_to(&probe, node).await.unwrap();
    // Datagrams are handled in order: had the digest been answered, that answer would
    // come first.
    let Message::Challenge(cookie) = next(&stranger, &mut buf).await else {
        panic!("the first answer is the challenge");
    };
    assert_eq!(
        Message::Challenge(cookie).encode().unwrap().len(),
        fleetgate_gossip::CHALLENGE_BYTES
    );
    assert!(fleetgate_gossip::CHALLENGE_BYTES < probe.len());
    let proven = Message::Probe { head: None, cookie }.encode().unwrap();
    stranger.send_to(&proven, node).await.unwrap();
    assert_eq!(
        next(&stranger, &mut buf).await,
        Message::Manifest(m.clone())
    );

    // A flood from another port of the same IP.
    let flood = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (before, _) = handle.snapshot().await.unwrap();
    let t = Instant::now();
    for _ in 0..2000 {
        let _ = flood.send_to(&probe, node).await;
    }
    // The stranger's proven probe is still answered in full. (The flood may fill the
    // node's socket buffer and the kernel then drops datagrams: ask until answered.)
    let mut attempts = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        assert!(
            Instant::now() < deadline,
            "no answer to the stranger after the flood"
        );
        stranger.send_to(&proven, node).await.unwrap();
        attempts += 1;
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(500), stranger.recv_from(&mut buf)).await
        {
            break Message::decode(&buf[..n]).unwrap();
        }
    };
    assert_eq!(answer, Message::Manifest(m.clone()));
    let (after, _) = handle.snapshot().await.unwrap();
    let secs = t.elapsed().as_secs() + 1;
    let burst = 4 * u64::from(cfg.max_messages_per_source_per_round);
    let allowed = burst + secs * u64::from(cfg.max_messages_per_source_per_round) + 1;
    // What reached the node, less the stranger's (at most `attempts`).
    let handled = (after.received - before.received).saturating_sub(attempts);
    eprintln!("flood of 2000 probes from one source: {handled} reached the node (limit {allowed})");
    assert!(handled <= allowed, "{handled} > {allowed}");
    assert!(after.received - before.received > attempts.min(1));
    // What the flood got back is challenges only, never more bytes than it sent: the
    // only manifests sent went to the stranger.
    assert!(after.sent_manifest - before.sent_manifest <= attempts);
    assert!(after.sent_challenge > before.sent_challenge);
    handle.shutdown().await.unwrap();
}
