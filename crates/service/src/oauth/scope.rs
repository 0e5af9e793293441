//! The scopes of a Matrix OAuth 2.0 grant: full client-server API access
//! and the device the tokens belong to, in their stable form and the
//! unstable MSC2967 form matrix-rust-sdk sends.

use super::OAuthError;

const API: &[&str] = &[
    "urn:matrix:client:api:*",
    "urn:matrix:org.matrix.msc2967.client:api:*",
];
const DEVICE_PREFIXES: &[&str] = &[
    "urn:matrix:client:device:",
    "urn:matrix:org.matrix.msc2967.client:device:",
];
/// Longest device id taken from a scope.
const MAX_DEVICE_ID: usize = 255;

/// What a grant's scope asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub device_id: String,
    /// The scope as granted: the tokens this server understood, in the
    /// client's spelling (it compares what it gets back with what it asked).
    pub granted: String,
}

fn invalid(description: &str) -> OAuthError {
    OAuthError::new("invalid_scope", description)
}

/// Parses a space-separated scope. It must grant the API and name exactly
/// one device, by an id of unreserved characters (the spec's advice, which
/// also keeps ids safe in URLs and logs). Other tokens (`openid`, …) grant
/// nothing here and are left out of the granted scope.
pub fn parse(scope: &str) -> Result<Scope, OAuthError> {
    let mut api = None;
    let mut device = None;
    for token in scope.split(' ').filter(|t| !t.is_empty()) {
        if API.contains(&token) {
            api = Some(token);
        } else if let Some(id) = DEVICE_PREFIXES
            .iter()
            .find_map(|prefix| token.strip_prefix(prefix))
        {
            if device.is_some() {
                return Err(invalid("the scope names more than one device"));
            }
            let valid = !id.is_empty()
                && id.len() <= MAX_DEVICE_ID
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if !valid {
                return Err(invalid(
                    "a device id must be 1 to 255 letters, digits, '-', '.', '_' or '~'",
                ));
            }
            device = Some((token, id));
        }
    }
    let api = api.ok_or_else(|| invalid("the scope must include urn:matrix:client:api:*"))?;
    let (device_token, device_id) = device.ok_or_else(|| {
        invalid("the scope must name the device: urn:matrix:client:device:<device id>")
    })?;
    Ok(Scope {
        device_id: device_id.to_owned(),
        granted: format!("{api} {device_token}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_unstable_scopes() {
        let s = parse("urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ").unwrap();
        assert_eq!(s.device_id, "ABCDEFGHIJ");
        let s = parse(
            "openid urn:matrix:org.matrix.msc2967.client:api:*  urn:matrix:org.matrix.msc2967.client:device:a-b.c_d~e",
        )
        .unwrap();
        assert_eq!(s.device_id, "a-b.c_d~e");
        assert_eq!(
            s.granted,
            "urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:a-b.c_d~e"
        );
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "urn:matrix:client:api:*",
            "urn:matrix:client:device:ABC",
            "urn:matrix:client:api:* urn:matrix:client:device:A urn:matrix:client:device:B",
            "urn:matrix:client:api:* urn:matrix:client:device:",
            "urn:matrix:client:api:* urn:matrix:client:device:a/b",
            "urn:matrix:client:api:* urn:matrix:client:device:a%20b",
        ] {
            assert_eq!(parse(bad).unwrap_err().error, "invalid_scope", "{bad:?}");
        }
    }
}
