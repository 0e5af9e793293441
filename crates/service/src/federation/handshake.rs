//! The two-step membership handshake with a room's server, shared by
//! joins, leaves and knocks: `make_{join,leave,knock}` for a template, the
//! template checked, filled (origin, time, our content), hashed and signed
//! here, then `send_{join,leave,knock}`.

use ruma::{CanonicalJsonValue, ServerName, UserId};
use serde_json::{Map, Value as JsonValue};

use super::{incoming::outliers::urlencode, join::supported_versions};
use crate::{Error, ErrorCode, Result, Services, utils};

/// A membership event made from a server's template and signed by us.
pub(crate) struct SignedMembership {
    pub version: String,
    pub event_id: String,
    pub event: JsonValue,
}

impl Services {
    /// `GET /make_{membership}` on `server` and our signed event from its
    /// template; `content` is added to the template's content.
    pub(crate) async fn make_membership(
        &self,
        server: &ServerName,
        room_id: &str,
        user: &UserId,
        membership: &str,
        content: Map<String, JsonValue>,
    ) -> Result<SignedMembership> {
        // Joins and knocks say which room versions we take part in.
        let versions = match membership {
            "leave" => String::new(),
            _ => {
                let list: Vec<String> = supported_versions().map(|v| format!("ver={v}")).collect();
                format!("?{}", list.join("&"))
            }
        };
        let path = format!(
            "/_matrix/federation/v1/make_{membership}/{}/{}{versions}",
            urlencode(room_id),
            urlencode(user.as_str()),
        );
        let template = self
            .federation_request(server, http::Method::GET, &path, None, 1 << 20)
            .await
            .map_err(|e| e.into_client_error(server))?;
        let version = template
            .get("room_version")
            .and_then(JsonValue::as_str)
            .unwrap_or("1")
            .to_owned();
        let (_, rules) = crate::rooms::send::version_rules(&version).map_err(|_| {
            Error::new(
                ErrorCode::IncompatibleRoomVersion,
                format!("The room's version {version} is not supported by this server."),
            )
        })?;
        let mut event = template
            .get("event")
            .and_then(JsonValue::as_object)
            .cloned()
            .ok_or_else(|| Error::bad_json(format!("{server} sent no {membership} template.")))?;
        let text = |key: &str| event.get(key).and_then(JsonValue::as_str);
        if text("type") != Some("m.room.member")
            || text("state_key") != Some(user.as_str())
            || text("sender") != Some(user.as_str())
            || text("room_id") != Some(room_id)
        {
            return Err(Error::bad_json(format!(
                "{server} sent a {membership} template for something else."
            )));
        }
        for key in ["event_id", "signatures", "hashes", "unsigned"] {
            event.remove(key);
        }
        event.insert("origin".into(), self.config.server_name.as_str().into());
        event.insert("origin_server_ts".into(), utils::now_ms().into());
        let mut merged = event
            .get("content")
            .and_then(JsonValue::as_object)
            .cloned()
            .unwrap_or_default();
        merged.extend(content);
        merged.insert("membership".into(), membership.into());
        event.insert("content".into(), JsonValue::Object(merged));
        if rules.event_format.require_event_id {
            event.insert(
                "event_id".into(),
                format!("${}:{}", utils::random_string(18), self.config.server_name).into(),
            );
        }
        let CanonicalJsonValue::Object(mut object) =
            CanonicalJsonValue::try_from(JsonValue::Object(event))
                .map_err(|e| Error::bad_json(format!("Bad {membership} template: {e}")))?
        else {
            return Err(Error::bad_json(format!("Bad {membership} template.")));
        };
        self.server_keys
            .hash_and_sign_event(&mut object, &rules.redaction)?;
        let event_id = match object.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => id.clone(),
            _ => format!(
                "${}",
                ruma::signatures::reference_hash(&object, &rules)
                    .map_err(|e| Error::bad_json(e.to_string()))?
            ),
        };
        Ok(SignedMembership {
            version,
            event_id,
            event: serde_json::to_value(&object).map_err(Error::internal)?,
        })
    }

    /// `PUT /{api}/send_{membership}/{roomId}/{eventId}` with the signed
    /// event; the server's answer.
    pub(crate) async fn send_membership(
        &self,
        server: &ServerName,
        room_id: &str,
        api: &str,
        membership: &str,
        signed: &SignedMembership,
        limit: usize,
    ) -> Result<Vec<u8>> {
        let path = format!(
            "/_matrix/federation/{api}/send_{membership}/{}/{}",
            urlencode(room_id),
            urlencode(&signed.event_id)
        );
        self.federation_bytes(
            server,
            http::Method::PUT,
            &path,
            Some(&signed.event),
            limit,
            true,
        )
        .await
        .map_err(|e| e.into_client_error(server))
    }
}
