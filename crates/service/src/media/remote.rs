//! Media of other servers: fetched when a local client first asks for it
//! (`GET /_matrix/federation/v1/media/download/{mediaId}`, a multipart
//! answer of a JSON part and the file; servers without it are asked the
//! old way, `/_matrix/media/v3/download`), written to the store as it
//! arrives within `max_request_size`, and kept: the next ask is local.
//! And this server's own media, served to others in the same form.

use ruma::ServerName;

use super::{MediaRecord, Served, store::Stored};
use crate::{
    Error, ErrorCode, Result, Services,
    federation::{
        client::{FedError, describe, status_error},
        incoming::outliers::urlencode,
    },
    tables, utils,
};

/// What the file part of a multipart answer said of itself.
#[derive(Default)]
struct PartHeaders {
    content_type: Option<String>,
    file_name: Option<String>,
    location: Option<String>,
}

/// Longest headers of a part accepted, and of the JSON part.
const MAX_PART_HEADERS: usize = 16 * 1024;

fn unavailable(server: &ServerName, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::NotFound,
        format!("The media could not be fetched from {server}: {why}"),
    )
    .with_status(502)
}

/// The `boundary` of a `multipart/mixed` content type.
fn boundary_of(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params.split(';').find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// Parses part headers (`Name: value` lines).
fn part_headers(text: &str) -> PartHeaders {
    let mut headers = PartHeaders::default();
    for line in text.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_owned();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => headers.content_type = Some(value),
            "location" => headers.location = Some(value),
            "content-disposition" => {
                headers.file_name = value
                    .split(';')
                    .find_map(|p| p.trim().strip_prefix("filename="))
                    .map(|n| n.trim_matches('"').to_owned());
            }
            _ => {}
        }
    }
    headers
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

impl Services {
    /// Media of another server, fetched and kept the first time.
    pub async fn remote_media(&self, server: &ServerName, id: &str) -> Result<Served> {
        if let Ok(served) = self.local_media(server.as_str(), id) {
            return Ok(served);
        }
        if !self.config.federates_with(server) {
            return Err(Error::not_found(
                "This server does not federate with that one.",
            ));
        }
        let path = format!("/_matrix/federation/v1/media/download/{}", urlencode(id));
        let (stored, headers) = match self.fetch_federation_media(server, &path).await {
            Ok(found) => found,
            Err(FetchError::Unsupported) => self.fetch_legacy_media(server, id).await?,
            Err(FetchError::Failed(e)) => return Err(e),
        };
        let record = MediaRecord {
            sha256: Some(stored.sha256.clone()),
            content_type: headers.content_type,
            file_name: headers.file_name,
            size: stored.size,
            uploader: None,
            created_at: utils::now_ms(),
            upload_by: None,
            quarantined_by: None,
        };
        self.put_media(server.as_str(), id, &record)?;
        self.local_media(server.as_str(), id)
    }

    /// A thumbnail of another server's media: made here when the original
    /// is kept here, else asked of that server (and kept), else made from
    /// the original fetched whole (servers without the endpoint).
    pub async fn remote_thumbnail(
        &self,
        server: &ServerName,
        id: &str,
        width: u32,
        height: u32,
        method: super::thumbnail::Method,
        animated: bool,
    ) -> Result<(super::thumbnail::ThumbnailRecord, std::path::PathBuf)> {
        let name = server.as_str();
        if self.local_media(name, id).is_ok() {
            return self
                .thumbnail(name, id, width, height, method, animated)
                .await;
        }
        if width == 0 || height == 0 {
            return Err(Error::invalid_param("Thumbnail sizes must be positive."));
        }
        let (width, height, method) = super::thumbnail::pick_size(width, height, method);
        let spec = super::thumbnail::spec(width, height, method, animated);
        if let Some(record) = self
            .db
            .get(&tables::THUMBNAILS, (name, id, spec.as_str()))?
        {
            let path = self.media_store.path(&record.sha256);
            return Ok((record, path));
        }
        if !self.config.federates_with(server) {
            return Err(Error::not_found(
                "This server does not federate with that one.",
            ));
        }
        let path = format!(
            "/_matrix/federation/v1/media/thumbnail/{}?width={width}&height={height}&method={}&animated={animated}",
            urlencode(id),
            method.name()
        );
        match self.fetch_federation_media(server, &path).await {
            Ok((stored, headers)) => {
                let (found_width, found_height) =
                    std::fs::read(self.media_store.path(&stored.sha256))
                        .ok()
                        .and_then(|bytes| {
                            image::ImageReader::new(std::io::Cursor::new(bytes))
                                .with_guessed_format()
                                .ok()?
                                .into_dimensions()
                                .ok()
                        })
                        .unwrap_or((0, 0));
                let record = super::thumbnail::ThumbnailRecord {
                    sha256: stored.sha256.clone(),
                    content_type: headers
                        .content_type
                        .unwrap_or_else(|| "application/octet-stream".to_owned()),
                    width: found_width,
                    height: found_height,
                    size: stored.size,
                };
                self.put_thumbnail(name, id, &spec, &record)?;
                let path = self.media_store.path(&record.sha256);
                Ok((record, path))
            }
            Err(FetchError::Unsupported) => {
                self.remote_media(server, id).await?;
                self.thumbnail(name, id, width, height, method, animated)
                    .await
            }
            Err(FetchError::Failed(e)) => Err(e),
        }
    }

    /// `GET {path}` of a federation media endpoint (download or thumbnail).
    async fn fetch_federation_media(
        &self,
        server: &ServerName,
        path: &str,
    ) -> Result<(Stored, PartHeaders), FetchError> {
        let mut response = self
            .federation_response(server, http::Method::GET, path, None, true)
            .await
            .map_err(|e| FetchError::Failed(unavailable(server, e)))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return match status_error(status, &body) {
                // Servers from before Matrix 1.11 do not know the endpoint.
                FedError::Status {
                    status: 404 | 400 | 405,
                    errcode,
                    ..
                } if errcode == "M_UNRECOGNIZED" || errcode.is_empty() => {
                    Err(FetchError::Unsupported)
                }
                FedError::Status { status: 404, .. } => Err(FetchError::Failed(super::not_found())),
                e => Err(FetchError::Failed(unavailable(server, e))),
            };
        }
        let boundary = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(boundary_of)
            .ok_or_else(|| FetchError::Failed(unavailable(server, "not a multipart answer")))?;
        let delimiter = format!("\r\n--{boundary}").into_bytes();
        let limit = u64::from(self.config.max_request_size);
        let mut incoming = self
            .media_store
            .incoming(limit)
            .await
            .map_err(FetchError::Failed)?;
        // Before the file: the JSON part and the file part's headers.
        // A CRLF in front, so the first delimiter looks like the others
        // whether or not the answer starts with one.
        let mut head: Vec<u8> = b"\r\n".to_vec();
        let mut headers = None;
        let mut carry: Vec<u8> = Vec::new();
        let mut done = false;
        while !done {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    incoming.abort().await;
                    return Err(FetchError::Failed(unavailable(server, describe(&e))));
                }
            };
            if headers.is_none() {
                head.extend_from_slice(&chunk);
                if head.len() > MAX_PART_HEADERS * 4 + limit as usize {
                    break;
                }
                // "--b\r\n<json headers>\r\n\r\n<json>\r\n--b\r\n<headers>\r\n\r\n"
                let second = find(&head, &delimiter).and_then(|first| {
                    let from = first + delimiter.len();
                    find(&head[from..], &delimiter).map(|at| from + at)
                });
                let Some(second) = second else {
                    if head.len() > MAX_PART_HEADERS * 2 {
                        break;
                    }
                    continue;
                };
                let after = second + delimiter.len();
                let Some(end) = find(&head[after..], b"\r\n\r\n") else {
                    if head.len() - after > MAX_PART_HEADERS {
                        break;
                    }
                    continue;
                };
                let text = String::from_utf8_lossy(&head[after..after + end]).into_owned();
                headers = Some(part_headers(&text));
                carry = head[after + end + 4..].to_vec();
                head.clear();
            } else {
                carry.extend_from_slice(&chunk);
            }
            // The file runs until the next delimiter; the bytes that could
            // start one are kept back.
            if headers.is_some() {
                if let Some(at) = find(&carry, &delimiter) {
                    incoming
                        .write(&carry[..at])
                        .await
                        .map_err(FetchError::Failed)?;
                    done = true;
                } else if carry.len() >= delimiter.len() {
                    let keep = delimiter.len() - 1;
                    let upto = carry.len() - keep;
                    incoming
                        .write(&carry[..upto])
                        .await
                        .map_err(FetchError::Failed)?;
                    carry.drain(..upto);
                }
            }
        }
        let Some(headers) = headers.filter(|_| done) else {
            incoming.abort().await;
            return Err(FetchError::Failed(unavailable(
                server,
                "a malformed multipart answer",
            )));
        };
        if headers.location.is_some() {
            // Following a redirect would fetch any address the other server
            // names, inside networks it cannot reach: not done.
            incoming.abort().await;
            return Err(FetchError::Unsupported);
        }
        let stored = incoming
            .finish(&self.media_store)
            .await
            .map_err(FetchError::Failed)?;
        Ok((stored, headers))
    }

    /// The old way: `GET /_matrix/media/v3/download/{server}/{id}` of the
    /// server itself, unauthenticated.
    async fn fetch_legacy_media(
        &self,
        server: &ServerName,
        id: &str,
    ) -> Result<(Stored, PartHeaders)> {
        let path = format!(
            "/_matrix/media/v3/download/{}/{}?allow_remote=false",
            urlencode(server.as_str()),
            urlencode(id)
        );
        let mut response = self
            .federation_response(server, http::Method::GET, &path, None, false)
            .await
            .map_err(|e| unavailable(server, e))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(super::not_found());
        }
        if !status.is_success() {
            return Err(unavailable(server, format!("HTTP {status}")));
        }
        let headers = PartHeaders {
            content_type: response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            file_name: response
                .headers()
                .get(http::header::CONTENT_DISPOSITION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| part_headers(&format!("content-disposition: {v}")).file_name),
            location: None,
        };
        let mut incoming = self
            .media_store
            .incoming(u64::from(self.config.max_request_size))
            .await?;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => incoming.write(&chunk).await?,
                Ok(None) => break,
                Err(e) => {
                    incoming.abort().await;
                    return Err(unavailable(server, describe(&e)));
                }
            }
        }
        Ok((incoming.finish(&self.media_store).await?, headers))
    }

    /// This server's own media for another server (not copies of others').
    pub fn media_for_server(&self, id: &str) -> Result<Served> {
        let served = self.local_media(self.config.server_name.as_str(), id)?;
        if served.record.uploader.is_none() {
            return Err(super::not_found());
        }
        Ok(served)
    }
}

/// Why a fetch over the federation endpoint did not give the file.
enum FetchError {
    /// The server lacks the endpoint (or redirected): try the old way.
    Unsupported,
    Failed(Error),
}

impl From<Error> for FetchError {
    fn from(e: Error) -> Self {
        Self::Failed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_pieces_parse() {
        assert_eq!(
            boundary_of("multipart/mixed; boundary=\"abc\"").as_deref(),
            Some("abc")
        );
        assert_eq!(
            boundary_of("multipart/mixed;boundary=x1").as_deref(),
            Some("x1")
        );
        assert_eq!(boundary_of("image/png"), None);
        let headers = part_headers(
            "Content-Type: image/png\r\nContent-Disposition: inline; filename=\"a b.png\"",
        );
        assert_eq!(headers.content_type.as_deref(), Some("image/png"));
        assert_eq!(headers.file_name.as_deref(), Some("a b.png"));
        assert_eq!(find(b"xx\r\n--b", b"\r\n--b"), Some(2));
    }
}
