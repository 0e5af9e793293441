//! The outbound HTTP client identity providers are reached with: rustls
//! with the ring provider, no redirects (a token endpoint that redirects is
//! a misconfiguration, and following redirects invites SSRF), short
//! timeouts, and bodies read up to a limit.

use std::time::Duration;

use http::{HeaderValue, header};
use serde_json::Value as JsonValue;

/// An identity provider's answers are small (metadata, tokens, a profile).
const MAX_BODY: usize = 1024 * 1024;

/// Why a request to an identity provider failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Request(#[from] reqwest::Error),
    #[error("the answer is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("invalid URL {0}")]
    InvalidUrl(String),
    #[error("the answer is not the JSON expected: {0}")]
    Json(#[from] serde_json::Error),
}

/// An answer on its way, as `openidconnect`'s client trait wants it.
pub type PendingResponse =
    std::pin::Pin<Box<dyn Future<Output = Result<http::Response<Vec<u8>>, HttpError>> + Send>>;

#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
}

impl HttpClient {
    pub fn new() -> Result<Self, reqwest::Error> {
        // reqwest is built without a default crypto provider (aws-lc costs a
        // minute of C build); ring is installed once per process.
        crate::utils::use_ring_for_tls();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("conduit/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    /// Sends `request` and reads the whole answer, whatever its status.
    pub async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let mut response = self.client.execute(request).await?;
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY as u64)
        {
            return Err(HttpError::TooLarge);
        }
        let mut builder = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(HttpError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(builder
            .body(body)
            .expect("parts taken from a valid response"))
    }

    /// The client in the shape the `openidconnect` crate calls.
    pub fn for_oauth(&self) -> impl Fn(http::Request<Vec<u8>>) -> PendingResponse + use<> {
        let this = self.clone();
        move |request| {
            let this = this.clone();
            Box::pin(async move { this.send(request).await })
        }
    }

    /// `GET url` (with a bearer token if given), expecting a JSON object.
    /// `Ok(None)` on 404: optional documents (metadata, userinfo) may be absent.
    pub async fn get_json(
        &self,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<Option<JsonValue>, HttpError> {
        let mut request = http::Request::get(url).header(header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Vec::new())
            .map_err(|_| HttpError::InvalidUrl(url.to_owned()))?;
        let response = self.send(request).await?;
        if response.status() == http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        json_body(response).map(Some)
    }

    /// `POST url` with a form body, expecting a JSON object.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<JsonValue, HttpError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = http::Request::post(url)
            .header(header::ACCEPT, "application/json")
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .body(body.into_bytes())
            .map_err(|_| HttpError::InvalidUrl(url.to_owned()))?;
        json_body(self.send(request).await?)
    }
}

/// A successful answer's JSON object; any other status is an error that
/// keeps the start of the body (providers explain themselves there).
fn json_body(response: http::Response<Vec<u8>>) -> Result<JsonValue, HttpError> {
    let status = response.status();
    let body = response.into_body();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err(HttpError::Status {
            status: status.as_u16(),
            body: text,
        });
    }
    let value: JsonValue = serde_json::from_slice(&body)?;
    if !value.is_object() {
        return Err(HttpError::Json(serde::de::Error::custom(
            "expected a JSON object",
        )));
    }
    Ok(value)
}
