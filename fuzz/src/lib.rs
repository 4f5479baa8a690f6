//! Fixtures shared by the fuzz targets: fixed keys, a fixed clock, and how a target
//! splits one input into parts. No parsing happens here: every target hands the bytes to
//! the function the product runs on them.

use fleetgate_trust::{Keyring, SigningKey};

/// The clock every target uses (unix seconds, 2027-01-15). The seed manifests and
/// certificates are built and signed for it.
pub const NOW: u64 = 1_800_000_000;

/// Seed of the release (trust) key the targets' keyring trusts.
pub const TRUST_SEED: [u8; 32] = [7; 32];
/// Seed of the node identity key (heartbeats).
pub const NODE_SEED: [u8; 32] = [8; 32];
/// Node id the heartbeat target enrolls.
pub const NODE_ID: &str = "node-1";

/// The release key.
#[must_use]
pub fn trust_key() -> SigningKey {
    SigningKey::from_seed(&TRUST_SEED)
}

/// The node identity key.
#[must_use]
pub fn node_key() -> SigningKey {
    SigningKey::from_seed(&NODE_SEED)
}

/// The keyring that trusts [`trust_key`] (threshold 1).
#[must_use]
pub fn keyring() -> Keyring {
    Keyring::single(trust_key().public_key())
}

/// The first byte as a selector and the rest, or `None` for an empty input.
#[must_use]
pub fn split_first(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(b, rest)| (*b, rest))
}

/// A fresh directory for a target's files, on tmpfs (`/dev/shm`) when there is one: the
/// store writes durably (fsync), which a disk would make the bottleneck. Named after this
/// process (`fleetgate-fuzz-<pid>-<name>`): libFuzzer exits without running destructors,
/// so directories of processes that are gone are removed here instead.
///
/// # Panics
/// When the directory cannot be made.
#[must_use]
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let file_name = e.file_name();
            let Some(rest) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix("fleetgate-fuzz-"))
            else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            if !pid.is_empty() && !std::path::Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = base.join(format!("fleetgate-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}
