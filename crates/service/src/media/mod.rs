//! The media repository: files uploaded by local users (and, later, copies
//! of other servers' media), each named by an `mxc://server/mediaId` URI.
//! The bytes are files named by their hash (`store`); what the URI names —
//! the file, its type and name, who uploaded it, when — is a row of
//! `media`. Thumbnails are made once per size and method (`thumbnail`).

pub mod admin;
pub mod preview;
pub mod remote;
pub mod store;
pub mod thumbnail;

use ruma::UserId;
use serde::{Deserialize, Serialize};

use self::store::{FileStore, Stored};
use crate::{Error, ErrorCode, Result, Services, tables, utils};

/// What `media` holds for one URI.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct MediaRecord {
    /// The file; `None` while an asynchronous upload (`/create`) waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    pub size: u64,
    /// The local user who uploaded it (`None` for other servers' media).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploader: Option<String>,
    pub created_at: u64,
    /// An asynchronous upload must arrive before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_by: Option<u64>,
    /// The admin who quarantined it: it is served to nobody.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined_by: Option<String>,
}

/// How long an asynchronous upload (`/create`) may wait for its bytes.
pub const PENDING_UPLOAD_MS: u64 = 24 * 3600 * 1000;
/// Asynchronous uploads one user may have waiting at once.
pub const MAX_PENDING_UPLOADS: usize = 10;

/// What the caller knows of an upload besides its bytes.
pub struct UploadInfo<'a> {
    pub content_type: Option<&'a str>,
    pub file_name: Option<&'a str>,
}

/// Media as served: where the file is and what to say about it.
pub struct Served {
    pub record: MediaRecord,
    pub path: std::path::PathBuf,
}

fn media_id() -> String {
    utils::random_string(24)
}

/// A content type without its parameters, lower-cased: `image/png` of
/// `image/PNG; charset=x`.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The `404` of media that is not here (or not for this route).
pub fn not_found() -> Error {
    Error::not_found("Media not found.")
}

impl Services {
    pub fn media_files(&self) -> &FileStore {
        &self.media_store
    }

    /// Counts an upload of `user_id` against their rate.
    pub fn check_upload_rate(&self, user_id: &UserId) -> Result<()> {
        // Bridges registered with `rate_limited: false` upload for many.
        let registry = self.appservices.registry();
        if registry
            .all()
            .iter()
            .any(|a| a.registration.rate_limited == Some(false) && a.is_user(user_id))
        {
            return Ok(());
        }
        self.media_upload_limiter.check(user_id.as_str())
    }

    /// Records a whole uploaded file as new media of `uploader`; its
    /// `mxc://` URI.
    pub fn create_media(
        &self,
        uploader: &UserId,
        stored: &Stored,
        info: UploadInfo<'_>,
    ) -> Result<String> {
        let id = media_id();
        let record = MediaRecord {
            sha256: Some(stored.sha256.clone()),
            content_type: info.content_type.map(str::to_owned),
            file_name: info.file_name.map(str::to_owned),
            size: stored.size,
            uploader: Some(uploader.to_string()),
            created_at: utils::now_ms(),
            upload_by: None,
            quarantined_by: None,
        };
        self.put_media(self.config.server_name.as_str(), &id, &record)?;
        Ok(format!("mxc://{}/{id}", self.config.server_name))
    }

    fn put_media(&self, server: &str, id: &str, record: &MediaRecord) -> Result<()> {
        let mut batch = self.db.batch();
        batch.put(&tables::MEDIA, (server, id), record)?;
        if let Some(uploader) = &record.uploader {
            batch.put(
                &tables::USER_MEDIA,
                (uploader.as_str(), record.created_at, id),
                &true,
            )?;
        }
        if let Some(sha256) = &record.sha256 {
            batch.put(
                &tables::MEDIA_FILE_REFS,
                (sha256.as_str(), server, id),
                &true,
            )?;
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// `POST /_matrix/media/v1/create`: a URI whose bytes come later; its
    /// deadline. A user has at most [`MAX_PENDING_UPLOADS`] waiting.
    pub async fn create_pending_media(&self, uploader: &UserId) -> Result<(String, u64)> {
        let _lock = self.user_locks.lock(uploader).await;
        let now = utils::now_ms();
        let waiting = self
            .db
            .scan_prefix(
                &tables::PENDING_UPLOADS,
                &conduit_storage::KeyPrefix::new().push::<conduit_storage::Str>(uploader.as_str()),
            )?
            .filter(|row| matches!(row, Ok((_, by)) if *by > now))
            .count();
        if waiting >= MAX_PENDING_UPLOADS {
            return Err(Error::new(
                ErrorCode::LimitExceeded,
                "Too many uploads are waiting for their files.",
            ));
        }
        let id = media_id();
        let upload_by = now + PENDING_UPLOAD_MS;
        let record = MediaRecord {
            sha256: None,
            content_type: None,
            file_name: None,
            size: 0,
            uploader: Some(uploader.to_string()),
            created_at: now,
            upload_by: Some(upload_by),
            quarantined_by: None,
        };
        let mut batch = self.db.batch();
        batch.put(
            &tables::MEDIA,
            (self.config.server_name.as_str(), id.as_str()),
            &record,
        )?;
        batch.put(
            &tables::PENDING_UPLOADS,
            (uploader.as_str(), id.as_str()),
            upload_by,
        )?;
        batch.put(
            &tables::USER_MEDIA,
            (uploader.as_str(), now, id.as_str()),
            &true,
        )?;
        self.db.write(batch)?;
        Ok((format!("mxc://{}/{id}", self.config.server_name), upload_by))
    }

    /// Starts the hourly removal of asynchronous uploads whose file never
    /// came.
    pub fn start_media_pruner(self: &std::sync::Arc<Self>) {
        self.every(
            std::time::Duration::from_secs(3600),
            "pruning expired uploads",
            Self::prune_expired_uploads,
        );
    }

    /// Deletes the `/create` media whose deadline passed without a file.
    pub(crate) fn prune_expired_uploads(&self) -> Result<()> {
        let now = utils::now_ms();
        let server = self.config.server_name.as_str();
        let mut batch = self.db.batch();
        let mut pruned = 0;
        for row in self
            .db
            .scan_prefix(&tables::PENDING_UPLOADS, &conduit_storage::KeyPrefix::new())?
        {
            let ((uploader, id), upload_by) = row?;
            if upload_by > now {
                continue;
            }
            batch.delete(&tables::PENDING_UPLOADS, (uploader.as_str(), id.as_str()))?;
            if let Some(record) = self.db.get(&tables::MEDIA, (server, id.as_str()))?
                && record.sha256.is_none()
            {
                batch.delete(&tables::MEDIA, (server, id.as_str()))?;
                batch.delete(
                    &tables::USER_MEDIA,
                    (uploader.as_str(), record.created_at, id.as_str()),
                )?;
                pruned += 1;
            }
        }
        self.db.write(batch)?;
        if pruned > 0 {
            tracing::info!(pruned, "removed uploads whose file never came");
        }
        Ok(())
    }

    /// Whether `uploader` may send the bytes of pending media `id` now:
    /// theirs, still waiting, not expired (checked before reading a body).
    pub fn check_pending_upload(&self, uploader: &UserId, server: &str, id: &str) -> Result<()> {
        if server != self.config.server_name.as_str() {
            return Err(Error::forbidden(
                "Media of other servers cannot be uploaded here.",
            ));
        }
        let record = self
            .db
            .get(&tables::MEDIA, (server, id))?
            .ok_or_else(not_found)?;
        if record.uploader.as_deref() != Some(uploader.as_str()) {
            return Err(Error::forbidden("This media ID is someone else's."));
        }
        if record.sha256.is_some() {
            return Err(Error::new(
                ErrorCode::CannotOverwriteMedia,
                "This media already has its file.",
            )
            .with_status(409));
        }
        if record.upload_by.is_some_and(|by| by <= utils::now_ms()) {
            return Err(Error::not_found("The upload expired."));
        }
        Ok(())
    }

    /// `PUT /_matrix/media/v3/upload/{server}/{id}`: the file of pending media.
    pub async fn complete_pending_media(
        &self,
        uploader: &UserId,
        server: &str,
        id: &str,
        stored: &Stored,
        info: UploadInfo<'_>,
    ) -> Result<()> {
        let _lock = self.user_locks.lock(uploader).await;
        self.check_pending_upload(uploader, server, id)?;
        let mut record = self
            .db
            .get(&tables::MEDIA, (server, id))?
            .ok_or_else(not_found)?;
        record.sha256 = Some(stored.sha256.clone());
        record.size = stored.size;
        record.content_type = info.content_type.map(str::to_owned);
        record.file_name = info.file_name.map(str::to_owned);
        record.upload_by = None;
        let mut batch = self.db.batch();
        batch.delete(&tables::PENDING_UPLOADS, (uploader.as_str(), id))?;
        batch.put(&tables::MEDIA, (server, id), &record)?;
        batch.put(
            &tables::MEDIA_FILE_REFS,
            (stored.sha256.as_str(), server, id),
            &true,
        )?;
        self.db.write(batch)?;
        Ok(())
    }

    /// Local media with its file, for a download. Pending media is `404`
    /// (the spec's `M_NOT_YET_UPLOADED` once the client asks to wait is
    /// not offered: downloads do not wait).
    pub fn local_media(&self, server: &str, id: &str) -> Result<Served> {
        let record = self
            .db
            .get(&tables::MEDIA, (server, id))?
            .ok_or_else(not_found)?;
        if record.quarantined_by.is_some() {
            return Err(not_found());
        }
        let Some(sha256) = &record.sha256 else {
            return Err(Error::new(
                ErrorCode::NotYetUploaded,
                "The file of this media has not been uploaded yet.",
            )
            .with_status(504));
        };
        let path = self.media_store.path(sha256);
        Ok(Served { record, path })
    }

    /// Media for the old unauthenticated routes: only what was uploaded
    /// before `unauthenticated_media_before` (Synapse's freeze).
    pub fn legacy_media(&self, server: &str, id: &str) -> Result<Served> {
        let served = self.local_media(server, id)?;
        if served.record.created_at >= self.config.unauthenticated_media_before {
            return Err(not_found());
        }
        Ok(served)
    }

    /// Whether `sha256` is the file of some media or thumbnail (at start,
    /// to find files a crash left without a row).
    pub(crate) fn media_file_is_referenced(&self, sha256: &str) -> bool {
        let prefix = conduit_storage::KeyPrefix::new().push::<conduit_storage::Str>(sha256);
        self.db
            .scan_prefix(&tables::MEDIA_FILE_REFS, &prefix)
            .map(|mut rows| rows.next().is_some())
            .unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use ruma::user_id;

    use crate::{Config, Services, tables};

    #[tokio::test]
    async fn uploads_whose_file_never_came_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load(None).unwrap().config;
        config.database_path = dir.path().to_owned();
        let s = Services::open(config).unwrap();
        let alice = user_id!("@alice:localhost");
        let (uri, _) = s.create_pending_media(alice).await.unwrap();
        let id = uri.rsplit('/').next().unwrap().to_owned();
        s.prune_expired_uploads().unwrap();
        assert!(s.media_record("localhost", &id).is_ok(), "not expired yet");
        // Its deadline passes.
        let mut batch = s.db.batch();
        batch
            .put(&tables::PENDING_UPLOADS, (alice.as_str(), id.as_str()), 1)
            .unwrap();
        s.db.write(batch).unwrap();
        s.prune_expired_uploads().unwrap();
        assert!(s.media_record("localhost", &id).is_err());
        assert_eq!(s.user_media(alice, 0, 10).unwrap().1, 0);
    }
}
