//! History from before this server joined: when `/messages` pages back
//! past the room's earliest local event and that event's prev events are
//! missing, a server in the room is asked for them (`/backfill`). Each
//! event is verified and checked like any other, gets the state before it
//! (from `/state` at the gap, then event by event), and takes a timeline
//! position below the room's earliest one.

use serde_json::Value as JsonValue;

use super::incoming::{dag::Placement, outliers::urlencode, parse::Parsed};
use crate::{Result, Services};

/// Events asked for per backfill request.
const BACKFILL_BATCH: usize = 50;

impl Services {
    /// Backfills the room if a backward page of `limit` events from
    /// `from` would run out of local history. Failures only mean a
    /// shorter page: they are logged, not returned.
    pub async fn backfill_if_needed(&self, room_id: &str, from: Option<u64>, limit: usize) {
        if let Err(e) = self.try_backfill(room_id, from, limit).await {
            tracing::info!(room_id, "backfill failed: {e}");
        }
    }

    async fn try_backfill(&self, room_id: &str, from: Option<u64>, limit: usize) -> Result<()> {
        let Some(record) = self.rooms.room(room_id)? else {
            return Ok(());
        };
        let local = self
            .rooms
            .page(record.short, from.unwrap_or(u64::MAX), false, limit)?;
        if local.len() >= limit {
            return Ok(());
        }
        let Some(missing) = self.missing_history(record.short)? else {
            return Ok(());
        };
        let room = self.room_context(room_id)?;
        let servers = self.servers_in_room(&record)?;
        let query: String = missing
            .iter()
            .map(|id| format!("&v={}", urlencode(id)))
            .collect();
        for server in servers.iter() {
            let path = format!(
                "/_matrix/federation/v1/backfill/{}?limit={}{query}",
                urlencode(room_id),
                BACKFILL_BATCH.max(limit).min(100)
            );
            let answer = match self
                .federation_request(server, http::Method::GET, &path, None, 32 << 20)
                .await
            {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::info!(%server, room_id, "backfill request failed: {e}");
                    continue;
                }
            };
            let pdus = answer
                .get("pdus")
                .and_then(JsonValue::as_array)
                .cloned()
                .unwrap_or_default();
            let mut batch: Vec<Parsed> = Vec::new();
            for raw in pdus.iter().take(100) {
                match self.parse_and_verify(&room, raw).await {
                    Ok(parsed) => {
                        if !self.is_placed(&parsed.event_id)?
                            && !batch.iter().any(|p| p.event_id == parsed.event_id)
                        {
                            batch.push(parsed);
                        }
                    }
                    Err(e) => tracing::info!(%server, "backfilled event refused: {e}"),
                }
            }
            if batch.is_empty() {
                continue;
            }
            // Oldest first, each taking a position below the room's
            // earliest one, in order.
            batch.sort_by_key(|p| match p.object.get("depth") {
                Some(ruma::CanonicalJsonValue::Integer(d)) => i64::from(*d),
                _ => 0,
            });
            let _lock = self.rooms.lock(record.short).await;
            let Some(&(first, _)) = self.rooms.page(record.short, 0, true, 1)?.first() else {
                return Ok(());
            };
            let room_left = usize::try_from(first).unwrap_or(usize::MAX);
            if batch.len() > room_left {
                // An old database has few positions below its first events.
                batch.drain(..batch.len() - room_left);
            }
            let base = first - batch.len() as u64;
            let mut taken = 0;
            for (i, parsed) in batch.into_iter().enumerate() {
                let count = base + i as u64;
                match self
                    .place_in_dag(server, &room, parsed, Placement::Backfill { count })
                    .await
                {
                    Ok(_) => taken += 1,
                    Err(e) => tracing::info!(%server, "backfilled event not placed: {e}"),
                }
            }
            tracing::info!(room_id, %server, events = taken, "backfilled history");
            return Ok(());
        }
        Ok(())
    }

    /// The missing prev events of the room's earliest local event: `None`
    /// when the room's history is whole here (it starts with its create
    /// event, or nothing is missing).
    fn missing_history(&self, room: u64) -> Result<Option<Vec<String>>> {
        let Some(&(_, first)) = self.rooms.page(room, 0, true, 1)?.first() else {
            return Ok(None);
        };
        let Some(pdu) = self.rooms.pdu(first, &self.short_ids)? else {
            return Ok(None);
        };
        let mut missing = Vec::new();
        for &prev in &pdu.prev_events {
            if self.rooms.meta(prev)?.is_none()
                && let Some(id) = self.short_ids.event_id(prev)?
            {
                missing.push(id);
            }
        }
        Ok((!missing.is_empty()).then_some(missing))
    }
}
