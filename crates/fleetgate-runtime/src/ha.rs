//! High availability (`[state] store = "postgres"`): the run's state lives in the shared
//! PostgreSQL registry ([`RegistryState`], the [`SharedStore`] of the state directory),
//! written only by the holder of the pipeline lease; the holder keeps the lease renewed
//! in the background while it lives ([`LeaseKeeper`]); a standby waits for the lease
//! ([`crate::Orchestrator::run`]) and, once it has it, resumes the run from the shared
//! copy — same run id, canary selection, seed, windows, outbox and manifest.

use crate::RuntimeError;
use crate::fleet::{FleetLink, LEASE_NAME};
use fleetgate_fleet::{SharedFile, SharedWriteError};
use fleetgate_store::{SharedError, SharedStore, StoreError};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Name of the run's state document in the registry.
pub const STATE_NAME: &str = "pipeline";

/// The state directory's shared store: the registry the lease lives in.
#[derive(Debug)]
pub struct RegistryState {
    link: Arc<FleetLink>,
    keeper: Arc<LeaseKeeper>,
}

impl RegistryState {
    /// Over `link` (its registry must be the shared PostgreSQL one).
    pub fn new(link: Arc<FleetLink>) -> RegistryState {
        let keeper = LeaseKeeper::start(&link);
        RegistryState { link, keeper }
    }

    /// The lease keeper (`run` marks this process as the leader once it holds the lease;
    /// one-off writers — `pause`, the API — renew on use only, so they never keep a lease
    /// alive for a dead `run`).
    pub fn keeper(&self) -> &Arc<LeaseKeeper> {
        &self.keeper
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> SharedError {
    SharedError::Unavailable(format!("{what}: {e}"))
}

impl SharedStore for RegistryState {
    fn fetch(&self) -> Result<Option<(Vec<u8>, i64)>, SharedError> {
        let doc = self
            .link
            .block_on(self.link.registry().shared_state(STATE_NAME))
            .map_err(|e| unavailable("read the shared run state", e))?;
        Ok(doc.map(|d| (d.doc.into_bytes(), d.rev)))
    }

    fn revision(&self) -> Result<Option<i64>, SharedError> {
        self.link
            .block_on(self.link.registry().shared_state_rev(STATE_NAME))
            .map_err(|e| unavailable("read the shared run state's revision", e))
    }

    fn fetch_files(
        &self,
        skip: &dyn Fn(&str, &str) -> bool,
        each: &mut dyn FnMut(String, Vec<u8>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let registry = self.link.registry();
        let index = self
            .link
            .block_on(registry.shared_file_index(STATE_NAME))
            .map_err(|e| unavailable("list the shared state files", e))?;
        for (path, sha256) in index {
            if skip(&path, &sha256) {
                continue;
            }
            // Fetched and inflated one at a time: run archives and built artifacts are
            // large, and a reader holds only one of them at once.
            let Some(file) = self
                .link
                .block_on(registry.shared_file(STATE_NAME, &path))
                .map_err(|e| unavailable("read a shared state file", e))?
            else {
                continue; // replaced since it was listed: the next pull sees the new one
            };
            let content = file
                .content()
                .map_err(|e| SharedError::Damaged(format!("the shared state file {path}: {e}")))?;
            each(path, content)?;
        }
        Ok(())
    }

    fn put(
        &self,
        doc: &[u8],
        expected_rev: i64,
        files: &[(String, Vec<u8>)],
    ) -> Result<i64, SharedError> {
        let doc = std::str::from_utf8(doc)
            .map_err(|e| SharedError::Unavailable(format!("the state is not UTF-8: {e}")))?;
        match self.link.renew_lease() {
            Ok(()) => {}
            Err(RuntimeError::Fenced(held)) => {
                self.keeper.leader.store(false, Ordering::SeqCst);
                return Err(SharedError::Fenced(held.to_string()));
            }
            Err(e) => return Err(unavailable("take the pipeline lease", e)),
        }
        let files: Vec<SharedFile> = files
            .iter()
            .map(|(path, bytes)| SharedFile {
                path: path.clone(),
                sha256: hex::encode(Sha256::digest(bytes)),
                bytes: bytes.clone(),
            })
            .collect();
        let epoch = self.link.fencing_epoch();
        let put = self.link.block_on(self.link.registry().put_shared_state(
            STATE_NAME,
            LEASE_NAME,
            self.link.holder(),
            epoch,
            expected_rev,
            doc,
            &files,
        ));
        match put {
            Ok(rev) => Ok(rev),
            Err(SharedWriteError::Fenced(e)) => {
                self.keeper.leader.store(false, Ordering::SeqCst);
                Err(SharedError::Fenced(e.to_string()))
            }
            Err(e @ SharedWriteError::Conflict { .. }) => Err(SharedError::Conflict(e.to_string())),
            Err(SharedWriteError::Db(e)) => Err(unavailable("write the shared run state", e)),
        }
    }

    fn describe(&self) -> String {
        format!("registry {}", self.link.redacted_url())
    }
}

/// Keeps the pipeline lease renewed while this process leads (a third of the lease's
/// lifetime between renewals), so a long gate (a build, a canary window) does not let
/// it lapse; a process that dies stops renewing and a standby takes over one lifetime
/// later. A renewal refused (another holder) ends the leadership.
#[derive(Debug)]
pub struct LeaseKeeper {
    leader: AtomicBool,
}

impl LeaseKeeper {
    fn start(link: &Arc<FleetLink>) -> Arc<LeaseKeeper> {
        let keeper = Arc::new(LeaseKeeper {
            leader: AtomicBool::new(false),
        });
        let every = (link.lease_ttl() / 3).max(Duration::from_millis(500));
        let weak_link: Weak<FleetLink> = Arc::downgrade(link);
        let weak_keeper = Arc::downgrade(&keeper);
        let spawned = std::thread::Builder::new()
            .name("fleetgate-lease".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    let (Some(link), Some(keeper)) = (weak_link.upgrade(), weak_keeper.upgrade())
                    else {
                        return;
                    };
                    if !keeper.leader.load(Ordering::SeqCst) {
                        continue;
                    }
                    match link.renew_lease() {
                        Ok(()) => {}
                        Err(RuntimeError::Fenced(held)) => {
                            tracing::warn!(%held, "lost the pipeline lease");
                            keeper.leader.store(false, Ordering::SeqCst);
                        }
                        Err(e) => tracing::warn!(error = %e, "could not renew the pipeline lease"),
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the lease keeper: the lease is renewed on use only");
        }
        keeper
    }

    /// This process holds the lease (it wrote under it, or took it) and keeps renewing it.
    pub fn lead(&self) {
        self.leader.store(true, Ordering::SeqCst);
    }

    /// Whether this process currently leads.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }
}
