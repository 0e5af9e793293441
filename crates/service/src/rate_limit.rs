//! A small fixed-window rate limiter by key (a client address), for
//! endpoints that would otherwise let anyone probe secrets quickly, such as
//! registration-token validity.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{Error, ErrorCode, Result, utils};

pub struct RateLimiter {
    per_window: u32,
    window: Duration,
    counts: Mutex<HashMap<String, (Instant, u32)>>,
}

/// Keys kept before old windows are swept, bounding memory.
const MAX_KEYS: usize = 10_000;

impl RateLimiter {
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            counts: Mutex::default(),
        }
    }

    /// Counts one request for `key`; `429 M_LIMIT_EXCEEDED` past the limit.
    pub fn check(&self, key: &str) -> Result<()> {
        let now = Instant::now();
        let mut counts = utils::locked(&self.counts);
        if counts.len() >= MAX_KEYS {
            counts.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let (start, count) = counts.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count > self.per_window {
            let wait = self.window.saturating_sub(now.duration_since(*start));
            return Err(Error::new(
                ErrorCode::LimitExceeded,
                format!("Too many requests; retry in {} ms.", wait.as_millis()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_and_window() {
        let limiter = RateLimiter::new(2, Duration::from_millis(100));
        assert!(limiter.check("a").is_ok() && limiter.check("a").is_ok());
        assert!(limiter.check("a").is_err());
        assert!(limiter.check("b").is_ok(), "keys are apart");
        std::thread::sleep(Duration::from_millis(120));
        assert!(limiter.check("a").is_ok(), "a new window");
    }
}
