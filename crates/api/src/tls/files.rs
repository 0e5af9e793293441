//! A certificate from PEM files, read again when either file changes (a
//! renewed certificate needs no restart).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    sign::CertifiedKey,
};

use super::Certificates;

/// How often the certificate files are checked for a change.
const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// Serves the files' certificate from `certificates`, and follows their
/// changes while `certificates` lives.
pub fn serve_from(
    certificates: &Arc<Certificates>,
    certs: &Path,
    key: &Path,
) -> Result<(), String> {
    certificates.set(read_certified_key(certs, key)?);
    watch(
        Arc::downgrade(certificates),
        certs.to_owned(),
        key.to_owned(),
    );
    Ok(())
}

/// The chain and key from the PEM files, checked to fit together.
fn read_certified_key(certs: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certs)
        .map_err(|e| format!("cannot read TLS certificates {}: {e}", certs.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read TLS certificates {}: {e}", certs.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", certs.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read TLS private key {}: {e}", key.display()))?;
    certified_key(chain, key)
}

/// A chain and its key, checked to fit together.
pub(super) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, String> {
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

/// Checks the files every [`RELOAD_CHECK`]. A half-written pair (new
/// certificate, old key) does not fit: the old certificate serves on, and
/// the pair is tried again once the other file changes too.
fn watch(certificates: std::sync::Weak<Certificates>, certs: PathBuf, key: PathBuf) {
    let mut seen = stamps(&certs, &key);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RELOAD_CHECK).await;
            let Some(certificates) = certificates.upgrade() else {
                return;
            };
            let now = stamps(&certs, &key);
            if now == seen {
                continue;
            }
            seen = now;
            match read_certified_key(&certs, &key) {
                Ok(fresh) => {
                    certificates.set(fresh);
                    tracing::info!("TLS certificate reloaded from {}", certs.display());
                }
                Err(e) => tracing::warn!("TLS certificate not reloaded: {e}"),
            }
        }
    });
}
