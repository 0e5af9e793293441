//! End-to-end encryption, the server's side: the server never sees a
//! plaintext, it keeps and hands out what clients need to encrypt for each
//! other.
//!
//! - `keys`: device identity keys, one-time and fallback keys (upload,
//!   query, claim);
//! - `cross_signing`: master, self-signing and user-signing keys and the
//!   signatures made with them;
//! - `device_lists`: who must learn that someone's keys changed (`/sync`'s
//!   `device_lists`, `/keys/changes`, `m.device_list_update` EDUs);
//! - `to_device`: messages to devices, kept until the device's next sync
//!   acknowledges them;
//! - `remote`: the same for users of other servers, over federation;
//! - `backup`: server-side key backup (`/room_keys`);
//! - `dehydrated`: a device kept on the server while its owner is offline
//!   (MSC3814).
//!
//! Keys are stored as the clients signed them (JSON), so signatures stay
//! verifiable by anyone, and checked before they are stored.

pub mod backup;
pub mod cross_signing;
pub mod dehydrated;
pub mod device_lists;
pub mod keys;
pub mod remote;
pub mod to_device;

#[cfg(test)]
mod tests;

use base64::Engine;
use serde_json::Value as JsonValue;

/// Whether `object` carries a valid ed25519 signature of `signer` under
/// `key_id` (`ed25519:...`), made by `public_key` (unpadded base64).
pub(crate) fn signed_by(object: &JsonValue, signer: &str, key_id: &str, public_key: &str) -> bool {
    let Some(signature) = object
        .get("signatures")
        .and_then(|s| s.get(signer))
        .and_then(|s| s.get(key_id))
        .and_then(JsonValue::as_str)
    else {
        return false;
    };
    let (Some(signature), Some(public_key)) = (decode_base64(signature), decode_base64(public_key))
    else {
        return false;
    };
    let Ok(ruma::CanonicalJsonValue::Object(canonical)) =
        ruma::CanonicalJsonValue::try_from(object.clone())
    else {
        return false;
    };
    let Ok(signed) = ruma::signatures::to_canonical_json_string_for_signing(&canonical) else {
        return false;
    };
    ruma::signatures::verify_canonical_json_bytes(
        &ruma::SigningKeyAlgorithm::Ed25519,
        &public_key,
        &signature,
        signed.as_bytes(),
    )
    .is_ok()
}

/// Unpadded (or padded) standard base64, as keys and signatures are written.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

/// Copies every signature of `from` into `into` (both signed objects).
pub(crate) fn merge_signatures(into: &mut JsonValue, from: &JsonValue) {
    let Some(theirs) = from.get("signatures").and_then(JsonValue::as_object) else {
        return;
    };
    if !into.get("signatures").is_some_and(JsonValue::is_object) {
        into["signatures"] = serde_json::json!({});
    }
    for (signer, keys) in theirs {
        let Some(keys) = keys.as_object() else {
            continue;
        };
        let ours = &mut into["signatures"][signer];
        if !ours.is_object() {
            *ours = serde_json::json!({});
        }
        for (key_id, signature) in keys {
            ours[key_id] = signature.clone();
        }
    }
}

/// An object without its `signatures` and `unsigned`: what a signature
/// covers, to tell whether two uploads are the same key.
pub(crate) fn signed_part(object: &JsonValue) -> JsonValue {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    object
}

#[cfg(test)]
pub(crate) mod test_keys {
    //! Signed key objects for tests, made with a real ed25519 key.
    use base64::Engine;
    use ruma::signatures::Ed25519KeyPair;
    use serde_json::Value as JsonValue;

    pub struct TestKey {
        pair: Ed25519KeyPair,
    }

    impl TestKey {
        pub fn new() -> Self {
            let der = Ed25519KeyPair::generate();
            Self {
                pair: Ed25519KeyPair::from_der(&der, "x".into()).unwrap(),
            }
        }

        pub fn public(&self) -> String {
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.pair.public_key())
        }

        /// Signs `object` as `signer` under `key_id`.
        pub fn sign(&self, signer: &str, key_id: &str, object: &mut JsonValue) {
            let canonical = match ruma::CanonicalJsonValue::try_from(object.clone()).unwrap() {
                ruma::CanonicalJsonValue::Object(o) => o,
                _ => unreachable!(),
            };
            let text = ruma::signatures::to_canonical_json_string_for_signing(&canonical).unwrap();
            let signature = ruma::signatures::KeyPair::sign(&self.pair, text.as_bytes());
            let encoded =
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(signature.as_bytes());
            if !object["signatures"].is_object() {
                object["signatures"] = serde_json::json!({});
            }
            if !object["signatures"][signer].is_object() {
                object["signatures"][signer] = serde_json::json!({});
            }
            object["signatures"][signer][key_id] = encoded.into();
        }
    }

    #[test]
    fn a_signature_verifies_and_a_changed_object_does_not() {
        let key = TestKey::new();
        let mut object = serde_json::json!({ "a": 1, "unsigned": { "x": 2 } });
        key.sign("@u:x", "ed25519:D", &mut object);
        assert!(super::signed_by(
            &object,
            "@u:x",
            "ed25519:D",
            &key.public()
        ));
        // `unsigned` is outside the signature.
        object["unsigned"]["x"] = 3.into();
        assert!(super::signed_by(
            &object,
            "@u:x",
            "ed25519:D",
            &key.public()
        ));
        object["a"] = 2.into();
        assert!(!super::signed_by(
            &object,
            "@u:x",
            "ed25519:D",
            &key.public()
        ));
        assert!(!super::signed_by(
            &object,
            "@u:x",
            "ed25519:E",
            &key.public()
        ));
    }
}
