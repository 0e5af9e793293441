//! Per-user locks: every change to a user's password, devices, tokens or
//! push rules happens under its user's lock, so a login racing a password
//! change or a refresh racing a device deletion cannot leave a token behind
//! that nothing revokes.

use std::hash::{DefaultHasher, Hash, Hasher};

use ruma::UserId;
use tokio::sync::{Mutex, MutexGuard};

/// A fixed set of mutexes; a user maps to one by hash. Two users may share
/// one (and wait for each other briefly); memory stays constant.
pub struct UserLocks {
    stripes: Box<[Mutex<()>]>,
}

impl UserLocks {
    pub(crate) fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1)).map(|_| Mutex::new(())).collect(),
        }
    }

    pub async fn lock(&self, user_id: &UserId) -> MutexGuard<'_, ()> {
        let mut hasher = DefaultHasher::new();
        user_id.hash(&mut hasher);
        let stripe = (hasher.finish() % self.stripes.len() as u64) as usize;
        self.stripes[stripe].lock().await
    }
}
