//! The admin socket: `admin/admin.sock` in the database directory (the
//! `admin` directory is mode 0700, so only the server's own user reaches
//! the socket, from the moment it exists). `conduit admin ...` sends its words
//! there when the server runs, and gets the command's answer back; when the
//! server is stopped it opens the database itself.
//!
//! One request per connection: a JSON array of words and a newline, then a
//! JSON object `{"ok": bool, "output": text}`.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use conduit_service::{Services, admin_commands::AdminCommand};
use serde_json::{Value as JsonValue, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// The longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

fn directory(database_path: &Path) -> PathBuf {
    database_path.join("admin")
}

pub fn path(database_path: &Path) -> PathBuf {
    directory(database_path).join("admin.sock")
}

/// Runs one command's words: whether it worked, and what to print. The
/// socket sends this to the CLI; a stopped server's CLI calls it directly.
pub fn answer(services: &Services, words: Vec<String>) -> (bool, String) {
    let result = AdminCommand::parse(words)
        .map_err(|(_, text)| text)
        .and_then(|command| {
            services
                .run_admin_command(command, "cli")
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(output) => (true, output),
        Err(output) => (false, output),
    }
}

/// Listens on the socket for as long as the server runs. A server that
/// cannot make it still serves (the CLI then says it cannot reach it).
/// The socket's own request besides admin commands: a backup of the
/// running server (only its OS user can reach the socket, unlike the
/// admin room, so only it may name a directory to write).
pub const BACKUP: &str = "db-backup";

fn answer_socket(services: &Services, words: Vec<String>) -> (bool, String) {
    match words.as_slice() {
        [first, dir] if first == BACKUP => {
            let done =
                crate::backup::backup(&services.db, &services.config.media_dir(), Path::new(dir));
            (done.is_ok(), done.unwrap_or_else(|e| e))
        }
        _ => answer(services, words),
    }
}

pub fn listen(services: Arc<Services>) {
    if let Err(e) = bind_and_serve(services.clone()) {
        tracing::warn!(
            "no admin socket ({}): {e}; `conduit admin` needs the server stopped",
            path(&services.config.database_path).display()
        );
    }
}

fn bind_and_serve(services: Arc<Services>) -> std::io::Result<()> {
    let dir = directory(&services.config.database_path);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let path = path(&services.config.database_path);
    // A socket left by a server that died: the database lock already
    // proved no other server runs here.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, most likely: wait, do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let services = services.clone();
            tokio::spawn(async move {
                let (reader, mut writer) = stream.into_split();
                let mut line = String::new();
                let mut reader =
                    tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(reader, MAX_REQUEST));
                if reader.read_line(&mut line).await.is_err() {
                    return;
                }
                let (ok, output) = match serde_json::from_str::<Vec<String>>(&line) {
                    Ok(words) => {
                        let services = services.clone();
                        tokio::task::spawn_blocking(move || answer_socket(&services, words))
                            .await
                            .unwrap_or_else(|_| (false, "the command failed".to_owned()))
                    }
                    Err(e) => (false, format!("bad request: {e}")),
                };
                let reply = json!({ "ok": ok, "output": output });
                let _ = writer.write_all(format!("{reply}\n").as_bytes()).await;
            });
        }
    });
    Ok(())
}

/// Sends a command to a running server: `None` when none listens here.
pub fn send(
    database_path: &Path,
    words: &[String],
    timeout: Duration,
) -> Option<Result<(bool, String), String>> {
    let stream = UnixStream::connect(path(database_path)).ok()?;
    let exchange = || -> std::io::Result<(bool, String)> {
        stream.set_read_timeout(Some(timeout))?;
        let mut writer = &stream;
        writer.write_all(format!("{}\n", json!(words)).as_bytes())?;
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line)?;
        let reply: JsonValue = serde_json::from_str(&line)?;
        Ok((
            reply["ok"].as_bool().unwrap_or(false),
            reply["output"].as_str().unwrap_or_default().to_owned(),
        ))
    };
    Some(exchange().map_err(|e| format!("the server's admin socket failed: {e}")))
}
