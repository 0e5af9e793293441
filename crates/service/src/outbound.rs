//! Requests to addresses users choose (URL previews, push gateways, SSO
//! avatars): every address a name resolves to, and every address written
//! in a URL, is checked against the IP ranges the config denies before a
//! connection is made, so a user cannot make the server reach into the
//! network it runs in.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

/// How a refused name shows in a request error.
const DENIED_NAME: &str = "resolves to no address this server may reach";

/// An IP range, `addr/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP range like 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a bad prefix length"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            // An IPv4 address written as IPv6 is judged as IPv4.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(range), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(range) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(range), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(range) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Denied unless the config says otherwise: every range that is not the
/// public internet (Synapse's list).
pub const DEFAULT_DENYLIST: &[&str] = &[
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "0.0.0.0/8",
    "240.0.0.0/4",
    "::1/128",
    "::/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
];

/// The ranges outbound requests may reach.
#[derive(Clone, Debug)]
pub struct IpPolicy {
    deny: Vec<IpRange>,
    allow: Vec<IpRange>,
}

impl IpPolicy {
    pub fn new(deny: &[String], allow: &[String]) -> Result<Self, String> {
        let parse = |list: &[String]| {
            list.iter()
                .map(|r| IpRange::parse(r))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            deny: parse(deny)?,
            allow: parse(allow)?,
        })
    }

    /// An allowed range wins over a denied one.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|r| r.contains(ip)) || !self.deny.iter().any(|r| r.contains(ip))
    }
}

/// A resolver that hands out only permitted addresses: a name with none
/// of them cannot be connected to.
struct CheckedResolver(IpPolicy);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| policy.permits(addr.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{host} {DENIED_NAME}").into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl IpPolicy {
    /// Refuses a URL whose host is an address in a denied range (names
    /// are checked by the resolver of [`checked_client`]).
    pub fn check_url_host(&self, url: &url::Url) -> Result<(), &'static str> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) if !self.permits(IpAddr::V4(ip)) => {
                Err("the address is in a denied range")
            }
            Some(url::Host::Ipv6(ip)) if !self.permits(IpAddr::V6(ip)) => {
                Err("the address is in a denied range")
            }
            None => Err("the URL has no host"),
            _ => Ok(()),
        }
    }
}

/// A client whose connections go only to addresses `policy` permits, that
/// follows no redirect (each must be checked by the caller) and uses no
/// proxy from the environment (it would connect where the resolver never
/// looked).
pub fn checked_client(
    policy: &IpPolicy,
    purpose: &str,
    timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    crate::utils::use_ring_for_tls();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(CheckedResolver(policy.clone())))
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(format!("conduit/{} ({purpose})", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Whether a request failed because its name resolves only to denied
/// addresses.
pub fn is_denied_name(error: &reqwest::Error) -> bool {
    format!("{error:?}").contains(DENIED_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_contain_what_they_should() {
        let policy = IpPolicy::new(
            &DEFAULT_DENYLIST
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            &["127.0.0.2/32".to_owned()],
        )
        .unwrap();
        for denied in [
            "127.0.0.1",
            "10.0.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!policy.permits(denied.parse().unwrap()), "{denied}");
        }
        for allowed in ["127.0.0.2", "93.184.215.14", "2606:4700::1"] {
            assert!(policy.permits(allowed.parse().unwrap()), "{allowed}");
        }
        assert!(IpRange::parse("10.0.0.0/33").is_err());
        assert!(IpRange::parse("nonsense").is_err());
    }
}
