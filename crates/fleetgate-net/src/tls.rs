//! HTTPS for fleetgate's listeners (`fleetgate serve`, `fleetgate fleet serve`, the node
//! agent): a rustls server configuration from PEM files, and an axum listener that
//! completes TLS handshakes off the accept loop.
//!
//! Invariants: a slow or hostile client cannot stall other connections (each handshake
//! runs in its own task, bounded by [`HANDSHAKE_TIMEOUT`], at most
//! [`MAX_PENDING_HANDSHAKES`] at once — beyond that new connections are closed); a failed
//! handshake is logged at debug and never ends the server; key files are read once at
//! start and never logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
pub use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; connections beyond are closed at once.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file.
    #[error("TLS certificate file {}: {reason}", path.display())]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The private key file.
    #[error("TLS key file {}: {reason}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The pair does not make a server configuration (e.g. the key does not match).
    #[error("TLS certificate {} with key {}: {reason}", cert.display(), key.display())]
    Pair {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// A rustls server configuration from a PEM certificate chain (leaf first) and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// A file that cannot be read, holds no certificate or key, or a key that does not match.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = read_limited(cert_file).map_err(|reason| TlsError::Cert {
        path: cert_file.to_owned(),
        reason,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert_file.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert_file.to_owned(),
            reason: "holds no PEM certificate".into(),
        });
    }
    let key_pem = read_limited(key_file).map_err(|reason| TlsError::Key {
        path: key_file.to_owned(),
        reason,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
        path: key_file.to_owned(),
        reason: format!("{e} (expected a PEM private key)"),
    })?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Pair {
            cert: cert_file.to_owned(),
            key: key_file.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Arc::new(config))
}

/// Checks that the PEM certificate `leaf_pem` chains to the PEM CA certificate(s) in
/// `ca_pem` and is valid now for `host` — what a client trusting `ca_pem` will check.
///
/// # Errors
/// A message naming what does not hold (unknown issuer, wrong name, not a certificate).
pub fn verify_chain(ca_pem: &[u8], leaf_pem: &[u8], host: &str) -> Result<(), String> {
    use tokio_rustls::rustls::RootCertStore;
    use tokio_rustls::rustls::client::WebPkiServerVerifier;
    use tokio_rustls::rustls::client::danger::ServerCertVerifier as _;
    use tokio_rustls::rustls::pki_types::{ServerName, UnixTime};
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        let ca = ca.map_err(|e| format!("the CA file is not PEM: {e}"))?;
        roots
            .add(ca)
            .map_err(|e| format!("the CA certificate is unusable: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA file holds no certificate".into());
    }
    let leaf = CertificateDer::from_pem_slice(leaf_pem)
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} is not a server name: {e}"))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Reads a PEM file of at most 1 MiB.
fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(1 << 20 | 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() > 1 << 20 {
        return Err("larger than 1 MiB: not a PEM file".into());
    }
    Ok(buf)
}

/// An axum listener serving HTTPS: TCP connections are accepted in a background task and
/// handed over once their TLS handshake completed. Use with
/// `axum::serve(listener.tap_io(|_| ()), app.into_make_service_with_connect_info::<SocketAddr>())`
/// (`tap_io` keeps the peer address available to the per-source rate limit).
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `config` on an already bound `tcp` listener.
    ///
    /// # Errors
    /// The listener has no local address.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        let permits = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::debug!(%addr, "too many TLS handshakes in progress: connection closed");
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            ready,
            accept_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task ended (only when aborted): no connection will come again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
