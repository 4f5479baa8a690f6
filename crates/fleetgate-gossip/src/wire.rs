//! The gossip wire format: a small, versioned, length-checked binary envelope.
//!
//! ```text
//! magic "FGG" | version 0x01 | type u8 | body
//!   type 1 Push         body = len u32 BE | manifest bytes   (rumor, push phase)
//!   type 2 Manifest     body = len u32 BE | manifest bytes   (anti-entropy answer)
//!   type 3 Digest       body = has u8 | [sequence u64 BE | sha256 32 bytes]
//!   type 4 DigestReply  body = has u8 | [sequence u64 BE | sha256 32 bytes]
//!   type 5 Probe        body = has u8 | [sequence u64 BE | sha256 32 bytes] | cookie 16 bytes
//!   type 6 Challenge    body = cookie 16 bytes
//! ```
//!
//! `Probe` is the anti-entropy request nodes send (a `Digest` plus the address cookie the
//! receiver gave them, zeros when they have none); `Digest` is still decoded, from older
//! nodes. `Challenge` answers a probe from an address that is not a verified member: the
//! cookie proves, when it comes back, that the sender receives what is sent to its
//! address. It is 21 bytes, smaller than the smallest probe (22), so a spoofed request
//! is never answered with more bytes than it carried.
//!
//! A message must be consumed exactly: trailing bytes are malformed. The whole message is
//! at most [`MAX_MESSAGE_BYTES`], which fits in one UDP datagram (65 507 bytes).

use thiserror::Error;

/// Largest signed manifest carried by gossip (60 KiB). Chosen so that a manifest plus
/// its envelope always fits in a single UDP datagram.
pub const MAX_MANIFEST_BYTES: usize = 60 * 1024;
/// Envelope overhead of a manifest-carrying message.
pub const ENVELOPE_BYTES: usize = 4 + 1 + 4;
/// Largest well-formed message; anything longer is dropped as oversized before parsing.
pub const MAX_MESSAGE_BYTES: usize = MAX_MANIFEST_BYTES + ENVELOPE_BYTES;

const MAGIC: [u8; 4] = *b"FGG\x01";
const T_PUSH: u8 = 1;
const T_MANIFEST: u8 = 2;
const T_DIGEST: u8 = 3;
const T_DIGEST_REPLY: u8 = 4;
const T_PROBE: u8 = 5;
const T_CHALLENGE: u8 = 6;

/// Length of an address cookie.
pub const COOKIE_BYTES: usize = 16;
/// An address cookie (see the module docs); all zeros means "none".
pub type Cookie = [u8; COOKIE_BYTES];
/// Encoded length of a [`Message::Challenge`].
pub const CHALLENGE_BYTES: usize = 4 + 1 + COOKIE_BYTES;

/// What a node holds, as compared during anti-entropy: the latest sequence and the
/// SHA-256 of that manifest's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Head {
    /// Release sequence number of the manifest.
    pub sequence: u64,
    /// SHA-256 of the manifest bytes.
    pub manifest_hash: [u8; 32],
}

/// A decoded gossip message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Rumor-mongering push of a signed manifest.
    Push(Vec<u8>),
    /// A signed manifest sent because the receiver is known to be behind.
    Manifest(Vec<u8>),
    /// Anti-entropy request: "this is what I hold".
    Digest(Option<Head>),
    /// Anti-entropy answer when the answerer holds nothing newer.
    DigestReply(Option<Head>),
    /// Anti-entropy request carrying the address cookie the receiver handed out (zeros
    /// for none).
    Probe {
        /// What the sender holds.
        head: Option<Head>,
        /// The receiver's cookie for the sender's address.
        cookie: Cookie,
    },
    /// "Prove your address": the cookie to send back in the next probe.
    Challenge(Cookie),
}

/// Why a message could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The message (or its declared manifest length) exceeds the size limit.
    #[error("failed to decode gossip message: {len} bytes exceeds the limit of {limit}")]
    Oversized {
        /// Offending length.
        len: usize,
        /// Limit it exceeded.
        limit: usize,
    },
    /// The bytes are not a well-formed message of this protocol version.
    #[error("failed to decode gossip message: {0}")]
    Malformed(&'static str),
}

impl Message {
    /// Encode into a fresh buffer. Manifests longer than [`MAX_MANIFEST_BYTES`] are
    /// refused so that a node never emits what its peers would drop.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MAGIC);
        match self {
            Message::Push(m) => encode_manifest(&mut out, T_PUSH, m)?,
            Message::Manifest(m) => encode_manifest(&mut out, T_MANIFEST, m)?,
            Message::Digest(h) => encode_head(&mut out, T_DIGEST, *h),
            Message::DigestReply(h) => encode_head(&mut out, T_DIGEST_REPLY, *h),
            Message::Probe { head, cookie } => {
                encode_head(&mut out, T_PROBE, *head);
                out.extend_from_slice(cookie);
            }
            Message::Challenge(cookie) => {
                out.push(T_CHALLENGE);
                out.extend_from_slice(cookie);
            }
        }
        Ok(out)
    }

    /// Decode one message; never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::Oversized {
                len: bytes.len(),
                limit: MAX_MESSAGE_BYTES,
            });
        }
        let mut r = Reader { rest: bytes };
        if r.take(4)? != MAGIC {
            return Err(DecodeError::Malformed("bad magic or unsupported version"));
        }
        let msg = match r.u8()? {
            T_PUSH => Message::Push(decode_manifest(&mut r)?),
            T_MANIFEST => Message::Manifest(decode_manifest(&mut r)?),
            T_DIGEST => Message::Digest(decode_head(&mut r)?),
            T_DIGEST_REPLY => Message::DigestReply(decode_head(&mut r)?),
            T_PROBE => Message::Probe {
                head: decode_head(&mut r)?,
                cookie: r.array()?,
            },
            T_CHALLENGE => Message::Challenge(r.array()?),
            _ => return Err(DecodeError::Malformed("unknown message type")),
        };
        if !r.rest.is_empty() {
            return Err(DecodeError::Malformed("trailing bytes"));
        }
        Ok(msg)
    }
}

fn encode_manifest(out: &mut Vec<u8>, tag: u8, m: &[u8]) -> Result<(), DecodeError> {
    if m.len() > MAX_MANIFEST_BYTES {
        return Err(DecodeError::Oversized {
            len: m.len(),
            limit: MAX_MANIFEST_BYTES,
        });
    }
    out.reserve(5 + m.len());
    out.push(tag);
    // Cannot truncate: bounded by MAX_MANIFEST_BYTES above.
    out.extend_from_slice(&(m.len() as u32).to_be_bytes());
    out.extend_from_slice(m);
    Ok(())
}

fn encode_head(out: &mut Vec<u8>, tag: u8, h: Option<Head>) {
    out.push(tag);
    match h {
        None => out.push(0),
        Some(h) => {
            out.push(1);
            out.extend_from_slice(&h.sequence.to_be_bytes());
            out.extend_from_slice(&h.manifest_hash);
        }
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Malformed("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

fn decode_manifest(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    let len = u32::from_be_bytes(r.array()?) as usize;
    if len > MAX_MANIFEST_BYTES {
        return Err(DecodeError::Oversized {
            len,
            limit: MAX_MANIFEST_BYTES,
        });
    }
    if len == 0 {
        return Err(DecodeError::Malformed("empty manifest"));
    }
    Ok(r.take(len)?.to_vec())
}

fn decode_head(r: &mut Reader<'_>) -> Result<Option<Head>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(Head {
            sequence: u64::from_be_bytes(r.array()?),
            manifest_hash: r.array()?,
        })),
        _ => Err(DecodeError::Malformed("bad digest flag")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Head {
        Head {
            sequence: 7,
            manifest_hash: [0xAB; 32],
        }
    }

    #[test]
    fn round_trips_every_message_type() {
        for m in [
            Message::Push(b"{\"a\":1}".to_vec()),
            Message::Manifest(vec![1; MAX_MANIFEST_BYTES]),
            Message::Digest(None),
            Message::Digest(Some(head())),
            Message::DigestReply(Some(head())),
            Message::DigestReply(None),
            Message::Probe {
                head: None,
                cookie: [0; COOKIE_BYTES],
            },
            Message::Probe {
                head: Some(head()),
                cookie: [9; COOKIE_BYTES],
            },
            Message::Challenge([7; COOKIE_BYTES]),
        ] {
            let bytes = m.encode().unwrap();
            assert!(bytes.len() <= MAX_MESSAGE_BYTES);
            assert_eq!(Message::decode(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn a_challenge_is_smaller_than_any_probe() {
        let c = Message::Challenge([1; COOKIE_BYTES]).encode().unwrap();
        assert_eq!(c.len(), CHALLENGE_BYTES);
        let smallest = Message::Probe {
            head: None,
            cookie: [0; COOKIE_BYTES],
        }
        .encode()
        .unwrap();
        assert!(c.len() < smallest.len(), "{} < {}", c.len(), smallest.len());
    }

    #[test]
    fn rejects_oversized_before_and_after_parsing() {
        assert!(matches!(
            Message::Push(vec![0; MAX_MANIFEST_BYTES + 1]).encode(),
            Err(DecodeError::Oversized { .. })
        ));
        assert!(matches!(
            Message::decode(&vec![0; MAX_MESSAGE_BYTES + 1]),
            Err(DecodeError::Oversized { .. })
        ));
        // A small datagram that *claims* a huge manifest.
        let mut b = MAGIC.to_vec();
        b.push(T_PUSH);
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Message::decode(&b),
            Err(DecodeError::Oversized { len, .. }) if len == u32::MAX as usize
        ));
    }

    #[test]
    fn rejects_malformed() {
        let good = Message::Digest(Some(head())).encode().unwrap();
        for (bytes, why) in [
            (vec![], "truncated"),
            (b"XXXX\x03\x00".to_vec(), "bad magic or unsupported version"),
            (
                b"FGG\x02\x03\x00".to_vec(),
                "bad magic or unsupported version",
            ),
            (b"FGG\x01\x09\x00".to_vec(), "unknown message type"),
            (b"FGG\x01\x03\x02".to_vec(), "bad digest flag"),
            (b"FGG\x01\x01\x00\x00\x00\x00".to_vec(), "empty manifest"),
            (b"FGG\x01\x01\x00\x00\x00\x05ab".to_vec(), "truncated"),
            ([good.as_slice(), b"x"].concat(), "trailing bytes"),
            (good[..good.len() - 1].to_vec(), "truncated"),
        ] {
            assert_eq!(
                Message::decode(&bytes),
                Err(DecodeError::Malformed(why)),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes() {
        let mut rng = crate::rng::Rng::seed_from_u64(1);
        let good = Message::Push(b"manifest".to_vec()).encode().unwrap();
        for i in 0..20_000u64 {
            let mut b = good.clone();
            let flips = 1 + rng.below(4);
            for _ in 0..flips {
                let at = rng.below(b.len() as u64) as usize;
                b[at] = rng.next_u64() as u8;
            }
            b.truncate(rng.below(b.len() as u64 + 1) as usize);
            let _ = Message::decode(&b);
            let _ = i;
        }
    }
}
