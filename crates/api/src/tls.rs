//! The TLS listener for federation (and clients, if they come that way):
//! rustls with the configured PEM certificate chain and key, read again
//! when either file changes (a renewed certificate needs no restart).
//! Handshakes run in their own tasks with a timeout, so a slow or silent
//! peer never holds up the next connection.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are checked for a change.
const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// Reads the certificate chain and private key into a server config that
/// follows later changes of the two files.
pub fn server_config(certs: &Path, key: &Path) -> Result<ServerConfig, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resolver = Arc::new(ReloadingCert::load(certs, key)?);
    resolver.clone().watch();
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The chain and key from the PEM files, checked to fit together.
fn read_certified_key(certs: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certs)
        .map_err(|e| format!("cannot read TLS certificates {}: {e}", certs.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid TLS certificate in {}: {e}", certs.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", certs.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read TLS private key {}: {e}", key.display()))?;
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| format!("the TLS certificate and key do not fit: {e}"))
}

/// The files' modification times: a change of either means a reload.
fn stamps(certs: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (modified(certs), modified(key))
}

/// The certificate every handshake gets, replaced when its files change.
#[derive(Debug)]
struct ReloadingCert {
    certs: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    fn load(certs: &Path, key: &Path) -> Result<Self, String> {
        Ok(Self {
            current: RwLock::new(Arc::new(read_certified_key(certs, key)?)),
            certs: certs.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Checks the files every [`RELOAD_CHECK`] while the listener lives. A
    /// half-written pair (new certificate, old key) does not fit: the old
    /// certificate serves on, and the pair is tried again once the other
    /// file changes too.
    fn watch(self: Arc<Self>) {
        let this = Arc::downgrade(&self);
        let mut seen = stamps(&self.certs, &self.key);
        drop(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RELOAD_CHECK).await;
                let Some(this) = this.upgrade() else { return };
                let now = stamps(&this.certs, &this.key);
                if now == seen {
                    continue;
                }
                seen = now;
                match read_certified_key(&this.certs, &this.key) {
                    Ok(fresh) => {
                        *this.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
                        tracing::info!("TLS certificate reloaded from {}", this.certs.display());
                    }
                    Err(e) => tracing::warn!("TLS certificate not reloaded: {e}"),
                }
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Accepted TLS connections, as axum's `serve` takes them.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: ServerConfig) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (sender, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!("TLS listener: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if sender.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task ended: nothing will ever come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
