//! The OAuth 2.0 sign-in pages, server-rendered and without JavaScript:
//! the authorization request's landing page (sign in with a password or
//! an SSO provider), the sign-up page (`prompt=create`, with a registration
//! token or invite link when the server needs one), and the detour through
//! an upstream SSO provider. A finished sign-in goes back to the app with
//! `303 See Other`.

use std::{collections::HashMap, fmt::Write, net::SocketAddr, sync::Arc};

use axum::{
    Form,
    extract::{ConnectInfo, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::get,
};
use conduit_service::{
    Services,
    oauth::{AUTHORIZE_PATH, AuthorizationView, AuthorizeParams, Refusal},
    sso::{Purpose, SsoError},
};
use serde::Deserialize;

use crate::{
    html::{error_text, escape, page, page_with_policy, policy_with_form_target},
    sso_pages::{
        browser_cookie, error_page, limited, provider_links, see_other, start_at_provider,
        with_browser_cookie,
    },
};

const LOGIN_PATH: &str = "/_conduit/oauth/login";
const SIGNUP_PATH: &str = "/_conduit/oauth/signup";
const SSO_PATH: &str = "/_conduit/oauth/sso";

pub fn routes(router: axum::Router<Arc<Services>>) -> axum::Router<Arc<Services>> {
    router
        .route(AUTHORIZE_PATH, get(authorize))
        .route(LOGIN_PATH, get(login_page).post(login))
        .route(SIGNUP_PATH, get(signup_page).post(signup))
        .route(&format!("{SSO_PATH}/{{idp}}"), get(sso))
}

/// `GET /_conduit/oauth/authorize`: the client's request; its sign-in page.
async fn authorize(
    State(services): State<Arc<Services>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refusal) = limited(&services, &addr) {
        return refusal;
    }
    let param = |key: &str| query.get(key).map(String::as_str);
    let params = AuthorizeParams {
        response_type: param("response_type"),
        client_id: param("client_id"),
        redirect_uri: param("redirect_uri"),
        scope: param("scope"),
        state: param("state"),
        response_mode: param("response_mode"),
        code_challenge: param("code_challenge"),
        code_challenge_method: param("code_challenge_method"),
        prompt: param("prompt"),
        login_hint: param("login_hint"),
    };
    match services.oauth_authorize(&params, browser_cookie(&services, &headers)) {
        Ok(view) => {
            let page = if view.create && services.registration_flows().is_ok() {
                signup_form(&services, &view, None, "")
            } else {
                login_form(&services, &view, None)
            };
            with_browser_cookie(&services, page, &view.browser)
        }
        Err(Refusal::Redirect { url, description }) => back_to_app(&services, &url, &description),
        Err(Refusal::Page(why)) => error_page(&services, &SsoError::new(400, why)),
    }
}

/// A request the app got wrong, before the person did anything: a link
/// back (the error is in it), not a redirect.
fn back_to_app(services: &Services, url: &str, description: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Sign-in failed",
        &format!(
            "<h1>Could not sign you in to {}</h1><div class=\"card\">\
             <p class=\"error\" id=\"error\">The app's request was not valid: {}.</p>\
             <p><a class=\"button\" id=\"back\" href=\"{}\" rel=\"noreferrer\">Back to the app</a></p></div>",
            escape(services.config.server_name.as_str()),
            escape(description),
            escape(url),
        ),
    )
}

#[derive(Deserialize)]
struct AuthorizationQuery {
    #[serde(default)]
    authorization: String,
}

fn expired(services: &Services) -> Response {
    error_page(
        services,
        &SsoError::new(
            400,
            "This sign-in request is unknown or has expired. Start again from your app.",
        ),
    )
}

/// The CSP source of the address the forms lead back to: its origin, or
/// an app's own scheme.
fn form_target(redirect_uri: &str) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url.origin().ascii_serialization(),
        Ok(url) => format!("{}:", url.scheme()),
        Err(_) => String::new(),
    }
}

/// Who asks, what for, and the terms the app links to.
fn client_card(services: &Services, view: &AuthorizationView) -> String {
    let host = url::Url::parse(&view.client_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let mut card = format!(
        "<p><strong id=\"client-name\">{name}</strong> (<a href=\"{uri}\" rel=\"noreferrer\">{host}</a>) \
         asks to use your account on {server}.</p>",
        name = escape(&view.client_name),
        uri = escape(&view.client_uri),
        host = escape(&host),
        server = escape(services.config.server_name.as_str()),
    );
    let links: Vec<String> = [
        ("Terms", &view.tos_uri),
        ("Privacy policy", &view.policy_uri),
    ]
    .into_iter()
    .filter_map(|(label, uri)| {
        uri.as_deref()
            .map(|uri| format!("<a href=\"{}\" rel=\"noreferrer\">{label}</a>", escape(uri)))
    })
    .collect();
    if !links.is_empty() {
        let _ = write!(
            card,
            "<p class=\"muted\">The app's {}.</p>",
            links.join(" · ")
        );
    }
    card
}

fn error_line(error: Option<&str>) -> String {
    error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", escape(e)))
        .unwrap_or_default()
}

/// Buttons for the SSO providers (those that may create accounts, on the
/// sign-up page).
fn provider_buttons(services: &Services, view: &AuthorizationView, signing_up: bool) -> String {
    let providers = services
        .sso
        .providers()
        .filter(|p| !signing_up || p.allow_registration);
    let buttons = provider_links(providers, |id| {
        format!("{SSO_PATH}/{id}?authorization={}", view.id)
    });
    if buttons.is_empty() {
        return buttons;
    }
    format!("<div class=\"card\"><p>Or use your account at:</p>{buttons}</div>")
}

fn form_page(view: &AuthorizationView, status: StatusCode, title: &str, body: &str) -> Response {
    page_with_policy(
        status,
        title,
        body,
        policy_with_form_target(&form_target(&view.redirect_uri)),
    )
}

fn status_of(error: Option<&str>) -> StatusCode {
    if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    }
}

fn login_form(services: &Services, view: &AuthorizationView, error: Option<&str>) -> Response {
    let server = escape(services.config.server_name.as_str());
    let mut body = format!(
        "<h1>Sign in to {server}</h1><div class=\"card\">{}{}",
        client_card(services, view),
        error_line(error)
    );
    if services.config.sso.password_login_enabled() {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"{LOGIN_PATH}\">\
             <input type=\"hidden\" name=\"authorization\" value=\"{auth}\">\
             <label for=\"username\">Username</label>\
             <input id=\"username\" name=\"username\" value=\"{username}\" required autocomplete=\"username\" \
             autocapitalize=\"none\" spellcheck=\"false\">\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" required autocomplete=\"current-password\">\
             <p><button class=\"button\" id=\"sign-in\" type=\"submit\">Sign in and continue</button></p></form>",
            auth = escape(&view.id),
            username = escape(view.username_hint.as_deref().unwrap_or_default()),
        );
    }
    body.push_str("</div>");
    body.push_str(&provider_buttons(services, view, false));
    if services.registration_flows().is_ok() {
        let _ = write!(
            body,
            "<p>No account on {server} yet? <a id=\"create-account\" \
             href=\"{SIGNUP_PATH}?authorization={}\">Create one</a></p>",
            escape(&view.id)
        );
    }
    body.push_str(
        "<p class=\"muted\">Continue only if you just started signing in to this app: \
         it gets full access to your account.</p>",
    );
    form_page(
        view,
        status_of(error),
        &format!("Sign in to {server}"),
        &body,
    )
}

fn signup_form(
    services: &Services,
    view: &AuthorizationView,
    error: Option<&str>,
    username: &str,
) -> Response {
    let server = escape(services.config.server_name.as_str());
    let token_field = if services.config.registration_requires_token {
        "<label for=\"token\">Registration token or invite link</label>\
         <input id=\"token\" name=\"token\" required autocomplete=\"off\" spellcheck=\"false\">"
    } else {
        ""
    };
    let body = format!(
        "<h1>Create your account on {server}</h1><div class=\"card\">{card}{error}\
         <form method=\"post\" action=\"{SIGNUP_PATH}\">\
         <input type=\"hidden\" name=\"authorization\" value=\"{auth}\">\
         <label for=\"username\">Username</label>\
         <input id=\"username\" name=\"username\" value=\"{username}\" required autocomplete=\"username\" \
         autocapitalize=\"none\" spellcheck=\"false\" pattern=\"[a-z0-9._=\\-/+]+\">\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" required autocomplete=\"new-password\">\
         <label for=\"confirm\">Confirm password</label>\
         <input id=\"confirm\" name=\"confirm\" type=\"password\" required autocomplete=\"new-password\">\
         {token_field}\
         <p><button class=\"button\" id=\"create\" type=\"submit\">Create account and continue</button></p></form></div>\
         {providers}<p>Already have an account? <a id=\"sign-in-instead\" \
         href=\"{LOGIN_PATH}?authorization={auth}\">Sign in</a></p>",
        card = client_card(services, view),
        error = error_line(error),
        auth = escape(&view.id),
        username = escape(username),
        providers = provider_buttons(services, view, true),
    );
    form_page(
        view,
        status_of(error),
        &format!("Create your account on {server}"),
        &body,
    )
}

/// `GET /_conduit/oauth/login?authorization=`: the sign-in page again.
async fn login_page(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Query(query): Query<AuthorizationQuery>,
) -> Response {
    let browser = browser_cookie(&services, &headers);
    match services.oauth_authorization_view(&query.authorization, false, browser) {
        Some(view) => login_form(&services, &view, None),
        None => expired(&services),
    }
}

/// `GET /_conduit/oauth/signup?authorization=`: the sign-up page.
async fn signup_page(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Query(query): Query<AuthorizationQuery>,
) -> Response {
    let browser = browser_cookie(&services, &headers);
    let Some(view) = services.oauth_authorization_view(&query.authorization, true, browser) else {
        return expired(&services);
    };
    if let Err(e) = services.registration_flows() {
        return login_form(&services, &view, Some(&error_text(&e)));
    }
    signup_form(&services, &view, None, "")
}

#[derive(Deserialize)]
struct LoginFields {
    #[serde(default)]
    authorization: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// `POST /_conduit/oauth/login`: back to the app with a code, or the form
/// with what was wrong.
async fn login(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    Form(fields): Form<LoginFields>,
) -> Response {
    let browser = browser_cookie(&services, &headers);
    let outcome = services
        .oauth_password_login(
            &fields.authorization,
            browser,
            &fields.username,
            &fields.password,
        )
        .await;
    match outcome {
        Ok(url) => see_other(&url),
        Err(e) => match services.oauth_authorization_view(&fields.authorization, false, browser) {
            Some(view) => login_form(&services, &view, Some(&error_text(&e))),
            None => error_page(&services, &SsoError::new(e.status(), error_text(&e))),
        },
    }
}

#[derive(Deserialize)]
struct SignupFields {
    #[serde(default)]
    authorization: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    token: String,
}

/// `POST /_conduit/oauth/signup`: the new account, then back to the app.
async fn signup(
    State(services): State<Arc<Services>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(fields): Form<SignupFields>,
) -> Response {
    let browser = browser_cookie(&services, &headers);
    // Sign-up answers whether a token is valid, as the validity API does.
    if let Err(e) = services
        .token_validity_limiter
        .check(&addr.ip().to_string())
    {
        return error_page(&services, &SsoError::new(429, error_text(&e)));
    }
    let Some(view) = services.oauth_authorization_view(&fields.authorization, true, browser) else {
        return expired(&services);
    };
    if fields.password != fields.confirm {
        return signup_form(
            &services,
            &view,
            Some("The passwords do not match."),
            &fields.username,
        );
    }
    match services
        .oauth_sign_up(
            &fields.authorization,
            browser,
            &fields.username,
            &fields.password,
            &fields.token,
        )
        .await
    {
        Ok(url) => see_other(&url),
        Err(e) => signup_form(&services, &view, Some(&error_text(&e)), &fields.username),
    }
}

/// `GET /_conduit/oauth/sso/{idp}?authorization=`: to an upstream provider.
async fn sso(
    State(services): State<Arc<Services>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(idp): Path<String>,
    Query(query): Query<AuthorizationQuery>,
) -> Response {
    if let Some(refusal) = limited(&services, &addr) {
        return refusal;
    }
    let purpose = Purpose::OAuth {
        authorization: query.authorization,
    };
    start_at_provider(&services, &idp, purpose, &headers).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_may_lead_back_to_the_app() {
        assert_eq!(
            form_target("https://app.example/cb?x=1"),
            "https://app.example"
        );
        assert_eq!(
            form_target("http://127.0.0.1:5123/"),
            "http://127.0.0.1:5123"
        );
        assert_eq!(form_target("com.example.app:/cb"), "com.example.app:");
        assert_eq!(form_target("not a url"), "");
    }
}
