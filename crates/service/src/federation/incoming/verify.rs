//! Step 2 of a received PDU: the signatures of the servers that must have
//! signed it (the sender's; the event id's before v3; the authorising
//! server of a restricted join), with keys valid when it was sent, and its
//! content hash. A wrong hash does not refuse the event: it is kept
//! redacted, as the spec says.

use ruma::{
    CanonicalJsonValue,
    room_version_rules::RoomVersionRules,
    signatures::{
        PublicKeyMap, Verified, required_server_signatures_to_verify_event, verify_event,
    },
};

use super::parse::Parsed;
use crate::{Error, Result, Services};

impl Services {
    /// Checks signatures and hash; redacts the event when only the hash is
    /// wrong. Whether it was redacted.
    pub(crate) async fn verify_pdu(
        &self,
        parsed: &mut Parsed,
        rules: &RoomVersionRules,
    ) -> Result<bool> {
        let servers = required_server_signatures_to_verify_event(&parsed.object, &rules.signatures)
            .map_err(|e| Error::bad_json(format!("Cannot tell who must sign the event: {e}")))?;
        let at = if rules.enforce_key_validity {
            parsed.origin_server_ts()
        } else {
            0
        };
        let mut keys = PublicKeyMap::new();
        for server in servers {
            let key_ids: Vec<String> = match parsed
                .object
                .get("signatures")
                .and_then(CanonicalJsonValue::as_object)
                .and_then(|s| s.get(server.as_str()))
                .and_then(CanonicalJsonValue::as_object)
            {
                Some(signatures) => signatures.keys().cloned().collect(),
                None => {
                    return Err(Error::forbidden(format!(
                        "The event is not signed by {server}."
                    )));
                }
            };
            let found = self.server_verify_keys(&server, &key_ids, at).await?;
            keys.insert(server.to_string(), found);
        }
        // The event id is part of what v1/v2 events sign.
        let verified = verify_event(&keys, &parsed.object, rules)
            .map_err(|e| Error::forbidden(format!("Signature check failed: {e}")))?;
        match verified {
            Verified::All => Ok(false),
            Verified::Signatures => {
                tracing::info!(
                    event_id = parsed.event_id,
                    "content hash mismatch: keeping the event redacted"
                );
                let redacted =
                    ruma::canonical_json::redact(parsed.object.clone(), &rules.redaction, None)
                        .map_err(|e| Error::bad_json(format!("Cannot redact the event: {e}")))?;
                parsed.object = redacted;
                Ok(true)
            }
        }
    }
}
