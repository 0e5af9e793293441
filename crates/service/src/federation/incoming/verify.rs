//! Step 2 of a received PDU: the signatures of the servers that must have
//! signed it (the sender's; the event id's before v3; the authorising
//! server of a restricted join), with keys valid when it was sent, and its
//! content hash. A wrong hash does not refuse the event: it is kept
//! redacted, as the spec says.

use ruma::{
    CanonicalJsonValue, OwnedServerName,
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
        let at = key_time(parsed, rules);
        let mut keys = PublicKeyMap::new();
        for (server, key_ids) in signers(parsed, rules)? {
            let found = self.server_verify_keys(&server, &key_ids, at).await?;
            keys.insert(server.to_string(), found);
        }
        verify_with_keys(parsed, rules, &keys)
    }
}

/// The servers that must have signed the event, each with the key ids its
/// signature names.
pub(crate) fn signers(
    parsed: &Parsed,
    rules: &RoomVersionRules,
) -> Result<Vec<(OwnedServerName, Vec<String>)>> {
    let servers = required_server_signatures_to_verify_event(&parsed.object, &rules.signatures)
        .map_err(|e| Error::bad_json(format!("Cannot tell who must sign the event: {e}")))?;
    servers
        .into_iter()
        .map(|server| {
            match parsed
                .object
                .get("signatures")
                .and_then(CanonicalJsonValue::as_object)
                .and_then(|s| s.get(server.as_str()))
                .and_then(CanonicalJsonValue::as_object)
            {
                Some(signatures) => Ok((server, signatures.keys().cloned().collect())),
                None => Err(Error::forbidden(format!(
                    "The event is not signed by {server}."
                ))),
            }
        })
        .collect()
}

/// When the signing keys must have been valid: the event's own time where
/// the room version enforces key validity.
pub(crate) fn key_time(parsed: &Parsed, rules: &RoomVersionRules) -> u64 {
    if rules.enforce_key_validity {
        parsed.origin_server_ts()
    } else {
        0
    }
}

/// Checks signatures against `keys` and the content hash; redacts the event
/// when only the hash is wrong. Whether it was redacted.
pub(crate) fn verify_with_keys(
    parsed: &mut Parsed,
    rules: &RoomVersionRules,
    keys: &PublicKeyMap,
) -> Result<bool> {
    // The event id is part of what v1/v2 events sign.
    let verified = verify_event(keys, &parsed.object, rules)
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
