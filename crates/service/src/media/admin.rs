//! What admins do with media (the CLI, `!admin` and the Synapse admin
//! API share these): look at it, list a user's uploads, quarantine (the
//! media stays but is served to nobody) and delete (its thumbnails too;
//! the file goes once nothing else uses it).

use conduit_storage::{KeyPrefix, Str};
use ruma::UserId;

use super::{MediaRecord, not_found};
use crate::{Result, Services, tables};

/// One user's upload, for listings.
pub struct UserMedia {
    pub media_id: String,
    pub record: MediaRecord,
}

impl Services {
    pub fn media_record(&self, server: &str, id: &str) -> Result<MediaRecord> {
        self.db
            .get(&tables::MEDIA, (server, id))?
            .ok_or_else(not_found)
    }

    /// Quarantines media (`by`: the admin) or lifts it (`None`).
    pub fn set_media_quarantine(&self, server: &str, id: &str, by: Option<&str>) -> Result<()> {
        let mut record = self.media_record(server, id)?;
        record.quarantined_by = by.map(str::to_owned);
        let mut batch = self.db.batch();
        batch.put(&tables::MEDIA, (server, id), &record)?;
        self.db.write(batch)?;
        Ok(())
    }

    /// Deletes media, its thumbnails, and the files nothing else uses.
    pub fn delete_media(&self, server: &str, id: &str) -> Result<()> {
        let record = self.media_record(server, id)?;
        let mut batch = self.db.batch();
        let mut files = Vec::new();
        batch.delete(&tables::MEDIA, (server, id))?;
        if let Some(uploader) = &record.uploader {
            batch.delete(
                &tables::USER_MEDIA,
                (uploader.as_str(), record.created_at, id),
            )?;
            batch.delete(&tables::PENDING_UPLOADS, (uploader.as_str(), id))?;
        }
        if let Some(sha256) = &record.sha256 {
            batch.delete(&tables::MEDIA_FILE_REFS, (sha256.as_str(), server, id))?;
            files.push(sha256.clone());
        }
        let prefix = KeyPrefix::new().push::<Str>(server).push::<Str>(id);
        for row in self.db.scan_prefix(&tables::THUMBNAILS, &prefix)? {
            let ((_, _, spec), thumbnail) = row?;
            batch.delete(&tables::THUMBNAILS, (server, id, spec.as_str()))?;
            let reference = format!("{id}/{spec}");
            batch.delete(
                &tables::MEDIA_FILE_REFS,
                (thumbnail.sha256.as_str(), server, reference.as_str()),
            )?;
            files.push(thumbnail.sha256);
        }
        self.db.write(batch)?;
        for sha256 in files {
            if !self.media_file_is_referenced(&sha256) {
                self.media_store.remove(&sha256)?;
            }
        }
        tracing::info!(server, id, "media deleted");
        Ok(())
    }

    /// A user's uploads, newest first, `limit` from `from`; and how many
    /// there are.
    pub fn user_media(
        &self,
        user_id: &UserId,
        from: usize,
        limit: usize,
    ) -> Result<(Vec<UserMedia>, usize)> {
        let prefix = KeyPrefix::new().push::<Str>(user_id.as_str());
        let ids: Vec<String> = self
            .db
            .scan_prefix(&tables::USER_MEDIA, &prefix)?
            .map(|row| row.map(|((_, _, id), _)| id))
            .collect::<Result<_, _>>()?;
        let total = ids.len();
        let server = self.config.server_name.as_str();
        let mut media = Vec::new();
        for id in ids.into_iter().rev().skip(from).take(limit) {
            if let Some(record) = self.db.get(&tables::MEDIA, (server, id.as_str()))? {
                media.push(UserMedia {
                    media_id: id,
                    record,
                });
            }
        }
        Ok((media, total))
    }
}
