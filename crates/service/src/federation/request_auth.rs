//! Inbound server-server requests: the `X-Matrix` signature checked against
//! the origin's key (fetched and cached), the destination checked, the body
//! included. Anything else is `401 M_UNAUTHORIZED`.

use ruma::{CanonicalJsonValue, OwnedServerName};
use serde_json::Value as JsonValue;

use super::{
    keys::signed_by,
    x_matrix::{XMatrix, request_object},
};
use crate::{Error, ErrorCode, Result, Services, utils};

fn unauthorized(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::Unauthorized, message)
}

impl Services {
    /// The origin of a signed request: `authorizations` are its
    /// `Authorization` header values, `uri` the path and query as sent.
    pub async fn verify_federation_request(
        &self,
        method: &str,
        uri: &str,
        authorizations: &[&str],
        body: Option<&JsonValue>,
    ) -> Result<OwnedServerName> {
        let headers: Vec<XMatrix> = authorizations
            .iter()
            .filter_map(|h| XMatrix::parse(h))
            .collect();
        let Some(first) = headers.first() else {
            return Err(unauthorized("Missing or malformed X-Matrix authorization."));
        };
        if headers.iter().any(|h| h.origin != first.origin) {
            return Err(unauthorized(
                "X-Matrix authorizations of different origins.",
            ));
        }
        let origin = first.origin.clone();
        if !self.config.federates_with(&origin) {
            return Err(Error::forbidden(format!(
                "This server does not federate with {origin}."
            )));
        }
        let ours = self.config.server_name.as_str();
        for header in &headers {
            if let Some(destination) = &header.destination
                && destination.as_str() != ours
            {
                return Err(unauthorized(format!(
                    "The request is meant for {destination}, not this server."
                )));
            }
        }
        let mut object = request_object(method, uri, origin.as_str(), ours, body)
            .map_err(|e| Error::bad_json(format!("The body is not canonical JSON: {e}")))?;
        let key_ids: Vec<String> = headers.iter().map(|h| h.key.clone()).collect();
        let keys = self
            .server_verify_keys(&origin, &key_ids, utils::now_ms())
            .await?;
        let mut verified = false;
        for header in &headers {
            let Some(key) = keys.get(&header.key) else {
                continue;
            };
            let mut signatures = ruma::CanonicalJsonObject::new();
            let mut by_origin = ruma::CanonicalJsonObject::new();
            by_origin.insert(
                header.key.clone(),
                CanonicalJsonValue::String(header.sig.clone()),
            );
            signatures.insert(origin.to_string(), CanonicalJsonValue::Object(by_origin));
            object.insert("signatures".into(), CanonicalJsonValue::Object(signatures));
            if signed_by(&object, origin.as_str(), &header.key, &key.encode()) {
                verified = true;
                break;
            }
        }
        if !verified {
            return Err(unauthorized(format!(
                "The request's signature does not verify with {origin}'s keys."
            )));
        }
        // A server that talks to us is up: what waits for it goes now.
        self.federation.sender.server_is_back(&origin);
        Ok(origin)
    }
}
