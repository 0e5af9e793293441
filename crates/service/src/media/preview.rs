//! URL previews (`preview_url`): the server fetches a page a user is
//! about to send and answers its OpenGraph title, description and image.
//! Off unless `url_preview_enabled`, because the server then fetches
//! addresses users choose: every address a name resolves to, and every
//! redirect, is checked against the IP ranges the config denies (private,
//! loopback, link-local, multicast and the other special ranges by
//! default) before a connection is made. Answers are bounded in size and
//! time, and kept an hour.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use ruma::UserId;
use serde_json::{Map, Value as JsonValue};

use super::UploadInfo;
use crate::{
    Error, ErrorCode, Result, Services,
    outbound::{self, IpPolicy},
    utils,
};

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
        let client = outbound::checked_client(&self.policy, "URL preview", TIMEOUT)
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
            self.policy.check_url_host(&url).map_err(refused)?;
            let mut response = self.client()?.get(url.clone()).send().await.map_err(|e| {
                if outbound::is_denied_name(&e) {
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
