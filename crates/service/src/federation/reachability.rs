//! Can the world reach this server? The checks `conduit init` runs: the
//! name's DNS record, how other servers discover the federation port
//! (well-known, SRV, 8448), whether something answers there over valid
//! HTTPS, and whether clients find the client API. Each finding is one
//! sentence an admin can act on.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use ruma::ServerName;

use crate::outbound::{DEFAULT_DENYLIST, IpPolicy};

use super::{
    client::build_client,
    discovery::{Destination, Discovery, Route, SrvAwareResolver},
};

/// How long one probe may take: a check that hangs is a check that failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(8);

/// What a check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// As it should be.
    Ok,
    /// Something to fix before others can reach the server.
    Missing,
    /// Worth knowing, nothing to fix.
    Note,
}

/// One check's outcome: its verdict and one sentence.
#[derive(Clone, Debug)]
pub struct Finding {
    pub verdict: Verdict,
    pub text: String,
}

impl Finding {
    fn new(verdict: Verdict, text: String) -> Self {
        Self { verdict, text }
    }
}

/// Runs every check for `name` (this server's `server_name`).
pub async fn check(name: &ServerName) -> Vec<Finding> {
    let mut findings = Vec::new();
    let host = name.host();
    if !name.is_ip_literal() {
        findings.push(dns_record(host).await);
    }
    let plain = match build_client(true, None) {
        Ok(client) => client,
        Err(e) => {
            let text = format!("no HTTP client could be built ({e}), so nothing else was checked.");
            findings.push(Finding::new(Verdict::Missing, text));
            return findings;
        }
    };
    let discovery = Arc::new(Discovery::new(plain.clone()));
    let (destination, route) = discovery.explain(name).await;
    findings.push(route_finding(name, &destination, &route));
    let resolver = Arc::new(SrvAwareResolver(discovery.clone()));
    match build_client(true, Some(resolver)) {
        Ok(client) => findings.extend(federation_port(&client, &destination).await),
        Err(e) => findings.push(Finding::new(
            Verdict::Missing,
            format!("no HTTP client could be built ({e})."),
        )),
    }
    findings.push(client_api(&plain, host).await);
    findings
}

/// The name's address record: without one nobody finds the server.
async fn dns_record(host: &str) -> Finding {
    let lookup = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::lookup_host((host, 0))).await;
    let addresses: Vec<SocketAddr> = match lookup {
        Ok(Ok(addresses)) => addresses.collect(),
        _ => Vec::new(),
    };
    if addresses.is_empty() {
        return Finding::new(
            Verdict::Missing,
            format!(
                "{host} has no DNS record (A or AAAA): add one at your DNS provider that points \
                 at this server's public IP address, or no other server and no app can find it."
            ),
        );
    }
    let ips: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
    let public = addresses.iter().any(|a| is_public(a.ip()));
    if public {
        Finding::new(Verdict::Ok, format!("{host} points at {}.", ips.join(", ")))
    } else {
        Finding::new(
            Verdict::Note,
            format!(
                "{host} points only at private or loopback addresses ({}), which servers on the \
                 internet cannot reach.",
                ips.join(", ")
            ),
        )
    }
}

/// Whether an address can be reached from the internet at large: outside
/// every special-use range (the URL previews' default deny list).
fn is_public(ip: std::net::IpAddr) -> bool {
    let special: Vec<String> = DEFAULT_DENYLIST.iter().map(|r| (*r).to_owned()).collect();
    IpPolicy::new(&special, &[]).is_ok_and(|policy| policy.permits(ip))
}

/// How other servers find the federation port.
fn route_finding(name: &ServerName, destination: &Destination, route: &Route) -> Finding {
    let target = format!(
        "{}:{}",
        destination
            .connect_host
            .as_deref()
            .unwrap_or(&destination.tls_name),
        destination.port
    );
    let text = match route {
        Route::Direct => format!("other servers connect to {target}, the port in the name."),
        Route::WellKnown(delegated) => format!(
            "https://{}/.well-known/matrix/server delegates federation to {delegated}, so other \
             servers connect to {target}.",
            name.host()
        ),
        Route::Srv(service) => format!(
            "the SRV record {service}.{} sends other servers to {target}.",
            name.host()
        ),
        Route::DefaultPort => format!(
            "there is no https://{host}/.well-known/matrix/server and no SRV record, so other \
             servers connect to {host}:8448 (serve the well-known on port 443 to use another \
             host or port).",
            host = name.host()
        ),
    };
    Finding::new(Verdict::Note, text)
}

/// Whether the federation port answers over HTTPS with a valid certificate.
async fn federation_port(client: &reqwest::Client, destination: &Destination) -> Vec<Finding> {
    let host = destination
        .connect_host
        .as_deref()
        .unwrap_or(&destination.tls_name);
    let target = format!("{host}:{}", destination.port);
    if !answers_tcp(host, destination.port).await {
        return vec![Finding::new(
            Verdict::Missing,
            format!(
                "nothing answers on {target}: start the server, and open TCP port {} in the \
                 firewall (and any router's port forwarding) so other servers can reach it.",
                destination.port
            ),
        )];
    }
    let url = format!("{}/_matrix/federation/v1/version", destination.base_url());
    let answer = client
        .get(&url)
        .header(http::header::HOST, &destination.host_header)
        .timeout(PROBE_TIMEOUT)
        .send()
        .await;
    let finding = match answer {
        Ok(response) if response.status().is_success() => {
            let body = small_json(response).await.unwrap_or_default();
            let server = &body["server"];
            let software = match (server["name"].as_str(), server["version"].as_str()) {
                (Some(name), Some(version)) => format!("{name} {version}"),
                _ => "a Matrix server".to_owned(),
            };
            Finding::new(
                Verdict::Ok,
                format!("{target} answers over HTTPS as {software}, with a valid certificate."),
            )
        }
        Ok(response) => Finding::new(
            Verdict::Missing,
            format!(
                "{target} answers HTTPS but not as a Matrix server ({} for {url}): point that \
                 port at this server's federation listener.",
                response.status()
            ),
        ),
        Err(e) => Finding::new(
            Verdict::Missing,
            format!(
                "{target} accepts connections but HTTPS fails ({}): it needs a certificate for \
                 {} signed by a public CA, such as Let's Encrypt's.",
                error_chain(&e),
                destination.tls_name
            ),
        ),
    };
    vec![finding]
}

/// Whether a TCP connection to any address of `host` succeeds.
async fn answers_tcp(host: &str, port: u16) -> bool {
    let Ok(Ok(addresses)) =
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::lookup_host((host, port))).await
    else {
        return false;
    };
    for address in addresses {
        let connect = tokio::net::TcpStream::connect(address);
        if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, connect).await {
            return true;
        }
    }
    false
}

/// Whether apps find the client API: through the client well-known, or
/// at `https://host` itself.
async fn client_api(client: &reqwest::Client, host: &str) -> Finding {
    let well_known = format!("https://{host}/.well-known/matrix/client");
    let base = match get_json(client, &well_known).await {
        Some(body) => match body["m.homeserver"]["base_url"].as_str() {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None => {
                return Finding::new(
                    Verdict::Missing,
                    format!("{well_known} has no m.homeserver.base_url, so apps cannot use it."),
                );
            }
        },
        None => format!("https://{host}"),
    };
    let versions = format!("{base}/_matrix/client/versions");
    if get_json(client, &versions).await.is_some() {
        Finding::new(
            Verdict::Ok,
            format!("apps signing in as @name:{host} reach the client API at {base}."),
        )
    } else {
        Finding::new(
            Verdict::Missing,
            format!(
                "apps cannot reach the client API at {versions}: serve it there over HTTPS \
                 (a reverse proxy to this server's port), or serve {well_known} naming where \
                 it is."
            ),
        )
    }
}

/// The JSON answer of a successful GET, if there is one.
async fn get_json(client: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    let response = client.get(url).timeout(PROBE_TIMEOUT).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    small_json(response).await
}

/// A JSON body of at most 64 KiB: these answers are a few bytes.
async fn small_json(mut response: reqwest::Response) -> Option<serde_json::Value> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > 64 * 1024 {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).ok()
}

/// An error with its causes, which name the real problem (an unknown
/// issuer, a name mismatch) where reqwest's own message does not.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        for ip in ["203.0.114.5", "2a01:4f8::1", "1.1.1.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
