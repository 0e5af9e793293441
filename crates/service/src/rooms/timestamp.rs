//! `timestamp_to_event`: the event of a room closest to a time, for the
//! client API (`/v1/rooms/{roomId}/timestamp_to_event`) and for other
//! servers (`/federation/v1/timestamp_to_event/{roomId}`). The timeline is
//! ordered by position, and times grow with positions (near enough: other
//! servers' clocks differ), so a binary search over positions finds the
//! spot in a few dozen reads whatever the room's size.

use super::{pdu::Pdu, timeline::RoomRecord};
use crate::{Result, Services};

/// Events looked at around the spot the search found, for the one that
/// passes the caller's check (history visibility).
const LOOK_AROUND: usize = 50;

impl Services {
    /// The first event at or after `ts` (`forward`), or the last at or
    /// before it, among those `may_see` lets through.
    pub fn event_at_timestamp(
        &self,
        room: &RoomRecord,
        ts: u64,
        forward: bool,
        may_see: impl Fn(&Pdu) -> Result<bool>,
    ) -> Result<Option<Pdu>> {
        let first_at = |position: u64| -> Result<Option<(u64, Pdu)>> {
            let Some(&(count, short)) = self.rooms.page(room.short, position, true, 1)?.first()
            else {
                return Ok(None);
            };
            Ok(self
                .rooms
                .pdu(short, &self.short_ids)?
                .map(|pdu| (count, pdu)))
        };
        let Some((first, _)) = first_at(0)? else {
            return Ok(None);
        };
        let Some(&(last, _)) = self.rooms.page(room.short, u64::MAX, false, 1)?.first() else {
            return Ok(None);
        };
        // The lowest position whose first event is at `threshold` or later:
        // forward pages from there, backward pages below it (`ts` included).
        let threshold = if forward { ts } else { ts.saturating_add(1) };
        let (mut low, mut high) = (first, last + 1);
        while low < high {
            let middle = low + (high - low) / 2;
            match first_at(middle)? {
                Some((_, pdu)) if pdu.origin_server_ts < threshold => low = middle + 1,
                _ => high = middle,
            }
        }
        let rows = self.rooms.page(room.short, low, forward, LOOK_AROUND)?;
        for (_, short) in rows {
            let Some(pdu) = self.rooms.pdu(short, &self.short_ids)? else {
                continue;
            };
            let on_side = if forward {
                pdu.origin_server_ts >= ts
            } else {
                pdu.origin_server_ts <= ts
            };
            if on_side && may_see(&pdu)? {
                return Ok(Some(pdu));
            }
        }
        Ok(None)
    }
}
