//! Outbound server-server requests: the destination found by discovery,
//! the request signed with `X-Matrix`, one pooled rustls client, a timeout,
//! and the answer read up to a size limit.

use std::time::Duration;

use ruma::{CanonicalJsonValue, ServerName};
use serde_json::Value as JsonValue;

use super::x_matrix::XMatrix;
use crate::{Error, ErrorCode, Services};

/// The default bound on an answer; joins of big rooms ask for more.
pub const DEFAULT_RESPONSE_LIMIT: usize = 8 * 1024 * 1024;

/// Why a request to another server failed.
#[derive(Debug, thiserror::Error)]
pub enum FedError {
    #[error("this server does not federate with {0}")]
    Denied(String),
    #[error("{0}")]
    Transport(String),
    #[error("HTTP {status}: {errcode} {error}")]
    Status {
        status: u16,
        errcode: String,
        error: String,
    },
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the answer is not JSON: {0}")]
    NotJson(String),
    #[error("cannot sign the request: {0}")]
    Signing(String),
}

impl FedError {
    /// The client-facing error: the remote's refusal as its own code when it
    /// refused (403, 404), else a `502` naming what failed.
    pub fn into_client_error(self, server: &ServerName) -> Error {
        match self {
            FedError::Status {
                status: 403, error, ..
            } => Error::forbidden(format!("{server} refused: {error}")),
            FedError::Status {
                status: 404, error, ..
            } => Error::not_found(format!("{server}: {error}")),
            FedError::Status {
                status: 400,
                errcode,
                error,
            } if errcode == "M_INCOMPATIBLE_ROOM_VERSION" => Error::new(
                ErrorCode::IncompatibleRoomVersion,
                format!("{server}: {error}"),
            ),
            other => Error::new(ErrorCode::Unknown, format!("{server}: {other}")).with_status(502),
        }
    }
}

/// Builds the client every federation request goes through: rustls with
/// the ring provider, no redirects, the discovery's SRV targets honoured.
pub(crate) fn build_client(
    verify_certificates: bool,
    resolver: Option<std::sync::Arc<dyn reqwest::dns::Resolve>>,
) -> Result<reqwest::Client, reqwest::Error> {
    crate::utils::use_ring_for_tls();
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(4)
        .user_agent(concat!("conduit/", env!("CARGO_PKG_VERSION")))
        .tls_danger_accept_invalid_certs(!verify_certificates);
    if let Some(resolver) = resolver {
        builder = builder.dns_resolver(resolver);
    }
    builder.build()
}

impl Services {
    /// A signed request to `destination`; the JSON answer of a 2xx.
    pub async fn federation_request(
        &self,
        destination: &ServerName,
        method: http::Method,
        path_and_query: &str,
        body: Option<&JsonValue>,
        limit: usize,
    ) -> Result<JsonValue, FedError> {
        json_answer(
            &self
                .federation_bytes(destination, method, path_and_query, body, limit, true)
                .await?,
        )
    }

    /// An unsigned GET (the key server), still through discovery.
    pub async fn federation_get_unsigned(
        &self,
        destination: &ServerName,
        path: &str,
        limit: usize,
    ) -> Result<JsonValue, FedError> {
        json_answer(
            &self
                .federation_bytes(destination, http::Method::GET, path, None, limit, false)
                .await?,
        )
    }

    /// The body of a 2xx answer to a signed (or unsigned) request, at most
    /// `limit` bytes, for a caller that parses it its own way (the events
    /// of a join, kept as raw text until each is checked).
    pub(crate) async fn federation_bytes(
        &self,
        destination: &ServerName,
        method: http::Method,
        path_and_query: &str,
        body: Option<&JsonValue>,
        limit: usize,
        signed: bool,
    ) -> Result<Vec<u8>, FedError> {
        let body = body.map(canonical_text).transpose()?;
        self.federation_bytes_of_text(destination, method, path_and_query, body, limit, signed)
            .await
    }

    /// A signed request whose body is already canonical JSON text: the
    /// sender's transactions, built once per destination from event texts
    /// shared by every destination. The JSON answer of a 2xx.
    pub(crate) async fn federation_request_text(
        &self,
        destination: &ServerName,
        method: http::Method,
        path_and_query: &str,
        body: String,
        limit: usize,
    ) -> Result<JsonValue, FedError> {
        json_answer(
            &self
                .federation_bytes_of_text(
                    destination,
                    method,
                    path_and_query,
                    Some(body),
                    limit,
                    true,
                )
                .await?,
        )
    }

    async fn federation_bytes_of_text(
        &self,
        destination: &ServerName,
        method: http::Method,
        path_and_query: &str,
        body: Option<String>,
        limit: usize,
        signed: bool,
    ) -> Result<Vec<u8>, FedError> {
        let mut response = self
            .send_text(destination, method, path_and_query, body, signed)
            .await?;
        let status = response.status();
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(FedError::TooLarge(limit));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FedError::Transport(describe(&e)))?
        {
            if bytes.len() + chunk.len() > limit {
                return Err(FedError::TooLarge(limit));
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(status_error(status, &bytes));
        }
        Ok(bytes)
    }

    /// A request to `destination` (signed or not) whose answer the caller
    /// reads itself, as it arrives (media).
    pub(crate) async fn federation_response(
        &self,
        destination: &ServerName,
        method: http::Method,
        path_and_query: &str,
        body: Option<&JsonValue>,
        signed: bool,
    ) -> Result<reqwest::Response, FedError> {
        let body = body.map(canonical_text).transpose()?;
        self.send_text(destination, method, path_and_query, body, signed)
            .await
    }

    /// Sends a request whose body is canonical JSON text (signed over that
    /// very text when `signed`).
    async fn send_text(
        &self,
        destination: &ServerName,
        method: http::Method,
        path_and_query: &str,
        body: Option<String>,
        signed: bool,
    ) -> Result<reqwest::Response, FedError> {
        if !self.config.federates_with(destination) {
            return Err(FedError::Denied(destination.to_string()));
        }
        let transport = self
            .federation
            .transport()
            .map_err(|e| FedError::Transport(format!("cannot build the HTTP client: {e}")))?;
        let target = transport.discovery.resolve(destination).await;
        let url = format!("{}{path_and_query}", target.base_url());
        let mut request = transport
            .client
            .request(method.clone(), &url)
            .header(http::header::HOST, &target.host_header)
            .timeout(self.federation.timeout);
        if signed {
            request = request.header(
                http::header::AUTHORIZATION,
                self.x_matrix_header(
                    destination,
                    method.as_str(),
                    path_and_query,
                    body.as_deref(),
                ),
            );
        }
        if let Some(body) = body {
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        request
            .send()
            .await
            .map_err(|e| FedError::Transport(describe(&e)))
    }

    /// `X-Matrix origin=...,destination=...,key=...,sig=...` for a request
    /// with `content`, canonical JSON text.
    fn x_matrix_header(
        &self,
        destination: &ServerName,
        method: &str,
        uri: &str,
        content: Option<&str>,
    ) -> String {
        let origin = self.config.server_name.as_str();
        let signed = signing_text(method, uri, origin, destination.as_str(), content);
        XMatrix {
            origin: self.config.server_name.clone(),
            destination: Some(destination.to_owned()),
            key: self.server_keys.key_id(),
            sig: self.server_keys.sign_text(&signed),
        }
        .to_header()
    }
}

/// A 2xx answer's body as JSON.
fn json_answer(bytes: &[u8]) -> Result<JsonValue, FedError> {
    serde_json::from_slice(bytes).map_err(|e| FedError::NotJson(e.to_string()))
}

/// A JSON body as canonical JSON text (what is signed and what is sent).
pub(crate) fn canonical_text(body: &JsonValue) -> Result<String, FedError> {
    let value = CanonicalJsonValue::try_from(body.clone())
        .map_err(|e| FedError::Signing(format!("the body is not canonical JSON: {e}")))?;
    serde_json::to_string(&value).map_err(|e| FedError::Signing(e.to_string()))
}

/// The canonical JSON of the object a request's X-Matrix signature signs,
/// made around `content` as it is: its keys (`content`, `destination`,
/// `method`, `origin`, `uri`) are in canonical order already.
pub(crate) fn signing_text(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&str>,
) -> String {
    let quoted = |text: &str| serde_json::to_string(text).unwrap_or_default();
    let mut out = String::with_capacity(content.map_or(0, str::len) + 160);
    out.push('{');
    if let Some(content) = content {
        out.push_str("\"content\":");
        out.push_str(content);
        out.push(',');
    }
    for (i, (key, value)) in [
        ("destination", destination),
        ("method", method),
        ("origin", origin),
        ("uri", uri),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&quoted(key));
        out.push(':');
        out.push_str(&quoted(value));
    }
    out.push('}');
    out
}

/// The error of a non-2xx answer whose body is `bytes`.
pub(crate) fn status_error(status: reqwest::StatusCode, bytes: &[u8]) -> FedError {
    let answer: JsonValue = serde_json::from_slice(bytes).unwrap_or_default();
    let text = |key: &str| {
        answer
            .get(key)
            .and_then(JsonValue::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    FedError::Status {
        status: status.as_u16(),
        errcode: text("errcode"),
        error: text("error"),
    }
}

/// reqwest's error with its causes, which say what really went wrong
/// (refused connection, certificate, timeout).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
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
    use crate::federation::x_matrix::request_object;

    #[test]
    fn the_signed_text_is_the_canonical_json_of_the_request_object() {
        let body = json!({"pdus": [{"content": {"body": "a \"quote\" and é"}}], "edus": []});
        let content = canonical_text(&body).unwrap();
        for content in [Some(content.as_str()), None] {
            let ours = signing_text("PUT", "/_matrix/x?y=1", "a.org", "b.org:8448", content);
            let object = request_object(
                "PUT",
                "/_matrix/x?y=1",
                "a.org",
                "b.org:8448",
                content.map(|_| &body),
            )
            .unwrap();
            assert_eq!(ours, serde_json::to_string(&object).unwrap());
        }
    }
}
