//! One test suite, run against both transports: the in-memory network and real UDP
//! sockets on 127.0.0.1 (ephemeral ports). Five nodes, real signed manifests, the tokio
//! runtime with short rounds.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetgate_gossip::fixtures::Signer;
use fleetgate_gossip::runtime::unix_ms;
use fleetgate_gossip::sim::sim_addr;
use fleetgate_gossip::{
    DropReason, GossipConfig, GossipHandle, MAX_MESSAGE_BYTES, ManifestKind, MemNetwork,
    MemTransport, Message, Node, PeerList, Reject, Transport, TrustVerifier, UdpTransport, spawn,
};

const NODES: usize = 5;

/// A way to bind endpoints at stable per-slot addresses, and to send raw datagrams.
trait Net: Send + Sync + 'static {
    type T: Transport;
    async fn bind(&self, slot: usize) -> Self::T;
    async fn send_raw(&self, to: SocketAddr, bytes: Vec<u8>);
}

struct Mem(MemNetwork);

impl Net for Mem {
    type T = MemTransport;
    async fn bind(&self, slot: usize) -> MemTransport {
        self.0.bind(sim_addr(slot)).expect("bind in-memory")
    }
    async fn send_raw(&self, to: SocketAddr, bytes: Vec<u8>) {
        self.0.send_raw(sim_addr(999), to, bytes);
    }
}

struct Udp(Mutex<Vec<Option<SocketAddr>>>);

impl Net for Udp {
    type T = UdpTransport;
    async fn bind(&self, slot: usize) -> UdpTransport {
        let known = self.0.lock().unwrap()[slot];
        let want = known.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let t = UdpTransport::bind(want).await.expect("bind UDP");
        self.0.lock().unwrap()[slot] = Some(t.local_addr());
        t
    }
    async fn send_raw(&self, to: SocketAddr, bytes: Vec<u8>) {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(&bytes, to).await.unwrap();
    }
}

type V = Arc<TrustVerifier>;

struct Cluster<N: Net> {
    net: N,
    signer: Signer,
    peers: Arc<PeerList>,
    addrs: Vec<SocketAddr>,
    running: Vec<Option<GossipHandle<V>>>,
    stopped: Vec<Option<Node<V>>>,
}

fn cfg() -> GossipConfig {
    GossipConfig {
        round_interval_ms: 40,
        anti_entropy_interval_ms: Some(400),
        pull_timeout_ms: 80,
        ..GossipConfig::default()
    }
}

impl<N: Net> Cluster<N> {
    async fn start(net: N) -> Self {
        let mut transports = Vec::new();
        for slot in 0..NODES {
            transports.push(net.bind(slot).await);
        }
        let addrs: Vec<SocketAddr> = transports.iter().map(Transport::local_addr).collect();
        let peers = Arc::new(PeerList::new(addrs.iter().copied()));
        let signer = Signer::new(3, unix_ms() / 1000 - 60);
        let mut running = Vec::new();
        for (slot, t) in transports.into_iter().enumerate() {
            let v = Arc::new(signer.verifier());
            let node =
                Node::new(cfg(), addrs[slot], Arc::clone(&peers), v, slot as u64 + 1).unwrap();
            running.push(Some(spawn(node, t)));
        }
        Self {
            net,
            signer,
            peers,
            addrs,
            running,
            stopped: (0..NODES).map(|_| None).collect(),
        }
    }

    fn handle(&self, i: usize) -> &GossipHandle<V> {
        self.running[i].as_ref().expect("node running")
    }

    async fn stop(&mut self, i: usize) {
        let h = self.running[i].take().expect("running");
        self.stopped[i] = Some(h.shutdown().await.unwrap());
    }

    async fn restart(&mut self, i: usize) {
        let node = self.stopped[i].take().expect("stopped");
        let t = self.net.bind(i).await;
        self.running[i] = Some(spawn(node, t));
    }

    async fn heads(&self) -> Vec<Option<u64>> {
        let mut out = Vec::new();
        for h in self.running.iter().flatten() {
            out.push(h.snapshot().await.unwrap().1.map(|h| h.sequence));
        }
        out
    }

    /// Wait until every running node holds `seq`; false after `within`.
    async fn wait_all(&self, seq: u64, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.heads().await.iter().all(|h| *h == Some(seq)) {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(mut self) {
        for h in self.running.iter_mut() {
            if let Some(h) = h.take() {
                h.shutdown().await.unwrap();
            }
        }
        let _ = &self.peers;
    }
}

const WITHIN: Duration = Duration::from_secs(5);

async fn broadcast_reaches_every_node<N: Net>(net: N) {
    let c = Cluster::start(net).await;
    let mut rx = c.handle(4).deliveries();
    let v = c
        .handle(0)
        .publish(c.signer.release(1, "v1.0.0").unwrap())
        .await
        .unwrap();
    assert_eq!(v.sequence, 1);
    assert!(c.wait_all(1, WITHIN).await, "heads {:?}", c.heads().await);
    // The application on node 4 was handed the verified manifest.
    tokio::time::timeout(
        WITHIN,
        rx.wait_for(|d| d.as_ref().is_some_and(|d| d.verified.sequence == 1)),
    )
    .await
    .expect("delivery")
    .unwrap();
    c.shutdown().await;
}

async fn forged_and_replayed_manifests_are_refused<N: Net>(net: N) {
    let c = Cluster::start(net).await;
    // Signed by a key nobody trusts.
    let rogue = Signer::new(99, unix_ms() / 1000 - 60);
    let forged = Message::Push(rogue.release(5, "v6.6.6").unwrap())
        .encode()
        .unwrap();
    c.net.send_raw(c.addrs[1], forged).await;
    // Tampered: a trusted signature over different content.
    let good = c.signer.release(2, "v2.0.0").unwrap();
    let tampered = String::from_utf8(good.clone())
        .unwrap()
        .replace("v2.0.0", "v9.9.9");
    c.net
        .send_raw(
            c.addrs[2],
            Message::Push(tampered.into_bytes()).encode().unwrap(),
        )
        .await;
    // A rogue publish through the API is refused too.
    let err = c
        .handle(0)
        .publish(rogue.release(7, "v7.0.0").unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("rejected"), "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        c.heads().await.iter().all(Option::is_none),
        "a forged manifest was stored"
    );
    let (s1, _) = c.handle(1).snapshot().await.unwrap();
    assert_eq!(s1.dropped(DropReason::Unverified(Reject::UntrustedKey)), 1);
    let (s2, _) = c.handle(2).snapshot().await.unwrap();
    assert_eq!(s2.dropped(DropReason::Unverified(Reject::BadSignature)), 1);
    for i in 0..NODES {
        let (s, _) = c.handle(i).snapshot().await.unwrap();
        assert_eq!(
            s.sent_push + s.sent_manifest,
            0,
            "node {i} forwarded something"
        );
    }
    // Now a real release, then a replay of an older one.
    c.handle(0).publish(good).await.unwrap();
    assert!(c.wait_all(2, WITHIN).await);
    let old = Message::Push(c.signer.release(1, "v1.0.0").unwrap())
        .encode()
        .unwrap();
    c.net.send_raw(c.addrs[3], old).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(c.heads().await.iter().all(|h| *h == Some(2)));
    let (s3, _) = c.handle(3).snapshot().await.unwrap();
    assert_eq!(s3.dropped(DropReason::Stale), 1);
    c.shutdown().await;
}

async fn oversized_and_malformed_datagrams_are_dropped_and_counted<N: Net>(net: N) {
    let c = Cluster::start(net).await;
    c.net
        .send_raw(c.addrs[1], vec![0x46; MAX_MESSAGE_BYTES + 100])
        .await;
    c.net
        .send_raw(c.addrs[1], b"FGG\x01\x01\xff\xff\xff\xff".to_vec())
        .await;
    c.net.send_raw(c.addrs[1], b"hello".to_vec()).await;
    c.net
        .send_raw(
            c.addrs[1],
            Message::Push(b"{not json".to_vec()).encode().unwrap(),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, head) = c.handle(1).snapshot().await.unwrap();
    assert_eq!(head, None);
    assert_eq!(s.dropped(DropReason::Oversized), 2, "{s:?}");
    assert_eq!(s.dropped(DropReason::Malformed), 1, "{s:?}");
    assert_eq!(
        s.dropped(DropReason::Unverified(Reject::Malformed)),
        1,
        "{s:?}"
    );
    // Still works afterwards.
    c.handle(0)
        .publish(c.signer.release(1, "v1.0.0").unwrap())
        .await
        .unwrap();
    assert!(c.wait_all(1, WITHIN).await);
    c.shutdown().await;
}

async fn rollback_supersedes_the_release<N: Net>(net: N) {
    let c = Cluster::start(net).await;
    c.handle(0)
        .publish(c.signer.release(1, "v1.0.0").unwrap())
        .await
        .unwrap();
    assert!(c.wait_all(1, WITHIN).await);
    let mut rx = c.handle(3).deliveries();
    let rb = c.signer.rollback(2, 1, "v1.0.0", "v0.9.0").unwrap();
    // The rollback order may enter anywhere.
    c.handle(2).publish(rb).await.unwrap();
    assert!(c.wait_all(2, WITHIN).await, "heads {:?}", c.heads().await);
    let d = tokio::time::timeout(
        WITHIN,
        rx.wait_for(|d| d.as_ref().is_some_and(|d| d.verified.sequence == 2)),
    )
    .await
    .expect("rollback delivered")
    .unwrap()
    .clone()
    .unwrap();
    assert_eq!(d.verified.kind, ManifestKind::Rollback);
    c.shutdown().await;
}

async fn node_offline_during_the_broadcast_catches_up<N: Net>(net: N) {
    let mut c = Cluster::start(net).await;
    c.stop(4).await;
    c.handle(0)
        .publish(c.signer.release(1, "v1.0.0").unwrap())
        .await
        .unwrap();
    assert!(c.wait_all(1, WITHIN).await);
    // Let every rumor run out, so only anti-entropy can bring node 4 up to date.
    tokio::time::sleep(Duration::from_millis(20 * cfg().round_interval_ms)).await;
    c.restart(4).await;
    let (s, head) = c.handle(4).snapshot().await.unwrap();
    assert_eq!(head, None, "{s:?}");
    // One anti-entropy interval, with slack for a loaded CI machine.
    assert!(
        c.wait_all(
            1,
            Duration::from_millis(4 * cfg().anti_entropy_interval_ms.unwrap())
        )
        .await
    );
    c.shutdown().await;
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod mem {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Mem(fleetgate_gossip::MemNetwork::new(7, 0.0))).await;
                }
            )*
        }
        mod udp {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Udp(std::sync::Mutex::new(vec![None; super::NODES]))).await;
                }
            )*
        }
    };
}

suite!(
    broadcast_reaches_every_node,
    forged_and_replayed_manifests_are_refused,
    oversized_and_malformed_datagrams_are_dropped_and_counted,
    rollback_supersedes_the_release,
    node_offline_during_the_broadcast_catches_up,
);

/// The agent's entry point: a node restarted with the manifest it held serves it to a
/// fresh node, which pulls it on start-up (no push involved: restore does not push).
#[tokio::test]
async fn spawn_udp_restores_the_held_manifest_and_a_fresh_peer_pulls_it() {
    let signer = Signer::new(3, unix_ms() / 1000 - 60);
    let m = signer.release(4, "v4.0.0").unwrap();
    let a = fleetgate_gossip::spawn_udp(
        cfg(),
        "127.0.0.1:0".parse().unwrap(),
        [],
        Arc::new(signer.verifier()),
        Some(&m),
    )
    .await
    .unwrap();
    let b = fleetgate_gossip::spawn_udp(
        cfg(),
        "127.0.0.1:0".parse().unwrap(),
        [a.addr()],
        Arc::new(signer.verifier()),
        None,
    )
    .await
    .unwrap();
    let mut rx = b.deliveries();
    let d = tokio::time::timeout(WITHIN, rx.wait_for(Option::is_some))
        .await
        .expect("pulled")
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(d.verified.sequence, 4);
    let (sa, _) = a.snapshot().await.unwrap();
    assert_eq!(sa.sent_push, 0);
    assert!(sa.sent_manifest >= 1);
    // A held manifest that does not verify is refused at start.
    let forged = Signer::new(8, unix_ms() / 1000 - 60)
        .release(5, "v5.0.0")
        .unwrap();
    let err = fleetgate_gossip::spawn_udp(
        cfg(),
        "127.0.0.1:0".parse().unwrap(),
        [],
        Arc::new(signer.verifier()),
        Some(&forged),
    )
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("restore"), "{err}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
