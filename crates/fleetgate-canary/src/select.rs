//! Reproducible canary selection.
//!
//! Every eligible peer gets a rank key `SHA-256(seed ‖ node_id)` (raw seed bytes
//! followed by the UTF-8 bytes of the id). The number of canaries is
//! `k = min(n, max(min, ceil(pct · n)))` — `ceil`, so the canary is never smaller than
//! the configured share (10% of 5 peers is 1 node, not 0). The `k` slots are split across
//! regions in proportion to each region's eligible peers with the largest remainder
//! (Hamilton) method; ties between equal remainders are broken by
//! `SHA-256(seed ‖ region)`, so no region is favoured by its name. Within a region the
//! lowest rank keys win.
//!
//! The result depends only on the seed and the *set* of eligible peers (not their
//! order), so any node that knows the seed and the eligible set can check its own
//! membership with [`is_member`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A peer that may be chosen as a canary (verified, active, heartbeating).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eligible {
    /// Node id, as enrolled.
    pub id: String,
    /// Region label; peers without a region should be given a fixed label such as `"default"`.
    pub region: String,
}

/// The outcome of [`select_canary`]; persisted in the pipeline state before any canary
/// node is contacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// The seed, hex-encoded.
    pub seed_hex: String,
    /// Number of eligible peers the selection was made from.
    pub eligible: usize,
    /// `canary_pct` used.
    pub pct: f64,
    /// `min_canary` used.
    pub min: usize,
    /// Chosen node ids, in rank order (lowest rank key first).
    pub nodes: Vec<String>,
    /// Canary slots per region (regions with zero slots included).
    pub per_region: BTreeMap<String, usize>,
}

impl Selection {
    /// Whether `id` is one of the chosen canary nodes.
    pub fn contains(&self, id: &str) -> bool {
        self.nodes.iter().any(|n| n == id)
    }
}

/// Why a canary could not be selected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SelectError {
    /// No peer is eligible.
    #[error(
        "no eligible peers for the canary: enroll peers (verified, active) and make sure they heartbeat within the timeout"
    )]
    NoEligiblePeers,
    /// `pct` is not in (0, 1].
    #[error("canary pct {0} is out of range: it must be in (0, 1]")]
    InvalidPct(f64),
    /// The same node id appears twice in the eligible list.
    #[error("peer id {0:?} appears more than once in the eligible list")]
    DuplicatePeer(String),
    /// A node id is empty.
    #[error("a peer in the eligible list has an empty id")]
    EmptyId,
}

/// `SHA-256(seed ‖ id)`: the rank key of a node (lower ranks are chosen first).
pub fn rank_key(seed: &[u8], id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(id.as_bytes());
    h.finalize().into()
}

/// Canary size for `n` eligible peers: `min(n, max(min, ceil(pct · n)))`.
///
/// A small tolerance absorbs binary floating point error, so `0.1 · 30` is 3, not 4.
pub fn canary_count(n: usize, pct: f64, min: usize) -> Result<usize, SelectError> {
    if !(pct > 0.0 && pct <= 1.0) {
        return Err(SelectError::InvalidPct(pct));
    }
    let raw = pct * n as f64;
    let ceil = (raw - 1e-9).ceil().max(0.0) as usize;
    Ok(ceil.max(min).min(n))
}

/// Selects the canary nodes among `peers` reproducibly from `seed`.
pub fn select_canary(
    seed: &[u8],
    peers: &[Eligible],
    pct: f64,
    min: usize,
) -> Result<Selection, SelectError> {
    let n = peers.len();
    let k = canary_count(n, pct, min)?;
    if n == 0 {
        return Err(SelectError::NoEligiblePeers);
    }
    let mut seen = BTreeSet::new();
    let mut by_region: BTreeMap<&str, Vec<([u8; 32], &str)>> = BTreeMap::new();
    for p in peers {
        if p.id.is_empty() {
            return Err(SelectError::EmptyId);
        }
        if !seen.insert(p.id.as_str()) {
            return Err(SelectError::DuplicatePeer(p.id.clone()));
        }
        by_region
            .entry(p.region.as_str())
            .or_default()
            .push((rank_key(seed, &p.id), p.id.as_str()));
    }

    // Largest remainder: quota_r = k·n_r / n.
    let mut alloc: BTreeMap<&str, usize> = BTreeMap::new();
    let mut remainders: Vec<(usize, [u8; 32], &str)> = Vec::new();
    let mut given = 0usize;
    for (region, members) in &by_region {
        let num = k * members.len();
        let floor = num / n;
        alloc.insert(region, floor);
        given += floor;
        remainders.push((num % n, rank_key(seed, region), region));
    }
    // Larger remainder first; equal remainders by the seeded region hash.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, _, region) in remainders.iter().take(k - given) {
        if let Some(slot) = alloc.get_mut(region) {
            *slot += 1;
        }
    }

    let mut chosen: Vec<([u8; 32], &str)> = Vec::with_capacity(k);
    for (region, members) in &mut by_region {
        members.sort();
        let take = alloc.get(region).copied().unwrap_or(0);
        chosen.extend(members.iter().take(take).copied());
    }
    chosen.sort();

    Ok(Selection {
        seed_hex: hex::encode(seed),
        eligible: n,
        pct,
        min,
        nodes: chosen.into_iter().map(|(_, id)| id.to_owned()).collect(),
        per_region: alloc.into_iter().map(|(r, c)| (r.to_owned(), c)).collect(),
    })
}

/// Whether node `id` is in the canary chosen from `seed` and `peers`.
pub fn is_member(
    seed: &[u8],
    id: &str,
    peers: &[Eligible],
    pct: f64,
    min: usize,
) -> Result<bool, SelectError> {
    Ok(select_canary(seed, peers, pct, min)?.contains(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peers(spec: &[(&str, usize)]) -> Vec<Eligible> {
        let mut v = Vec::new();
        for (region, count) in spec {
            for i in 0..*count {
                v.push(Eligible {
                    id: format!("{region}-node-{i}"),
                    region: (*region).to_owned(),
                });
            }
        }
        v
    }

    #[test]
    fn zero_eligible_is_a_clear_error() {
        let err = select_canary(b"seed", &[], 0.1, 1).unwrap_err();
        assert_eq!(err, SelectError::NoEligiblePeers);
        assert!(err.to_string().contains("no eligible peers"));
    }

    #[test]
    fn pct_out_of_range_names_the_value() {
        let err = select_canary(b"s", &peers(&[("eu", 3)]), 1.5, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "canary pct 1.5 is out of range: it must be in (0, 1]"
        );
        assert!(select_canary(b"s", &peers(&[("eu", 3)]), 0.0, 1).is_err());
        assert!(select_canary(b"s", &peers(&[("eu", 3)]), f64::NAN, 1).is_err());
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let mut p = peers(&[("eu", 2)]);
        p.push(p[0].clone());
        assert_eq!(
            select_canary(b"s", &p, 0.5, 1).unwrap_err(),
            SelectError::DuplicatePeer("eu-node-0".into())
        );
    }

    #[test]
    fn count_uses_ceil_and_min_and_is_float_safe() {
        assert_eq!(canary_count(30, 0.1, 1).unwrap(), 3);
        assert_eq!(canary_count(5, 0.1, 1).unwrap(), 1);
        assert_eq!(canary_count(11, 0.1, 1).unwrap(), 2);
        assert_eq!(canary_count(10, 0.1, 3).unwrap(), 3);
        assert_eq!(canary_count(2, 0.1, 5).unwrap(), 2);
        assert_eq!(canary_count(100, 1.0, 1).unwrap(), 100);
    }

    #[test]
    fn regions_get_largest_remainder_shares() {
        // 20 peers: eu 10, us 6, ap 4; 50% → 10 slots: eu 5, us 3, ap 2.
        let s = select_canary(b"x", &peers(&[("eu", 10), ("us", 6), ("ap", 4)]), 0.5, 1).unwrap();
        assert_eq!(s.nodes.len(), 10);
        assert_eq!(s.per_region["eu"], 5);
        assert_eq!(s.per_region["us"], 3);
        assert_eq!(s.per_region["ap"], 2);
        // 7 peers, 3 slots: quotas eu 4·3/7=1.71, us 3·3/7=1.29 → eu 2, us 1.
        let s = select_canary(b"x", &peers(&[("eu", 4), ("us", 3)]), 3.0 / 7.0, 1).unwrap();
        assert_eq!((s.per_region["eu"], s.per_region["us"]), (2, 1));
    }

    #[test]
    fn is_member_agrees_with_selection() {
        let p = peers(&[("eu", 7), ("us", 5)]);
        let s = select_canary(b"seed-1", &p, 0.25, 1).unwrap();
        for peer in &p {
            assert_eq!(
                is_member(b"seed-1", &peer.id, &p, 0.25, 1).unwrap(),
                s.contains(&peer.id)
            );
        }
    }

    fn arb_peers() -> impl Strategy<Value = Vec<Eligible>> {
        proptest::collection::btree_map("[a-z0-9]{1,8}", 0usize..4, 1..60).prop_map(|m| {
            m.into_iter()
                .map(|(id, r)| Eligible {
                    id,
                    region: ["eu", "us", "ap", "sa"][r].to_owned(),
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn count_and_proportion_hold(
            seed in proptest::collection::vec(any::<u8>(), 0..32),
            p in arb_peers(),
            pct in 0.01f64..=1.0,
            min in 0usize..5,
        ) {
            let s = select_canary(&seed, &p, pct, min).unwrap();
            let n = p.len();
            let k = canary_count(n, pct, min).unwrap();
            prop_assert_eq!(s.nodes.len(), k);
            prop_assert!(k >= min.min(n));
            prop_assert!(k as f64 >= pct * n as f64 - 1e-6);
            let unique: BTreeSet<_> = s.nodes.iter().collect();
            prop_assert_eq!(unique.len(), k);
            // Each region gets floor or ceil of its exact quota, and its chosen nodes are
            // exactly its lowest-ranked ones.
            let mut total = 0;
            for (region, &slots) in &s.per_region {
                let members: Vec<_> = p.iter().filter(|e| &e.region == region).collect();
                let quota = k as f64 * members.len() as f64 / n as f64;
                prop_assert!(slots as f64 >= quota.floor() - 1e-9 && slots as f64 <= quota.ceil() + 1e-9,
                    "region {} got {} slots for quota {}", region, slots, quota);
                let mut ranked: Vec<_> = members.iter().map(|e| (rank_key(&seed, &e.id), e.id.clone())).collect();
                ranked.sort();
                for (i, (_, id)) in ranked.iter().enumerate() {
                    prop_assert_eq!(s.contains(id), i < slots);
                }
                total += slots;
            }
            prop_assert_eq!(total, k);
        }

        #[test]
        fn order_of_peers_does_not_matter(
            seed in proptest::collection::vec(any::<u8>(), 1..16),
            p in arb_peers(),
            rot in 0usize..60,
        ) {
            let a = select_canary(&seed, &p, 0.2, 1).unwrap();
            let mut q = p.clone();
            q.reverse();
            let len = q.len();
            q.rotate_left(rot % len);
            let b = select_canary(&seed, &q, 0.2, 1).unwrap();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn selection_changes_with_the_seed_but_not_between_calls(
            p in arb_peers(),
        ) {
            let a1 = select_canary(b"seed-a", &p, 0.3, 1).unwrap();
            let a2 = select_canary(b"seed-a", &p, 0.3, 1).unwrap();
            prop_assert_eq!(&a1, &a2);
        }
    }

    #[test]
    fn different_seeds_choose_different_nodes() {
        let p = peers(&[("eu", 50)]);
        let distinct: BTreeSet<Vec<String>> = (0..20u8)
            .map(|i| select_canary(&[i], &p, 0.1, 1).unwrap().nodes)
            .collect();
        assert!(
            distinct.len() >= 18,
            "only {} distinct selections",
            distinct.len()
        );
    }
}
