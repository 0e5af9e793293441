//! A value trusted for a while: discovery documents, a Mastodon instance's
//! endpoints, "the instance still knows our app". Asked again once stale.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::utils;

pub(super) struct Fresh<T> {
    slot: Mutex<Option<(Instant, T)>>,
    lifetime: Duration,
}

impl<T: Clone> Fresh<T> {
    pub(super) fn new(lifetime: Duration) -> Self {
        Self {
            slot: Mutex::new(None),
            lifetime,
        }
    }

    /// The value, if it was set less than `lifetime` ago.
    pub(super) fn get(&self) -> Option<T> {
        match &*utils::locked(&self.slot) {
            Some((at, value)) if at.elapsed() < self.lifetime => Some(value.clone()),
            _ => None,
        }
    }

    pub(super) fn set(&self, value: T) {
        *utils::locked(&self.slot) = Some((Instant::now(), value));
    }

    pub(super) fn clear(&self) {
        *utils::locked(&self.slot) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_go_stale() {
        let fresh = Fresh::new(Duration::from_millis(30));
        assert_eq!(fresh.get(), None);
        fresh.set(7);
        assert_eq!(fresh.get(), Some(7));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(fresh.get(), None);
        fresh.set(8);
        fresh.clear();
        assert_eq!(fresh.get(), None);
    }
}
