//! OAuth 2.0 clients: dynamic registration (RFC 7591) with the Matrix
//! spec's metadata rules, and the redirect URI check of each authorization.
//!
//! Every client is public (`token_endpoint_auth_method: none`): PKCE, not a
//! secret, ties a code to the app that asked for it. Registration needs no
//! account, so it is limited per address and the metadata kept is small.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as JsonValue};
use url::{Host, Url};

use super::OAuthError;

/// Longest URI kept in a client's metadata.
const MAX_URI: usize = 2048;
/// Most redirect URIs one client may register.
const MAX_REDIRECT_URIS: usize = 10;
/// Longest client name kept.
const MAX_NAME: usize = 200;

/// Grant types this server hands out tokens for.
pub const GRANT_TYPES: &[&str] = &["authorization_code", "refresh_token"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplicationType {
    Web,
    Native,
}

/// A registered client, as the `oauth_clients` table holds it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct ClientRecord {
    pub application_type: ApplicationType,
    pub client_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    /// Seconds since the epoch, as RFC 7591 writes `client_id_issued_at`.
    pub issued_at: u64,
}

impl ClientRecord {
    /// The RFC 7591 answer: the metadata as registered, with the id.
    pub fn to_json(&self, client_id: &str) -> JsonValue {
        let mut out = Map::new();
        out.insert("client_id".into(), client_id.into());
        out.insert("client_id_issued_at".into(), self.issued_at.into());
        out.insert("token_endpoint_auth_method".into(), "none".into());
        out.insert("response_types".into(), vec!["code"].into());
        out.insert(
            "application_type".into(),
            match self.application_type {
                ApplicationType::Web => "web",
                ApplicationType::Native => "native",
            }
            .into(),
        );
        out.insert("client_uri".into(), self.client_uri.clone().into());
        out.insert("redirect_uris".into(), self.redirect_uris.clone().into());
        out.insert("grant_types".into(), self.grant_types.clone().into());
        for (key, value) in [
            ("client_name", &self.client_name),
            ("logo_uri", &self.logo_uri),
            ("tos_uri", &self.tos_uri),
            ("policy_uri", &self.policy_uri),
        ] {
            if let Some(value) = value {
                out.insert(key.into(), value.clone().into());
            }
        }
        JsonValue::Object(out)
    }

    /// The name to show a person: the client's name, else its site's host.
    pub fn display_name(&self) -> String {
        self.client_name.clone().unwrap_or_else(|| {
            Url::parse(&self.client_uri)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| self.client_uri.clone())
        })
    }

    /// The registered redirect URI `asked` matches, per RFC 8252: exactly,
    /// except that a loopback URI of a native app matches on any port (the
    /// app listens where it can).
    pub fn redirect_matches(&self, asked: &str) -> bool {
        if self.redirect_uris.iter().any(|r| r == asked) {
            return true;
        }
        if self.application_type != ApplicationType::Native {
            return false;
        }
        let Some(asked) = Url::parse(asked).ok().filter(is_loopback) else {
            return false;
        };
        self.redirect_uris.iter().any(|registered| {
            Url::parse(registered).is_ok_and(|mut registered| {
                is_loopback(&registered)
                    && registered.set_port(asked.port()).is_ok()
                    && registered == asked
            })
        })
    }
}

fn invalid(description: impl Into<String>) -> OAuthError {
    OAuthError::new("invalid_client_metadata", description)
}

fn invalid_redirect(description: impl Into<String>) -> OAuthError {
    OAuthError::new("invalid_redirect_uri", description)
}

/// A host of letters, digits, dots and hyphens (or an IP address): the
/// `url` crate lets `*`, `;` or `'` through, which must never reach a
/// page's content security policy.
fn plain_host(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'),
        Some(_) => true,
        None => false,
    }
}

/// An https URL with a plain host, without user or password, not too long.
fn https_url(value: &str, field: &str) -> Result<Url, OAuthError> {
    let url = Url::parse(value)
        .ok()
        .filter(|u| value.len() <= MAX_URI && u.scheme() == "https" && plain_host(u))
        .ok_or_else(|| invalid(format!("{field} must be an https URL")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(format!(
            "{field} must not carry a user or password"
        )));
    }
    Ok(url)
}

/// Whether `host` is `base` or one of its subdomains.
fn same_site(host: &str, base: &str) -> bool {
    host == base
        || host
            .strip_suffix(base)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

fn is_loopback(url: &Url) -> bool {
    url.scheme() == "http"
        && match url.host() {
            Some(Host::Domain(d)) => d == "localhost",
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
}

/// One redirect URI, by the rules of its application type.
fn check_redirect(uri: &str, kind: ApplicationType, site: &str) -> Result<(), OAuthError> {
    // What the client sends back must be this very string: nothing the
    // parser would strip or normalise first.
    let url = Url::parse(uri)
        .ok()
        .filter(|u| uri.len() <= MAX_URI && u.as_str() == uri)
        .ok_or_else(|| invalid_redirect(format!("{uri:?} is not a URI in its normal form")))?;
    if url.fragment().is_some() {
        return Err(invalid_redirect(format!("{uri} must not have a fragment")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid_redirect(format!(
            "{uri} must not carry a user or password"
        )));
    }
    let https_on_site = url.scheme() == "https"
        && plain_host(&url)
        && url.host_str().is_some_and(|h| same_site(h, site));
    let ok = match kind {
        ApplicationType::Web => https_on_site,
        ApplicationType::Native => {
            https_on_site || is_loopback(&url) || {
                // A private-use scheme: the client's host in reverse
                // order (`com.example.app:/cb` for `app.example.com` or
                // `example.com`), with no authority.
                let reversed: Vec<&str> = url.scheme().split('.').rev().collect();
                reversed.len() >= 2
                    && same_site(site, &reversed.join("."))
                    && url.host().is_none()
                    && !uri[url.scheme().len() + 1..].starts_with("//")
            }
        }
    };
    if !ok {
        return Err(invalid_redirect(match kind {
            ApplicationType::Web => format!(
                "{uri}: a web client's redirect URIs must be https on {site} or a subdomain"
            ),
            ApplicationType::Native => format!(
                "{uri}: a native client's redirect URIs must be https on {site}, \
                 http on a loopback address, or a private-use scheme naming {site} in reverse"
            ),
        }));
    }
    Ok(())
}

/// Checks a registration request's metadata and keeps what this server
/// understands. Localized variants (`client_name#fr`) and unknown fields
/// are dropped, as RFC 7591 allows.
pub fn check_metadata(body: &JsonValue, issued_at: u64) -> Result<ClientRecord, OAuthError> {
    let body = body
        .as_object()
        .ok_or_else(|| invalid("the metadata must be a JSON object"))?;
    let text = |key: &str| -> Result<Option<&str>, OAuthError> {
        match body.get(key) {
            None | Some(JsonValue::Null) => Ok(None),
            Some(JsonValue::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(format!("{key} must be a string"))),
        }
    };
    let list = |key: &str| -> Result<Option<Vec<&str>>, OAuthError> {
        match body.get(key) {
            None | Some(JsonValue::Null) => Ok(None),
            Some(JsonValue::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| invalid(format!("{key} must hold strings")))
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(_) => Err(invalid(format!("{key} must be an array"))),
        }
    };

    let client_uri = text("client_uri")?.ok_or_else(|| invalid("client_uri is required"))?;
    let site_url = https_url(client_uri, "client_uri")?;
    let site = site_url.host_str().unwrap_or_default().to_owned();
    let on_site = |key: &str| -> Result<Option<String>, OAuthError> {
        let Some(value) = text(key)? else {
            return Ok(None);
        };
        let url = https_url(value, key)?;
        if !url.host_str().is_some_and(|h| same_site(h, &site)) {
            return Err(invalid(format!(
                "{key} must be on {site} or a subdomain, like client_uri"
            )));
        }
        Ok(Some(value.to_owned()))
    };
    let logo_uri = on_site("logo_uri")?;
    let tos_uri = on_site("tos_uri")?;
    let policy_uri = on_site("policy_uri")?;

    let application_type = match text("application_type")? {
        None | Some("web") => ApplicationType::Web,
        Some("native") => ApplicationType::Native,
        Some(other) => return Err(invalid(format!("unknown application_type {other:?}"))),
    };
    match text("token_endpoint_auth_method")? {
        None | Some("none") => {}
        Some(other) => {
            return Err(invalid(format!(
                "token_endpoint_auth_method {other:?} is not supported: clients here are public (\"none\")"
            )));
        }
    }
    // Grant types this server does not know are dropped, not refused.
    let grant_types: Vec<String> = list("grant_types")?
        .unwrap_or_else(|| GRANT_TYPES.to_vec())
        .into_iter()
        .filter(|g| GRANT_TYPES.contains(g))
        .map(str::to_owned)
        .collect();
    // Both, as the spec asks: tokens here are short-lived and need refreshing.
    if !GRANT_TYPES
        .iter()
        .all(|g| grant_types.iter().any(|have| have == g))
    {
        return Err(invalid(
            "grant_types must include authorization_code and refresh_token",
        ));
    }
    if let Some(types) = list("response_types")?
        && !types.contains(&"code")
    {
        return Err(invalid("response_types must include code"));
    }
    let redirect_uris = list("redirect_uris")?.unwrap_or_default();
    if redirect_uris.is_empty() {
        return Err(invalid_redirect("redirect_uris must name at least one URI"));
    }
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(invalid_redirect(format!(
            "at most {MAX_REDIRECT_URIS} redirect URIs"
        )));
    }
    for uri in &redirect_uris {
        check_redirect(uri, application_type, &site)?;
    }
    let client_name = text("client_name")?
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| n.chars().take(MAX_NAME).collect());
    Ok(ClientRecord {
        application_type,
        client_uri: client_uri.to_owned(),
        client_name,
        logo_uri,
        tos_uri,
        policy_uri,
        redirect_uris: redirect_uris.into_iter().map(str::to_owned).collect(),
        grant_types,
        issued_at,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn native(redirects: &[&str]) -> Result<ClientRecord, OAuthError> {
        check_metadata(
            &json!({"application_type": "native", "client_uri": "https://app.example.com/",
                    "redirect_uris": redirects, "grant_types": ["authorization_code", "refresh_token"]}),
            0,
        )
    }

    fn web(redirects: &[&str]) -> Result<ClientRecord, OAuthError> {
        check_metadata(
            &json!({"client_uri": "https://example.com", "redirect_uris": redirects}),
            0,
        )
    }

    #[test]
    fn web_redirects_are_https_on_the_client_site() {
        assert!(web(&["https://example.com/cb"]).is_ok());
        assert!(web(&["https://app.example.com:8443/cb?x=1"]).is_ok());
        for bad in [
            "http://example.com/cb",
            "http://localhost/",
            "https://example.com/cb#frag",
            "https://evil.com/cb",
            "https://notexample.com/cb",
            "https://user:pw@example.com/cb",
            "https://*.example.com/cb",
            "https://a;sandbox.example.com/cb",
            "com.example:/cb",
        ] {
            let e = web(&[bad]).unwrap_err();
            assert_eq!(e.error, "invalid_redirect_uri", "{bad}");
        }
    }

    #[test]
    fn native_redirects() {
        for good in [
            "com.example.app:/callback",
            "com.example:/",
            "com.example:callback",
            "http://127.0.0.1/",
            "http://localhost:1234/cb",
            "http://[::1]/cb",
            "https://app.example.com/cb",
        ] {
            assert!(native(&[good]).is_ok(), "{good}");
        }
        for bad in [
            "example:/callback",
            "com.example.app://callback",
            " com.example.app:/callback",
            "HTTP://127.0.0.1/",
            "org.example:/cb",
            "https://localhost/callback",
            "http://example.com/cb",
            "javascript:alert(1)",
        ] {
            assert!(native(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_redirects_match_on_any_port() {
        let client = native(&["http://127.0.0.1/", "com.example.app:/cb"]).unwrap();
        assert!(client.redirect_matches("http://127.0.0.1:51234/"));
        assert!(client.redirect_matches("http://127.0.0.1/"));
        assert!(!client.redirect_matches("http://127.0.0.1:51234/other"));
        assert!(!client.redirect_matches("http://localhost:51234/"));
        assert!(client.redirect_matches("com.example.app:/cb"));
        assert!(!client.redirect_matches("com.example.app:/cb2"));
        let web = web(&["https://example.com/cb"]).unwrap();
        assert!(!web.redirect_matches("https://example.com:444/cb"));
    }

    #[test]
    fn metadata_rules() {
        let check = |body: JsonValue| check_metadata(&body, 0).map_err(|e| e.error);
        let base = json!({"client_uri": "https://example.com", "redirect_uris": ["https://example.com/cb"]});
        assert!(check(base.clone()).is_ok());
        let with = |key: &str, value: JsonValue| {
            let mut body = base.clone();
            body[key] = value;
            check(body)
        };
        assert_eq!(
            with("client_uri", json!("http://example.com")),
            Err("invalid_client_metadata")
        );
        assert_eq!(
            with("client_uri", json!(null)),
            Err("invalid_client_metadata")
        );
        assert_eq!(
            with("logo_uri", json!("https://cdn.other.org/logo.png")),
            Err("invalid_client_metadata")
        );
        assert!(with("policy_uri", json!("https://legal.example.com/privacy")).is_ok());
        assert_eq!(
            with("token_endpoint_auth_method", json!("client_secret_basic")),
            Err("invalid_client_metadata")
        );
        assert_eq!(
            with("grant_types", json!(["refresh_token"])),
            Err("invalid_client_metadata")
        );
        assert_eq!(
            with("grant_types", json!(["authorization_code"])),
            Err("invalid_client_metadata"),
            "refresh_token is required too"
        );
        assert_eq!(
            with("response_types", json!(["token"])),
            Err("invalid_client_metadata")
        );
        assert_eq!(
            with("application_type", json!("desktop")),
            Err("invalid_client_metadata")
        );
        assert_eq!(
            with("redirect_uris", json!([])),
            Err("invalid_redirect_uri")
        );
        let record = with(
            "grant_types",
            json!([
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:device_code"
            ]),
        )
        .unwrap();
        assert_eq!(
            record.grant_types,
            ["authorization_code", "refresh_token"],
            "unknown grants dropped"
        );
    }
}
