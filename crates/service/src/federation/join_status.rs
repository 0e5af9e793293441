//! How far remote joins are: a big room's join takes seconds, and an admin
//! asking "is it stuck?" gets the phase each join is in, how many events
//! it is checking and for how long it has run (`conduit admin rooms
//! join-status`, `!admin rooms join-status`). The last few finished joins
//! stay listed with how they ended. Kept in memory only.

use std::{collections::VecDeque, sync::Mutex, time::Instant};

use crate::utils;

/// Finished joins still listed.
const FINISHED_KEPT: usize = 10;

struct Join {
    id: u64,
    room_id: String,
    server: String,
    started: Instant,
    phase: String,
    /// How it ended, and after how long.
    ended: Option<(Result<(), String>, f32)>,
}

#[derive(Default)]
pub struct JoinStatus {
    joins: Mutex<(u64, VecDeque<Join>)>,
}

impl JoinStatus {
    /// Records a join through `server` that starts now; its id.
    pub(crate) fn start(&self, room_id: &str, server: &str) -> u64 {
        let mut joins = utils::locked(&self.joins);
        joins.0 += 1;
        let id = joins.0;
        joins.1.push_back(Join {
            id,
            room_id: room_id.to_owned(),
            server: server.to_owned(),
            started: Instant::now(),
            phase: "asking for a join template (make_join)".to_owned(),
            ended: None,
        });
        id
    }

    /// A guard that ends the join as cancelled if it is dropped first (the
    /// client went away and the request's future with it).
    pub(crate) fn guard(&self, id: u64) -> EndOnDrop<'_> {
        EndOnDrop { status: self, id }
    }

    pub(crate) fn phase(&self, id: u64, phase: impl Into<String>) {
        if let Some(join) = utils::locked(&self.joins).1.iter_mut().find(|j| j.id == id) {
            join.phase = phase.into();
        }
    }

    /// Records how a join ended; only its first end counts.
    pub(crate) fn end(&self, id: u64, outcome: Result<(), String>) {
        let mut joins = utils::locked(&self.joins);
        if let Some(join) = joins.1.iter_mut().find(|j| j.id == id && j.ended.is_none()) {
            join.ended = Some((outcome, join.started.elapsed().as_secs_f32()));
        }
        while joins.1.iter().filter(|j| j.ended.is_some()).count() > FINISHED_KEPT {
            if let Some(oldest) = joins.1.iter().position(|j| j.ended.is_some()) {
                joins.1.remove(oldest);
            }
        }
    }

    /// One line per join, running ones first.
    pub fn describe(&self) -> String {
        let joins = utils::locked(&self.joins);
        let mut lines: Vec<String> = joins
            .1
            .iter()
            .filter(|j| j.ended.is_none())
            .map(|j| {
                format!(
                    "{} through {}: {} ({:.1} s so far)",
                    j.room_id,
                    j.server,
                    j.phase,
                    j.started.elapsed().as_secs_f32()
                )
            })
            .collect();
        lines.extend(joins.1.iter().rev().filter_map(|j| {
            let (outcome, seconds) = j.ended.as_ref()?;
            Some(match outcome {
                Ok(()) => format!(
                    "{} through {}: joined in {seconds:.1} s",
                    j.room_id, j.server
                ),
                Err(e) => format!(
                    "{} through {}: failed after {seconds:.1} s ({e})",
                    j.room_id, j.server
                ),
            })
        }));
        if lines.is_empty() {
            return "No remote join since the server started.".to_owned();
        }
        lines.join("\n")
    }
}

pub(crate) struct EndOnDrop<'a> {
    status: &'a JoinStatus,
    id: u64,
}

impl Drop for EndOnDrop<'_> {
    fn drop(&mut self) {
        self.status
            .end(self.id, Err("cancelled: the request went away".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_joins_show_their_phase_and_finished_ones_how_they_ended() {
        let status = JoinStatus::default();
        assert!(status.describe().starts_with("No remote join"));
        let a = status.start("!a:x", "x");
        let b = status.start("!b:y", "y");
        status.phase(a, "checking 30000 events");
        status.end(b, Err("403".into()));
        let text = status.describe();
        assert!(
            text.contains("!a:x through x: checking 30000 events"),
            "{text}"
        );
        assert!(text.contains("!b:y through y: failed after"), "{text}");
        status.end(a, Ok(()));
        status.end(a, Err("later".into()));
        assert!(status.describe().contains("!a:x through x: joined in"));
        let c = status.start("!d:w", "w");
        drop(status.guard(c));
        assert!(status.describe().contains("!d:w through w: failed after"));
        for _ in 0..20 {
            let id = status.start("!c:z", "z");
            status.end(id, Ok(()));
        }
        assert_eq!(status.describe().lines().count(), FINISHED_KEPT);
    }
}
