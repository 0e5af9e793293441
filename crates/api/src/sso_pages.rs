//! Single sign-on in the browser: the redirect endpoints of the Matrix SSO
//! flow, the provider picker, the callback, the username form, the
//! "Continue to <app>?" confirmation and the UIA fallback page. The logic
//! lives in `conduit_service::sso`; this module renders it.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use axum::{
    Form,
    extract::{ConnectInfo, Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use conduit_service::{
    Error, ErrorCode, Services,
    sso::{self, CALLBACK_PATH, Callback, Outcome, Purpose, SignupForm, SsoError},
    utils,
};
use serde::Deserialize;

use crate::{
    error::ApiError,
    html::{escape, page, page_with_policy, policy_with},
};

const SIGNUP_PATH: &str = "/_conduit/sso/signup";
const LINK_PATH: &str = "/_conduit/sso/link";
const REAUTH_PATH: &str = "/_conduit/sso/reauth";

pub fn routes(router: axum::Router<Arc<Services>>) -> axum::Router<Arc<Services>> {
    let mut router = router
        .route(&format!("{CALLBACK_PATH}/{{idp}}"), get(callback))
        .route(SIGNUP_PATH, post(signup))
        .route(LINK_PATH, post(link))
        .route(&format!("{REAUTH_PATH}/{{idp}}"), get(reauth_redirect));
    for version in ["r0", "v3"] {
        router = router
            .route(
                &format!("/_matrix/client/{version}/login/sso/redirect"),
                get(redirect),
            )
            .route(
                &format!("/_matrix/client/{version}/login/sso/redirect/{{idp}}"),
                get(redirect_to),
            )
            .route(
                &format!("/_matrix/client/{version}/auth/m.login.sso/fallback/web"),
                get(reauth_page),
            );
    }
    router
}

/// Whether people reach this server over https (then the cookie is `Secure`
/// and `__Host-` prefixed).
pub(crate) fn secure(services: &Services) -> bool {
    services.config.client_base_url().starts_with("https://")
}

/// The browser's flow cookie, if it sent exactly one.
pub(crate) fn browser_cookie<'h>(services: &Services, headers: &'h HeaderMap) -> Option<&'h str> {
    single_cookie(headers, sso::browser_cookie_name(secure(services)))
}

/// The value of cookie `name`; `None` when absent or sent twice (one of
/// the two was planted: trust neither).
pub(crate) fn single_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, value)| value);
    let first = values.next();
    if values.next().is_some() {
        return None;
    }
    first
}

/// Sets cookie `name` (HttpOnly, `SameSite=Lax` so a provider's redirect
/// back carries it, `Secure` behind https) for `max_age` seconds; 0 clears it.
pub(crate) fn with_cookie(
    services: &Services,
    mut response: Response,
    name: &str,
    value: &str,
    max_age: u32,
) -> Response {
    let cookie = format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
        if secure(services) { "; Secure" } else { "" }
    );
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Sets the cookie that ties sign-in steps to this browser.
pub(crate) fn with_browser_cookie(
    services: &Services,
    response: Response,
    browser: &str,
) -> Response {
    let name = sso::browser_cookie_name(secure(services));
    with_cookie(services, response, name, browser, 1800)
}

/// One "Continue with …" link per provider, leading to `href(id)`.
pub(crate) fn provider_links<'a>(
    providers: impl Iterator<Item = &'a sso::config::ProviderConfig>,
    href: impl Fn(&str) -> String,
) -> String {
    providers
        .map(|p| {
            format!(
                "<p class=\"idp\"><a class=\"button\" id=\"idp-{id}\" href=\"{href}\">Continue with {name}</a></p>",
                id = escape(&p.id),
                href = escape(&href(&p.id)),
                name = escape(&p.name),
            )
        })
        .collect()
}

/// `302` to the provider, setting the cookie that ties the flow to this browser.
pub(crate) fn to_provider(services: &Services, url: &str, browser: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(url) {
        headers.insert(header::LOCATION, location);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return with_browser_cookie(services, response, browser);
    }
    error_page(
        services,
        &SsoError::new(502, "The provider's address is not usable."),
    )
}

/// `303 See Other` to `url` (after a form, the browser follows with a GET).
pub(crate) fn see_other(url: &str) -> Response {
    match HeaderValue::from_str(url) {
        Ok(location) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            let headers = response.headers_mut();
            headers.insert(header::LOCATION, location);
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            response
        }
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// Starts a sign-in at provider `idp` for `purpose`: to the provider, or
/// a page saying why not.
pub(crate) async fn start_at_provider(
    services: &Services,
    idp: &str,
    purpose: Purpose,
    headers: &HeaderMap,
) -> Response {
    match services
        .sso_start(idp, purpose, browser_cookie(services, headers))
        .await
    {
        Ok((url, browser)) => to_provider(services, &url, &browser),
        Err(e) => error_page(services, &e),
    }
}

/// A failure explained to a person.
pub(crate) fn error_page(services: &Services, error: &SsoError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    page(
        status,
        "Sign-in failed",
        &format!(
            "<h1>Could not sign you in to {}</h1><div class=\"card\"><p class=\"error\" id=\"error\">{}</p></div>",
            escape(services.config.server_name.as_str()),
            escape(&error.message)
        ),
    )
}

fn server_name(services: &Services) -> String {
    escape(services.config.server_name.as_str())
}

#[derive(Deserialize)]
struct RedirectQuery {
    #[serde(rename = "redirectUrl")]
    redirect_url: Option<String>,
}

/// `redirectUrl` is required; its absence is an API error (Synapse's too).
fn redirect_url(query: RedirectQuery) -> Result<String, ApiError> {
    query.redirect_url.ok_or_else(|| {
        Error::new(
            ErrorCode::MissingParam,
            "Missing query parameter redirectUrl.",
        )
        .with_status(400)
        .into()
    })
}

/// Starting a sign-in keeps a flow in memory: a limit per client address
/// keeps one client from crowding everyone else's out.
pub(crate) fn limited(services: &Services, addr: &SocketAddr) -> Option<Response> {
    services
        .sso_start_limiter
        .check(&addr.ip().to_string())
        .err()
        .map(|_| {
            error_page(
                services,
                &SsoError::new(429, "Too many sign-in attempts; try again in a minute."),
            )
        })
}

/// `GET /login/sso/redirect`: straight to the only provider, or a picker.
async fn redirect(
    State(services): State<Arc<Services>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<RedirectQuery>,
) -> Result<Response, ApiError> {
    let redirect_url = redirect_url(query)?;
    if let Err(e) = sso::check_redirect_url(&redirect_url) {
        return Ok(error_page(&services, &e));
    }
    let providers: Vec<_> = services.sso.providers().collect();
    match providers.as_slice() {
        [] => Err(Error::new(
            ErrorCode::Unrecognized,
            "This server has no single sign-on providers.",
        )
        .with_status(404)
        .into()),
        [only] => Ok(start(&services, &addr, &only.id.clone(), redirect_url, &headers).await),
        several => {
            let encoded: String =
                url::form_urlencoded::byte_serialize(redirect_url.as_bytes()).collect();
            let links = provider_links(several.iter().copied(), |id| {
                format!("/_matrix/client/v3/login/sso/redirect/{id}?redirectUrl={encoded}")
            });
            Ok(page(
                StatusCode::OK,
                "Choose how to sign in",
                &format!(
                    "<h1>Sign in to {}</h1><div class=\"card\"><p>Choose where your account is:</p>{links}</div>",
                    server_name(&services)
                ),
            ))
        }
    }
}

/// `GET /login/sso/redirect/{idp}`.
async fn redirect_to(
    State(services): State<Arc<Services>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(idp): Path<String>,
    Query(query): Query<RedirectQuery>,
) -> Result<Response, ApiError> {
    let redirect_url = redirect_url(query)?;
    Ok(start(&services, &addr, &idp, redirect_url, &headers).await)
}

async fn start(
    services: &Services,
    addr: &SocketAddr,
    idp: &str,
    redirect_url: String,
    headers: &HeaderMap,
) -> Response {
    if let Some(refusal) = limited(services, addr) {
        return refusal;
    }
    start_at_provider(services, idp, Purpose::Login { redirect_url }, headers).await
}

/// `GET /_conduit/sso/callback/{idp}`: the provider sent the browser back.
async fn callback(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Path(idp): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let param = |key: &str| query.get(key).map(String::as_str);
    let callback = Callback {
        state: param("state"),
        code: param("code"),
        error: param("error"),
        error_description: param("error_description"),
        iss: param("iss"),
    };
    let outcome = services
        .sso_callback(&idp, callback, browser_cookie(&services, &headers))
        .await;
    outcome_or_error(&services, outcome, false)
}

#[derive(Deserialize)]
struct SignupFields {
    #[serde(default)]
    signup: String,
    #[serde(default)]
    username: String,
    /// A checkbox: present ("on") when ticked.
    import_displayname: Option<String>,
}

/// `POST /_conduit/sso/signup`: the username form.
async fn signup(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Form(fields): Form<SignupFields>,
) -> Response {
    let outcome = services
        .sso_signup(
            &fields.signup,
            browser_cookie(&services, &headers),
            &fields.username,
            fields.import_displayname.is_some(),
        )
        .await;
    outcome_or_error(&services, outcome, true)
}

#[derive(Deserialize)]
struct LinkFields {
    #[serde(default)]
    signup: String,
    #[serde(default)]
    link_username: String,
    #[serde(default)]
    link_password: String,
}

/// `POST /_conduit/sso/link`: link the new identity to an existing account.
async fn link(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Form(fields): Form<LinkFields>,
) -> Response {
    let outcome = services
        .sso_link(
            &fields.signup,
            browser_cookie(&services, &headers),
            &fields.link_username,
            &fields.link_password,
        )
        .await;
    outcome_or_error(&services, outcome, true)
}

/// `after_form`: the outcome answers a form of ours, whose `form-action`
/// policy would stop a redirect to the app: a link is shown instead.
fn outcome_or_error(
    services: &Services,
    outcome: Result<Outcome, SsoError>,
    after_form: bool,
) -> Response {
    match outcome {
        Ok(outcome) => outcome_page(services, outcome, after_form),
        Err(e) => error_page(services, &e),
    }
}

fn outcome_page(services: &Services, outcome: Outcome, after_form: bool) -> Response {
    match outcome {
        Outcome::AccountPage { session, query } => {
            crate::account_page::signed_in(services, &session, &query)
        }
        Outcome::Redirect(url) if !after_form => see_other(&url),
        Outcome::Redirect(url) => page(
            StatusCode::OK,
            "Continue to your app",
            &format!(
                "<h1>You are signed in</h1><div class=\"card\"><p>Your account on {server} is ready.</p>\
                 <p><a class=\"button\" id=\"continue\" href=\"{link}\" rel=\"noreferrer\">Continue to your app</a></p></div>",
                server = server_name(services),
                link = escape(&url),
            ),
        ),
        Outcome::Continue {
            user_id,
            redirect_url,
            client_host,
        } => page(
            StatusCode::OK,
            &format!("Continue to {client_host}?"),
            &format!(
                "<h1>Continue to {host}?</h1><div class=\"card\">\
                 <p>You are signed in to {server} as <strong id=\"user-id\">{user}</strong>.</p>\
                 <p>Continuing gives <strong>{host}</strong> access to your account.</p>\
                 <p><a class=\"button\" id=\"continue\" href=\"{link}\" rel=\"noreferrer\">Continue</a></p></div>\
                 <p class=\"muted\">If you did not just try to sign in to {host}, close this page: \
                 someone may be trying to get into your account.</p>",
                host = escape(&client_host),
                server = server_name(services),
                user = escape(user_id.as_str()),
                link = escape(&redirect_url),
            ),
        ),
        Outcome::ChooseUsername(form) => username_page(services, &form),
        Outcome::Reauthenticated => {
            // The spec's completion signal for clients that opened this in a
            // popup or webview; the text alone is enough without JavaScript.
            let nonce = utils::random_string(24);
            page_with_policy(
                StatusCode::OK,
                "Confirmed",
                &format!(
                    "<h1>Thank you</h1><div class=\"card\"><p id=\"done\">Now we know it is you. \
                     Close this window and go back to your app.</p></div>\
                     <script nonce=\"{nonce}\">if (window.onAuthDone) {{ window.onAuthDone(); }} \
                     else if (window.opener && window.opener.postMessage) {{ window.opener.postMessage(\"authDone\", \"*\"); }}</script>"
                ),
                policy_with(&format!("script-src 'nonce-{nonce}'")),
            )
        }
    }
}

fn username_page(services: &Services, form: &SignupForm) -> Response {
    let error = form
        .error
        .as_deref()
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", escape(e)))
        .unwrap_or_default();
    let display_name = form
        .display_name
        .as_deref()
        .map(|name| {
            format!(
                "<label><input type=\"checkbox\" name=\"import_displayname\" id=\"import_displayname\" checked> \
                 Use “{}” as my display name</label>",
                escape(name)
            )
        })
        .unwrap_or_default();
    page(
        StatusCode::OK,
        "Choose your username",
        &format!(
            "<h1>Welcome to {server}</h1><div class=\"card\">\
             <p>You signed in with {provider}. Choose your username on this server; \
             your Matrix ID will be <code>@username:{server}</code>, and it cannot be changed later.</p>{error}\
             <form method=\"post\" action=\"{SIGNUP_PATH}\">\
             <input type=\"hidden\" name=\"signup\" value=\"{signup}\">\
             <label for=\"username\">Username</label>\
             <input id=\"username\" name=\"username\" value=\"{username}\" required autocomplete=\"username\" \
             autocapitalize=\"none\" spellcheck=\"false\">{display_name}\
             <p><button class=\"button\" id=\"create\" type=\"submit\">Create account</button></p></form></div>\
             <details class=\"card\"><summary>I already have an account on {server}</summary>\
             <p>Sign in with its password once; afterwards {provider} signs you in to it.</p>\
             <form method=\"post\" action=\"{LINK_PATH}\">\
             <input type=\"hidden\" name=\"signup\" value=\"{signup}\">\
             <label for=\"link_username\">Username</label>\
             <input id=\"link_username\" name=\"link_username\" required autocomplete=\"username\" autocapitalize=\"none\">\
             <label for=\"link_password\">Password</label>\
             <input id=\"link_password\" name=\"link_password\" type=\"password\" required autocomplete=\"current-password\">\
             <p><button class=\"button\" id=\"link\" type=\"submit\">Link my account</button></p></form></details>",
            server = server_name(services),
            provider = escape(&form.provider_name),
            signup = escape(&form.signup),
            username = escape(&form.username),
        ),
    )
}

#[derive(Deserialize)]
struct SessionQuery {
    session: Option<String>,
}

/// The live UIA session named in the query: its id, user and purpose.
fn reauth_session(
    services: &Services,
    query: SessionQuery,
) -> Result<(String, ruma::OwnedUserId, &'static str), SsoError> {
    query
        .session
        .and_then(|s| {
            let (user_id, purpose) = services.uiaa.session_user(&s)?;
            Some((s, user_id, purpose))
        })
        .ok_or_else(|| {
            SsoError::new(
                400,
                "This confirmation is unknown or has expired. Start again from your Matrix app.",
            )
        })
}

/// `GET /auth/m.login.sso/fallback/web?session=`: a user of an SSO
/// identity confirms a sensitive change (deleting a device, …).
async fn reauth_page(
    State(services): State<Arc<Services>>,
    Query(query): Query<SessionQuery>,
) -> Response {
    let (session, user_id, purpose) = match reauth_session(&services, query) {
        Ok(found) => found,
        Err(e) => return error_page(&services, &e),
    };
    let providers = match services.sso_providers_of(&user_id) {
        Ok(providers) if !providers.is_empty() => providers,
        Ok(_) => {
            return error_page(
                &services,
                &SsoError::new(
                    400,
                    "Your account is not linked to any single sign-on provider of this server.",
                ),
            );
        }
        Err(e) => return error_page(&services, &SsoError::from(e)),
    };
    let session: String = url::form_urlencoded::byte_serialize(session.as_bytes()).collect();
    let links = provider_links(providers.iter(), |id| {
        format!("{REAUTH_PATH}/{id}?session={session}")
    });
    page(
        StatusCode::OK,
        "Confirm it is you",
        &format!(
            "<h1>Confirm it is you</h1><div class=\"card\"><p>An app signed in as <strong>{}</strong> \
             asks to <strong id=\"purpose\">{}</strong>. Sign in again to confirm.</p>{links}\
             <p class=\"muted\">If you did not ask for this, do not continue: someone else may have access \
             to your account.</p></div>",
            escape(user_id.as_str()),
            escape(purpose)
        ),
    )
}

/// `GET /_conduit/sso/reauth/{idp}?session=`: to the provider, for UIA.
async fn reauth_redirect(
    State(services): State<Arc<Services>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(idp): Path<String>,
    Query(query): Query<SessionQuery>,
) -> Response {
    if let Some(refusal) = limited(&services, &addr) {
        return refusal;
    }
    let (session, user_id, _) = match reauth_session(&services, query) {
        Ok(found) => found,
        Err(e) => return error_page(&services, &e),
    };
    start_at_provider(
        &services,
        &idp,
        Purpose::Reauth { session, user_id },
        &headers,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_flow_cookie_unless_doubled() {
        let name = "conduit_sso_browser";
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; conduit_sso_browser=abc; b=2"),
        );
        assert_eq!(single_cookie(&headers, name), Some("abc"));
        assert_eq!(single_cookie(&HeaderMap::new(), name), None);
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("conduit_sso_browser=planted"),
        );
        assert_eq!(single_cookie(&headers, name), None);
    }
}
