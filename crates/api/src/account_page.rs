//! The account management page (`/_conduit/account`), where OAuth clients
//! send people for what they do not do themselves: the list of devices,
//! one device, signing one out (`?action=…&device_id=…`, MSC4191).
//! Server-rendered, no JavaScript; a sign-in (password or SSO provider)
//! opens a browser session (a cookie, `SameSite=Lax` so the provider's
//! redirect back carries it), and every form carries that session's form
//! token, which is what keeps other sites' forms out.

use std::{fmt::Write, net::SocketAddr, sync::Arc};

use axum::{
    Form,
    extract::{ConnectInfo, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::{get, post},
};
use conduit_service::{
    Services,
    account_page::{ACCOUNT_PATH, AccountSession},
    sso::{Purpose, SsoError},
};
use serde::Deserialize;

use crate::{
    html::{escape, page, utc},
    sso_pages::{
        error_page, limited, provider_links, secure, see_other, single_cookie, start_at_provider,
        with_cookie,
    },
};

pub fn routes(router: axum::Router<Arc<Services>>) -> axum::Router<Arc<Services>> {
    router
        .route(ACCOUNT_PATH, get(show))
        .route(&format!("{ACCOUNT_PATH}/login"), post(login))
        .route(
            &format!("{ACCOUNT_PATH}/sign-out-device"),
            post(sign_out_device),
        )
        .route(&format!("{ACCOUNT_PATH}/logout"), post(logout))
        .route(&format!("{ACCOUNT_PATH}/sso/{{idp}}"), get(sso))
}

/// Behind https the cookie is `__Host-` prefixed, so no subdomain can set it.
fn cookie_name(services: &Services) -> &'static str {
    if secure(services) {
        "__Host-conduit_account"
    } else {
        "conduit_account"
    }
}

fn session_of(services: &Services, headers: &HeaderMap) -> Option<(String, AccountSession)> {
    let id = single_cookie(headers, cookie_name(services))?;
    let session = services.account_page_session(id)?;
    Some((id.to_owned(), session))
}

/// What the client asked the page to show.
#[derive(Default, Deserialize)]
struct Wanted {
    #[serde(default)]
    action: String,
    #[serde(default)]
    device_id: String,
}

impl Wanted {
    fn query(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("action", &self.action)
            .append_pair("device_id", &self.device_id)
            .finish()
    }

    /// A device to sign out, asked for by a client.
    fn deleting(&self) -> bool {
        matches!(
            self.action.as_str(),
            "org.matrix.device_delete" | "org.matrix.session_end"
        ) && !self.device_id.is_empty()
    }
}

fn login_page(services: &Services, wanted: &Wanted, error: Option<&str>) -> Response {
    let server = escape(services.config.server_name.as_str());
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", escape(e)))
        .unwrap_or_default();
    page(
        if error.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        },
        &format!("Your account on {server}"),
        &format!(
            "<h1>Your account on {server}</h1><div class=\"card\"><p>Sign in to see your devices.</p>{error}\
             <form method=\"post\" action=\"{ACCOUNT_PATH}/login\">\
             <input type=\"hidden\" name=\"action\" value=\"{action}\">\
             <input type=\"hidden\" name=\"device_id\" value=\"{device}\">\
             <label for=\"username\">Username</label>\
             <input id=\"username\" name=\"username\" required autocomplete=\"username\" autocapitalize=\"none\">\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" required autocomplete=\"current-password\">\
             <p><button class=\"button\" id=\"sign-in\" type=\"submit\">Sign in</button></p></form></div>{providers}",
            action = escape(&wanted.action),
            device = escape(&wanted.device_id),
            providers = provider_buttons(services, wanted),
        ),
    )
}

/// "Continue with …" for each SSO provider, for accounts linked there.
fn provider_buttons(services: &Services, wanted: &Wanted) -> String {
    let query = wanted.query();
    let buttons = provider_links(services.sso.providers(), |id| {
        format!("{ACCOUNT_PATH}/sso/{id}?{query}")
    });
    if buttons.is_empty() {
        return buttons;
    }
    format!("<div class=\"card\"><p>Or sign in with your account at:</p>{buttons}</div>")
}

/// `GET /_conduit/account/sso/{idp}?action=&device_id=`: to the provider.
async fn sso(
    State(services): State<Arc<Services>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(idp): Path<String>,
    Query(wanted): Query<Wanted>,
) -> Response {
    if let Some(refusal) = limited(&services, &addr) {
        return refusal;
    }
    let purpose = Purpose::AccountPage {
        query: wanted.query(),
    };
    start_at_provider(&services, &idp, purpose, &headers).await
}

/// After a sign-in: the page asked for, with the session's cookie.
pub(crate) fn signed_in(services: &Services, session: &str, query: &str) -> Response {
    let response = see_other(&format!("{ACCOUNT_PATH}?{query}"));
    with_cookie(services, response, cookie_name(services), session, 900)
}

fn devices_page(services: &Services, session: &AccountSession, wanted: &Wanted) -> Response {
    let devices = match services.devices.list(&session.user_id) {
        Ok(devices) => devices,
        Err(e) => return error_page(services, &SsoError::from(e)),
    };
    let token = escape(&session.form_token);
    let sign_out = |device_id: &str, label: &str| {
        format!(
            "<form method=\"post\" action=\"{ACCOUNT_PATH}/sign-out-device\">\
             <input type=\"hidden\" name=\"form_token\" value=\"{token}\">\
             <input type=\"hidden\" name=\"device_id\" value=\"{id}\">\
             <button class=\"button\" id=\"sign-out-{id}\" type=\"submit\">{label}</button></form>",
            id = escape(device_id),
        )
    };
    let mut body = format!(
        "<h1>Your devices</h1><p>Signed in as <strong id=\"user-id\">{}</strong>.</p>",
        escape(session.user_id.as_str())
    );
    if wanted.deleting() {
        match devices
            .iter()
            .find(|(id, _)| id.as_str() == wanted.device_id)
        {
            Some((id, record)) => {
                let _ = write!(
                    body,
                    "<div class=\"card\" id=\"confirm\"><p>Sign out <strong>{}</strong> (<code>{}</code>)? \
                     It loses access to your account and its encryption keys.</p>{}</div>",
                    escape(record.display_name.as_deref().unwrap_or("Unnamed device")),
                    escape(id.as_str()),
                    sign_out(id.as_str(), "Sign out this device")
                );
            }
            None => body.push_str(
                "<p class=\"error\" id=\"error\">That device is not signed in (any more).</p>",
            ),
        }
    }
    if devices.is_empty() {
        body.push_str("<p id=\"no-devices\">No device is signed in to this account.</p>");
    }
    for (id, record) in &devices {
        let shown = id.as_str() == wanted.device_id;
        let _ = write!(
            body,
            "<div class=\"card device\" id=\"device-{id}\"{style}><p><strong>{name}</strong><br>\
             <code>{id}</code></p><p class=\"muted\">Signed in {created}{seen}{client}.</p>{form}</div>",
            id = escape(id.as_str()),
            style = if shown {
                " style=\"border-color:#0dbd8b\""
            } else {
                ""
            },
            name = escape(record.display_name.as_deref().unwrap_or("Unnamed device")),
            created = utc(record.created_at),
            seen = record
                .last_seen_ts
                .map(|ts| format!(", last seen {}", utc(ts)))
                .unwrap_or_default(),
            client = if record.oauth_client.is_some() {
                " through an app's OAuth sign-in"
            } else {
                ""
            },
            form = sign_out(id.as_str(), "Sign out"),
        );
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"{ACCOUNT_PATH}/logout\">\
         <input type=\"hidden\" name=\"form_token\" value=\"{token}\">\
         <p><button class=\"button\" id=\"leave\" type=\"submit\">Leave this page</button></p></form>"
    );
    page(StatusCode::OK, "Your devices", &body)
}

/// `GET /_conduit/account?action=&device_id=`.
async fn show(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Query(wanted): Query<Wanted>,
) -> Response {
    match session_of(&services, &headers) {
        Some((_, session)) => devices_page(&services, &session, &wanted),
        None => login_page(&services, &wanted, None),
    }
}

#[derive(Deserialize)]
struct LoginFields {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(flatten)]
    wanted: Wanted,
}

/// `POST /_conduit/account/login`: the session cookie, then the page asked for.
async fn login(
    State(services): State<Arc<Services>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Form(fields): Form<LoginFields>,
) -> Response {
    if services
        .sso_start_limiter
        .check(&addr.ip().to_string())
        .is_err()
    {
        return error_page(
            &services,
            &SsoError::new(429, "Too many attempts; try again in a minute."),
        );
    }
    match services
        .account_page_login(&fields.username, &fields.password)
        .await
    {
        Ok(id) => signed_in(&services, &id, &fields.wanted.query()),
        Err(e) => login_page(&services, &fields.wanted, Some(&e.to_string())),
    }
}

#[derive(Deserialize)]
struct DeviceFields {
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    device_id: String,
}

/// The session behind the cookie, when the form carries its token.
fn checked_session(
    services: &Services,
    headers: &HeaderMap,
    form_token: &str,
) -> Option<(String, AccountSession)> {
    session_of(services, headers).filter(|(_, session)| session.form_token == form_token)
}

fn expired(services: &Services) -> Response {
    error_page(
        services,
        &SsoError::new(
            403,
            "Your sign-in on this page has expired. Open the page again.",
        ),
    )
}

/// `POST /_conduit/account/sign-out-device`.
async fn sign_out_device(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Form(fields): Form<DeviceFields>,
) -> Response {
    let Some((_, session)) = checked_session(&services, &headers, &fields.form_token) else {
        return expired(&services);
    };
    let device_id: ruma::OwnedDeviceId = fields.device_id.as_str().into();
    if let Err(e) = services
        .delete_devices(&session.user_id, &[device_id])
        .await
    {
        return error_page(&services, &SsoError::from(e));
    }
    tracing::info!(user_id = %session.user_id, device_id = %fields.device_id, "signed out a device from the account page");
    see_other(ACCOUNT_PATH)
}

/// `POST /_conduit/account/logout`: the page's own sign-in ends.
async fn logout(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Form(fields): Form<DeviceFields>,
) -> Response {
    if let Some((id, _)) = checked_session(&services, &headers, &fields.form_token) {
        services.account_page_logout(&id);
    }
    with_cookie(
        &services,
        see_other(ACCOUNT_PATH),
        cookie_name(&services),
        "",
        0,
    )
}
