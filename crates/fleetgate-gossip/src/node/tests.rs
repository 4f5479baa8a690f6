//! Unit tests of the pure state machine: exact outputs for given inputs.

use super::*;
use crate::verify::{ManifestKind, sha256};

/// Toy verifier for state-machine tests only: `seq=<n>;kind=<release|rollback>;sig=good`.
struct Toy;

impl Verifier for Toy {
    fn verify(&self, m: &[u8], _now: u64) -> Result<Verified, Reject> {
        let s = std::str::from_utf8(m).map_err(|_| Reject::Malformed)?;
        let mut seq = None;
        let mut kind = None;
        let mut sig = None;
        for part in s.split(';') {
            match part.split_once('=') {
                Some(("seq", v)) => seq = v.parse::<u64>().ok(),
                Some(("kind", "release")) => kind = Some(ManifestKind::Release),
                Some(("kind", "rollback")) => kind = Some(ManifestKind::Rollback),
                Some(("sig", v)) => sig = Some(v),
                Some(_) | None => {}
            }
        }
        match sig {
            None => return Err(Reject::Unsigned),
            Some("good") => {}
            Some(_) => return Err(Reject::BadSignature),
        }
        Ok(Verified {
            sequence: seq.ok_or(Reject::Malformed)?,
            manifest_hash: sha256(m),
            kind: kind.ok_or(Reject::Malformed)?,
            expires_at: None,
        })
    }
}

fn addr(i: u8) -> PeerAddr {
    PeerAddr::from(([127, 0, 0, i], 7000))
}

fn release(seq: u64) -> Vec<u8> {
    format!("seq={seq};kind=release;sig=good").into_bytes()
}

fn node_with(cfg: GossipConfig, peers: u8) -> Node<Toy> {
    let list = Arc::new(PeerList::new((1..=peers).map(addr)));
    Node::new(cfg, addr(1), list, Toy, 7).unwrap()
}

fn node(peers: u8) -> Node<Toy> {
    node_with(GossipConfig::default(), peers)
}

fn msg(m: Message) -> Vec<u8> {
    m.encode().unwrap()
}

fn sends(out: &[Output]) -> Vec<(PeerAddr, SendKind, Message)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to, bytes, kind } => Some((*to, *kind, Message::decode(bytes).unwrap())),
            Output::Deliver(_) | Output::Published(_) | Output::Drop { .. } => None,
        })
        .collect()
}

fn head(m: &[u8], seq: u64) -> Head {
    Head {
        sequence: seq,
        manifest_hash: sha256(m),
    }
}

/// Start the node's clock with anti-entropy disabled to isolate the push phase.
fn push_only(peers: u8) -> Node<Toy> {
    let mut n = node_with(
        GossipConfig {
            anti_entropy_interval_ms: None,
            ..GossipConfig::default()
        },
        peers,
    );
    assert!(n.handle(Input::Tick { now_ms: 0 }).is_empty());
    n
}

#[test]
fn publish_then_push_to_fanout_distinct_peers_until_budget_is_spent() {
    let mut n = push_only(20);
    let m = release(1);
    let out = n.handle(Input::Publish {
        manifest: m.clone(),
    });
    assert!(matches!(out.as_slice(), [Output::Published(v)] if v.sequence == 1));
    // 20 nodes -> budget 4 * ceil(log10(21)) = 8 -> rounds of 3, 3, 2, then silence.
    assert_eq!(n.push_budget_left(), 8);
    let mut per_round = Vec::new();
    for r in 1..=5u64 {
        let s = sends(&n.handle(Input::Tick { now_ms: r * 1000 }));
        let mut to: Vec<_> = s.iter().map(|(a, _, _)| *a).collect();
        for (_, kind, body) in &s {
            assert_eq!(*kind, SendKind::Push);
            assert_eq!(*body, Message::Push(m.clone()));
        }
        assert!(!to.contains(&addr(1)), "pushed to itself");
        to.sort();
        to.dedup();
        assert_eq!(to.len(), s.len(), "duplicate targets in one round");
        per_round.push(s.len());
    }
    assert_eq!(per_round, vec![3, 3, 2, 0, 0]);
    assert_eq!(n.stats().sent_push, 8);
}

#[test]
fn ticks_inside_a_round_do_not_push_again() {
    let mut n = push_only(20);
    n.handle(Input::Publish {
        manifest: release(1),
    });
    assert_eq!(sends(&n.handle(Input::Tick { now_ms: 1000 })).len(), 3);
    assert!(sends(&n.handle(Input::Tick { now_ms: 1500 })).is_empty());
    assert!(
        sends(&n.handle(Input::Tick { now_ms: 1200 })).is_empty(),
        "time went back"
    );
    assert_eq!(sends(&n.handle(Input::Tick { now_ms: 2000 })).len(), 3);
}

#[test]
fn new_manifest_is_delivered_once_and_duplicates_are_counted() {
    let mut n = push_only(5);
    let m = release(3);
    let out = n.handle(Input::Message {
        from: addr(2),
        bytes: msg(Message::Push(m.clone())),
    });
    match out.as_slice() {
        [Output::Deliver(d)] => {
            assert_eq!(d.verified.sequence, 3);
            assert_eq!(&*d.manifest, m.as_slice());
        }
        other => panic!("{other:?}"),
    }
    let again = n.handle(Input::Message {
        from: addr(3),
        bytes: msg(Message::Push(m.clone())),
    });
    assert!(again.is_empty());
    assert_eq!(n.stats().duplicates, 1);
    assert_eq!(n.stats().delivered, 1);
    assert_eq!(n.head(), Some(head(&m, 3)));
}

#[test]
fn forged_unsigned_and_malformed_are_dropped_counted_and_never_forwarded() {
    let mut n = push_only(5);
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (
            msg(Message::Push(b"seq=9;kind=release;sig=evil".to_vec())),
            DropReason::Unverified(Reject::BadSignature),
        ),
        (
            msg(Message::Push(b"seq=9;kind=release".to_vec())),
            DropReason::Unverified(Reject::Unsigned),
        ),
        (
            msg(Message::Manifest(vec![0xff, 0xfe])),
            DropReason::Unverified(Reject::Malformed),
        ),
        (b"garbage".to_vec(), DropReason::Malformed),
        (
            vec![0; crate::wire::MAX_MESSAGE_BYTES + 1],
            DropReason::Oversized,
        ),
    ];
    for (bytes, reason) in &cases {
        let out = n.handle(Input::Message {
            from: addr(2),
            bytes: bytes.clone(),
        });
        assert_eq!(
            out,
            vec![Output::Drop {
                source: Source::Peer(addr(2)),
                reason: *reason
            }]
        );
        assert_eq!(n.stats().dropped(*reason), 1, "{reason:?}");
    }
    assert_eq!(n.head(), None);
    for r in 1..10 {
        assert!(
            n.handle(Input::Tick { now_ms: r * 1000 }).is_empty(),
            "forwarded something"
        );
    }
    assert_eq!(n.stats().dropped_total(), cases.len() as u64);
}

#[test]
fn a_rejected_publish_is_reported_and_not_gossiped() {
    let mut n = push_only(5);
    let out = n.handle(Input::Publish {
        manifest: b"seq=1;kind=release;sig=bad".to_vec(),
    });
    assert_eq!(
        out,
        vec![Output::Drop {
            source: Source::Local,
            reason: DropReason::Unverified(Reject::BadSignature)
        }]
    );
    assert!(n.handle(Input::Tick { now_ms: 1000 }).is_empty());
}

#[test]
fn older_sequence_is_dropped_and_the_sender_is_brought_forward() {
    let mut n = push_only(5);
    let new = release(5);
    n.handle(Input::Message {
        from: addr(2),
        bytes: msg(Message::Push(new.clone())),
    });
    let out = n.handle(Input::Message {
        from: addr(3),
        bytes: msg(Message::Push(release(4))),
    });
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        out[0],
        Output::Drop {
            source: Source::Peer(addr(3)),
            reason: DropReason::Stale
        }
    );
    assert_eq!(
        sends(&out[1..]),
        vec![(addr(3), SendKind::Manifest, Message::Manifest(new.clone()))]
    );
    assert_eq!(n.head(), Some(head(&new, 5)));
}

#[test]
fn rollback_with_higher_sequence_supersedes_release_and_restarts_the_rumor() {
    let mut n = push_only(20);
    n.handle(Input::Message {
        from: addr(2),
        bytes: msg(Message::Push(release(7))),
    });
    for r in 1..=10 {
        n.handle(Input::Tick { now_ms: r * 1000 });
    }
    assert_eq!(n.push_budget_left(), 0);
    let rb = b"seq=8;kind=rollback;sig=good".to_vec();
    let out = n.handle(Input::Message {
        from: addr(3),
        bytes: msg(Message::Push(rb.clone())),
    });
    assert!(
        matches!(out.as_slice(), [Output::Deliver(d)] if d.verified.kind == ManifestKind::Rollback && d.verified.sequence == 8)
    );
    let s = sends(&n.handle(Input::Tick { now_ms: 11_000 }));
    assert_eq!(s.len(), 3);
    assert!(s.iter().all(|(_, _, m)| *m == Message::Push(rb.clone())));
    // The release it undoes no longer gets in.
    let out = n.handle(Input::Message {
        from: addr(4),
        bytes: msg(Message::Push(release(7))),
    });
    assert_eq!(
        out[0],
        Output::Drop {
            source: Source::Peer(addr(4)),
            reason: DropReason::Stale
        }
    );
}

#[test]
fn same_sequence_different_bytes_is_equivocation() {
    let mut n = push_only(5);
    n.handle(Input::Message {
        from: addr(2),
        bytes: msg(Message::Push(release(2))),
    });
    let other = b"seq=2;kind=rollback;sig=good".to_vec();
    let out = n.handle(Input::Message {
        from: addr(3),
        bytes: msg(Message::Push(other)),
    });
    assert_eq!(
        out,
        vec![Output::Drop {
            source: Source::Peer(addr(3)),
            reason: DropReason::Equivocation
        }]
    );
    assert_eq!(n.head().map(|h| h.sequence), Some(2));
}

#[test]
fn digest_is_answered_with_the_manifest_when_newer_else_with_own_head() {
    let mut n = push_only(5);
    let m = release(4);
    // Holding nothing: answer with an empty head.
    let out = n.handle(Input::Message {
        from: addr(2),
        bytes: msg(Message::Digest(None)),
    });
    assert_eq!(
        sends(&out),
        vec![(addr(2), SendKind::DigestReply, Message::DigestReply(None))]
    );
    n.handle(Input::Message {
        from: addr(2),
        bytes: msg(Message::Push(m.clone())),
    });
    for (theirs, expect) in [
        (None, Message::Manifest(m.clone())),
        (Some(head(b"x", 3)), Message::Manifest(m.clone())),
        (Some(head(&m, 4)), Message::DigestReply(Some(head(&m, 4)))),
        (Some(head(b"y", 9)), Message::DigestReply(Some(head(&m, 4)))),
    ] {
        let out = n.handle(Input::Message {
            from: addr(3),
            bytes: msg(Message::Digest(theirs)),
        });
        let s = sends(&out);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].2, expect, "for {theirs:?}");
    }
}

#[test]
fn answers_are_rate_limited_per_round() {
    let mut n = node_with(
        GossipConfig {
            max_replies_per_round: 2,
            anti_entropy_interval_ms: None,
            ..GossipConfig::default()
        },
        5,
    );
    n.handle(Input::Tick { now_ms: 0 });
    let d = msg(Message::Digest(None));
    let mut answered = 0;
    for _ in 0..5 {
        answered += sends(&n.handle(Input::Message {
            from: addr(2),
            bytes: d.clone(),
        }))
        .len();
    }
    assert_eq!(answered, 2);
    assert_eq!(n.stats().dropped(DropReason::RateLimited), 3);
    n.handle(Input::Tick { now_ms: 1000 });
    assert_eq!(
        sends(&n.handle(Input::Message {
            from: addr(2),
            bytes: d
        }))
        .len(),
        1,
        "budget resets each round"
    );
}

#[test]
fn pull_on_start_retries_unanswered_and_sends_manifest_to_a_peer_that_is_behind() {
    let cfg = GossipConfig {
        pull_retries: 2,
        catch_up_pulls: 0,
        anti_entropy_interval_ms: Some(10_000),
        ..GossipConfig::default()
    };
    let mut n = node_with(cfg, 10);
    let m = release(1);
    n.handle(Input::Publish {
        manifest: m.clone(),
    });
    // First tick: pushes plus an immediate anti-entropy digest.
    let s = sends(&n.handle(Input::Tick { now_ms: 0 }));
    let digests: Vec<_> = s
        .iter()
        .filter(|(_, k, _)| *k == SendKind::Digest)
        .collect();
    assert_eq!(digests.len(), 1);
    assert_eq!(
        digests[0].2,
        Message::Probe {
            head: Some(head(&m, 1)),
            cookie: [0; 16]
        }
    );
    let first = digests[0].0;
    // Unanswered: after the timeout, another peer is asked, twice, then it gives up.
    let mut asked = vec![first];
    for t in [1000, 2000, 3000, 4000] {
        for (to, k, _) in sends(&n.handle(Input::Tick { now_ms: t })) {
            if k == SendKind::Digest {
                asked.push(to);
            }
        }
    }
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert_ne!(asked[0], asked[1]);
    assert_ne!(asked[1], asked[2]);
    // A reply nobody asked for is dropped.
    let out = n.handle(Input::Message {
        from: addr(9),
        bytes: msg(Message::DigestReply(None)),
    });
    assert_eq!(
        out,
        vec![Output::Drop {
            source: Source::Peer(addr(9)),
            reason: DropReason::Unsolicited
        }]
    );
    // Next interval: a new pull; the peer answers that it is behind -> manifest to it.
    let s = sends(&n.handle(Input::Tick { now_ms: 10_000 }));
    let (peer, _, _) = *s.iter().find(|(_, k, _)| *k == SendKind::Digest).unwrap();
    let out = n.handle(Input::Message {
        from: peer,
        bytes: msg(Message::DigestReply(None)),
    });
    assert_eq!(
        sends(&out),
        vec![(peer, SendKind::Manifest, Message::Manifest(m))]
    );
    // And the exchange is closed: no retry after the timeout.
    assert!(
        sends(&n.handle(Input::Tick { now_ms: 11_000 }))
            .iter()
            .all(|(_, k, _)| *k != SendKind::Digest)
    );
}

#[test]
fn a_node_that_is_behind_gets_the_manifest_by_pulling() {
    let mut n = node(5);
    let s = sends(&n.handle(Input::Tick { now_ms: 0 }));
    let (peer, _, body) = s[0].clone();
    assert_eq!(
        body,
        Message::Probe {
            head: None,
            cookie: [0; 16]
        }
    );
    let m = release(2);
    let out = n.handle(Input::Message {
        from: peer,
        bytes: msg(Message::Manifest(m.clone())),
    });
    assert!(matches!(out.as_slice(), [Output::Deliver(d)] if *d.manifest == *m));
    // The pull is answered, so no retry; the new manifest is pushed on.
    let s = sends(&n.handle(Input::Tick { now_ms: 1000 }));
    assert!(
        s.iter().all(|(_, k, _)| *k == SendKind::Push) && s.len() == 3,
        "{s:?}"
    );
}

#[test]
fn peers_are_learned_from_proven_probes_up_to_a_cap() {
    let mut n = node_with(
        GossipConfig {
            max_learned_peers: 2,
            ..GossipConfig::default()
        },
        3,
    );
    assert_eq!(n.peer_count(), 2);
    // Unproven senders (legacy digest, probe without or with a wrong cookie, pushes)
    // teach nothing: their source may be spoofed.
    for (i, m) in [
        Message::Digest(None),
        Message::Probe {
            head: None,
            cookie: [0; 16],
        },
        Message::Probe {
            head: None,
            cookie: [1; 16],
        },
        Message::Push(release(1)),
    ]
    .into_iter()
    .enumerate()
    {
        n.handle(Input::Message {
            from: addr(40 + i as u8),
            bytes: msg(m),
        });
    }
    assert_eq!(n.peer_count(), 2);
    for i in 50..55 {
        let cookie = n.cookie_for(addr(i));
        n.handle(Input::Message {
            from: addr(i),
            bytes: msg(Message::Probe { head: None, cookie }),
        });
    }
    assert_eq!(n.peer_count(), 4);
    // Garbage does not teach addresses.
    n.handle(Input::Message {
        from: addr(99),
        bytes: b"junk".to_vec(),
    });
    assert_eq!(n.peer_count(), 4);
}

#[test]
fn a_stranger_is_challenged_once_and_a_cookie_is_bound_to_its_address_and_window() {
    let mut n = node(3);
    n.handle(Input::Tick { now_ms: 0 });
    n.handle(Input::Publish {
        manifest: release(3),
    });
    let stranger = addr(77);
    let probe = msg(Message::Probe {
        head: None,
        cookie: [0; 16],
    });
    let out = n.handle(Input::Message {
        from: stranger,
        bytes: probe.clone(),
    });
    let cookie = match sends(&out).as_slice() {
        [(to, SendKind::Challenge, Message::Challenge(c))] if *to == stranger => *c,
        other => panic!("{other:?}"),
    };
    // The cookie of another address, or from two windows ago, proves nothing.
    let out = n.handle(Input::Message {
        from: addr(78),
        bytes: msg(Message::Probe { head: None, cookie }),
    });
    assert!(matches!(
        sends(&out).as_slice(),
        [(_, SendKind::Challenge, _)]
    ));
    let proven = msg(Message::Probe { head: None, cookie });
    n.handle(Input::Tick {
        now_ms: COOKIE_WINDOW_MS + 1,
    });
    let out = n.handle(Input::Message {
        from: stranger,
        bytes: proven.clone(),
    });
    assert!(
        matches!(sends(&out).as_slice(), [(_, SendKind::Manifest, _)]),
        "the previous window's cookie still counts"
    );
    n.handle(Input::Tick {
        now_ms: 2 * COOKIE_WINDOW_MS + 1,
    });
    // Learned by now (a member): answered even without the cookie.
    let out = n.handle(Input::Message {
        from: stranger,
        bytes: probe,
    });
    assert!(matches!(
        sends(&out).as_slice(),
        [(_, SendKind::Manifest, _)]
    ));
    let mut fresh = node(3);
    fresh.handle(Input::Tick {
        now_ms: 2 * COOKIE_WINDOW_MS + 1,
    });
    let out = fresh.handle(Input::Message {
        from: stranger,
        bytes: proven,
    });
    assert!(
        matches!(sends(&out).as_slice(), [(_, SendKind::Challenge, _)]),
        "another node's (or an expired) cookie is challenged again"
    );
    // A challenge nobody asked for is dropped, and a pull follows one challenge only.
    let out = n.handle(Input::Message {
        from: addr(2),
        bytes: msg(Message::Challenge([5; 16])),
    });
    assert!(matches!(
        out.as_slice(),
        [Output::Drop {
            reason: DropReason::Unsolicited,
            ..
        }]
    ));
}

#[test]
fn restore_holds_without_delivering_or_pushing() {
    let mut n = push_only(5);
    let m = release(6);
    let v = n.restore(&m, 0).unwrap();
    assert_eq!(v.sequence, 6);
    assert!(n.handle(Input::Tick { now_ms: 1000 }).is_empty());
    assert!(matches!(
        n.restore(b"seq=7;kind=release;sig=x", 0),
        Err(NodeError::Restore(Reject::BadSignature))
    ));
}

#[test]
fn config_is_validated_and_budget_follows_cluster_size() {
    let bad = GossipConfig {
        fanout: 0,
        ..GossipConfig::default()
    };
    assert!(matches!(
        Node::new(bad, addr(1), Arc::new(PeerList::default()), Toy, 1),
        Err(NodeError::Config(ConfigError::Zero("fanout")))
    ));
    let c = GossipConfig::default();
    assert_eq!(c.retransmit_budget(1000), 16);
    assert_eq!(c.retransmit_budget(100_000), 24);
    assert_eq!(c.retransmit_budget(5), 4);
    assert_eq!(c.retransmit_budget(1), 4);
    assert_eq!(ceil_log10(1), 0);
    assert_eq!(ceil_log10(10), 1);
    assert_eq!(ceil_log10(11), 2);
}

#[test]
fn drop_reason_names_are_unique() {
    let mut names: Vec<_> = DropReason::all().map(DropReason::as_str).collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n);
    assert_eq!(n, DropReason::SLOTS);
}

#[test]
fn on_start_and_after_being_away_it_pulls_every_round_until_a_peer_with_data_answers() {
    let cfg = GossipConfig {
        catch_up_pulls: 5,
        anti_entropy_interval_ms: Some(10_000),
        ..GossipConfig::default()
    };
    let mut n = node_with(cfg, 10);
    let digest_to = |out: &[Output]| -> Option<PeerAddr> {
        sends(out)
            .into_iter()
            .find(|(_, k, _)| *k == SendKind::Digest)
            .map(|(a, _, _)| a)
    };
    // Peers that hold nothing either: keep asking, once per round, 5 times in all.
    let mut asked = 0;
    for r in 0..8u64 {
        if let Some(p) = digest_to(&n.handle(Input::Tick { now_ms: r * 1000 })) {
            asked += 1;
            n.handle(Input::Message {
                from: p,
                bytes: msg(Message::DigestReply(None)),
            });
        }
    }
    assert_eq!(asked, 5);
    // Away for longer than an interval (60 s without a tick): catch up again, and stop
    // as soon as a peer holding something at least as new answers.
    let p = digest_to(&n.handle(Input::Tick { now_ms: 68_000 })).expect("pull on return");
    let m = release(3);
    n.handle(Input::Message {
        from: p,
        bytes: msg(Message::Manifest(m.clone())),
    });
    assert_eq!(n.head(), Some(head(&m, 3)));
    for r in 69..75u64 {
        assert_eq!(
            digest_to(&n.handle(Input::Tick { now_ms: r * 1000 })),
            None,
            "round {r}"
        );
    }
}

/// Random interleavings of ticks, publishes, valid/forged/stale manifests, digests and
/// garbage: the node never panics, its held sequence never goes down, every delivery is
/// strictly newer than the last, and every manifest it sends is one that verified.
#[test]
fn random_inputs_keep_the_invariants() {
    let mut rng = crate::rng::Rng::seed_from_u64(0x000F_1EE7);
    for case in 0..300u64 {
        let mut n = node(8);
        let mut now = 0u64;
        let mut held = 0u64;
        let mut delivered = 0u64;
        for _ in 0..60 {
            let from = addr(2 + rng.below(10) as u8);
            let seq = 1 + rng.below(6);
            let input = match rng.below(9) {
                0 | 1 => {
                    now += rng.below(2500);
                    Input::Tick { now_ms: now }
                }
                2 => Input::Publish {
                    manifest: release(seq),
                },
                3 => Input::Message {
                    from,
                    bytes: msg(Message::Push(release(seq))),
                },
                4 => Input::Message {
                    from,
                    bytes: msg(Message::Manifest(release(seq))),
                },
                5 => Input::Message {
                    from,
                    bytes: msg(Message::Push(
                        format!("seq={seq};kind=rollback;sig=forged").into_bytes(),
                    )),
                },
                6 => Input::Message {
                    from,
                    bytes: msg(Message::Digest(n.head().filter(|_| rng.chance(0.5)))),
                },
                7 => Input::Message {
                    from,
                    bytes: msg(Message::DigestReply(None)),
                },
                _ => {
                    let len = rng.below(40) as usize;
                    Input::Message {
                        from,
                        bytes: (0..len).map(|_| rng.next_u64() as u8).collect(),
                    }
                }
            };
            for o in n.handle(input) {
                match o {
                    Output::Send { bytes, to, .. } => {
                        assert_ne!(to, addr(1), "case {case}: sent to itself");
                        match Message::decode(&bytes).unwrap() {
                            Message::Push(m) | Message::Manifest(m) => {
                                assert!(
                                    Toy.verify(&m, 0).is_ok(),
                                    "case {case}: forwarded unverified bytes"
                                );
                                assert_eq!(Some(m), n.held().map(|d| d.manifest.to_vec()));
                            }
                            Message::Digest(_)
                            | Message::DigestReply(_)
                            | Message::Probe { .. }
                            | Message::Challenge(_) => {}
                        }
                    }
                    Output::Deliver(d) => {
                        assert!(
                            d.verified.sequence > delivered,
                            "case {case}: delivered an older manifest"
                        );
                        delivered = d.verified.sequence;
                    }
                    Output::Published(_) | Output::Drop { .. } => {}
                }
            }
            let now_held = n.head().map_or(0, |h| h.sequence);
            assert!(now_held >= held, "case {case}: held sequence went down");
            held = now_held;
        }
    }
}
