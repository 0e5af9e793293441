//! Server discovery: from a server name to the address and `Host` header
//! that reach it, in the spec's order (IP literal, explicit port,
//! `/.well-known/matrix/server`, SRV `_matrix-fed._tcp`, legacy SRV
//! `_matrix._tcp`, port 8448). Answers are cached: a well-known for its
//! `Cache-Control` lifetime (24 h when it gives none, at most 48 h), a
//! failed look-up for an hour.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{OwnedServerName, ServerName};

use crate::utils;

const DEFAULT_PORT: u16 = 8448;
const WELL_KNOWN_DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
const WELL_KNOWN_MAX_TTL: Duration = Duration::from_secs(48 * 3600);
const FAILURE_TTL: Duration = Duration::from_secs(3600);
/// A well-known answer is a few bytes; anything large is not one.
const WELL_KNOWN_MAX_BODY: usize = 64 * 1024;

/// Where a server is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The name TLS checks the certificate against (and the URL's host).
    pub tls_name: String,
    /// The port connected to.
    pub port: u16,
    /// The `Host` header.
    pub host_header: String,
    /// An SRV target to connect to instead of `tls_name`'s own addresses.
    pub connect_host: Option<String>,
}

impl Destination {
    /// `https://name:port`, the base of every request URL.
    pub fn base_url(&self) -> String {
        match self.tls_name.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("https://[{ip}]:{}", self.port),
            _ => format!("https://{}:{}", self.tls_name, self.port),
        }
    }

    fn direct(host: &str, port: u16, host_header: String) -> Self {
        Self {
            tls_name: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            host_header,
            connect_host: None,
        }
    }
}

/// The steps that need no network: an IP literal or an explicit port.
pub fn without_lookup(name: &ServerName) -> Option<Destination> {
    if name.is_ip_literal() || name.port().is_some() {
        return Some(Destination::direct(
            name.host(),
            name.port().unwrap_or(DEFAULT_PORT),
            name.as_str().to_owned(),
        ));
    }
    None
}

/// Reads a well-known answer: the delegated `host[:port]`, if valid.
pub fn parse_well_known(body: &[u8]) -> Option<OwnedServerName> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let server = value.get("m.server")?.as_str()?;
    OwnedServerName::try_from(server).ok()
}

/// How long a well-known answer may be trusted, from its `Cache-Control`.
pub fn well_known_ttl(cache_control: Option<&str>) -> Duration {
    let max_age = cache_control.and_then(|value| {
        value.split(',').find_map(|part| {
            let part = part.trim();
            if part.eq_ignore_ascii_case("no-store") || part.eq_ignore_ascii_case("no-cache") {
                return Some(0);
            }
            part.strip_prefix("max-age=")?.trim().parse::<u64>().ok()
        })
    });
    match max_age {
        Some(seconds) => Duration::from_secs(seconds).min(WELL_KNOWN_MAX_TTL),
        None => WELL_KNOWN_DEFAULT_TTL,
    }
}

/// Which step of discovery gave the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// An IP literal or an explicit port: no look-up.
    Direct,
    /// `/.well-known/matrix/server` delegated to this name.
    WellKnown(OwnedServerName),
    /// An SRV record (`_matrix-fed._tcp` or the legacy `_matrix._tcp`).
    Srv(&'static str),
    /// Nothing found: the name itself on port 8448.
    DefaultPort,
}

/// Resolves server names, caching each answer for as long as it holds.
pub struct Discovery {
    /// A client without our resolver overrides, for `/.well-known`.
    client: reqwest::Client,
    dns: Option<hickory_resolver::TokioResolver>,
    cache: Mutex<HashMap<OwnedServerName, (Destination, Instant)>>,
}

impl Discovery {
    pub fn new(client: reqwest::Client) -> Self {
        let dns = match hickory_resolver::TokioResolver::builder_tokio().and_then(|b| b.build()) {
            Ok(resolver) => Some(resolver),
            Err(e) => {
                tracing::warn!("no DNS resolver for SRV look-ups ({e}); using port 8448");
                None
            }
        };
        Self {
            client,
            dns,
            cache: Mutex::default(),
        }
    }

    /// Where `name` is reached now.
    pub async fn resolve(&self, name: &ServerName) -> Destination {
        if let Some(destination) = without_lookup(name) {
            return destination;
        }
        if let Some((destination, expires)) = utils::locked(&self.cache).get(name)
            && *expires > Instant::now()
        {
            return destination.clone();
        }
        let (destination, ttl, _) = self.look_up(name).await;
        tracing::debug!(server = %name, ?destination, "resolved server");
        utils::locked(&self.cache)
            .insert(name.to_owned(), (destination.clone(), Instant::now() + ttl));
        destination
    }

    /// The SRV target of a host name, for the HTTP client's resolver.
    pub fn connect_host(&self, tls_name: &str) -> Option<String> {
        let cache = utils::locked(&self.cache);
        cache
            .values()
            .find(|(d, _)| d.tls_name == tls_name && d.connect_host.is_some())
            .and_then(|(d, _)| d.connect_host.clone())
    }

    /// Where `name` is reached and which step said so, looked up afresh
    /// (`conduit init`'s report); the answer is cached as by [`Self::resolve`].
    pub async fn explain(&self, name: &ServerName) -> (Destination, Route) {
        if let Some(destination) = without_lookup(name) {
            return (destination, Route::Direct);
        }
        let (destination, ttl, route) = self.look_up(name).await;
        utils::locked(&self.cache)
            .insert(name.to_owned(), (destination.clone(), Instant::now() + ttl));
        (destination, route)
    }

    async fn look_up(&self, name: &ServerName) -> (Destination, Duration, Route) {
        let host = name.host();
        match self.well_known(host).await {
            Some((delegated, ttl)) => {
                let route = Route::WellKnown(delegated.clone());
                if let Some(destination) = without_lookup(&delegated) {
                    return (destination, ttl, route);
                }
                let (destination, _) = self.srv_or_default(delegated.host()).await;
                (destination, ttl, route)
            }
            None => {
                let (destination, route) = self.srv_or_default(host).await;
                (destination, FAILURE_TTL, route)
            }
        }
    }

    async fn well_known(&self, host: &str) -> Option<(OwnedServerName, Duration)> {
        let url = format!("https://{host}/.well-known/matrix/server");
        let mut response = self.client.get(&url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let ttl = well_known_ttl(
            response
                .headers()
                .get(http::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
        );
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.ok()? {
            if body.len() + chunk.len() > WELL_KNOWN_MAX_BODY {
                return None;
            }
            body.extend_from_slice(&chunk);
        }
        let delegated = parse_well_known(&body);
        if delegated.is_none() {
            tracing::info!(%host, "invalid /.well-known/matrix/server answer, ignored");
        }
        Some((delegated?, ttl))
    }

    /// SRV `_matrix-fed._tcp`, then `_matrix._tcp`, else port 8448; the
    /// `Host` header and TLS name stay `host`.
    async fn srv_or_default(&self, host: &str) -> (Destination, Route) {
        if let Some(dns) = &self.dns {
            for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
                let Ok(lookup) = dns.srv_lookup(format!("{service}.{host}.")).await else {
                    continue;
                };
                let best = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        hickory_resolver::proto::rr::RData::SRV(srv) => Some(srv.clone()),
                        _ => None,
                    })
                    .min_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)));
                if let Some(srv) = best {
                    let target = srv.target.to_utf8();
                    let destination = Destination {
                        tls_name: host.to_owned(),
                        port: srv.port,
                        host_header: host.to_owned(),
                        connect_host: Some(target.trim_end_matches('.').to_owned()),
                    };
                    return (destination, Route::Srv(service));
                }
            }
        }
        (
            Destination::direct(host, DEFAULT_PORT, host.to_owned()),
            Route::DefaultPort,
        )
    }
}

/// The HTTP client's name resolution: a host that discovery mapped to an
/// SRV target is resolved to the target's addresses, anything else as usual.
pub struct SrvAwareResolver(pub std::sync::Arc<Discovery>);

impl reqwest::dns::Resolve for SrvAwareResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = self
            .0
            .connect_host(name.as_str())
            .unwrap_or_else(|| name.as_str().to_owned());
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> OwnedServerName {
        OwnedServerName::try_from(s).unwrap()
    }

    #[test]
    fn ip_literals_and_ports_need_no_lookup() {
        let d = without_lookup(&name("127.0.0.1:8448")).unwrap();
        assert_eq!(d.base_url(), "https://127.0.0.1:8448");
        assert_eq!(d.host_header, "127.0.0.1:8448");
        let d = without_lookup(&name("[::1]")).unwrap();
        assert_eq!(d.base_url(), "https://[::1]:8448");
        assert_eq!(d.host_header, "[::1]");
        let d = without_lookup(&name("example.org:1234")).unwrap();
        assert_eq!(d.base_url(), "https://example.org:1234");
        assert_eq!(d.host_header, "example.org:1234");
        assert!(without_lookup(&name("example.org")).is_none());
    }

    #[test]
    fn well_known_answers_and_lifetimes() {
        assert_eq!(
            parse_well_known(br#"{"m.server": "matrix.example.org:443"}"#),
            Some(name("matrix.example.org:443"))
        );
        assert_eq!(parse_well_known(br#"{"m.server": "bad name!"}"#), None);
        assert_eq!(parse_well_known(b"<html>"), None);
        assert_eq!(well_known_ttl(None), WELL_KNOWN_DEFAULT_TTL);
        assert_eq!(
            well_known_ttl(Some("public, max-age=600")),
            Duration::from_secs(600)
        );
        assert_eq!(well_known_ttl(Some("max-age=99999999")), WELL_KNOWN_MAX_TTL);
        assert_eq!(well_known_ttl(Some("no-store")), Duration::ZERO);
    }
}
