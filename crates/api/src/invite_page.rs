//! The invite page, `GET/POST /_conduit/invite/{token}`: server-rendered,
//! no JavaScript. It shows who invited, the uses left and the expiry, a QR
//! code of the link, how to open Element, the token for clients that ask
//! for one, and a small form that creates the account. Opening it (link
//! previewers, mail scanners) never uses the token; only the form does.

use std::{fmt::Write, net::SocketAddr, sync::Arc};

use axum::{
    Form,
    extract::{ConnectInfo, Path, State},
    http::StatusCode,
    response::Response,
    routing::get,
};
use conduit_service::{
    Services,
    invites::{INVITE_PATH, InviteInfo},
    utils,
};

use crate::html::{error_text, escape, page, utc};
use serde::Deserialize;

pub fn routes(router: axum::Router<Arc<Services>>) -> axum::Router<Arc<Services>> {
    router.route(
        &format!("{INVITE_PATH}/{{token}}"),
        get(show).post(register),
    )
}

/// The QR code of a link, as inline SVG.
fn qr_svg(link: &str) -> String {
    match qrcode::QrCode::new(link.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

fn unusable_page(services: &Services, why: &str) -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Invite not usable",
        &format!(
            "<h1>Join {}</h1><div class=\"card\"><p class=\"error\">{}</p>\
             <p class=\"muted\">Ask the person who invited you for a new link.</p></div>",
            escape(services.config.server_name.as_str()),
            escape(why)
        ),
    )
}

/// The invite page, with an error above the form after a failed attempt.
fn invite_page(
    services: &Services,
    info: &InviteInfo,
    error: Option<&str>,
    username: &str,
) -> Response {
    let record = &info.view.record;
    let server = services.config.server_name.as_str();
    let link = services.invite_link(&record.token);
    let base = services.config.client_base_url();
    let mut body = format!("<h1>Join {}</h1>", escape(server));
    if let Some(by) = record.created_by.as_deref().filter(|b| b.starts_with('@')) {
        let _ = write!(
            body,
            "<p><strong>{}</strong> invited you to this Matrix server.</p>",
            escape(by)
        );
    } else {
        body.push_str("<p>You are invited to this Matrix server.</p>");
    }
    let uses = match record.uses_allowed {
        Some(allowed) => {
            let left = allowed.saturating_sub(record.completed + info.view.pending);
            format!("{left} of {allowed} uses left")
        }
        None => "unlimited uses".to_owned(),
    };
    let expiry = record.expiry_time.map_or("never expires".to_owned(), |t| {
        format!("valid until {}", utc(t))
    });
    let _ = write!(
        body,
        "<p class=\"muted\" id=\"uses\">This link: {uses}, {expiry}.</p>\
         <div class=\"card\"><h2>Create your account here</h2>"
    );
    if let Some(error) = error {
        let _ = write!(
            body,
            "<p class=\"error\" id=\"error\">{}</p>",
            escape(error)
        );
    }
    let _ = write!(
        body,
        "<form method=\"post\"><label for=\"username\">Username</label>\
         <input id=\"username\" name=\"username\" required autocomplete=\"username\" value=\"{}\" pattern=\"[a-z0-9._=\\-/+]+\">\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" required autocomplete=\"new-password\">\
         <label for=\"confirm\">Confirm password</label><input id=\"confirm\" name=\"confirm\" type=\"password\" required autocomplete=\"new-password\">\
         <p><button class=\"button\" type=\"submit\">Create account</button></p></form></div>",
        escape(username)
    );
    let _ = write!(
        body,
        "<div class=\"card\"><h2>Or use your Matrix app</h2>\
         <p><a class=\"button\" href=\"https://app.element.io/#/register\" rel=\"noreferrer\">Open Element Web</a></p>\
         <p>Choose <em>Edit</em> next to the homeserver and enter <code>{}</code>. \
         When the app asks for a registration token, enter <code id=\"token\">{}</code>.</p>\
         <p class=\"muted\">On a phone: install Element X or Element from your app store, then sign up on the server above with the same token.</p></div>\
         <div class=\"card qr\"><h2>Open this invite on another device</h2>{}<p class=\"muted\"><code>{}</code></p></div>",
        escape(&base),
        escape(&record.token),
        qr_svg(&link),
        escape(&link)
    );
    page(
        if error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        },
        &format!("Join {server}"),
        &body,
    )
}

/// Invite pages answer whether a token exists, like the validity API:
/// the same limit per client address applies.
fn limited(services: &Services, addr: &SocketAddr) -> Option<Response> {
    services
        .token_validity_limiter
        .check(&addr.ip().to_string())
        .err()
        .map(|_| {
            page(
                StatusCode::TOO_MANY_REQUESTS,
                "Slow down",
                "<h1>Too many requests</h1><p>Try again in a minute.</p>",
            )
        })
}

async fn show(
    State(services): State<Arc<Services>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
) -> Response {
    if let Some(refusal) = limited(&services, &addr) {
        return refusal;
    }
    match services.invite_info(&token) {
        Ok(Some(info)) => match info.unusable {
            Some(why) => unusable_page(&services, why),
            None => invite_page(&services, &info, None, ""),
        },
        Ok(None) => unusable_page(&services, "This invite link is not valid."),
        Err(e) => unusable_page(&services, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct RegisterForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

async fn register(
    State(services): State<Arc<Services>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    Form(form): Form<RegisterForm>,
) -> Response {
    if let Some(refusal) = limited(&services, &addr) {
        return refusal;
    }
    let info = match services.invite_info(&token) {
        Ok(Some(info)) => info,
        Ok(None) => return unusable_page(&services, "This invite link is not valid."),
        Err(e) => return unusable_page(&services, &e.to_string()),
    };
    if let Some(why) = info.unusable {
        return unusable_page(&services, why);
    }
    if form.password != form.confirm {
        return invite_page(
            &services,
            &info,
            Some("The passwords do not match."),
            &form.username,
        );
    }
    match services
        .register_by_invite(&token, &form.username, &form.password)
        .await
    {
        Ok(user_id) => page(
            StatusCode::OK,
            "Account created",
            &format!(
                "<h1>Welcome to {}</h1><div class=\"card\"><p id=\"created\">Your account <strong>{}</strong> is ready.</p>\
                 <p>Sign in with any Matrix app (Element Web, Element X, …): choose the homeserver <code>{}</code>, \
                 then your username <code>{}</code> and the password you chose.</p>\
                 <p><a class=\"button\" href=\"https://app.element.io/#/login\" rel=\"noreferrer\">Open Element Web</a></p></div>\
                 <p class=\"muted\">Created {}.</p>",
                escape(services.config.server_name.as_str()),
                escape(user_id.as_str()),
                escape(&services.config.client_base_url()),
                escape(user_id.localpart()),
                utc(utils::now_ms())
            ),
        ),
        Err(e) => {
            // The invite may have been used up meanwhile: show the page fresh.
            match services.invite_info(&token) {
                Ok(Some(info)) if info.unusable.is_none() => {
                    invite_page(&services, &info, Some(&error_text(&e)), &form.username)
                }
                Ok(Some(InviteInfo {
                    unusable: Some(why),
                    ..
                })) => unusable_page(&services, why),
                _ => unusable_page(&services, &error_text(&e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_codes() {
        let svg = qr_svg("https://example.org/_conduit/invite/abc");
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"));
    }
}
