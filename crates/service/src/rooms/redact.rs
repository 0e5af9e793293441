//! Redactions: send the `m.room.redaction` event, then strip the target to
//! what its room version keeps (the one redaction algorithm in
//! `crates/state-res`). The original content is gone from the database.

use conduit_state_res::{Event, power_levels::Power, redact};
use ruma::UserId;
use serde_json::json;

use super::{
    pdu::Pdu,
    send::{NewEvent, Transaction, version_rules},
};
use crate::{Error, Result, Services};

impl Services {
    pub async fn redact_event(
        &self,
        room_id: &str,
        sender: &UserId,
        target_id: &str,
        reason: Option<&str>,
        txn: Transaction<'_>,
    ) -> Result<Pdu> {
        let room = self
            .rooms
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room."))?;
        let target = self
            .rooms
            .pdu_by_id(target_id, &self.short_ids)?
            .filter(|pdu| pdu.room_id.as_deref() == Some(room_id))
            .ok_or_else(|| Error::not_found("Unknown event."))?;
        let (version, _) = version_rules(&room.version)?;

        // Anyone may redact their own events; others need the redact level.
        if target.sender != sender.as_str() {
            let power = self.room_power(&room)?;
            if power.of(sender.as_str()) < Power::Level(power.levels.redact) {
                return Err(Error::forbidden(
                    "You may only redact your own events without the redact level.",
                ));
            }
        }

        let mut content = json!({ "redacts": target_id });
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        let redaction = self
            .send_event(
                room_id,
                sender,
                NewEvent {
                    kind: "m.room.redaction",
                    state_key: None,
                    content,
                },
                Some(txn),
            )
            .await?;

        let mut stripped = redact(&target.json, version);
        stripped["unsigned"] = json!({ "redacted_because": redaction.to_client_event() });
        self.rooms.replace_pdu_json(target.short_id(), &stripped)?;
        self.federation.sender.forget_text(target.short_id());
        Ok(redaction)
    }
}
