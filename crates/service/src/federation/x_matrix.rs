//! The `Authorization: X-Matrix ...` header of server-server requests: its
//! parsing, its making, and the JSON object its signature covers.

use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerName};
use serde_json::Value as JsonValue;

/// One parsed `X-Matrix` authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XMatrix {
    pub origin: OwnedServerName,
    /// Absent in headers of servers older than Matrix 1.3.
    pub destination: Option<OwnedServerName>,
    pub key: String,
    pub sig: String,
}

impl XMatrix {
    /// Parses `X-Matrix origin="a",destination="b",key="ed25519:k",sig="..."`.
    /// The scheme is case-insensitive, values may be quoted (with `\`
    /// escapes) or bare tokens, and unknown parameters are ignored, as the
    /// spec asks. `None` for anything else.
    pub fn parse(header: &str) -> Option<Self> {
        let (scheme, params) = header.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("X-Matrix") {
            return None;
        }
        let (mut origin, mut destination, mut key, mut sig) = (None, None, None, None);
        let mut rest = params.trim_start();
        while !rest.is_empty() {
            let (name, after) = rest.split_once('=')?;
            let name = name.trim().to_ascii_lowercase();
            let (value, after) = parse_value(after.trim_start())?;
            match name.as_str() {
                "origin" => origin = Some(value),
                "destination" => destination = Some(value),
                "key" => key = Some(value),
                "sig" => sig = Some(value),
                _ => {}
            }
            rest = after.trim_start();
            match rest.strip_prefix(',') {
                Some(next) => rest = next.trim_start(),
                None if rest.is_empty() => {}
                None => return None,
            }
        }
        Some(Self {
            origin: OwnedServerName::try_from(origin?).ok()?,
            destination: match destination {
                Some(d) => Some(OwnedServerName::try_from(d).ok()?),
                None => None,
            },
            key: key?,
            sig: sig?,
        })
    }

    /// The header value, every parameter quoted.
    pub fn to_header(&self) -> String {
        let mut out = format!("X-Matrix origin=\"{}\"", self.origin);
        if let Some(destination) = &self.destination {
            out.push_str(&format!(",destination=\"{destination}\""));
        }
        out.push_str(&format!(",key=\"{}\",sig=\"{}\"", self.key, self.sig));
        out
    }
}

/// A quoted string or a bare token at the start of `input`, and what follows.
fn parse_value(input: &str) -> Option<(String, &str)> {
    if let Some(quoted) = input.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Some((value, &quoted[i + 1..])),
                '\\' => value.push(chars.next()?.1),
                c => value.push(c),
            }
        }
        None
    } else {
        let end = input.find(',').unwrap_or(input.len());
        let token = input[..end].trim();
        (!token.is_empty()).then(|| (token.to_owned(), &input[end..]))
    }
}

/// The object a request signature covers: method, URI (path and query as
/// sent), origin, destination and the JSON body, if any.
pub fn request_object(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&JsonValue>,
) -> Result<CanonicalJsonObject, String> {
    let mut object = CanonicalJsonObject::new();
    object.insert("method".into(), CanonicalJsonValue::String(method.into()));
    object.insert("uri".into(), CanonicalJsonValue::String(uri.into()));
    object.insert("origin".into(), CanonicalJsonValue::String(origin.into()));
    object.insert(
        "destination".into(),
        CanonicalJsonValue::String(destination.into()),
    );
    if let Some(content) = content {
        let value = CanonicalJsonValue::try_from(content.clone()).map_err(|e| e.to_string())?;
        object.insert("content".into(), value);
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example_and_variants() {
        let parsed = XMatrix::parse(
            r#"X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF...""#,
        )
        .unwrap();
        assert_eq!(parsed.origin.as_str(), "origin.hs.example.com");
        assert_eq!(
            parsed.destination.as_ref().map(|d| d.as_str()),
            Some("destination.hs.example.com")
        );
        assert_eq!(parsed.key, "ed25519:key1");
        assert_eq!(parsed.sig, "ABCDEF...");
        assert_eq!(XMatrix::parse(&parsed.to_header()), Some(parsed));

        // Bare tokens, other case, spaces, no destination, unknown params.
        let bare = XMatrix::parse(
            "x-matrix origin=127.0.0.1:8448, key=\"ed25519:a_b\", extra=\"x,y\", sig=abc",
        )
        .unwrap();
        assert_eq!(bare.origin.as_str(), "127.0.0.1:8448");
        assert_eq!(bare.destination, None);
        assert_eq!(bare.sig, "abc");
    }

    #[test]
    fn refuses_broken_headers() {
        for header in [
            "",
            "Bearer abc",
            "X-Matrix origin=\"a.org\",key=\"ed25519:k\"",
            "X-Matrix origin=\"not a name!\",key=\"k\",sig=\"s\"",
            "X-Matrix origin=\"a.org\" key=\"k\",sig=\"s\"",
            "X-Matrix origin=\"a.org,key=\"k\",sig=\"s",
        ] {
            assert_eq!(XMatrix::parse(header), None, "{header}");
        }
    }
}
