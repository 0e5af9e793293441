//! Setting and removing pushers (`POST /pushers/set`), listing them, and
//! dropping them with the device that set them.

use std::sync::Arc;

use conduit_storage::{Batch, KeyPrefix, U64};
use ruma::UserId;
use serde_json::{Map, Value as JsonValue};

use super::PusherRecord;
use crate::{Error, ErrorCode, Result, Services, tables, utils};

/// The spec's limits.
const MAX_APP_ID_CHARS: usize = 64;
const MAX_PUSHKEY_BYTES: usize = 512;
/// The only path a gateway serves pushes on.
const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// A checked `POST /pushers/set` body.
#[derive(Debug, PartialEq)]
pub enum PusherChange {
    Delete {
        app_id: String,
        pushkey: String,
    },
    Set {
        /// The pusher as it is stored and listed.
        pusher: JsonValue,
        append: bool,
    },
}

fn text<'a>(body: &'a Map<String, JsonValue>, name: &str) -> Result<Option<&'a str>> {
    match body.get(name) {
        None | Some(JsonValue::Null) => Ok(None),
        Some(JsonValue::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::bad_json(format!("`{name}` must be a string."))),
    }
}

/// Reads a `POST /pushers/set` body as the spec (and Synapse) check it.
/// `permitted_host` says whether the gateway URL's host may be reached.
pub fn parse_pusher_change(
    body: &Map<String, JsonValue>,
    permitted_host: impl Fn(&url::Url) -> Result<(), &'static str>,
) -> Result<PusherChange> {
    let missing = |names: &[&str]| {
        Error::new(
            ErrorCode::MissingParam,
            format!("Missing params: {}.", names.join(", ")),
        )
    };
    let app_id = text(body, "app_id")?;
    let pushkey = text(body, "pushkey")?;
    let (Some(app_id), Some(pushkey), true) = (app_id, pushkey, body.contains_key("kind")) else {
        let absent = [
            ("kind", !body.contains_key("kind")),
            ("app_id", app_id.is_none()),
            ("pushkey", pushkey.is_none()),
        ];
        let names: Vec<&str> = absent.iter().filter(|(_, a)| *a).map(|(n, _)| *n).collect();
        return Err(missing(&names));
    };
    if app_id.chars().count() > MAX_APP_ID_CHARS {
        return Err(Error::invalid_param(
            "`app_id` is longer than 64 characters.",
        ));
    }
    if pushkey.len() > MAX_PUSHKEY_BYTES {
        return Err(Error::invalid_param("`pushkey` is longer than 512 bytes."));
    }
    let Some(kind) = text(body, "kind")? else {
        return Ok(PusherChange::Delete {
            app_id: app_id.to_owned(),
            pushkey: pushkey.to_owned(),
        });
    };
    match kind {
        "http" => {}
        "email" => {
            return Err(Error::new(
                ErrorCode::Unrecognized,
                "This server sends no email: email pushers are not supported.",
            )
            .with_status(400));
        }
        other => {
            return Err(Error::invalid_param(format!(
                "`{other}` is not a pusher kind this server knows (only `http`)."
            )));
        }
    }
    let absent: Vec<&str> = ["app_display_name", "device_display_name", "lang", "data"]
        .into_iter()
        .filter(|n| body.get(*n).is_none_or(JsonValue::is_null))
        .collect();
    if !absent.is_empty() {
        return Err(missing(&absent));
    }
    for name in [
        "app_display_name",
        "device_display_name",
        "lang",
        "profile_tag",
    ] {
        text(body, name)?;
    }
    let data = body
        .get("data")
        .and_then(JsonValue::as_object)
        .ok_or_else(|| Error::bad_json("`data` must be an object."))?;
    let url = text(data, "url")?.ok_or_else(|| missing(&["data.url"]))?;
    let parsed = url::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| Error::invalid_param("`data.url` must be an http or https URL."))?;
    if parsed.path() != NOTIFY_PATH {
        return Err(Error::invalid_param(format!(
            "`data.url` must have the path {NOTIFY_PATH}."
        )));
    }
    permitted_host(&parsed).map_err(|why| {
        Error::invalid_param(format!("This server does not push to that gateway: {why}."))
    })?;
    match text(data, "format")? {
        None | Some("event_id_only") => {}
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "`{other}` is not a push format (only `event_id_only`)."
            )));
        }
    }
    let append = match body.get("append") {
        None | Some(JsonValue::Null) => false,
        Some(JsonValue::Bool(b)) => *b,
        Some(_) => return Err(Error::bad_json("`append` must be a boolean.")),
    };
    let mut pusher = Map::new();
    for name in [
        "kind",
        "app_id",
        "pushkey",
        "app_display_name",
        "device_display_name",
        "profile_tag",
        "lang",
        "data",
    ] {
        if let Some(value) = body.get(name).filter(|v| !v.is_null()) {
            pusher.insert(name.to_owned(), value.clone());
        }
    }
    Ok(PusherChange::Set {
        pusher: pusher.into(),
        append,
    })
}

impl Services {
    /// `GET /pushers`: the user's pushers as they were set.
    pub fn pushers_of(&self, user_id: &UserId) -> Vec<JsonValue> {
        self.pushers
            .of_user(user_id)
            .iter()
            .map(|r| r.pusher.clone())
            .collect()
    }

    /// `POST /pushers/set` from `device_id`.
    pub fn set_pusher(
        &self,
        user_id: &UserId,
        device_id: Option<&str>,
        body: &Map<String, JsonValue>,
    ) -> Result<()> {
        let policy = self.config.ip_policy().map_err(Error::internal)?;
        let change = parse_pusher_change(body, |url| policy.check_url_host(url))?;
        // One change at a time: the registry and the table move together.
        let mut registry = utils::locked(&self.pushers.registry);
        let same = |r: &PusherRecord, app_id: &str, pushkey: &str| {
            r.app_id() == app_id && r.pushkey() == pushkey
        };
        let (pusher, append) = match change {
            PusherChange::Delete { app_id, pushkey } => {
                let gone: Vec<Arc<PusherRecord>> = registry
                    .by_id
                    .values()
                    .filter(|r| r.user == user_id.as_str() && same(r, &app_id, &pushkey))
                    .cloned()
                    .collect();
                let mut batch = self.db.batch();
                for record in &gone {
                    self.delete_pusher_into(&mut batch, record)?;
                }
                self.db.write(batch)?;
                for record in gone {
                    registry.remove(record.id);
                    tracing::info!(%user_id, app_id, "pusher removed");
                }
                return Ok(());
            }
            PusherChange::Set { pusher, append } => (pusher, append),
        };
        let record = PusherRecord {
            id: 0,
            user: user_id.to_string(),
            device_id: device_id.map(str::to_owned),
            updated_ms: utils::now_ms(),
            pusher,
        };
        let (app_id, pushkey) = (record.app_id().to_owned(), record.pushkey().to_owned());
        let existing = registry
            .by_id
            .values()
            .find(|r| r.user == record.user && same(r, &app_id, &pushkey))
            .cloned();
        // Without `append`, the pushkey is this user's alone from now on.
        let others: Vec<Arc<PusherRecord>> = match append {
            true => Vec::new(),
            false => registry
                .by_id
                .values()
                .filter(|r| r.user != record.user && same(r, &app_id, &pushkey))
                .cloned()
                .collect(),
        };
        let mut batch = self.db.batch();
        for other in &others {
            self.delete_pusher_into(&mut batch, other)?;
        }
        let user = record.user.clone();
        let key = (user.as_str(), app_id.as_str(), pushkey.as_str());
        let stored = match existing {
            // An update keeps its id (and queue) and the device that set it.
            Some(old) => {
                let record = PusherRecord {
                    id: old.id,
                    device_id: old.device_id.clone(),
                    ..record
                };
                batch.put(&tables::PUSHERS, key, &record)?;
                self.db.write(batch)?;
                record
            }
            None => {
                let mut stored = None;
                self.pushers.ids.write_next(
                    &self.db,
                    batch,
                    |batch, id| {
                        let record = PusherRecord {
                            id,
                            ..record.clone()
                        };
                        batch.put(&tables::PUSHERS, key, &record)?;
                        stored = Some(record);
                        Ok(())
                    },
                    |_| {},
                )?;
                stored.ok_or_else(|| Error::internal("no pusher id"))?
            }
        };
        for other in others {
            registry.remove(other.id);
            tracing::info!(
                user_id = other.user,
                app_id,
                "pusher taken over by another user"
            );
        }
        tracing::info!(%user_id, app_id, gateway = stored.url(), "pusher set");
        registry.insert(stored);
        Ok(())
    }

    /// Deletes a pusher's row and its queue in `batch`.
    fn delete_pusher_into(&self, batch: &mut Batch<'_>, record: &PusherRecord) -> Result<()> {
        batch.delete(
            &tables::PUSHERS,
            (record.user.as_str(), record.app_id(), record.pushkey()),
        )?;
        let prefix = KeyPrefix::new().push::<U64>(record.id);
        for row in self.db.scan_prefix(&tables::PUSH_QUEUE, &prefix)? {
            let (key, _) = row?;
            batch.delete(&tables::PUSH_QUEUE, key)?;
        }
        Ok(())
    }

    /// Deletes the user's pushers `which` picks, in a batch of their own.
    pub(crate) fn remove_pushers(
        &self,
        user_id: &UserId,
        which: impl Fn(&PusherRecord) -> bool,
    ) -> Result<()> {
        let mut registry = utils::locked(&self.pushers.registry);
        let gone: Vec<Arc<PusherRecord>> = registry
            .by_user
            .get(user_id.as_str())
            .into_iter()
            .flatten()
            .filter_map(|id| registry.by_id.get(id))
            .filter(|r| which(r))
            .cloned()
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let mut batch = self.db.batch();
        for record in &gone {
            self.delete_pusher_into(&mut batch, record)?;
        }
        self.db.write(batch)?;
        for record in gone {
            registry.remove(record.id);
            tracing::info!(%user_id, app_id = record.app_id(), "pusher removed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: JsonValue) -> Result<PusherChange> {
        parse_pusher_change(body.as_object().unwrap(), |_| Ok(()))
    }

    fn errcode(body: JsonValue) -> &'static str {
        match parse(body) {
            Err(Error::Matrix { code, .. }) => code.as_str(),
            other => panic!("accepted: {other:?}"),
        }
    }

    fn http(url: &str) -> JsonValue {
        json!({
            "kind": "http", "app_id": "org.example.app", "pushkey": "KEY",
            "app_display_name": "App", "device_display_name": "Phone", "lang": "en",
            "data": { "url": url, "format": "event_id_only" },
        })
    }

    #[test]
    fn a_good_pusher_is_kept_as_sent() {
        let body = http("https://push.example.org/_matrix/push/v1/notify");
        match parse(body.clone()).unwrap() {
            PusherChange::Set { pusher, append } => {
                assert_eq!(pusher, body);
                assert!(!append);
            }
            other => panic!("{other:?}"),
        }
        let delete = json!({ "kind": null, "app_id": "a", "pushkey": "k" });
        assert_eq!(
            parse(delete).unwrap(),
            PusherChange::Delete {
                app_id: "a".into(),
                pushkey: "k".into()
            }
        );
    }

    #[test]
    fn bad_pushers_get_the_right_error() {
        assert_eq!(
            errcode(json!({ "app_id": "a", "pushkey": "k" })),
            "M_MISSING_PARAM"
        );
        let mut no_lang = http("https://push.example.org/_matrix/push/v1/notify");
        no_lang.as_object_mut().unwrap().remove("lang");
        assert_eq!(errcode(no_lang), "M_MISSING_PARAM");
        assert_eq!(
            errcode(http("https://push.example.org/notify")),
            "M_INVALID_PARAM"
        );
        assert_eq!(
            errcode(http("ftp://push.example.org/_matrix/push/v1/notify")),
            "M_INVALID_PARAM"
        );
        let mut email = http("x");
        email["kind"] = "email".into();
        assert_eq!(errcode(email), "M_UNRECOGNIZED");
        let mut long = http("https://push.example.org/_matrix/push/v1/notify");
        long["app_id"] = "a".repeat(65).into();
        assert_eq!(errcode(long), "M_INVALID_PARAM");
        let mut format = http("https://push.example.org/_matrix/push/v1/notify");
        format["data"]["format"] = "full".into();
        assert_eq!(errcode(format), "M_INVALID_PARAM");
        let denied = parse_pusher_change(
            http("http://127.0.0.1/_matrix/push/v1/notify")
                .as_object()
                .unwrap(),
            |_| Err("the address is in a denied range"),
        );
        assert!(matches!(
            denied,
            Err(Error::Matrix {
                code: ErrorCode::InvalidParam,
                ..
            })
        ));
    }
}
