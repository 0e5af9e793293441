//! A Mastodon instance as identity provider: plain OAuth 2.0 plus its own
//! account API. The server registers its own app on the instance on first
//! use (`POST /api/v1/apps`) and keeps the credentials in the database.
//!
//! Versions differ: 4.3+ publishes `/.well-known/oauth-authorization-server`
//! (PKCE S256, the `profile` scope), 4.4+ adds `/oauth/userinfo`. Older ones
//! get the documented defaults: `/oauth/authorize`, `/oauth/token`, scope
//! `read:accounts` and `verify_credentials`.

use std::{sync::Arc, time::Duration};

use conduit_storage::Database;
use openidconnect::{PkceCodeChallenge, PkceCodeVerifier};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;

use super::{
    FlowSecrets, Identity, SsoError,
    fresh::Fresh,
    http::{HttpClient, HttpError},
};
use crate::tables;

/// How long the instance's metadata, and the knowledge that it still knows
/// our app, are trusted before asking again.
const RECHECK_AFTER: Duration = Duration::from_secs(10 * 60);

/// What the server registered on an instance (table `sso_apps`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct MastodonApp {
    pub instance: String,
    pub redirect_uri: String,
    pub scope: String,
    pub client_id: String,
    pub client_secret: String,
    pub registered_at: u64,
}

/// Where the instance's OAuth endpoints are, and what it supports.
#[derive(Debug)]
struct Endpoints {
    authorize: String,
    token: String,
    revoke: String,
    apps: String,
    userinfo: Option<String>,
    pkce: bool,
    scope: &'static str,
}

pub(super) struct Mastodon {
    provider_id: String,
    instance: String,
    endpoints: Fresh<Arc<Endpoints>>,
    /// When the instance last confirmed it knows our app.
    app_checked: Fresh<()>,
    /// One app check or registration at a time: two first sign-ins at once
    /// must not register two apps (the flow of the first would then fail).
    app_lock: tokio::sync::Mutex<()>,
}

impl Mastodon {
    pub(super) fn new(provider_id: &str, instance: &str) -> Self {
        Self {
            provider_id: provider_id.to_owned(),
            instance: instance.to_owned(),
            endpoints: Fresh::new(RECHECK_AFTER),
            app_checked: Fresh::new(RECHECK_AFTER),
            app_lock: tokio::sync::Mutex::new(()),
        }
    }

    async fn endpoints(&self, http: &HttpClient, name: &str) -> Result<Arc<Endpoints>, SsoError> {
        if let Some(endpoints) = self.endpoints.get() {
            return Ok(endpoints);
        }
        let base = &self.instance;
        let metadata = http
            .get_json(
                &format!("{base}/.well-known/oauth-authorization-server"),
                None,
            )
            .await
            .map_err(|e| SsoError::provider(name, format!("OAuth metadata: {e}")))?
            .unwrap_or(JsonValue::Null);
        let field = |key: &str, default: &str| {
            metadata
                .get(key)
                .and_then(JsonValue::as_str)
                .unwrap_or(default)
                .to_owned()
        };
        let listed = |key: &str, item: &str| {
            metadata
                .get(key)
                .and_then(JsonValue::as_array)
                .is_some_and(|items| items.iter().any(|i| i == item))
        };
        let endpoints = Arc::new(Endpoints {
            authorize: field("authorization_endpoint", &format!("{base}/oauth/authorize")),
            token: field("token_endpoint", &format!("{base}/oauth/token")),
            revoke: field("revocation_endpoint", &format!("{base}/oauth/revoke")),
            apps: field("app_registration_endpoint", &format!("{base}/api/v1/apps")),
            userinfo: metadata
                .get("userinfo_endpoint")
                .and_then(JsonValue::as_str)
                .map(str::to_owned),
            pkce: listed("code_challenge_methods_supported", "S256"),
            // `profile` (4.3+) reads only the own account; older instances
            // need the wider `read:accounts`.
            scope: if listed("scopes_supported", "profile") {
                "profile"
            } else {
                "read:accounts"
            },
        });
        self.check_origin(&metadata, &endpoints)
            .map_err(|why| SsoError::provider(name, why))?;
        self.endpoints.set(endpoints.clone());
        Ok(endpoints)
    }

    /// The metadata may only name this instance (its issuer) and endpoints
    /// on it: the server sends its app secret and people's codes there.
    fn check_origin(&self, metadata: &JsonValue, endpoints: &Endpoints) -> Result<(), String> {
        if let Some(issuer) = metadata.get("issuer").and_then(JsonValue::as_str)
            && issuer.trim_end_matches('/') != self.instance
        {
            return Err(format!("the metadata names another issuer: {issuer}"));
        }
        let origin = |url: &str| url::Url::parse(url).ok().map(|u| u.origin());
        let ours = origin(&self.instance);
        let urls = [
            &endpoints.authorize,
            &endpoints.token,
            &endpoints.revoke,
            &endpoints.apps,
        ];
        for url in urls.into_iter().chain(&endpoints.userinfo) {
            if ours.is_none() || origin(url) != ours {
                return Err(format!(
                    "the metadata names an endpoint outside the instance: {url}"
                ));
            }
        }
        Ok(())
    }

    fn stored_app(&self, db: &Database) -> Option<MastodonApp> {
        db.get(&tables::SSO_APPS, self.provider_id.as_str())
            .ok()
            .flatten()
    }

    fn forget_app(&self, db: &Database) {
        let mut batch = db.batch();
        if batch
            .delete(&tables::SSO_APPS, self.provider_id.as_str())
            .is_ok()
        {
            let _ = db.write(batch);
        }
        self.app_checked.clear();
    }

    /// Our app on the instance: the stored one if it was made for this
    /// instance, callback and scope and the instance still knows it, else a
    /// newly registered one.
    async fn app(
        &self,
        http: &HttpClient,
        db: &Database,
        endpoints: &Endpoints,
        name: &str,
        redirect_uri: &str,
    ) -> Result<MastodonApp, SsoError> {
        let _guard = self.app_lock.lock().await;
        if let Some(app) = self.stored_app(db).filter(|app| {
            app.instance == self.instance
                && app.redirect_uri == redirect_uri
                && app.scope == endpoints.scope
        }) {
            if self.app_checked.get().is_some() || self.instance_knows(http, endpoints, &app).await
            {
                self.app_checked.set(());
                return Ok(app);
            }
            tracing::info!(provider = %self.provider_id, "the instance forgot our app; registering it again");
        }
        let registered = http
            .post_form(
                &endpoints.apps,
                &[
                    (
                        "client_name",
                        &format!("Matrix ({})", redirect_host(redirect_uri)),
                    ),
                    ("redirect_uris", redirect_uri),
                    ("scopes", endpoints.scope),
                ],
            )
            .await
            .map_err(|e| SsoError::provider(name, format!("app registration: {e}")))?;
        let text = |key: &str| registered.get(key).and_then(JsonValue::as_str);
        let (Some(client_id), Some(client_secret)) = (text("client_id"), text("client_secret"))
        else {
            return Err(SsoError::provider(
                name,
                "app registration answered without client credentials",
            ));
        };
        let app = MastodonApp {
            instance: self.instance.clone(),
            redirect_uri: redirect_uri.to_owned(),
            scope: endpoints.scope.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            registered_at: crate::utils::now_ms(),
        };
        let stored = (|| {
            let mut batch = db.batch();
            batch.put(&tables::SSO_APPS, self.provider_id.as_str(), &app)?;
            db.write(batch)
        })();
        stored.map_err(|e| SsoError::internal(format!("storing the Mastodon app: {e}")))?;
        self.app_checked.set(());
        tracing::info!(provider = %self.provider_id, instance = %self.instance, "registered our OAuth app");
        Ok(app)
    }

    /// Whether the instance still knows the app: a client-credentials grant
    /// fails with `401 invalid_client` only for an unknown app (a scope the
    /// app may not use answers 400, which still proves the app exists).
    async fn instance_knows(
        &self,
        http: &HttpClient,
        endpoints: &Endpoints,
        app: &MastodonApp,
    ) -> bool {
        let answer = http
            .post_form(
                &endpoints.token,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &app.client_id),
                    ("client_secret", &app.client_secret),
                    ("scope", &app.scope),
                ],
            )
            .await;
        if let Some(token) = answer
            .as_ref()
            .ok()
            .and_then(|a| a.get("access_token"))
            .and_then(JsonValue::as_str)
        {
            let revoked = http
                .post_form(
                    &endpoints.revoke,
                    &[
                        ("token", token),
                        ("client_id", &app.client_id),
                        ("client_secret", &app.client_secret),
                    ],
                )
                .await;
            if let Err(e) = revoked {
                tracing::debug!(provider = %self.provider_id, "revoking the check's app token: {e}");
            }
        }
        !matches!(answer, Err(HttpError::Status { status: 401, .. }))
    }

    pub(super) async fn authorize(
        &self,
        http: &HttpClient,
        db: &Database,
        name: &str,
        redirect_uri: &str,
        state: &str,
    ) -> Result<(String, FlowSecrets), SsoError> {
        let endpoints = self.endpoints(http, name).await?;
        let app = self.app(http, db, &endpoints, name, redirect_uri).await?;
        let mut url = url::Url::parse(&endpoints.authorize)
            .map_err(|e| SsoError::provider(name, format!("authorization endpoint: {e}")))?;
        let mut secrets = FlowSecrets::default();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &app.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &app.scope)
                .append_pair("state", state);
            if endpoints.pkce {
                let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
                query
                    .append_pair("code_challenge", challenge.as_str())
                    .append_pair("code_challenge_method", "S256");
                secrets.pkce_verifier = Some(verifier.secret().clone());
            }
        }
        Ok((url.into(), secrets))
    }

    pub(super) async fn identify(
        &self,
        http: &HttpClient,
        db: &Database,
        name: &str,
        redirect_uri: &str,
        code: &str,
        secrets: FlowSecrets,
    ) -> Result<Identity, SsoError> {
        let endpoints = self.endpoints(http, name).await?;
        let app = self
            .stored_app(db)
            .ok_or_else(|| SsoError::provider(name, "no registered app at the callback"))?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", &app.client_id),
            ("client_secret", &app.client_secret),
            ("redirect_uri", redirect_uri),
        ];
        let verifier = secrets.pkce_verifier.map(PkceCodeVerifier::new);
        if let Some(verifier) = &verifier {
            form.push(("code_verifier", verifier.secret()));
        }
        let token = match http.post_form(&endpoints.token, &form).await {
            Ok(token) => token,
            Err(HttpError::Status { status: 401, body }) => {
                // The instance forgot our app: the next attempt registers it again.
                self.forget_app(db);
                return Err(SsoError::provider(
                    name,
                    format!("code exchange: 401 {body}"),
                ));
            }
            Err(e) => return Err(SsoError::provider(name, format!("code exchange: {e}"))),
        };
        let access_token = token
            .get("access_token")
            .and_then(JsonValue::as_str)
            .ok_or_else(|| SsoError::provider(name, "the token answer has no access_token"))?;

        let identity = match (&endpoints.userinfo, app.scope.as_str()) {
            (Some(userinfo), "profile") => {
                let info = http
                    .get_json(userinfo, Some(access_token))
                    .await
                    .map_err(|e| SsoError::provider(name, format!("userinfo: {e}")))?
                    .unwrap_or_default();
                identity_from(&info, "sub", "preferred_username", "name", "picture")
            }
            _ => {
                let account = http
                    .get_json(
                        &format!("{}/api/v1/accounts/verify_credentials", self.instance),
                        Some(access_token),
                    )
                    .await
                    .map_err(|e| SsoError::provider(name, format!("verify_credentials: {e}")))?
                    .unwrap_or_default();
                identity_from(&account, "uri", "username", "display_name", "avatar")
            }
        };
        identity.ok_or_else(|| {
            SsoError::provider(name, "the instance did not say which account signed in")
        })
    }
}

/// An identity from a profile document: the subject is the account's
/// ActivityPub URI (the same in `/oauth/userinfo` and `verify_credentials`,
/// so an instance upgrading to 4.4 keeps its people's accounts).
fn identity_from(
    doc: &JsonValue,
    subject: &str,
    username: &str,
    display_name: &str,
    avatar: &str,
) -> Option<Identity> {
    let text = |key: &str| {
        doc.get(key)
            .and_then(JsonValue::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Some(Identity {
        subject: text(subject)?,
        localpart: text(username),
        display_name: text(display_name),
        avatar_url: text(avatar),
    })
}

/// The host of our callback, to name the app on the instance.
fn redirect_host(redirect_uri: &str) -> String {
    url::Url::parse(redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn subject_is_the_account_uri() {
        let info = json!({"sub": "https://social.example/users/alice", "preferred_username": "alice", "name": ""});
        let identity =
            identity_from(&info, "sub", "preferred_username", "name", "picture").unwrap();
        assert_eq!(identity.subject, "https://social.example/users/alice");
        assert_eq!(identity.localpart.as_deref(), Some("alice"));
        assert_eq!(identity.display_name, None, "an empty name is no name");
        let account = json!({"id": "1", "username": "alice"});
        assert!(identity_from(&account, "uri", "username", "display_name", "avatar").is_none());
    }
}
