//! The third-party lookups of the client API (`/thirdparty/*`), answered by
//! the appservices that bridge each protocol (their registration's
//! `protocols`): a passthrough to their `/_matrix/app/v1/thirdparty/*`.

use serde_json::{Map, Value as JsonValue};

use super::Appservice;
use crate::{Error, Result, Services};

impl Services {
    /// `GET /thirdparty/protocols`: each bridged protocol's description, as
    /// the first of its appservices that answers gives it.
    pub async fn thirdparty_protocols(&self) -> Map<String, JsonValue> {
        let registry = self.appservices.registry();
        let mut protocols = Map::new();
        for appservice in registry.all() {
            for protocol in &appservice.registration.protocols {
                if protocols.contains_key(protocol) {
                    continue;
                }
                if let Some(info) = self
                    .ask_thirdparty(appservice, &format!("protocol/{}", encode(protocol)), None)
                    .await
                {
                    protocols.insert(protocol.clone(), info);
                }
            }
        }
        protocols
    }

    /// `GET /thirdparty/protocol/{protocol}`.
    pub async fn thirdparty_protocol(&self, protocol: &str) -> Result<JsonValue> {
        self.thirdparty_protocols()
            .await
            .remove(protocol)
            .ok_or_else(|| Error::not_found("No bridge here speaks this protocol."))
    }

    /// `GET /thirdparty/{location,user}/{protocol}` (with `protocol`) and
    /// `GET /thirdparty/{location,user}` (without): every answer of the
    /// appservices asked, one list.
    pub async fn thirdparty_lookup(
        &self,
        kind: &str,
        protocol: Option<&str>,
        query: Option<&str>,
    ) -> Result<Vec<JsonValue>> {
        let registry = self.appservices.registry();
        let asked: Vec<_> = registry
            .all()
            .iter()
            .filter(|a| protocol.is_none_or(|p| a.registration.protocols.iter().any(|q| q == p)))
            .collect();
        if protocol.is_some() && asked.is_empty() {
            return Err(Error::not_found("No bridge here speaks this protocol."));
        }
        let path = match protocol {
            Some(protocol) => format!("{kind}/{}", encode(protocol)),
            None => kind.to_owned(),
        };
        let mut found = Vec::new();
        for appservice in asked {
            if let Some(JsonValue::Array(list)) =
                self.ask_thirdparty(appservice, &path, query).await
            {
                found.extend(list);
            }
        }
        Ok(found)
    }

    /// One appservice's answer, `None` when it gave none (down, an error,
    /// not JSON): a lookup lists what the others found.
    async fn ask_thirdparty(
        &self,
        appservice: &Appservice,
        path: &str,
        query: Option<&str>,
    ) -> Option<JsonValue> {
        let path = match query {
            Some(query) if !query.is_empty() => {
                format!("/_matrix/app/v1/thirdparty/{path}?{query}")
            }
            _ => format!("/_matrix/app/v1/thirdparty/{path}"),
        };
        match self
            .call_appservice(appservice, http::Method::GET, &path, None)
            .await
        {
            Ok((status, answer)) if status.is_success() && !answer.is_null() => Some(answer),
            Ok((status, _)) => {
                tracing::debug!(appservice = appservice.id(), path, %status, "third-party lookup refused");
                None
            }
            Err(reason) => {
                tracing::info!(
                    appservice = appservice.id(),
                    path,
                    "third-party lookup failed: {reason}"
                );
                None
            }
        }
    }
}

fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}
