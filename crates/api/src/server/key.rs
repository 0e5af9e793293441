//! The key server (`GET /_matrix/key/v2/server`: our signing key, signed by
//! itself) and the notary (`/_matrix/key/v2/query`: other servers' keys as
//! they signed them, countersigned by us).

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json,
    extract::{Path, Query, State},
};
use conduit_service::{Error, Services, utils};
use ruma::OwnedServerName;
use serde::Deserialize;
use serde_json::{Value as JsonValue, json};

use super::require_federation;
use crate::error::ApiError;

pub async fn server_key(
    State(services): State<Arc<Services>>,
) -> Result<Json<JsonValue>, ApiError> {
    require_federation(&services)?;
    Ok(Json(services.server_keys.key_response()?))
}

#[derive(Deserialize)]
pub struct QueryBody {
    server_keys: BTreeMap<String, BTreeMap<String, Criteria>>,
}

#[derive(Default, Deserialize)]
pub struct Criteria {
    minimum_valid_until_ts: Option<u64>,
}

/// `POST /_matrix/key/v2/query`: the keys of every server asked about that
/// can be had.
pub async fn query(
    State(services): State<Arc<Services>>,
    body: Result<Json<QueryBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<JsonValue>, ApiError> {
    require_federation(&services)?;
    let Json(body) =
        body.map_err(|e| Error::bad_json(format!("Bad key query: {}", e.body_text())))?;
    let now = utils::now_ms();
    let mut servers = BTreeMap::new();
    for (server, keys) in body.server_keys {
        let Ok(server) = OwnedServerName::try_from(server) else {
            continue;
        };
        let minimum = keys
            .values()
            .filter_map(|c| c.minimum_valid_until_ts)
            .max()
            .unwrap_or(now);
        servers.insert(server, minimum);
    }
    let answers = services.notary_query(&servers).await?;
    Ok(Json(json!({ "server_keys": answers })))
}

#[derive(Deserialize)]
pub struct QueryParams {
    minimum_valid_until_ts: Option<u64>,
}

/// `GET /_matrix/key/v2/query/{serverName}`.
pub async fn query_one(
    State(services): State<Arc<Services>>,
    Path(params): Path<Vec<(String, String)>>,
    Query(query): Query<QueryParams>,
) -> Result<Json<JsonValue>, ApiError> {
    require_federation(&services)?;
    let server = params
        .first()
        .and_then(|(_, s)| OwnedServerName::try_from(s.as_str()).ok())
        .ok_or_else(|| Error::invalid_param("Invalid server name."))?;
    let minimum = query.minimum_valid_until_ts.unwrap_or_else(utils::now_ms);
    let answers = services
        .notary_query(&BTreeMap::from([(server, minimum)]))
        .await?;
    Ok(Json(json!({ "server_keys": answers })))
}
