//! Server-rendered pages (invite links, single sign-on): one look, one set
//! of safety headers, text always escaped. Pages work without JavaScript.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;color:#17191c;line-height:1.5}\
h1{font-size:1.6rem}.card{border:1px solid #d6dade;border-radius:12px;padding:1rem 1.25rem;margin:1rem 0}\
.qr svg{width:200px;height:200px}.button{display:inline-block;background:#0dbd8b;color:#fff;padding:.5rem 1rem;border-radius:8px;text-decoration:none;border:0;font-size:1rem}\
code{background:#f2f4f6;padding:.1rem .3rem;border-radius:4px;word-break:break-all}label{display:block;margin:.5rem 0 .2rem}\
input{width:100%;padding:.4rem;font-size:1rem;box-sizing:border-box}input[type=checkbox]{width:auto}\
.error{color:#b00020}.muted{color:#5c6470}.idp img{width:1.5rem;height:1.5rem;vertical-align:middle;margin-right:.4rem}";

/// The page's policy: nothing but inline style, data images and forms to
/// this server, unless a page needs one more source.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'";

/// A whole page around `body`, with headers that keep its links private.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    page_with_policy(status, title, body, HeaderValue::from_static(CSP))
}

/// A page whose content security policy differs (an image source, one
/// inline script).
pub fn page_with_policy(
    status: StatusCode,
    title: &str,
    body: &str,
    policy: HeaderValue,
) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{}</title><style>{STYLE}</style></head>\
         <body>{body}</body></html>",
        escape(title)
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    response
}

/// The default policy, with forms allowed to lead on to `source` as well
/// (browsers apply `form-action` to the redirect after a form too).
pub fn policy_with_form_target(source: &str) -> HeaderValue {
    HeaderValue::from_str(&CSP.replace(
        "form-action 'self'",
        &format!("form-action 'self' {source}"),
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(CSP))
}

/// The default policy plus `extra` directives (e.g. `script-src 'nonce-…'`).
pub fn policy_with(extra: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{CSP}; {extra}"))
        .unwrap_or_else(|_| HeaderValue::from_static(CSP))
}

/// What a page tells a person about a failed request: the Matrix error's
/// message (details of other failures stay in the log).
pub fn error_text(e: &conduit_service::Error) -> String {
    match e {
        conduit_service::Error::Matrix { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// A date in UTC, `2026-11-29 14:03 UTC`, from milliseconds since the epoch.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_795_000_000_000), "2026-11-18 11:06 UTC");
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }
}
