//! URL previews (`preview_url`): the server fetches a page a user is
//! about to send and answers its OpenGraph title, description and image.
//! Off unless `url_preview_enabled`, because the server then fetches
//! addresses users choose: every address a name resolves to, and every
//! redirect, is checked against the IP ranges the config denies (private,
//! loopback, link-local, multicast and the other special ranges by
//! default) before a connection is made. Answers are bounded in size and
//! time, and kept an hour.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::UserId;
use serde_json::{Map, Value as JsonValue};

use super::UploadInfo;
use crate::{Error, ErrorCode, Result, Services, utils};

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

/// The ranges a preview may reach.
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

/// A resolver for the preview client that hands out only permitted
/// addresses: a name with none of them cannot be connected to.
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
                return Err(format!("{host} resolves to no address previews may reach").into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The client, the policy and what was fetched lately.
pub struct Previews {
    policy: IpPolicy,
    client: std::sync::OnceLock<reqwest::Client>,
    cache: Mutex<HashMap<String, (u64, JsonValue)>>,
}

/// How long an answer is kept, and how many are.
const CACHE_MS: u64 = 3600 * 1000;
const CACHE_ENTRIES: usize = 1000;
const MAX_REDIRECTS: usize = 5;
/// Of a page, only the start is read: the head is what has the tags.
const MAX_PAGE_BYTES: usize = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

fn refused(why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::Forbidden,
        format!("This URL cannot be previewed: {why}"),
    )
}

fn unreachable(why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::Unknown,
        format!("The page could not be fetched: {why}"),
    )
    .with_status(502)
}

impl Previews {
    pub fn new(policy: IpPolicy) -> Self {
        Self {
            policy,
            client: std::sync::OnceLock::new(),
            cache: Mutex::default(),
        }
    }

    fn client(&self) -> Result<&reqwest::Client> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        crate::utils::use_ring_for_tls();
        let client = reqwest::Client::builder()
            // A proxy from the environment would connect where the resolver
            // never looked.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(CheckedResolver(self.policy.clone())))
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT)
            .user_agent(concat!(
                "conduit/",
                env!("CARGO_PKG_VERSION"),
                " (URL preview)"
            ))
            .build()
            .map_err(Error::internal)?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Fetches `url` (following up to five redirects, each checked):
    /// the final content type and at most `limit` bytes of the body.
    async fn fetch(&self, url: &str, limit: usize) -> Result<(Option<String>, Vec<u8>, url::Url)> {
        let mut url = url::Url::parse(url).map_err(|_| Error::invalid_param("Not a URL."))?;
        for _ in 0..=MAX_REDIRECTS {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(refused("only http and https are fetched"));
            }
            // The resolver sees names only: addresses written in the URL are
            // checked here.
            match url.host() {
                Some(url::Host::Ipv4(ip)) if !self.policy.permits(IpAddr::V4(ip)) => {
                    return Err(refused("the address is in a denied range"));
                }
                Some(url::Host::Ipv6(ip)) if !self.policy.permits(IpAddr::V6(ip)) => {
                    return Err(refused("the address is in a denied range"));
                }
                None => return Err(refused("the URL has no host")),
                _ => {}
            }
            let mut response = self.client()?.get(url.clone()).send().await.map_err(|e| {
                if format!("{e:?}").contains("no address previews may reach") {
                    refused("the name resolves to a denied range")
                } else {
                    unreachable(crate::federation::client::describe(&e))
                }
            })?;
            if response.status().is_redirection() {
                let location = response
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| unreachable("a redirect without a location"))?;
                url = url
                    .join(location)
                    .map_err(|_| unreachable("a bad redirect"))?;
                continue;
            }
            if !response.status().is_success() {
                return Err(unreachable(format!("HTTP {}", response.status())));
            }
            let content_type = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // Of a page only the start counts (the head has the tags).
            let limit = match content_type.as_deref() {
                Some(kind) if kind.starts_with("text/") => limit.min(MAX_PAGE_BYTES),
                _ => limit,
            };
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| unreachable(crate::federation::client::describe(&e)))?
            {
                let room = limit.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= limit {
                    break;
                }
            }
            return Ok((content_type, body, url));
        }
        Err(unreachable("too many redirects"))
    }
}

/// The OpenGraph tags of a page, with `<title>` and the description meta
/// tag when it has none.
pub fn page_tags(html: &[u8]) -> Map<String, JsonValue> {
    let text = String::from_utf8_lossy(html);
    let mut tags = Map::new();
    let mut title: Option<String> = None;
    let mut description = None;
    let mut in_title = false;
    for token in html5gum::Tokenizer::new(text.as_ref()).flatten() {
        match token {
            html5gum::Token::StartTag(tag) => {
                let name = String::from_utf8_lossy(&tag.name).to_ascii_lowercase();
                in_title = name == "title" && title.is_none();
                if name != "meta" {
                    continue;
                }
                let attribute = |key: &str| {
                    tag.attributes
                        .get(key.as_bytes())
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                };
                let Some(content) = attribute("content") else {
                    continue;
                };
                let key = attribute("property").or_else(|| attribute("name"));
                match key.as_deref() {
                    Some(key) if key.starts_with("og:") && !tags.contains_key(key) => {
                        tags.insert(key.to_owned(), content.into());
                    }
                    Some("description") => description = Some(content),
                    _ => {}
                }
            }
            html5gum::Token::String(text) if in_title => {
                title = Some(String::from_utf8_lossy(&text).trim().to_owned());
                in_title = false;
            }
            html5gum::Token::EndTag(_) => in_title = false,
            _ => {}
        }
    }
    if !tags.contains_key("og:title")
        && let Some(title) = title.filter(|t| !t.is_empty())
    {
        tags.insert("og:title".into(), title.into());
    }
    if !tags.contains_key("og:description")
        && let Some(description) = description
    {
        tags.insert("og:description".into(), description.into());
    }
    tags
}

impl Services {
    /// `GET /preview_url?url=`: the page's tags, its image stored as media
    /// of `user_id` (`og:image` is then an `mxc://` URI).
    pub async fn preview_url(&self, user_id: &UserId, url: &str) -> Result<JsonValue> {
        let Some(previews) = &self.previews else {
            return Err(Error::new(
                ErrorCode::Unrecognized,
                "URL previews are off on this server.",
            ));
        };
        let now = utils::now_ms();
        if let Some((at, answer)) = utils::locked(&previews.cache).get(url)
            && now.saturating_sub(*at) < CACHE_MS
        {
            return Ok(answer.clone());
        }
        // Each preview may store a picture: it counts as an upload.
        self.check_upload_rate(user_id)?;
        let limit = self.config.max_request_size as usize;
        // A page is read up to its first MiB; a picture up to the upload limit.
        let (content_type, body, final_url) = previews.fetch(url, limit).await?;
        let kind = super::essence(content_type.as_deref().unwrap_or(""));
        let mut answer = Map::new();
        if kind.starts_with("image/") {
            self.preview_image(user_id, &kind, &body, &mut answer)
                .await?;
        } else if kind == "text/html" || kind == "application/xhtml+xml" {
            let page = &body[..body.len().min(MAX_PAGE_BYTES)];
            answer = page_tags(page);
            if let Some(image) = answer
                .get("og:image")
                .and_then(JsonValue::as_str)
                .map(str::to_owned)
            {
                answer.remove("og:image");
                if let Ok(image_url) = final_url.join(&image)
                    && let Ok((Some(image_type), bytes, _)) =
                        previews.fetch(image_url.as_str(), limit).await
                {
                    let image_type = super::essence(&image_type);
                    if image_type.starts_with("image/") {
                        let _ = self
                            .preview_image(user_id, &image_type, &bytes, &mut answer)
                            .await;
                    }
                }
            }
        } else {
            return Err(unreachable(format!("{kind:?} pages are not previewed")));
        }
        let answer = JsonValue::Object(answer);
        let mut cache = utils::locked(&previews.cache);
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (at, _)| now.saturating_sub(*at) < CACHE_MS);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(url.to_owned(), (now, answer.clone()));
        Ok(answer)
    }

    /// Stores a preview's image as media and describes it in `answer`.
    async fn preview_image(
        &self,
        user_id: &UserId,
        kind: &str,
        bytes: &[u8],
        answer: &mut Map<String, JsonValue>,
    ) -> Result<()> {
        let stored = self.media_store.store_bytes(bytes).await?;
        let uri = self.create_media(
            user_id,
            &stored,
            UploadInfo {
                content_type: Some(kind),
                file_name: None,
            },
        )?;
        answer.insert("og:image".into(), uri.into());
        answer.insert("og:image:type".into(), kind.into());
        answer.insert("matrix:image:size".into(), stored.size.into());
        if let Ok(size) = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|_| ())
            .and_then(|r| r.into_dimensions().map_err(|_| ()))
        {
            answer.insert("og:image:width".into(), size.0.into());
            answer.insert("og:image:height".into(), size.1.into());
        }
        Ok(())
    }
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

    #[test]
    fn tags_come_from_opengraph_else_the_title() {
        let page = br#"<html><head><title> A page </title>
            <meta property="og:title" content="The title">
            <meta name="description" content="Described">
            <meta property="og:image" content="/cat.png"></head></html>"#;
        let tags = page_tags(page);
        assert_eq!(tags["og:title"], "The title");
        assert_eq!(tags["og:description"], "Described");
        assert_eq!(tags["og:image"], "/cat.png");
        let plain = page_tags(b"<title>Only a title</title>");
        assert_eq!(plain["og:title"], "Only a title");
    }
}
