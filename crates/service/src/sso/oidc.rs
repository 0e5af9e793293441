//! OpenID Connect: discovery, the authorization URL (with nonce and PKCE),
//! and the callback: code exchange, the id_token checked by the
//! `openidconnect` crate (JWKS signature, issuer, audience, expiry, nonce),
//! then the claims of the id_token and of the userinfo endpoint.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use openidconnect::{
    AuthType, AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse,
    core::{CoreClient, CoreClientAuthMethod, CoreProviderMetadata, CoreResponseType},
};
use serde_json::{Map, Value as JsonValue};

use super::{
    FlowSecrets, Identity, SsoError,
    config::{ClaimValues, OidcConfig},
    fresh::Fresh,
    http::HttpClient,
};

/// Discovery documents (and the keys they point to) are fetched again after
/// this long, so a provider's key rotation is picked up.
const METADATA_LIFETIME: Duration = Duration::from_secs(10 * 60);

pub(super) struct Oidc {
    config: OidcConfig,
    metadata: Fresh<Arc<CoreProviderMetadata>>,
}

impl Oidc {
    pub(super) fn new(config: OidcConfig) -> Self {
        Self {
            config,
            metadata: Fresh::new(METADATA_LIFETIME),
        }
    }

    async fn metadata(
        &self,
        http: &HttpClient,
        name: &str,
    ) -> Result<Arc<CoreProviderMetadata>, SsoError> {
        if let Some(metadata) = self.metadata.get() {
            return Ok(metadata);
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| SsoError::provider(name, format!("issuer URL: {e}")))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &http.for_oauth())
            .await
            .map(Arc::new)
            .map_err(|e| SsoError::provider(name, format!("discovery: {}", chain(&e))))?;
        self.metadata.set(metadata.clone());
        Ok(metadata)
    }

    fn client(
        &self,
        metadata: &CoreProviderMetadata,
        redirect_uri: &str,
        name: &str,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        SsoError,
    > {
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| SsoError::provider(name, format!("callback URL: {e}")))?;
        let mut client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            self.config.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect);
        // HTTP Basic is the default; some providers only take the secret in the body.
        if let Some(methods) = metadata.token_endpoint_auth_methods_supported()
            && !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
            && methods.contains(&CoreClientAuthMethod::ClientSecretPost)
        {
            client = client.set_auth_type(AuthType::RequestBody);
        }
        Ok(client)
    }

    /// Where to send the browser, and what the callback will need.
    pub(super) async fn authorize(
        &self,
        http: &HttpClient,
        name: &str,
        redirect_uri: &str,
        state: &str,
    ) -> Result<(String, FlowSecrets), SsoError> {
        let metadata = self.metadata(http, name).await?;
        let client = self.client(&metadata, redirect_uri, name)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = state.to_owned();
        let mut request = client.authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            move || CsrfToken::new(state),
            Nonce::new_random,
        );
        for scope in self.config.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, _, nonce) = request.set_pkce_challenge(challenge).url();
        Ok((
            url.into(),
            FlowSecrets {
                nonce: Some(nonce.secret().clone()),
                pkce_verifier: Some(verifier.secret().clone()),
            },
        ))
    }

    /// Exchanges the code and returns who signed in.
    pub(super) async fn identify(
        &self,
        http: &HttpClient,
        name: &str,
        redirect_uri: &str,
        code: &str,
        iss: Option<&str>,
        secrets: FlowSecrets,
    ) -> Result<Identity, SsoError> {
        let metadata = self.metadata(http, name).await?;
        // A code sent back by another issuer (a mix-up attack) is not ours to redeem.
        if let Some(iss) = iss.filter(|iss| *iss != metadata.issuer().as_str()) {
            return Err(SsoError::provider(
                name,
                format!("callback from issuer {iss}"),
            ));
        }
        let client = self.client(&metadata, redirect_uri, name)?;
        let mut exchange = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SsoError::provider(name, format!("code exchange: {e}")))?;
        if let Some(verifier) = secrets.pkce_verifier {
            exchange = exchange.set_pkce_verifier(PkceCodeVerifier::new(verifier));
        }
        let token = exchange
            .request_async(&http.for_oauth())
            .await
            .map_err(|e| SsoError::provider(name, format!("code exchange: {}", chain(&e))))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| SsoError::provider(name, "the token answer has no id_token"))?;
        let nonce = Nonce::new(secrets.nonce.unwrap_or_default());
        let subject = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(verified) => verified.subject().as_str().to_owned(),
            Err(first) => {
                // Perhaps the provider rotated its keys since discovery was
                // cached: read them again once before refusing.
                self.metadata.clear();
                let fresh = self.metadata(http, name).await?;
                let client = self.client(&fresh, redirect_uri, name)?;
                let verified = id_token
                    .claims(&client.id_token_verifier(), &nonce)
                    .map_err(|e| {
                        SsoError::provider(
                            name,
                            format!(
                                "id_token rejected: {} (before a key refresh: {})",
                                chain(&e),
                                chain(&first)
                            ),
                        )
                    })?;
                verified.subject().as_str().to_owned()
            }
        };

        // The crate checked the token; its payload also holds the claims the
        // crate has no field for (groups, custom localpart claims).
        let mut claims = jwt_payload(&id_token.to_string())
            .ok_or_else(|| SsoError::provider(name, "unreadable id_token payload"))?;
        if let Some(endpoint) = metadata.userinfo_endpoint() {
            let info = http
                .get_json(endpoint.url().as_str(), Some(token.access_token().secret()))
                .await
                .map_err(|e| SsoError::provider(name, format!("userinfo: {e}")))?;
            if let Some(JsonValue::Object(info)) = info {
                if info.get("sub").and_then(JsonValue::as_str) != Some(subject.as_str()) {
                    return Err(SsoError::provider(
                        name,
                        "userinfo names another subject than the id_token",
                    ));
                }
                for (key, value) in info {
                    claims.entry(key).or_insert(value);
                }
            }
        }
        if !claims_allowed(&claims, &self.config.allowed_claims) {
            return Err(SsoError::new(
                403,
                format!("Your {name} account is not allowed to use this server."),
            ));
        }
        let text = |claim: &str| {
            claims
                .get(claim)
                .and_then(JsonValue::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Ok(Identity {
            localpart: text(&self.config.localpart_claim),
            display_name: text(&self.config.displayname_claim),
            avatar_url: text(&self.config.avatar_claim),
            subject,
        })
    }
}

/// The claims of a compact JWT (already verified by the caller).
fn jwt_payload(jwt: &str) -> Option<Map<String, JsonValue>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        JsonValue::Object(map) => Some(map),
        _ => None,
    }
}

/// Every configured claim must hold one of its accepted values; a list
/// claim (like `groups`) passes when one of its items is accepted.
fn claims_allowed(
    claims: &Map<String, JsonValue>,
    allowed: &std::collections::BTreeMap<String, ClaimValues>,
) -> bool {
    allowed.iter().all(|(claim, accepted)| {
        let accepted = accepted.as_slice();
        let matches = |value: &JsonValue| match value {
            JsonValue::String(s) => accepted.contains(s),
            JsonValue::Bool(_) | JsonValue::Number(_) => accepted.contains(&value.to_string()),
            _ => false,
        };
        match claims.get(claim) {
            Some(JsonValue::Array(items)) => items.iter().any(matches),
            Some(value) => matches(value),
            None => false,
        }
    })
}

/// An error and its sources on one line, for the log.
fn chain(error: &dyn std::error::Error) -> String {
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
    use serde_json::json;

    use super::*;

    #[test]
    fn allowed_claims_match_values_and_lists() {
        let claims = json!({"groups": ["staff", "matrix"], "email_verified": true, "org": "acme"});
        let claims = claims.as_object().unwrap();
        let rule = |pairs: &[(&str, ClaimValues)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect()
        };
        let one = |s: &str| ClaimValues::One(s.into());
        assert!(claims_allowed(claims, &rule(&[])));
        assert!(claims_allowed(claims, &rule(&[("groups", one("matrix"))])));
        assert!(!claims_allowed(claims, &rule(&[("groups", one("admins"))])));
        assert!(claims_allowed(
            claims,
            &rule(&[("org", ClaimValues::Any(vec!["x".into(), "acme".into()]))])
        ));
        assert!(claims_allowed(
            claims,
            &rule(&[("email_verified", one("true"))])
        ));
        assert!(!claims_allowed(claims, &rule(&[("missing", one("x"))])));
        assert!(!claims_allowed(
            claims,
            &rule(&[("org", one("acme")), ("groups", one("nope"))])
        ));
    }

    #[test]
    fn jwt_payload_reads_the_middle_part() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"u1","groups":["a"]}"#);
        let claims = jwt_payload(&format!("eyJhbGciOiJSUzI1NiJ9.{payload}.sig")).unwrap();
        assert_eq!(claims["sub"], "u1");
        assert!(jwt_payload("garbage").is_none());
    }
}
