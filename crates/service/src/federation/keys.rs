//! Other servers' signing keys: fetched from the server itself
//! (`/_matrix/key/v2/server`) or, when it cannot be reached, through the
//! configured notaries (`/_matrix/key/v2/query`), every answer checked
//! (self-signed by each key it lists, and signed by the notary), then kept in
//! the database with how long it may be trusted. Old keys stay, for old
//! events. This server answers `/_matrix/key/v2/query` as a notary too.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName, SigningKeyAlgorithm,
    serde::Base64,
    signatures::{PublicKeySet, to_canonical_json_string_for_signing, verify_canonical_json_bytes},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value as JsonValue, json};

use crate::{Result, Services, tables, utils};

/// A server that could not give its keys is not asked again for this long.
const FAILURE_BACKOFF: Duration = Duration::from_secs(30);
/// Nor is one that just gave them: a key id it did not list then is not
/// one it has (anyone can name key ids in a header or a signature).
const REFETCH_AFTER: Duration = Duration::from_secs(300);
/// Key answers are small; a megabyte is more than any real one.
const KEY_RESPONSE_LIMIT: usize = 1024 * 1024;

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct VerifyKeyRecord {
    /// The public key, unpadded base64.
    pub key: String,
    /// Until when the server said the key may be used (current keys).
    pub valid_until_ts: u64,
    /// When the key stopped being used (old keys); it still verifies what
    /// was signed before then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_ts: Option<u64>,
}

impl VerifyKeyRecord {
    /// Whether the key verifies a signature made at `ts`.
    fn valid_at(&self, ts: u64) -> bool {
        match self.expired_ts {
            Some(expired) => ts <= expired,
            None => ts <= self.valid_until_ts,
        }
    }
    /// The key, if it verifies a signature made at `ts`.
    fn key_at(&self, ts: u64) -> Option<Base64> {
        if !self.valid_at(ts) {
            return None;
        }
        let bytes = STANDARD_NO_PAD
            .decode(self.key.trim_end_matches('='))
            .ok()?;
        Some(Base64::new(bytes))
    }
}

/// Servers asked for their keys at once by [`Services::key_ring`].
const PARALLEL_KEY_FETCHES: usize = 32;

/// Verify keys of many servers held in memory (see [`Services::key_ring`]).
#[derive(Default)]
pub(crate) struct KeyRing(HashMap<(String, String), VerifyKeyRecord>);

impl KeyRing {
    /// `server`'s keys among `key_ids` that verify what was signed at `at_ts`.
    pub(crate) fn keys_at(&self, server: &str, key_ids: &[String], at_ts: u64) -> PublicKeySet {
        key_ids
            .iter()
            .filter_map(|id| {
                let record = self.0.get(&(server.to_owned(), id.clone()))?;
                Some((id.clone(), record.key_at(at_ts)?))
            })
            .collect()
    }
}

/// Per-server fetch bookkeeping: one fetch at a time per server, and a
/// pause after a failure.
#[derive(Default)]
pub struct KeyFetches {
    locks: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
    /// When each server's last fetch ended, and whether it gave keys.
    last: Mutex<HashMap<OwnedServerName, (Instant, bool)>>,
}

impl KeyFetches {
    fn lock_for(&self, server: &ServerName) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = utils::locked(&self.locks);
        if locks.len() > 1024 {
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        locks.entry(server.to_owned()).or_default().clone()
    }

    /// Whether the server was asked too recently to be asked again.
    fn recently_asked(&self, server: &ServerName) -> bool {
        utils::locked(&self.last)
            .get(server)
            .is_some_and(|(at, ok)| {
                at.elapsed() < if *ok { REFETCH_AFTER } else { FAILURE_BACKOFF }
            })
    }

    fn record(&self, server: &ServerName, ok: bool) {
        let mut last = utils::locked(&self.last);
        if last.len() > 10_000 {
            last.retain(|_, (at, ok)| {
                at.elapsed() < if *ok { REFETCH_AFTER } else { FAILURE_BACKOFF }
            });
        }
        last.insert(server.to_owned(), (Instant::now(), ok));
    }
}

/// Whether `object` carries a valid signature of `entity` with `key_id`.
pub fn signed_by(object: &CanonicalJsonObject, entity: &str, key_id: &str, key: &str) -> bool {
    let Some(CanonicalJsonValue::String(signature)) = object
        .get("signatures")
        .and_then(|s| s.as_object())
        .and_then(|s| s.get(entity))
        .and_then(|s| s.as_object())
        .and_then(|s| s.get(key_id))
    else {
        return false;
    };
    let (Ok(signature), Ok(key)) = (
        Base64::<ruma::serde::base64::Standard>::parse(signature),
        STANDARD_NO_PAD.decode(key.trim_end_matches('=')),
    ) else {
        return false;
    };
    let Ok(canonical) = to_canonical_json_string_for_signing(object) else {
        return false;
    };
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        &key,
        signature.as_bytes(),
        canonical.as_bytes(),
    )
    .is_ok()
}

/// Checks a server's key answer for `server`: its name, and a valid
/// self-signature by every key in `verify_keys`. Returns the keys it lists.
pub fn check_key_response(
    server: &ServerName,
    response: &JsonValue,
) -> Result<Vec<(String, VerifyKeyRecord)>, String> {
    let object: CanonicalJsonObject = serde_json::from_value(response.clone())
        .map_err(|e| format!("key answer is not canonical JSON: {e}"))?;
    if response.get("server_name").and_then(JsonValue::as_str) != Some(server.as_str()) {
        return Err("key answer names another server".into());
    }
    let valid_until_ts = response
        .get("valid_until_ts")
        .and_then(JsonValue::as_u64)
        .ok_or("key answer without valid_until_ts")?;
    let mut keys = Vec::new();
    let verify_keys = response
        .get("verify_keys")
        .and_then(JsonValue::as_object)
        .ok_or("key answer without verify_keys")?;
    for (key_id, value) in verify_keys {
        let key = value
            .get("key")
            .and_then(JsonValue::as_str)
            .ok_or("verify key without key")?;
        if !key_id.starts_with("ed25519:") {
            continue;
        }
        if !signed_by(&object, server.as_str(), key_id, key) {
            return Err(format!("key answer not signed by its key {key_id}"));
        }
        keys.push((
            key_id.clone(),
            VerifyKeyRecord {
                key: key.to_owned(),
                valid_until_ts,
                expired_ts: None,
            },
        ));
    }
    if keys.is_empty() {
        return Err("key answer lists no ed25519 key".into());
    }
    if let Some(old) = response
        .get("old_verify_keys")
        .and_then(JsonValue::as_object)
    {
        for (key_id, value) in old {
            let (Some(key), Some(expired)) = (
                value.get("key").and_then(JsonValue::as_str),
                value.get("expired_ts").and_then(JsonValue::as_u64),
            ) else {
                continue;
            };
            keys.push((
                key_id.clone(),
                VerifyKeyRecord {
                    key: key.to_owned(),
                    valid_until_ts: expired,
                    expired_ts: Some(expired),
                },
            ));
        }
    }
    Ok(keys)
}

impl Services {
    /// The keys of `server` among `key_ids` that verify what was signed at
    /// `at_ts`, fetching what the database lacks.
    pub async fn server_verify_keys(
        &self,
        server: &ServerName,
        key_ids: &[String],
        at_ts: u64,
    ) -> Result<PublicKeySet> {
        if server == self.config.server_name {
            let mut own = PublicKeySet::new();
            let key_id = self.server_keys.key_id();
            if key_ids.contains(&key_id) {
                let key = STANDARD_NO_PAD
                    .decode(self.server_keys.public_key_base64())
                    .map_err(crate::Error::internal)?;
                own.insert(key_id, Base64::new(key));
            }
            return Ok(own);
        }
        let mut found = self.stored_keys(server, key_ids, at_ts)?;
        if found.len() < key_ids.len() && !self.federation.key_fetches.recently_asked(server) {
            let lock = self.federation.key_fetches.lock_for(server);
            let _guard = lock.lock().await;
            // Another request may have fetched them while this one waited.
            found = self.stored_keys(server, key_ids, at_ts)?;
            if found.len() < key_ids.len() {
                let ok = self.fetch_server_keys(server).await;
                self.federation.key_fetches.record(server, ok);
                found = self.stored_keys(server, key_ids, at_ts)?;
            }
        }
        Ok(found)
    }

    fn stored_keys(
        &self,
        server: &ServerName,
        key_ids: &[String],
        at_ts: u64,
    ) -> Result<PublicKeySet> {
        let mut found = PublicKeySet::new();
        for key_id in key_ids {
            if let Some(record) = self
                .db
                .get(&tables::SERVER_KEYS, (server.as_str(), key_id.as_str()))?
                && let Some(key) = record.key_at(at_ts)
            {
                found.insert(key_id.clone(), key);
            }
        }
        Ok(found)
    }

    /// The keys `wanted` names, fetched where the database has none (many
    /// servers at once, [`PARALLEL_KEY_FETCHES`] at a time) and then read
    /// into memory: thousands of events from hundreds of servers (a join's
    /// state) are checked without a request or a read per event.
    pub(crate) async fn key_ring(
        &self,
        wanted: &BTreeMap<OwnedServerName, BTreeSet<String>>,
    ) -> Result<KeyRing> {
        let permits = tokio::sync::Semaphore::new(PARALLEL_KEY_FETCHES);
        let fetches = wanted.iter().map(|(server, key_ids)| {
            let permits = &permits;
            async move {
                let key_ids: Vec<String> = key_ids.iter().cloned().collect();
                if self.stored_keys(server, &key_ids, 0)?.len() == key_ids.len() {
                    return Ok(());
                }
                let _permit = permits.acquire().await.map_err(crate::Error::internal)?;
                self.server_verify_keys(server, &key_ids, 0)
                    .await
                    .map(|_| ())
            }
        });
        for outcome in utils::join_all(fetches).await {
            outcome?;
        }
        let mut ring = KeyRing::default();
        // This server's own key is not among those stored.
        ring.0.insert(
            (
                self.config.server_name.to_string(),
                self.server_keys.key_id(),
            ),
            VerifyKeyRecord {
                key: self.server_keys.public_key_base64(),
                valid_until_ts: u64::MAX,
                expired_ts: None,
            },
        );
        for (server, key_ids) in wanted {
            for key_id in key_ids {
                if let Some(record) = self
                    .db
                    .get(&tables::SERVER_KEYS, (server.as_str(), key_id.as_str()))?
                {
                    ring.0.insert((server.to_string(), key_id.clone()), record);
                }
            }
        }
        Ok(ring)
    }

    /// Fetches `server`'s keys, from itself first, then from the notaries.
    /// Whether any answer was had.
    async fn fetch_server_keys(&self, server: &ServerName) -> bool {
        match self.fetch_keys_directly(server).await {
            Ok(()) => return true,
            Err(e) => tracing::info!(%server, "cannot fetch keys from the server itself: {e}"),
        }
        for notary in self.config.trusted_servers.clone() {
            if notary == self.config.server_name || notary == server {
                continue;
            }
            match self.fetch_keys_via_notary(&notary, server).await {
                Ok(()) => return true,
                Err(e) => tracing::info!(%server, %notary, "notary could not vouch: {e}"),
            }
        }
        false
    }

    async fn fetch_keys_directly(&self, server: &ServerName) -> Result<(), String> {
        let response = self
            .federation_get_unsigned(server, "/_matrix/key/v2/server", KEY_RESPONSE_LIMIT)
            .await
            .map_err(|e| e.to_string())?;
        let keys = check_key_response(server, &response)?;
        self.store_keys(server, &keys, &response)
            .map_err(|e| e.to_string())
    }

    async fn fetch_keys_via_notary(
        &self,
        notary: &ServerName,
        server: &ServerName,
    ) -> Result<(), String> {
        // The notary's own key comes from the notary itself.
        let notary_keys = match self.stored_any_keys(notary) {
            Some(keys) => keys,
            None => {
                self.fetch_keys_directly(notary).await?;
                self.stored_any_keys(notary)
                    .ok_or("the notary has no valid key")?
            }
        };
        let body = json!({ "server_keys": { server.as_str(): {} } });
        let answer = self
            .federation_request(
                notary,
                http::Method::POST,
                "/_matrix/key/v2/query",
                Some(&body),
                KEY_RESPONSE_LIMIT * 4,
            )
            .await
            .map_err(|e| e.to_string())?;
        let responses = answer
            .get("server_keys")
            .and_then(JsonValue::as_array)
            .ok_or("notary answer without server_keys")?;
        for response in responses {
            if response.get("server_name").and_then(JsonValue::as_str) != Some(server.as_str()) {
                continue;
            }
            let keys = check_key_response(server, response)?;
            let object: CanonicalJsonObject = serde_json::from_value(response.clone())
                .map_err(|e| format!("notary answer is not canonical JSON: {e}"))?;
            if !notary_keys
                .iter()
                .any(|(id, key)| signed_by(&object, notary.as_str(), id, key))
            {
                return Err("the answer is not signed by the notary".into());
            }
            self.store_keys(server, &keys, response)
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        Err("the notary has no keys for the server".into())
    }

    /// A server's current keys as stored, if any is still valid.
    fn stored_any_keys(&self, server: &ServerName) -> Option<Vec<(String, String)>> {
        let prefix =
            conduit_storage::KeyPrefix::new().push::<conduit_storage::Str>(server.as_str());
        let now = utils::now_ms();
        let keys: Vec<(String, String)> = self
            .db
            .scan_prefix(&tables::SERVER_KEYS, &prefix)
            .ok()?
            .filter_map(|row| row.ok())
            .filter(|(_, record)| record.expired_ts.is_none() && record.valid_until_ts >= now)
            .map(|((_, key_id), record)| (key_id, record.key))
            .collect();
        (!keys.is_empty()).then_some(keys)
    }

    fn store_keys(
        &self,
        server: &ServerName,
        keys: &[(String, VerifyKeyRecord)],
        response: &JsonValue,
    ) -> Result<()> {
        let mut batch = self.db.batch();
        for (key_id, record) in keys {
            // A key once seen as old stays old, whatever a later answer says.
            let stored = self
                .db
                .get(&tables::SERVER_KEYS, (server.as_str(), key_id.as_str()))?;
            if stored.is_some_and(|s| s.expired_ts.is_some() && record.expired_ts.is_none()) {
                continue;
            }
            batch.put(
                &tables::SERVER_KEYS,
                (server.as_str(), key_id.as_str()),
                record,
            )?;
        }
        let newer = self
            .db
            .get(&tables::SERVER_KEY_RESPONSES, server.as_str())?
            .and_then(|old| old.get("valid_until_ts").and_then(JsonValue::as_u64))
            .is_none_or(|old| {
                response.get("valid_until_ts").and_then(JsonValue::as_u64) >= Some(old)
            });
        if newer {
            batch.put(&tables::SERVER_KEY_RESPONSES, server.as_str(), response)?;
        }
        self.db.write(batch)?;
        tracing::debug!(%server, keys = keys.len(), "stored server keys");
        Ok(())
    }

    /// The notary answer for `server`, whose keys must be valid until at
    /// least `minimum_valid_until_ts`: the server's own signed answer with
    /// our signature added; `None` when it cannot be had.
    pub async fn notary_answer(
        &self,
        server: &ServerName,
        minimum_valid_until_ts: u64,
    ) -> Result<Option<JsonValue>> {
        if server == self.config.server_name {
            return Ok(Some(self.server_keys.key_response()?));
        }
        let fresh = |answer: &Option<JsonValue>| {
            answer
                .as_ref()
                .and_then(|a| a.get("valid_until_ts").and_then(JsonValue::as_u64))
                .is_some_and(|ts| ts >= minimum_valid_until_ts)
        };
        let mut stored = self
            .db
            .get(&tables::SERVER_KEY_RESPONSES, server.as_str())?;
        if !fresh(&stored)
            && self.config.federates_with(server)
            && !self.federation.key_fetches.recently_asked(server)
        {
            let lock = self.federation.key_fetches.lock_for(server);
            let _guard = lock.lock().await;
            let ok = self.fetch_keys_directly(server).await;
            if let Err(e) = &ok {
                tracing::info!(%server, "notary: cannot fetch keys: {e}");
            }
            self.federation.key_fetches.record(server, ok.is_ok());
            stored = self
                .db
                .get(&tables::SERVER_KEY_RESPONSES, server.as_str())?;
        }
        // A stale answer is still served when nothing newer can be had: the
        // asker checks `valid_until_ts` itself.
        let Some(answer) = stored else {
            return Ok(None);
        };
        let CanonicalJsonValue::Object(mut object) =
            CanonicalJsonValue::try_from(answer).map_err(crate::Error::internal)?
        else {
            return Ok(None);
        };
        self.server_keys.sign(&mut object)?;
        Ok(Some(
            serde_json::to_value(object).map_err(crate::Error::internal)?,
        ))
    }

    /// Answers `/_matrix/key/v2/query`: for each server asked about, its
    /// answer if it can be had.
    pub async fn notary_query(
        &self,
        servers: &BTreeMap<OwnedServerName, u64>,
    ) -> Result<Vec<JsonValue>> {
        let mut answers = Vec::new();
        for (server, minimum) in servers.iter().take(100) {
            if let Some(answer) = self.notary_answer(server, *minimum).await? {
                answers.push(answer);
            }
        }
        Ok(answers)
    }
}

#[cfg(test)]
mod tests {
    use ruma::{server_name, signatures::Ed25519KeyPair};

    use super::*;

    /// A key answer for `server`, signed by a fresh key.
    fn signed_answer(server: &str) -> (JsonValue, String) {
        let document = Ed25519KeyPair::generate();
        let key = Ed25519KeyPair::from_der(&document, "k1".into()).unwrap();
        let public = STANDARD_NO_PAD.encode(key.public_key());
        let body = json!({
            "server_name": server,
            "valid_until_ts": 4_000_000_000_000u64,
            "verify_keys": { "ed25519:k1": { "key": public } },
            "old_verify_keys": { "ed25519:old": { "key": "AAAA", "expired_ts": 5 } },
        });
        let CanonicalJsonValue::Object(mut object) = CanonicalJsonValue::try_from(body).unwrap()
        else {
            unreachable!()
        };
        ruma::signatures::sign_json(server, &key, &mut object).unwrap();
        (serde_json::to_value(object).unwrap(), public)
    }

    #[test]
    fn a_self_signed_answer_gives_its_keys_and_old_keys() {
        let (answer, public) = signed_answer("example.org");
        let keys = check_key_response(server_name!("example.org"), &answer).unwrap();
        let current = keys.iter().find(|(id, _)| id == "ed25519:k1").unwrap();
        assert_eq!(current.1.key, public);
        assert!(current.1.valid_at(4_000_000_000_000) && !current.1.valid_at(4_000_000_000_001));
        let old = keys.iter().find(|(id, _)| id == "ed25519:old").unwrap();
        assert!(
            old.1.valid_at(5) && !old.1.valid_at(6),
            "old keys verify what came before"
        );
    }

    #[test]
    fn tampered_or_misnamed_answers_are_refused() {
        let (answer, _) = signed_answer("example.org");
        assert!(check_key_response(server_name!("other.org"), &answer).is_err());
        let mut tampered = answer.clone();
        tampered["valid_until_ts"] = 4_000_000_000_001u64.into();
        assert!(check_key_response(server_name!("example.org"), &tampered).is_err());
        let mut unsigned = answer;
        unsigned.as_object_mut().unwrap().remove("signatures");
        assert!(check_key_response(server_name!("example.org"), &unsigned).is_err());
    }
}
