//! The media repository's routes: uploads (`/_matrix/media/v3/upload`,
//! `/_matrix/media/v1/create` then `PUT .../upload/{server}/{id}`),
//! authenticated downloads and thumbnails (`/_matrix/client/v1/media/...`),
//! the config, and the old unauthenticated `/_matrix/media/v3` downloads
//! for media older than `unauthenticated_media_before`.
//!
//! Bodies are streamed: an upload goes to disk chunk by chunk (never whole
//! in memory), a download is read from its file as it is sent. Every media
//! answer carries the headers that keep a browser from running it.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    body::Body,
    extract::{Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use conduit_service::{
    Error, ErrorCode, Services,
    media::{Served, UploadInfo, store::Stored, thumbnail::Method},
};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::{error::ApiError, ruma_wrapper::Authenticated};

/// Types a browser may show in place; everything else is an attachment.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Sent with every media answer: no script runs, no type is guessed.
const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                   style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

const CHUNK: usize = 64 * 1024;

/// Reads an upload's body to a file, chunk by chunk, within the limit.
async fn receive(services: &Services, request: Request) -> Result<Stored, ApiError> {
    let limit = u64::from(services.config.max_request_size);
    if let Some(length) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit
    {
        return Err(conduit_service::media::store::too_large(limit).into());
    }
    let mut body = request.into_body();
    let mut incoming = services.media_files().incoming(limit).await?;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                incoming.abort().await;
                return Err(Error::bad_json(format!("The upload was cut off: {e}")).into());
            }
        };
        if let Ok(data) = frame.into_data() {
            incoming.write(&data).await?;
        }
    }
    Ok(incoming.finish(services.media_files()).await?)
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub async fn upload(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    services.check_upload_rate(&session.user_id)?;
    let kind = content_type(request.headers());
    let stored = receive(&services, request).await?;
    let uri = services.create_media(
        &session.user_id,
        &stored,
        UploadInfo {
            content_type: kind.as_deref(),
            file_name: query.get("filename").map(String::as_str),
        },
    )?;
    Ok(Json(json!({ "content_uri": uri })))
}

pub async fn create(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (uri, upload_by) = services.create_pending_media(&session.user_id).await?;
    Ok(Json(
        json!({ "content_uri": uri, "unused_expires_at": upload_by }),
    ))
}

pub async fn upload_pending(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Path((server, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    services.check_upload_rate(&session.user_id)?;
    services.check_pending_upload(&session.user_id, &server, &id)?;
    let kind = content_type(request.headers());
    let stored = receive(&services, request).await?;
    services
        .complete_pending_media(
            &session.user_id,
            &server,
            &id,
            &stored,
            UploadInfo {
                content_type: kind.as_deref(),
                file_name: query.get("filename").map(String::as_str),
            },
        )
        .await?;
    Ok(Json(json!({})))
}

pub async fn config(
    State(services): State<Arc<Services>>,
    _session: Authenticated,
) -> Json<serde_json::Value> {
    Json(json!({ "m.upload.size": services.config.max_request_size }))
}

/// `GET .../preview_url?url=`: the page's OpenGraph data (`404
/// M_UNRECOGNIZED` unless `url_preview_enabled`).
pub async fn preview_url(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let url = query
        .get("url")
        .ok_or_else(|| Error::new(ErrorCode::MissingParam, "url is required."))?;
    Ok(Json(services.preview_url(&session.user_id, url).await?))
}

/// `(server, media id)` or `(server, media id, file name)`.
#[derive(serde::Deserialize)]
pub struct MediaPath {
    server: String,
    media_id: String,
    file_name: Option<String>,
}

pub async fn download(
    State(services): State<Arc<Services>>,
    _session: Authenticated,
    Path(path): Path<MediaPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let served = any_media(&services, &path.server, &path.media_id).await?;
    serve_file(served, path.file_name.as_deref(), &headers).await
}

pub async fn legacy_download(
    State(services): State<Arc<Services>>,
    Path(path): Path<MediaPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let served = local_only(&services, &path.server, |s| {
        services.legacy_media(s, &path.media_id)
    })?;
    serve_file(served, path.file_name.as_deref(), &headers).await
}

/// What a thumbnail request asks.
#[derive(serde::Deserialize)]
pub struct ThumbnailQuery {
    width: Option<u32>,
    height: Option<u32>,
    method: Option<String>,
    /// Matrix 1.11: an animated thumbnail of an animated picture.
    animated: Option<bool>,
}

pub async fn thumbnail(
    State(services): State<Arc<Services>>,
    _session: Authenticated,
    Path(path): Path<MediaPath>,
    Query(query): Query<ThumbnailQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    make_thumbnail(&services, &path, &query, &headers, false).await
}

pub async fn legacy_thumbnail(
    State(services): State<Arc<Services>>,
    Path(path): Path<MediaPath>,
    Query(query): Query<ThumbnailQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    make_thumbnail(&services, &path, &query, &headers, true).await
}

async fn make_thumbnail(
    services: &Services,
    path: &MediaPath,
    query: &ThumbnailQuery,
    headers: &HeaderMap,
    legacy: bool,
) -> Result<Response, ApiError> {
    let (Some(width), Some(height)) = (query.width, query.height) else {
        return Err(Error::new(ErrorCode::MissingParam, "width and height are required.").into());
    };
    let method = Method::parse(query.method.as_deref())?;
    let animated = query.animated.unwrap_or(false);
    let (record, file) = if legacy || path.server == services.config.server_name.as_str() {
        // This server's media (the old routes serve nothing else).
        local_only(services, &path.server, |s| {
            if legacy {
                services.legacy_media(s, &path.media_id)
            } else {
                services.local_media(s, &path.media_id)
            }
        })?;
        services
            .thumbnail(
                &path.server,
                &path.media_id,
                width,
                height,
                method,
                animated,
            )
            .await?
    } else {
        let server = <&ruma::ServerName>::try_from(path.server.as_str())
            .map_err(|_| Error::invalid_param("Invalid server name."))?;
        services
            .remote_thumbnail(server, &path.media_id, width, height, method, animated)
            .await?
    };
    let served = thumbnail_served(record, file);
    serve_file(served, None, headers).await
}

/// Media named by `server` and `id`: this server's, or another's (fetched
/// and kept on the first ask).
async fn any_media(services: &Services, server: &str, id: &str) -> Result<Served, ApiError> {
    if server == services.config.server_name.as_str() {
        return Ok(services.local_media(server, id)?);
    }
    let server = <&ruma::ServerName>::try_from(server)
        .map_err(|_| Error::invalid_param("Invalid server name."))?;
    Ok(services.remote_media(server, id).await?)
}

/// The old routes serve this server's own media only.
fn local_only(
    services: &Services,
    server: &str,
    find: impl FnOnce(&str) -> conduit_service::Result<Served>,
) -> Result<Served, ApiError> {
    if server != services.config.server_name.as_str() {
        return Err(Error::not_found("Media not found.").into());
    }
    Ok(find(server)?)
}

/// A thumbnail served like media.
pub(crate) fn thumbnail_served(
    record: conduit_service::media::thumbnail::ThumbnailRecord,
    path: std::path::PathBuf,
) -> Served {
    Served {
        record: conduit_service::media::MediaRecord {
            sha256: Some(record.sha256),
            content_type: Some(record.content_type),
            file_name: None,
            size: record.size,
            uploader: None,
            created_at: 0,
            upload_by: None,
            quarantined_by: None,
        },
        path,
    }
}

/// `Content-Disposition` for a type and name: inline only for safe types.
pub(crate) fn disposition(content_type: &str, file_name: Option<&str>) -> String {
    let essence = conduit_service::media::essence(content_type);
    let kind = if INLINE_TYPES.contains(&essence.as_str()) {
        "inline"
    } else {
        "attachment"
    };
    match file_name {
        Some(name) if !name.is_empty() => {
            let plain = name
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ');
            if plain {
                format!("{kind}; filename=\"{name}\"")
            } else {
                format!(
                    "{kind}; filename*=utf-8''{}",
                    url::form_urlencoded::byte_serialize(name.as_bytes())
                        .collect::<String>()
                        .replace('+', "%20")
                )
            }
        }
        _ => kind.to_owned(),
    }
}

/// The first range of a `Range: bytes=...` header within `size`;
/// `Err(())` when it cannot be satisfied.
fn byte_range(headers: &HeaderMap, size: u64) -> Option<Result<(u64, u64), ()>> {
    let value = headers.get(header::RANGE)?.to_str().ok()?;
    let spec = value.strip_prefix("bytes=")?.split(',').next()?.trim();
    let (start, end) = spec.split_once('-')?;
    let range = match (start.parse::<u64>().ok(), end.parse::<u64>().ok()) {
        (Some(start), Some(end)) if start <= end && start < size => Ok((start, end.min(size - 1))),
        (Some(start), None) if end.is_empty() && start < size => Ok((start, size - 1)),
        (None, Some(suffix)) if start.is_empty() && suffix > 0 && size > 0 => {
            Ok((size.saturating_sub(suffix), size - 1))
        }
        _ => Err(()),
    };
    Some(range)
}

/// Streams a stored file with the media headers (and a range of it when
/// asked).
async fn serve_file(
    served: Served,
    file_name: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let mut file = tokio::fs::File::open(&served.path)
        .await
        .map_err(|_| Error::not_found("Media not found."))?;
    let size = served.record.size;
    let content_type = served
        .record
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let name = file_name.or(served.record.file_name.as_deref());
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, &content_type)
        .header(
            header::CONTENT_DISPOSITION,
            disposition(&content_type, name),
        )
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header("Cross-Origin-Resource-Policy", "cross-origin")
        .header(
            header::CACHE_CONTROL,
            "public, max-age=86400, s-maxage=86400",
        )
        .header(header::ACCEPT_RANGES, "bytes");
    let (start, length) = match byte_range(headers, size) {
        None => (0, size),
        Some(Ok((start, end))) => {
            builder = builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
            (start, end - start + 1)
        }
        Some(Err(())) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response());
        }
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(Error::internal)?;
    }
    let chunks = file_chunks(file, length);
    builder
        .header(header::CONTENT_LENGTH, HeaderValue::from(length))
        .body(Body::from_stream(chunks))
        .map_err(|e| Error::internal(e).into())
}

/// `length` bytes of an open file, as a stream of chunks.
pub(crate) fn file_chunks(
    file: tokio::fs::File,
    length: u64,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold((file, length), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buffer = vec![0; CHUNK.min(left as usize)];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(bytes::Bytes::from(buffer)), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    })
}
