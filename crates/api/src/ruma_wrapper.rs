//! The bridge between axum and ruma's typed endpoints: [`Ruma`] parses and
//! authenticates a request, [`RumaResponse`] renders a typed response, and
//! [`RouterExt::ruma_route`] mounts a handler on every path of its endpoint.

use std::{future::Future, net::SocketAddr, panic::AssertUnwindSafe, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams, Request, State},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use bytes::BytesMut;
use conduit_service::{Error, ErrorCode, Services, users::Session};
use ruma::api::{
    IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt, auth_scheme,
    error::{DeserializationError, FromHttpRequestError},
    path_builder::PathBuilder,
};
use serde_json::Value as JsonValue;

use crate::error::ApiError;

/// How an endpoint's auth scheme treats an access token.
pub trait TokenPolicy {
    const POLICY: Policy;
}

pub enum Policy {
    /// The request must carry a valid access token.
    Required,
    /// A token, if present, must be valid.
    Optional,
    /// Only an appservice's `as_token` is looked at (registration and
    /// login): any other token is left for the handler to judge.
    Appservice,
    /// An appservice's `as_token` is required.
    AppserviceRequired,
    /// Tokens are not looked at.
    Ignored,
}

impl TokenPolicy for auth_scheme::AccessToken {
    const POLICY: Policy = Policy::Required;
}
impl TokenPolicy for auth_scheme::AccessTokenOptional {
    const POLICY: Policy = Policy::Optional;
}
impl TokenPolicy for auth_scheme::NoAuthentication {
    const POLICY: Policy = Policy::Ignored;
}
impl TokenPolicy for auth_scheme::NoAccessToken {
    const POLICY: Policy = Policy::Ignored;
}
impl TokenPolicy for auth_scheme::AppserviceTokenOptional {
    const POLICY: Policy = Policy::Appservice;
}
impl TokenPolicy for auth_scheme::AppserviceToken {
    const POLICY: Policy = Policy::AppserviceRequired;
}

/// A parsed, authenticated request. `GUEST` says whether guest accounts may
/// use the endpoint (the spec lists the few they may).
pub struct Ruma<T, const GUEST: bool = false> {
    pub body: T,
    /// Who sent it, for endpoints that take an access token.
    pub session: Option<Session>,
    /// The JSON body as sent, for user-interactive auth.
    pub json: Option<JsonValue>,
    pub client_ip: Option<String>,
}

impl<T, const GUEST: bool> Ruma<T, GUEST> {
    /// The sender of a request whose endpoint requires a token.
    pub fn sender(&self) -> Result<&Session, ApiError> {
        self.session
            .as_ref()
            .ok_or_else(|| ApiError(Error::new(ErrorCode::MissingToken, "Missing access token.")))
    }
}

impl<T, const GUEST: bool> FromRequest<Arc<Services>> for Ruma<T, GUEST>
where
    T: IncomingRequest + Send,
    T::Authentication: TokenPolicy,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, services: &Arc<Services>) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let mut path_args: Vec<String> =
            match RawPathParams::from_request_parts(&mut parts, services).await {
                Ok(params) => params.iter().map(|(_, v)| v.to_owned()).collect(),
                Err(_) => Vec::new(),
            };
        if parts.extensions.get::<EmptyStateKey>().is_some() {
            path_args.push(String::new());
        }
        let client_ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());

        let (bytes, json) = read_json_body(body, services.config.max_request_size as usize).await?;

        let session = authenticate(
            services,
            &parts,
            T::Authentication::POLICY,
            GUEST,
            client_ip.as_deref(),
        )?;

        // Clients (matrix-nio among them) POST some endpoints with no body at
        // all where every field is optional; read that as `{}`, as Synapse does.
        let body: &[u8] = if bytes.is_empty() && parts.method != http::Method::GET {
            b"{}"
        } else {
            &bytes
        };
        let request = http::Request::from_parts(parts, body);
        let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        // ruma's parsers are not all panic-free on hostile input; a panic here
        // is a bad request, never a crashed worker.
        let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            T::try_from_http_request(request, &args)
        }))
        .map_err(|_| Error::bad_json("The request body has the wrong shape."))?;
        let body = parsed.map_err(parse_error)?;

        Ok(Self {
            body,
            session,
            json,
            client_ip,
        })
    }
}

/// The session of a request's access token, as `policy` asks for one.
fn authenticate(
    services: &Services,
    parts: &http::request::Parts,
    policy: Policy,
    guests: bool,
    client_ip: Option<&str>,
) -> Result<Option<Session>, ApiError> {
    let token =
        auth_scheme::extract_bearer_or_query_token(&http::Request::from_parts(parts.clone(), ()))
            .ok()
            .flatten();
    let session = match (policy, token) {
        (Policy::Ignored, _) | (Policy::Optional | Policy::Appservice, None) => None,
        (Policy::Required | Policy::AppserviceRequired, None) => {
            return Err(Error::new(ErrorCode::MissingToken, "Missing access token.").into());
        }
        (policy, Some(token)) => match services.appservice_session(
            &token,
            parts.uri.query(),
            !matches!(policy, Policy::Appservice),
        )? {
            Some(session) => Some(session),
            None if matches!(policy, Policy::Appservice) => None,
            None if matches!(policy, Policy::AppserviceRequired) => {
                return Err(Error::unknown_token(false).into());
            }
            None => {
                let session = services.devices.authenticate(&token)?;
                services.devices.mark_seen(&session, &token, client_ip);
                Some(session)
            }
        },
    };
    if !guests && session.as_ref().is_some_and(|s| s.is_guest) {
        return Err(Error::new(
            ErrorCode::GuestAccessForbidden,
            "Guest accounts cannot use this endpoint.",
        )
        .into());
    }
    Ok(session)
}

/// The session of a request that requires an access token, for the few
/// handlers no ruma endpoint describes.
pub struct Authenticated(pub Session);

impl FromRequestParts<Arc<Services>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        services: &Arc<Services>,
    ) -> Result<Self, ApiError> {
        let client_ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let session = authenticate(
            services,
            parts,
            Policy::Required,
            false,
            client_ip.as_deref(),
        )?;
        session
            .map(Authenticated)
            .ok_or_else(|| Error::new(ErrorCode::MissingToken, "Missing access token.").into())
    }
}

/// A request body up to `limit` bytes (`413 M_TOO_LARGE` beyond), and its
/// JSON when it is not empty (`M_NOT_JSON` when it is not JSON).
pub(crate) async fn read_json_body(
    body: Body,
    limit: usize,
) -> Result<(bytes::Bytes, Option<JsonValue>), ApiError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Error::new(
            ErrorCode::TooLarge,
            format!("The request body exceeds {limit} bytes."),
        )
    })?;
    let json =
        if bytes.is_empty() {
            None
        } else {
            Some(serde_json::from_slice::<JsonValue>(&bytes).map_err(|e| {
                Error::new(ErrorCode::NotJson, format!("The body is not JSON: {e}"))
            })?)
        };
    Ok((bytes, json))
}

fn parse_error(e: FromHttpRequestError) -> ApiError {
    let error = match e {
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            Error::bad_json(format!("The request body has the wrong shape: {e}"))
        }
        FromHttpRequestError::Deserialization(e) => {
            Error::invalid_param(format!("Invalid request parameter: {e}"))
        }
        FromHttpRequestError::MethodMismatch { .. } => {
            Error::new(ErrorCode::Unrecognized, "Unrecognized request method.").with_status(405)
        }
        e => Error::bad_json(e.to_string()),
    };
    ApiError(error)
}

/// Marks a request routed without its trailing `{state_key}`: it is empty.
#[derive(Clone, Copy)]
struct EmptyStateKey;

/// A typed response, rendered with ruma's serializer.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|body| Body::from(body.freeze())),
            Err(e) => ApiError(Error::internal(e)).into_response(),
        }
    }
}

/// A handler for the endpoint `T`.
pub trait RumaHandler<M>: Clone + Send + Sync + 'static {
    fn mount(self, router: Router<Arc<Services>>) -> Router<Arc<Services>>;
}

impl<F, Fut, T, R, const GUEST: bool> RumaHandler<Ruma<T, GUEST>> for F
where
    F: Fn(State<Arc<Services>>, Ruma<T, GUEST>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R, ApiError>> + Send + 'static,
    T: IncomingRequest + Send + 'static,
    T::Authentication: TokenPolicy,
    R: IntoResponse,
{
    fn mount(self, mut router: Router<Arc<Services>>) -> Router<Arc<Services>> {
        let filter =
            MethodFilter::try_from(T::METHOD).expect("ruma endpoints use standard methods");
        for path in T::PATH_BUILDER.all_paths() {
            // `.../{state_key}` with an empty state key arrives as `...` or
            // `.../`, which a path parameter cannot match.
            if let Some(prefix) = path.strip_suffix("/{state_key}") {
                for bare in [prefix.to_owned(), format!("{prefix}/")] {
                    let handler = self.clone();
                    router = router.route(
                        &bare,
                        on(
                            filter,
                            move |State(services): State<Arc<Services>>, mut request: Request| {
                                let handler = handler.clone();
                                async move {
                                    request.extensions_mut().insert(EmptyStateKey);
                                    match Ruma::<T, GUEST>::from_request(request, &services).await {
                                        Ok(parsed) => {
                                            handler(State(services), parsed).await.into_response()
                                        }
                                        Err(error) => error.into_response(),
                                    }
                                }
                            },
                        ),
                    );
                }
            }
            let handler = self.clone();
            router = router.route(
                path,
                on(
                    filter,
                    move |state: State<Arc<Services>>, req: Ruma<T, GUEST>| {
                        let handler = handler.clone();
                        async move { handler(state, req).await }
                    },
                ),
            );
        }
        router
    }
}

pub trait RouterExt {
    /// Mounts `handler` on every path (r0, v3, unstable) of its endpoint.
    fn ruma_route<M>(self, handler: impl RumaHandler<M>) -> Self;
}

impl RouterExt for Router<Arc<Services>> {
    fn ruma_route<M>(self, handler: impl RumaHandler<M>) -> Self {
        handler.mount(self)
    }
}
