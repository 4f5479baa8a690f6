//! The orchestrator for async callers: [`AsyncOrchestrator`] wraps the blocking
//! [`Orchestrator`] and runs each call on tokio's blocking pool, so a node runtime or an
//! agent server can drive the pipeline from inside its own tokio runtime without blocking
//! its reactor and without nesting runtimes (the fleet connection blocks on a helper
//! thread when it is called from async code).
//!
//! ```no_run
//! # async fn demo() -> Result<(), fleetgate_runtime::RuntimeError> {
//! use fleetgate_runtime::{AsyncOrchestrator, load_config};
//! let (cfg, base) = load_config(Some(std::path::Path::new("fleetgate.toml")))?;
//! let orchestrator = AsyncOrchestrator::open(cfg, &base).await?;
//! orchestrator.start("v1.2.0", None).await?;
//! let (progress, mut events) = tokio::sync::mpsc::unbounded_channel();
//! let run = tokio::spawn({
//!     let o = orchestrator.clone();
//!     async move { o.run(progress).await }
//! });
//! while let Some(p) = events.recv().await {
//!     println!("{p:?}");
//! }
//! let state = run.await.expect("the run task")?;
//! println!("ended {}", state.stage);
//! # Ok(()) }
//! ```

use crate::{AdvanceReport, Orchestrator, Progress, RuntimeError};
use fleetgate_core::PipelineState;
use fleetgate_core::config::Config;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// An [`Orchestrator`] for async code. Cheap to clone; clones share one orchestrator (one
/// lock, one fleet connection).
#[derive(Debug, Clone)]
pub struct AsyncOrchestrator {
    inner: Arc<Orchestrator>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::fleet::link::fleet_op("the orchestrator task failed", e))?
}

impl AsyncOrchestrator {
    /// Open with the exclusive orchestrator lock (see [`Orchestrator::open`]).
    pub async fn open(cfg: Config, base: &Path) -> Result<AsyncOrchestrator, RuntimeError> {
        let base = base.to_owned();
        let o = blocking(move || Orchestrator::open(cfg, &base)).await?;
        Ok(AsyncOrchestrator::from(o))
    }

    /// The blocking orchestrator inside.
    pub fn blocking(&self) -> &Orchestrator {
        &self.inner
    }

    /// [`Orchestrator::start`].
    pub async fn start(
        &self,
        version: &str,
        git_sha: Option<&str>,
    ) -> Result<PipelineState, RuntimeError> {
        let (o, v, g) = (
            self.inner.clone(),
            version.to_owned(),
            git_sha.map(str::to_owned),
        );
        blocking(move || o.start(&v, g.as_deref())).await
    }

    /// [`Orchestrator::status`].
    pub async fn status(&self) -> Result<PipelineState, RuntimeError> {
        let o = self.inner.clone();
        blocking(move || o.status()).await
    }

    /// [`Orchestrator::rollback`].
    pub async fn rollback(&self, reason: &str) -> Result<PipelineState, RuntimeError> {
        let (o, r) = (self.inner.clone(), reason.to_owned());
        blocking(move || o.rollback(&r)).await
    }

    /// [`Orchestrator::advance`]; progress goes to `progress` (dropped receivers are fine).
    pub async fn advance(
        &self,
        progress: UnboundedSender<Progress>,
    ) -> Result<AdvanceReport, RuntimeError> {
        let o = self.inner.clone();
        blocking(move || {
            o.advance(&mut |p| {
                let _ = progress.send(p);
            })
        })
        .await
    }

    /// [`Orchestrator::run`]: advance until the run ends; progress goes to `progress`.
    pub async fn run(
        &self,
        progress: UnboundedSender<Progress>,
    ) -> Result<PipelineState, RuntimeError> {
        let o = self.inner.clone();
        blocking(move || {
            o.run(&mut |p| {
                let _ = progress.send(p);
            })
        })
        .await
    }
}

impl From<Orchestrator> for AsyncOrchestrator {
    fn from(o: Orchestrator) -> AsyncOrchestrator {
        AsyncOrchestrator { inner: Arc::new(o) }
    }
}
