//! Certificates from an ACME CA (RFC 8555; Let's Encrypt by default) for
//! the server name, validated by TLS-ALPN-01 (RFC 8737) on the TLS
//! listeners themselves, so no port 80 and no reverse proxy is needed.
//!
//! The account, the certificate and its key are kept in `acme/` inside the
//! database directory: a restart serves the stored certificate at once.
//! A certificate is renewed when two thirds of its lifetime have passed
//! (30 days before expiry for Let's Encrypt's 90); a failed attempt is
//! tried again with a growing pause, while the old certificate serves on.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject},
    sign::CertifiedKey,
};

use super::{Certificates, files::certified_key};

/// The first pause after a failed attempt; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(30);
const MAX_RETRY: Duration = Duration::from_secs(6 * 3600);
/// Files in the ACME directory.
const ACCOUNT_FILE: &str = "account.json";
const CERT_FILE: &str = "certificate.pem";
const KEY_FILE: &str = "key.pem";

/// What the ACME client needs to know.
pub struct AcmeSettings {
    /// The name the certificate is for (the server name's host).
    pub host: String,
    pub directory: String,
    pub contact: Option<String>,
    /// A CA certificate to trust for the directory's HTTPS.
    pub ca_certificate: Option<PathBuf>,
    /// Where the account and certificate are kept.
    pub state_dir: PathBuf,
}

/// Serves the stored certificate (if still good) and keeps a valid one in
/// `certificates` from then on, in a task of its own.
pub fn start(certificates: Arc<Certificates>, settings: AcmeSettings) -> Result<(), String> {
    std::fs::create_dir_all(&settings.state_dir)
        .map_err(|e| format!("cannot create {}: {e}", settings.state_dir.display()))?;
    let http = http_client(settings.ca_certificate.as_deref())?;
    let stored = stored_certificate(&settings.state_dir);
    if let Some((key, _)) = &stored {
        certificates.set(key.clone());
    }
    let renewal = |host: &str, when: SystemTime| {
        let wait = when.duration_since(SystemTime::now()).unwrap_or_default();
        tracing::info!(
            "ACME: certificate for {host} renews in {} s",
            wait.as_secs()
        );
        wait
    };
    let mut wait = stored.map_or(Duration::ZERO, |(_, when)| renewal(&settings.host, when));
    tokio::spawn(async move {
        let mut retry = FIRST_RETRY;
        loop {
            tokio::time::sleep(wait).await;
            match obtain(&certificates, &settings, &http).await {
                Ok(next) => {
                    retry = FIRST_RETRY;
                    wait = renewal(&settings.host, next);
                }
                Err(e) => {
                    tracing::warn!(
                        "ACME: no certificate for {} from {} ({e}); trying again in {} s",
                        settings.host,
                        settings.directory,
                        retry.as_secs()
                    );
                    wait = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    });
    Ok(())
}

/// One order: an account, the TLS-ALPN-01 challenge answered by the
/// listeners, the certificate stored and served. Returns when to renew.
async fn obtain(
    certificates: &Certificates,
    settings: &AcmeSettings,
    http: &reqwest::Client,
) -> Result<SystemTime, String> {
    let account = account(settings, http).await?;
    let identifier = match settings.host.parse::<IpAddr>() {
        Ok(ip) => Identifier::Ip(ip),
        Err(_) => Identifier::Dns(settings.host.clone()),
    };
    let mut order = account
        .new_order(&NewOrder::new(&[identifier]))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    // The challenge certificate is offered from here until the order ends.
    let sni = challenge_server_name(&settings.host);
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(|e| format!("authorization: {e}"))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => return Err(format!("the authorization is {status:?}")),
            }
            let mut challenge = authorization
                .challenge(ChallengeType::TlsAlpn01)
                .ok_or("the CA offers no tls-alpn-01 challenge")?;
            let key = challenge_certificate(
                &settings.host,
                challenge.key_authorization().digest().as_ref(),
            )?;
            certificates.challenges().insert(sni.clone(), Arc::new(key));
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("challenge: {e}"))?;
        }
        let status = order
            .poll_ready(&RetryPolicy::new())
            .await
            .map_err(|e| format!("waiting for validation: {e}"))?;
        if status != OrderStatus::Ready {
            let problem = order.state().error.as_ref().map(|p| p.to_string());
            return Err(format!(
                "the order is {status:?}{}",
                problem.map(|p| format!(": {p}")).unwrap_or_default()
            ));
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain_pem = order
            .poll_certificate(&RetryPolicy::new())
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        Ok((key_pem, chain_pem))
    }
    .await;
    certificates.challenges().remove(&sni);
    let (key_pem, chain_pem) = result?;
    let (key, renew_at) = parse_certificate(chain_pem.as_bytes(), key_pem.as_bytes())?;
    // Key first: a crash between the two leaves a pair that does not fit,
    // which is refused at start, and a new order follows.
    write_atomically(&settings.state_dir.join(KEY_FILE), key_pem.as_bytes())?;
    write_atomically(&settings.state_dir.join(CERT_FILE), chain_pem.as_bytes())?;
    certificates.set(key);
    tracing::info!("ACME: new certificate for {} is served", settings.host);
    Ok(renew_at)
}

/// The stored account, or a new one (stored before it is used).
async fn account(settings: &AcmeSettings, http: &reqwest::Client) -> Result<Account, String> {
    let path = settings.state_dir.join(ACCOUNT_FILE);
    let builder = || Account::builder_with_http(Box::new(ReqwestHttp(http.clone())));
    if let Ok(json) = std::fs::read(&path)
        && let Ok(credentials) = serde_json::from_slice::<AccountCredentials>(&json)
    {
        return builder()
            .from_credentials(credentials)
            .await
            .map_err(|e| format!("account: {e}"));
    }
    let contact = settings.contact.as_deref().map(|c| {
        if c.contains(':') {
            c.to_owned()
        } else {
            format!("mailto:{c}")
        }
    });
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contacts,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder()
        .create(&new, settings.directory.clone(), None)
        .await
        .map_err(|e| format!("new account: {e}"))?;
    let json = serde_json::to_vec(&credentials).map_err(|e| e.to_string())?;
    write_atomically(&path, &json)?;
    tracing::info!("ACME: account created at {}", settings.directory);
    Ok(account)
}

/// The stored certificate and when to renew it, if it is readable, fits
/// its key and has not expired.
fn stored_certificate(dir: &Path) -> Option<(CertifiedKey, SystemTime)> {
    let chain = std::fs::read(dir.join(CERT_FILE)).ok()?;
    let key = std::fs::read(dir.join(KEY_FILE)).ok()?;
    match parse_certificate(&chain, &key) {
        Ok((key, renew_at)) => Some((key, renew_at)),
        Err(e) => {
            tracing::warn!("ACME: the stored certificate is not used: {e}");
            None
        }
    }
}

/// A PEM chain and key as served, and the moment two thirds of the leaf's
/// lifetime have passed. An expired leaf is an error.
fn parse_certificate(
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<(CertifiedKey, SystemTime), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    let leaf = chain.first().ok_or("no certificate in the chain")?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| format!("certificate: {e}"))?;
    let validity = parsed.validity();
    let at = |seconds: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64);
    let (not_before, not_after) = (
        at(validity.not_before.timestamp()),
        at(validity.not_after.timestamp()),
    );
    if not_after <= SystemTime::now() {
        return Err("the certificate has expired".into());
    }
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let renew_at = not_before + lifetime * 2 / 3;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    Ok((certified_key(chain, key)?, renew_at))
}

/// The self-signed certificate that answers a TLS-ALPN-01 validation: the
/// name, and the key authorization's digest in a critical acmeIdentifier
/// extension.
fn challenge_certificate(host: &str, digest: &[u8]) -> Result<CertifiedKey, String> {
    let error = |e: rcgen::Error| format!("challenge certificate: {e}");
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(error)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(error)?;
    let cert = params.self_signed(&key).map_err(error)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `certified_key`: its fit check parses the certificate with
    // webpki, which refuses the critical acmeIdentifier extension. The pair
    // was made together just above, so it fits.
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("challenge certificate: {e}"))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing_key))
}

/// The server name a validation's ClientHello carries: the name itself,
/// or for an IP address its reverse-DNS name (RFC 8738, section 6).
fn challenge_server_name(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            let [a, b, c, d] = ip.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        Ok(IpAddr::V6(ip)) => {
            let mut name = String::with_capacity(73);
            for byte in ip.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            name + "ip6.arpa"
        }
        Err(_) => host.to_ascii_lowercase(),
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over
/// `path`: readers see the old file or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The HTTP client for the CA: rustls with the ring provider and the
/// public roots, plus `ca_certificate` when given.
fn http_client(ca_certificate: Option<&Path>) -> Result<reqwest::Client, String> {
    conduit_service::utils::use_ring_for_tls();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("conduit/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_certificate {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let certificate =
            reqwest::Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build()
        .map_err(|e| format!("no HTTP client for ACME: {e}"))
}

/// instant-acme's requests through reqwest, the client every other
/// outbound request of this server uses.
struct ReqwestHttp(reqwest::Client);

impl HttpClient for ReqwestHttp {
    fn request(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let other = |e: Box<dyn std::error::Error + Send + Sync>| instant_acme::Error::Other(e);
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let request = reqwest::Request::try_from(http::Request::from_parts(parts, body))
                .map_err(|e| other(e.into()))?;
            let response = client.execute(request).await.map_err(|e| other(e.into()))?;
            let response: http::Response<reqwest::Body> = response.into();
            Ok(BytesResponse::from(response))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_server_names() {
        assert_eq!(
            challenge_server_name("Chat.Example.org"),
            "chat.example.org"
        );
        assert_eq!(challenge_server_name("127.0.0.1"), "1.0.0.127.in-addr.arpa");
        assert_eq!(
            challenge_server_name("2001:db8::567:89ab"),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn challenge_certificate_carries_the_digest_in_a_critical_extension() {
        let digest = [7u8; 32];
        let key = challenge_certificate("chat.example.org", &digest).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&key.cert[0]).unwrap();
        let oid = x509_parser::oid_registry::Oid::from(&[1, 3, 6, 1, 5, 5, 7, 1, 31]).unwrap();
        let extension = cert.get_extension_unique(&oid).unwrap().unwrap();
        assert!(extension.critical);
        // An OCTET STRING of the 32 bytes.
        assert_eq!(extension.value, [&[0x04, 0x20][..], &digest].concat());
        let names = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(names.value.general_names.len(), 1);
    }

    #[test]
    fn stored_certificates_renew_after_two_thirds_and_expired_ones_are_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["chat.example.org".into()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(30);
        params.not_after = now + time::Duration::days(60);
        let cert = params.self_signed(&key).unwrap();
        let (_, renew_at) =
            parse_certificate(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        let expected = SystemTime::UNIX_EPOCH
            + Duration::from_secs((now + time::Duration::days(30)).unix_timestamp() as u64);
        let off = renew_at
            .duration_since(expected)
            .unwrap_or_else(|e| e.duration());
        assert!(off < Duration::from_secs(2), "{off:?}");

        params.not_after = now - time::Duration::days(1);
        let cert = params.self_signed(&key).unwrap();
        assert!(parse_certificate(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).is_err());
        // A key that is not the certificate's.
        let other = rcgen::KeyPair::generate().unwrap();
        params.not_after = now + time::Duration::days(60);
        let cert = params.self_signed(&key).unwrap();
        assert!(
            parse_certificate(cert.pem().as_bytes(), other.serialize_pem().as_bytes()).is_err()
        );
    }
}
