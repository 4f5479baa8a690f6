//! Many Ed25519 signatures checked at once, with `verify_strict`'s answers.
//!
//! ed25519-dalek's `verify_batch` checks one random linear combination of the
//! entries' verification equations in one multi-scalar multiplication: roughly
//! half the work per signature of checking each alone. Its equation is looser than
//! [`PublicKey::verify_strict`]'s in two ways, and both are closed here before a
//! batch is tried, on the bytes, without decompressing a point:
//!
//! - `verify_strict` refuses a small-order key or `R`; the batch does not. A weak
//!   key is refused (`is_weak`, three point doublings) and an `R` whose encoding is
//!   one of the eight small-order points' (libsodium's block list: the `y` of the
//!   eight-torsion points, whatever the sign bit) is refused.
//! - `verify_strict` compares the recomputed `R` with the signature's bytes, so a
//!   non-canonical `R` (a `y` at or above p = 2²⁵⁵ − 19) fails; the batch would
//!   decompress it. Such an `R` is refused.
//!
//! `S` must be canonical in both (the batch refuses the whole batch on a bad `S`).
//! A batch that fails is split in halves until the failing entries are found, and
//! fewer than [`MIN_BATCH`] entries are checked one by one with `verify_strict`, so
//! a forged signature among many costs a few more batch checks, not a strict check
//! of each.
//!
//! One difference remains, and only the key's holder can produce it: a signature
//! whose `R` carries a small-order component (`R = rB + T`) satisfies the batch
//! equation when the batch's random coefficient for it is a multiple of `T`'s
//! order, where `verify_strict` refuses it. Such a signature still proves the key
//! signed those bytes (it is valid under RFC 8032's cofactored equation, which
//! the standard allows); a third party cannot make one from a valid signature,
//! because `R` is hashed into the challenge. Use this where a signature
//! authenticates a message (heartbeats); release manifests, keyrings and signed
//! documents keep `verify_strict` alone.

use crate::PublicKey;

/// Below this many entries a batch is checked one signature at a time.
pub const MIN_BATCH: usize = 4;

/// One signature to check: the key, the signed bytes, the 64 signature bytes.
#[derive(Debug, Clone, Copy)]
pub struct BatchEntry<'a> {
    /// The key the signature must verify with.
    pub key: &'a PublicKey,
    /// Exactly the bytes that were signed.
    pub message: &'a [u8],
    /// `R ‖ S`.
    pub signature: &'a [u8; 64],
}

/// Whether each entry's signature verifies, as [`PublicKey::verify_strict`] would
/// answer for it alone (see the module docs for the one difference). One answer per
/// entry, in order.
#[must_use]
pub fn verify_strict_batch(entries: &[BatchEntry<'_>]) -> Vec<bool> {
    let mut ok = vec![false; entries.len()];
    let candidates: Vec<usize> = (0..entries.len())
        .filter(|&i| passes_strict_prechecks(&entries[i]))
        .collect();
    check(entries, &candidates, &mut ok);
    ok
}

fn check(entries: &[BatchEntry<'_>], idx: &[usize], ok: &mut [bool]) {
    if idx.len() < MIN_BATCH {
        for &i in idx {
            let e = &entries[i];
            ok[i] = e.key.verify_strict(e.message, e.signature).is_ok();
        }
        return;
    }
    let messages: Vec<&[u8]> = idx.iter().map(|&i| entries[i].message).collect();
    let signatures: Vec<ed25519_dalek::Signature> = idx
        .iter()
        .map(|&i| ed25519_dalek::Signature::from_bytes(entries[i].signature))
        .collect();
    let keys: Vec<ed25519_dalek::VerifyingKey> = idx.iter().map(|&i| entries[i].key.0).collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        for &i in idx {
            ok[i] = true;
        }
        return;
    }
    let (left, right) = idx.split_at(idx.len() / 2);
    check(entries, left, ok);
    check(entries, right, ok);
}

/// The checks `verify_strict` makes that the batch equation does not: the key not
/// weak, `R` canonically encoded and not of small order.
fn passes_strict_prechecks(e: &BatchEntry<'_>) -> bool {
    let mut r = [0u8; 32];
    r.copy_from_slice(&e.signature[..32]);
    !e.key.0.is_weak() && !non_canonical_y(&r) && !small_order_y(&r)
}

/// p = 2²⁵⁵ − 19, little-endian.
const P: [u8; 32] = {
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// Whether the encoded `y` (sign bit cleared) is at or above p.
fn non_canonical_y(enc: &[u8; 32]) -> bool {
    let mut y = *enc;
    y[31] &= 0x7f;
    // Compare little-endian numbers from the most significant byte.
    for i in (0..32).rev() {
        if y[i] != P[i] {
            return y[i] > P[i];
        }
    }
    true
}

/// The `y` coordinates of the eight points of order dividing 8 (libsodium's block
/// list, canonical encodings): 0 (order 4), 1 (order 1), the two of order 8, and
/// p − 1 (order 2). `tests` checks they decompress to eight distinct small-order
/// points, i.e. all of them.
const SMALL_ORDER_Y: [[u8; 32]; 5] = [
    [0; 32],
    {
        let mut one = [0; 32];
        one[0] = 1;
        one
    },
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
    {
        let mut p_minus_1 = P;
        p_minus_1[0] = 0xec;
        p_minus_1
    },
];

fn small_order_y(enc: &[u8; 32]) -> bool {
    let mut y = *enc;
    y[31] &= 0x7f;
    SMALL_ORDER_Y.contains(&y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::edwards::CompressedEdwardsY;

    /// The block list is the whole eight-torsion subgroup: its encodings, with either
    /// sign bit, decompress to eight distinct points, each of small order.
    #[test]
    fn the_block_list_is_every_small_order_point() {
        let mut points = Vec::new();
        for y in SMALL_ORDER_Y {
            for sign in [0u8, 0x80] {
                let mut enc = y;
                enc[31] |= sign;
                if let Some(p) = CompressedEdwardsY(enc).decompress() {
                    assert!(p.is_small_order(), "{enc:02x?} is not of small order");
                    if !points.contains(&p) {
                        points.push(p);
                    }
                }
            }
        }
        assert_eq!(
            points.len(),
            8,
            "the eight-torsion subgroup has eight points"
        );
    }

    #[test]
    fn y_at_or_above_p_is_non_canonical() {
        let mut below = P;
        below[0] = 0xec;
        assert!(!non_canonical_y(&below));
        assert!(non_canonical_y(&P));
        let top = [0xff; 32];
        assert!(non_canonical_y(&top), "sign bit set, y = 2^255 - 1");
        let mut zero_signed = [0; 32];
        zero_signed[31] = 0x80;
        assert!(!non_canonical_y(&zero_signed), "y = 0 with the sign bit");
        assert!(!non_canonical_y(&[0; 32]));
    }
}
