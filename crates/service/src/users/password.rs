//! Password hashing with Argon2id, off the async threads (a hash takes tens
//! of milliseconds by design).

use std::sync::OnceLock;

use tokio::sync::Semaphore;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::{Error, Result};

/// Verifies against a real hash that matches nothing, so a login for a user
/// who does not exist costs the same time as one with a wrong password.
pub async fn verify_nothing(password: String) {
    static DUMMY_HASH: OnceLock<String> = OnceLock::new();
    let hash = match DUMMY_HASH.get() {
        Some(hash) => hash.clone(),
        None => {
            let Ok(hash) = self::hash(crate::utils::random_string(32)).await else {
                return;
            };
            DUMMY_HASH.get_or_init(|| hash).clone()
        }
    };
    verify(password, hash).await;
}

/// Hashes at a time, at most: each takes ~19 MiB and a core for tens of
/// milliseconds, so a flood of logins waits here instead of exhausting memory.
fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Semaphore::new(cores.max(2))
    })
}

pub async fn hash(password: String) -> Result<String> {
    let _permit = permits().acquire().await.map_err(Error::internal)?;
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(Error::internal)
    })
    .await
    .map_err(Error::internal)?
}

pub async fn verify(password: String, hash: String) -> bool {
    let Ok(_permit) = permits().acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse".into(), h.clone()).await);
        assert!(!verify("wrong".into(), h).await);
        assert!(!verify("x".into(), "not a hash".into()).await);
    }
}
