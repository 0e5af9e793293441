//! `conduit db backup DIR` and `conduit db restore DIR`: a backup is
//! `DIR/db`, a RocksDB checkpoint (consistent, taken while the server
//! runs, SST files hard-linked when on the same file system), and
//! `DIR/media/sha256/...`, the media files, hard-linked or copied. Media
//! files never change once written (they are named by their SHA-256), so
//! linking them is as good as copying.
//!
//! The database is copied first: every file it names exists then. Media
//! stored after it are extra files, which the restored server removes at
//! start as referenced by nothing.

use std::{
    io,
    path::{Path, PathBuf},
};

use conduit_storage::Database;

/// Writes a backup of `db` and the media under `media_dir` to `dir`,
/// which must not exist or be empty. What was written, for the admin.
pub fn backup(db: &Database, media_dir: &Path, dir: &Path) -> Result<String, String> {
    if dir.exists() && !is_empty_dir(dir) {
        return Err(format!(
            "{} is not empty: a backup goes into a new directory",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let db_dir = dir.join("db");
    db.checkpoint(&db_dir)
        .map_err(|e| format!("cannot copy the database to {}: {e}", db_dir.display()))?;
    let files = copy_tree(
        &media_dir.join("sha256"),
        &dir.join("media").join("sha256"),
        true,
    )
    .map_err(|e| format!("cannot copy the media files: {e}"))?;
    Ok(format!(
        "backup written to {}: the database and {files} media files",
        dir.display()
    ))
}

/// Puts the backup in `from` in place of a server's (absent) database and
/// media. Refuses to overwrite anything.
pub fn restore(from: &Path, database_path: &Path, media_dir: &Path) -> Result<String, String> {
    let db_backup = from.join("db");
    if !db_backup.join("CURRENT").exists() {
        return Err(format!(
            "{} holds no backup (no db/CURRENT)",
            from.display()
        ));
    }
    if database_path.join("CURRENT").exists() {
        return Err(format!(
            "a database already exists at {}: restore into a new database_path",
            database_path.display()
        ));
    }
    let media_target = media_dir.join("sha256");
    if media_target.exists() && !is_empty_dir(&media_target) {
        return Err(format!(
            "{} already holds media files: restore into a new media_path",
            media_target.display()
        ));
    }
    // Copies, not links: the restored server must not share files with
    // the backup it may still be needed for.
    copy_tree(&db_backup, database_path, false)
        .map_err(|e| format!("cannot copy the database: {e}"))?;
    let files = copy_tree(&from.join("media").join("sha256"), &media_target, false)
        .map_err(|e| format!("cannot copy the media files: {e}"))?;
    Ok(format!(
        "restored the database to {} and {files} media files to {}",
        database_path.display(),
        media_dir.display()
    ))
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

/// Copies the files under `from` (absent: none) to the same places under
/// `to`, hard-linking them when `link` and the file system allows; the
/// number of files.
fn copy_tree(from: &Path, to: &Path, link: bool) -> io::Result<u64> {
    let mut files = 0;
    let mut pending: Vec<(PathBuf, PathBuf)> = vec![(from.to_owned(), to.to_owned())];
    while let Some((source, target)) = pending.pop() {
        let entries = match std::fs::read_dir(&source) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        std::fs::create_dir_all(&target)?;
        for entry in entries {
            let entry = entry?;
            let (source, target) = (entry.path(), target.join(entry.file_name()));
            if entry.file_type()?.is_dir() {
                pending.push((source, target));
                continue;
            }
            if !(link && std::fs::hard_link(&source, &target).is_ok()) {
                std::fs::copy(&source, &target)?;
            }
            files += 1;
        }
    }
    Ok(files)
}
