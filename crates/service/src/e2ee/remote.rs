//! `/keys/query` and `/keys/claim` across servers: local users are read
//! here, users of other servers are asked of their server (all servers at
//! once, each within a timeout; a server that does not answer is in
//! `failures`). A remote user's devices kept here (their server keeps us
//! told, see `device_lists`) are answered without asking.

use std::{collections::BTreeMap, time::Duration};

use ruma::{OwnedServerName, UserId};
use serde_json::{Map, Value as JsonValue, json};

use crate::{Result, Services, federation::client::DEFAULT_RESPONSE_LIMIT, tables, utils};

/// How long a server may take unless the client says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Remote users whose device lists one query starts keeping, at most
/// (each is a request; the others are asked in one batch per server).
const MAX_NEW_TRACKED: usize = 100;

/// The `failures` entry for a server that did not answer.
fn failure(error: impl std::fmt::Display) -> JsonValue {
    json!({ "status": 503, "message": error.to_string() })
}

impl Services {
    /// `POST /keys/query` for `asker` (or, with `None`, another server):
    /// `{user: [device ids]}` -> the answer's fields.
    pub async fn query_keys(
        &self,
        asker: Option<&UserId>,
        wanted: &Map<String, JsonValue>,
        timeout: Duration,
    ) -> Result<Map<String, JsonValue>> {
        let mut answer = Map::new();
        for field in [
            "device_keys",
            "master_keys",
            "self_signing_keys",
            "user_signing_keys",
        ] {
            answer.insert(field.to_owned(), json!({}));
        }
        let mut remote: BTreeMap<OwnedServerName, Map<String, JsonValue>> = BTreeMap::new();
        if asker.is_some() {
            self.start_tracking(wanted, timeout).await;
        }
        for (user, devices) in wanted {
            let Ok(user_id) = <&UserId>::try_from(user.as_str()) else {
                continue;
            };
            let devices: Vec<String> = devices
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect();
            let local = user_id.server_name() == self.config.server_name;
            // A kept list is current only while their server keeps us told,
            // that is while a room is shared.
            let kept = !local
                && self
                    .db
                    .contains(&tables::REMOTE_DEVICE_LISTS, user_id.as_str())?
                && !self.rooms.joined_rooms(user_id.as_str())?.is_empty();
            if !local && !kept {
                if asker.is_some() {
                    remote
                        .entry(user_id.server_name().to_owned())
                        .or_default()
                        .insert(user.clone(), devices.into());
                }
                continue;
            }
            if local && !self.users.exists(user_id)? {
                continue;
            }
            let keys = self.device_keys_of(user_id, &devices, asker.is_some())?;
            answer["device_keys"][user] = keys.into();
            for (field, key) in self.cross_signing_keys_for(user_id, asker)? {
                if let Some(key) = key {
                    answer[field][user] = key;
                }
            }
        }
        if remote.is_empty() {
            return Ok(answer);
        }
        let mut failures = Map::new();
        let answers = self
            .ask_servers(
                remote,
                "device_keys",
                "/_matrix/federation/v1/user/keys/query",
                timeout,
            )
            .await;
        for (server, users, result) in answers {
            let theirs = match result {
                Ok(theirs) => theirs,
                Err(error) => {
                    failures.insert(server.to_string(), failure(error));
                    continue;
                }
            };
            for user in users.keys() {
                // Only what the server says of its own users, as asked.
                if let Some(devices) = theirs.pointer_user("device_keys", user) {
                    let devices: Map<String, JsonValue> = devices
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(id, keys)| {
                            keys.get("user_id").and_then(JsonValue::as_str) == Some(user.as_str())
                                && keys.get("device_id").and_then(JsonValue::as_str)
                                    == Some(id.as_str())
                        })
                        .map(|(id, keys)| (id.clone(), keys.clone()))
                        .collect();
                    answer["device_keys"][user] = devices.into();
                }
                for (field, usage) in [
                    ("master_keys", "master"),
                    ("self_signing_keys", "self_signing"),
                ] {
                    if let Some(key) = theirs.pointer_user(field, user)
                        && let Ok(user_id) = <&UserId>::try_from(user.as_str())
                        && super::cross_signing::key_of(key, user_id, usage).is_some()
                    {
                        answer[field][user] = key.clone();
                    }
                }
            }
        }
        answer.insert("failures".to_owned(), failures.into());
        Ok(answer)
    }

    /// Fetches the device lists of the remote users in `wanted` who share a
    /// room with this server and are not kept yet (all at once, within
    /// `timeout`): from then on their server's updates keep them current
    /// and queries are answered here. Those that fail are asked the usual
    /// way by the caller.
    async fn start_tracking(&self, wanted: &Map<String, JsonValue>, timeout: Duration) {
        let mut users = Vec::new();
        for user in wanted.keys() {
            let Ok(user_id) = <&UserId>::try_from(user.as_str()) else {
                continue;
            };
            if user_id.server_name() == self.config.server_name
                || !self.config.federates_with(user_id.server_name())
                || self
                    .db
                    .contains(&tables::REMOTE_DEVICE_LISTS, user_id.as_str())
                    .unwrap_or(true)
                || self
                    .rooms
                    .joined_rooms(user_id.as_str())
                    .map_or(true, |rooms| rooms.is_empty())
            {
                continue;
            }
            users.push(user_id);
            if users.len() == MAX_NEW_TRACKED {
                break;
            }
        }
        let fetches = users.into_iter().map(|user_id| async move {
            match tokio::time::timeout(timeout, self.resync_device_list(user_id, false)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%user_id, "cannot fetch the device list: {e}"),
                Err(_) => tracing::debug!(%user_id, "fetching the device list timed out"),
            }
        });
        utils::join_all(fetches).await;
    }

    /// `POST /keys/claim`: `{user: {device: algorithm}}` -> keys, asking
    /// other servers for their users.
    pub async fn claim_keys(
        &self,
        wanted: &Map<String, JsonValue>,
        timeout: Duration,
        from_client: bool,
    ) -> Result<JsonValue> {
        let mut local = Map::new();
        let mut remote: BTreeMap<OwnedServerName, Map<String, JsonValue>> = BTreeMap::new();
        for (user, devices) in wanted {
            let Ok(user_id) = <&UserId>::try_from(user.as_str()) else {
                continue;
            };
            if user_id.server_name() == self.config.server_name {
                local.insert(user.clone(), devices.clone());
            } else if from_client {
                remote
                    .entry(user_id.server_name().to_owned())
                    .or_default()
                    .insert(user.clone(), devices.clone());
            }
        }
        let mut keys = self.claim_local_keys(&local)?;
        let mut failures = Map::new();
        let answers = self
            .ask_servers(
                remote,
                "one_time_keys",
                "/_matrix/federation/v1/user/keys/claim",
                timeout,
            )
            .await;
        for (server, users, result) in answers {
            match result {
                Ok(theirs) => {
                    for user in users.keys() {
                        if let Some(claimed) = theirs.pointer_user("one_time_keys", user) {
                            keys.insert(user.clone(), claimed.clone());
                        }
                    }
                }
                Err(error) => {
                    failures.insert(server.to_string(), failure(error));
                }
            }
        }
        Ok(json!({ "one_time_keys": keys, "failures": failures }))
    }

    /// `POST {path}` with `{field: users}` to every server at once, each
    /// within `timeout`: their answers, or why there is none.
    async fn ask_servers(
        &self,
        asks: BTreeMap<OwnedServerName, Map<String, JsonValue>>,
        field: &str,
        path: &str,
        timeout: Duration,
    ) -> Vec<(
        OwnedServerName,
        Map<String, JsonValue>,
        Result<JsonValue, String>,
    )> {
        let requests = asks.into_iter().map(|(server, users)| async move {
            let body = json!({ field: users });
            let request = self.federation_request(
                &server,
                http::Method::POST,
                path,
                Some(&body),
                DEFAULT_RESPONSE_LIMIT,
            );
            let result = match tokio::time::timeout(timeout, request).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            };
            (server, users, result)
        });
        utils::join_all(requests).await
    }

    /// `GET /user/devices/{user}` for another server.
    pub fn device_list_for_server(&self, user_id: &UserId) -> Result<JsonValue> {
        let mut devices = Vec::new();
        // Device names stay on this server (Synapse's default too).
        for (device_id, _) in self.devices.list(user_id)? {
            let mut device = json!({ "device_id": device_id });
            if let Some(keys) = self
                .db
                .get(&tables::DEVICE_KEYS, (user_id.as_str(), device_id.as_str()))?
            {
                device["keys"] = keys;
            }
            devices.push(device);
        }
        let mut answer = json!({
            "user_id": user_id,
            "stream_id": self.device_list_stream_id(user_id)?,
            "devices": devices,
        });
        for (field, key) in self.cross_signing_keys_for(user_id, None)? {
            if let Some(key) = key {
                // The federation names are singular.
                answer[field.trim_end_matches('s')] = key;
            }
        }
        Ok(answer)
    }
}

/// `answer[field][user]`.
trait PointerUser {
    fn pointer_user(&self, field: &str, user: &str) -> Option<&JsonValue>;
}

impl PointerUser for JsonValue {
    fn pointer_user(&self, field: &str, user: &str) -> Option<&JsonValue> {
        self.get(field)?.get(user)
    }
}
