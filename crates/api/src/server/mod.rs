//! The server-server side: the key server and notary, and the federation
//! API, one file per spec area. Every federation request is authenticated
//! by its `X-Matrix` signature ([`Federated`]); with `allow_federation =
//! false` every route here answers `403 M_FORBIDDEN`.

mod devices;
mod directory;
mod events;
mod key;
mod media;
mod membership;
mod query;
mod send;

use std::sync::Arc;

use axum::{
    Router,
    extract::{FromRequest, Request},
    routing::{get, post, put},
};
use conduit_service::{Error, ErrorCode, Services};
use ruma::OwnedServerName;
use serde_json::Value as JsonValue;

use crate::error::ApiError;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let federation = Router::new()
        .route("/_matrix/key/v2/server", get(key::server_key))
        // Deprecated form with a key id, still requested by older servers.
        .route("/_matrix/key/v2/server/{key_id}", get(key::server_key))
        .route("/_matrix/key/v2/query", post(key::query))
        .route("/_matrix/key/v2/query/{server_name}", get(key::query_one))
        .route(
            "/_matrix/key/v2/query/{server_name}/{key_id}",
            get(key::query_one),
        )
        .route("/_matrix/federation/v1/version", get(query::version))
        .route(
            "/_matrix/federation/v1/media/download/{media_id}",
            get(media::download),
        )
        .route(
            "/_matrix/federation/v1/media/thumbnail/{media_id}",
            get(media::thumbnail),
        )
        .route("/_matrix/federation/v1/send/{txn_id}", put(send::send))
        .route(
            "/_matrix/federation/v1/make_join/{room_id}/{user_id}",
            get(membership::make_join),
        )
        .route(
            "/_matrix/federation/v1/send_join/{room_id}/{event_id}",
            put(membership::send_join_v1),
        )
        .route(
            "/_matrix/federation/v2/send_join/{room_id}/{event_id}",
            put(membership::send_join_v2),
        )
        .route(
            "/_matrix/federation/v1/make_leave/{room_id}/{user_id}",
            get(membership::make_leave),
        )
        .route(
            "/_matrix/federation/v1/send_leave/{room_id}/{event_id}",
            put(membership::send_leave_v1),
        )
        .route(
            "/_matrix/federation/v2/send_leave/{room_id}/{event_id}",
            put(membership::send_leave_v2),
        )
        .route(
            "/_matrix/federation/v1/make_knock/{room_id}/{user_id}",
            get(membership::make_knock),
        )
        .route(
            "/_matrix/federation/v1/send_knock/{room_id}/{event_id}",
            put(membership::send_knock),
        )
        .route(
            "/_matrix/federation/v2/invite/{room_id}/{event_id}",
            put(membership::invite_v2),
        )
        .route(
            "/_matrix/federation/v1/event/{event_id}",
            get(events::event),
        )
        .route("/_matrix/federation/v1/state/{room_id}", get(events::state))
        .route(
            "/_matrix/federation/v1/state_ids/{room_id}",
            get(events::state_ids),
        )
        .route(
            "/_matrix/federation/v1/event_auth/{room_id}/{event_id}",
            get(events::event_auth),
        )
        .route(
            "/_matrix/federation/v1/get_missing_events/{room_id}",
            post(events::get_missing_events),
        )
        .route(
            "/_matrix/federation/v1/backfill/{room_id}",
            get(events::backfill),
        )
        .route(
            "/_matrix/federation/v1/publicRooms",
            get(directory::get_public).post(directory::post_public),
        )
        .route(
            "/_matrix/federation/v1/hierarchy/{room_id}",
            get(directory::hierarchy),
        )
        .route(
            "/_matrix/federation/v1/user/devices/{user_id}",
            get(devices::user_devices),
        )
        .route(
            "/_matrix/federation/v1/user/keys/query",
            post(devices::keys_query),
        )
        .route(
            "/_matrix/federation/v1/user/keys/claim",
            post(devices::keys_claim),
        )
        .route(
            "/_matrix/federation/v1/timestamp_to_event/{room_id}",
            get(events::timestamp_to_event),
        )
        .route("/_matrix/federation/v1/query/profile", get(query::profile))
        .route(
            "/_matrix/federation/v1/openid/userinfo",
            get(query::openid_userinfo),
        )
        .route(
            "/_matrix/federation/v1/query/directory",
            get(query::directory),
        );
    router.merge(federation)
}

/// `allow_federation = false`: every federation and key route is closed.
pub fn require_federation(services: &Services) -> Result<(), ApiError> {
    if services.config.allow_federation {
        Ok(())
    } else {
        Err(Error::forbidden("Federation is disabled on this server.").into())
    }
}

/// A federation request whose `X-Matrix` signature checked out.
pub struct Federated {
    pub origin: OwnedServerName,
    pub body: Option<JsonValue>,
    /// The query string's pairs, in order (`ver` repeats).
    pub query: Vec<(String, String)>,
}

impl Federated {
    pub fn query_values(&self, key: &str) -> Vec<String> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Result<&JsonValue, ApiError> {
        self.body
            .as_ref()
            .ok_or_else(|| ApiError(Error::new(ErrorCode::NotJson, "The request has no body.")))
    }
}

impl FromRequest<Arc<Services>> for Federated {
    type Rejection = ApiError;

    async fn from_request(req: Request, services: &Arc<Services>) -> Result<Self, ApiError> {
        require_federation(services)?;
        let (parts, body) = req.into_parts();
        let (_, body) =
            crate::ruma_wrapper::read_json_body(body, services.config.max_request_size as usize)
                .await?;
        let uri = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let authorizations: Vec<&str> = parts
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let origin = services
            .verify_federation_request(parts.method.as_str(), uri, &authorizations, body.as_ref())
            .await?;
        let query = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        Ok(Self {
            origin,
            body,
            query,
        })
    }
}
