//! The HTTP face of the homeserver: axum routers for the client-server API
//! and `.well-known`, over the [`Services`] handle.

mod account_page;
mod admin;
mod client;
mod error;
mod health;
mod html;
mod invite_page;
mod middleware;
mod oauth;
mod ruma_wrapper;
mod server;
mod sso_pages;
pub mod tls;
mod well_known;

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, routing::get};
use conduit_service::Services;
use tower_http::catch_panic::CatchPanicLayer;

pub use self::{
    error::ApiError,
    ruma_wrapper::{Ruma, RumaResponse},
};

/// Every route this server answers, with its middleware.
pub fn router(services: Arc<Services>) -> Router {
    let router = Router::new()
        .route("/.well-known/matrix/client", get(well_known::client))
        .route("/.well-known/matrix/server", get(well_known::server));
    let router = account_page::routes(oauth::routes(sso_pages::routes(invite_page::routes(
        admin::routes(server::routes(health::routes(router))),
    ))));
    client::routes(router)
        .fallback(error::unrecognized_path)
        .method_not_allowed_fallback(error::unrecognized_method)
        .with_state(services.clone())
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(middleware::cors())
        .layer(axum::middleware::from_fn_with_state(
            services,
            middleware::log_request,
        ))
}

/// Serves over TLS until `shutdown` resolves.
pub async fn serve_tls(
    services: Arc<Services>,
    listener: tls::TlsListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let app = router(services).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener.tap_io(|_| {}), app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `/metrics` (and the health check) until `shutdown` resolves.
pub async fn serve_metrics(
    services: Arc<Services>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, health::metrics_router(services))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    services: Arc<Services>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(services).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
