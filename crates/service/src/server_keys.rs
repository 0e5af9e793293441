//! The server's ed25519 signing key: made on first start, kept in the
//! database, used to sign PDUs and the key server response.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use conduit_storage::Database;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, ServerName,
    signatures::{Ed25519KeyPair, sign_json},
};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;

use crate::{Error, Result, tables, utils};

/// How long other servers may cache our key response.
const KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The key as stored: its version (the part after `ed25519:`) and the
/// PKCS#8 document of the private key, in unpadded base64.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct StoredKey {
    pub version: String,
    pub pkcs8: String,
}

pub struct ServerKeys {
    server_name: ruma::OwnedServerName,
    key_pair: Ed25519KeyPair,
}

impl ServerKeys {
    /// Loads the signing key, or makes and stores one on first start.
    pub(crate) fn load_or_create(db: &Arc<Database>, server_name: &ServerName) -> Result<Self> {
        let stored = match db.get(&tables::GLOBAL_JSON, "signing_key")? {
            Some(value) => serde_json::from_value::<StoredKey>(value).map_err(Error::internal)?,
            None => {
                let document = Ed25519KeyPair::generate();
                let key = StoredKey {
                    version: format!("a_{}", utils::random_string(4)),
                    pkcs8: STANDARD_NO_PAD.encode(document.as_slice()),
                };
                let value = serde_json::to_value(&key).map_err(Error::internal)?;
                let mut batch = db.batch();
                batch.put(&tables::GLOBAL_JSON, "signing_key", &value)?;
                db.write(batch)?;
                tracing::info!(key_id = %format!("ed25519:{}", key.version), "created the server signing key");
                key
            }
        };
        let document = STANDARD_NO_PAD
            .decode(&stored.pkcs8)
            .map_err(Error::internal)?;
        let key_pair =
            Ed25519KeyPair::from_der(&document, stored.version).map_err(Error::internal)?;
        Ok(Self {
            server_name: server_name.to_owned(),
            key_pair,
        })
    }

    /// `ed25519:<version>`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.key_pair.version())
    }

    pub fn public_key_base64(&self) -> String {
        STANDARD_NO_PAD.encode(self.key_pair.public_key())
    }

    /// Adds the content hash and this server's signature to a new PDU.
    pub fn hash_and_sign_event(
        &self,
        object: &mut CanonicalJsonObject,
        rules: &ruma::room_version_rules::RedactionRules,
    ) -> Result<()> {
        ruma::signatures::hash_and_sign_event(
            self.server_name.as_str(),
            &self.key_pair,
            object,
            rules,
        )
        .map_err(Error::internal)
    }

    /// Adds this server's signature to another server's event (an invite
    /// of one of our users), leaving its hashes as they are.
    pub fn sign_event(
        &self,
        object: &mut CanonicalJsonObject,
        rules: &ruma::room_version_rules::RedactionRules,
    ) -> Result<()> {
        ruma::signatures::sign_event(self.server_name.as_str(), &self.key_pair, object, rules)
            .map_err(Error::internal)
    }

    /// This server's signature of `text` (canonical JSON made by the
    /// caller), unpadded base64.
    pub fn sign_text(&self, text: &str) -> String {
        use ruma::signatures::KeyPair;
        self.key_pair.sign(text.as_bytes()).base64()
    }

    /// Adds this server's signature to a JSON object.
    pub fn sign(&self, object: &mut CanonicalJsonObject) -> Result<()> {
        sign_json(self.server_name.as_str(), &self.key_pair, object).map_err(Error::internal)
    }

    /// The signed body of `GET /_matrix/key/v2/server`.
    pub fn key_response(&self) -> Result<JsonValue> {
        let valid_until = utils::now_ms() + KEY_VALIDITY.as_millis() as u64;
        let body = serde_json::json!({
            "server_name": self.server_name,
            "valid_until_ts": valid_until,
            "verify_keys": { self.key_id(): { "key": self.public_key_base64() } },
            "old_verify_keys": {},
        });
        let mut object = match CanonicalJsonValue::try_from(body).map_err(Error::internal)? {
            CanonicalJsonValue::Object(object) => object,
            _ => return Err(Error::internal("key response is not an object")),
        };
        self.sign(&mut object)?;
        serde_json::to_value(object).map_err(Error::internal)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ruma::{server_name, signatures::verify_json};

    use super::*;

    #[test]
    fn key_is_kept_and_the_response_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path(), tables::ALL, 1 << 20).unwrap());
        let first = ServerKeys::load_or_create(&db, server_name!("example.org")).unwrap();
        let again = ServerKeys::load_or_create(&db, server_name!("example.org")).unwrap();
        assert_eq!(first.key_id(), again.key_id());
        assert_eq!(first.public_key_base64(), again.public_key_base64());

        let response = first.key_response().unwrap();
        let object: CanonicalJsonObject = serde_json::from_value(response.clone()).unwrap();
        let key = STANDARD_NO_PAD.decode(first.public_key_base64()).unwrap();
        let mut keys = BTreeMap::new();
        keys.insert(
            "example.org".to_owned(),
            BTreeMap::from([(first.key_id(), ruma::serde::Base64::new(key))]),
        );
        verify_json(&keys, &object).expect("our own signature verifies");
        assert_eq!(response["server_name"], "example.org");
    }
}
