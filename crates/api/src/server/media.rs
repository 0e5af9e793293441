//! This server's media for other servers (Matrix 1.11):
//! `GET /_matrix/federation/v1/media/download/{mediaId}` and
//! `/thumbnail/{mediaId}`, each a `multipart/mixed` answer of a JSON part
//! (empty: no metadata is defined yet) and the file.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Path, State},
    http::header,
    response::Response,
};
use conduit_service::{Error, ErrorCode, Services, media::Served, media::thumbnail::Method, utils};

use super::Federated;
use crate::{
    client::media::{disposition, file_chunks, thumbnail_served},
    error::ApiError,
};

pub async fn download(
    State(services): State<Arc<Services>>,
    Path(media_id): Path<String>,
    _request: Federated,
) -> Result<Response, ApiError> {
    multipart(services.media_for_server(&media_id)?).await
}

pub async fn thumbnail(
    State(services): State<Arc<Services>>,
    Path(media_id): Path<String>,
    request: Federated,
) -> Result<Response, ApiError> {
    let size = |key: &str| {
        request
            .query_value(key)
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| {
                ApiError(Error::new(
                    ErrorCode::MissingParam,
                    "width and height are required.",
                ))
            })
    };
    let (width, height) = (size("width")?, size("height")?);
    let method = Method::parse(request.query_value("method"))?;
    services.media_for_server(&media_id)?;
    let server = services.config.server_name.as_str();
    let (record, path) = services
        .thumbnail(
            server,
            &media_id,
            width,
            height,
            method,
            request.query_value("animated") == Some("true"),
        )
        .await?;
    multipart(thumbnail_served(record, path)).await
}

/// The JSON part, then the file, between boundaries.
async fn multipart(served: Served) -> Result<Response, ApiError> {
    let file = tokio::fs::File::open(&served.path)
        .await
        .map_err(|_| Error::not_found("Media not found."))?;
    let boundary = utils::random_string(32);
    let content_type = served
        .record
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let head = format!(
        "\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n\
         Content-Type: {content_type}\r\nContent-Disposition: {}\r\n\r\n",
        disposition(&content_type, served.record.file_name.as_deref())
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let length = head.len() as u64 + served.record.size + tail.len() as u64;
    let head =
        futures_util::stream::once(
            async move { Ok::<_, std::io::Error>(bytes::Bytes::from(head)) },
        );
    let tail =
        futures_util::stream::once(
            async move { Ok::<_, std::io::Error>(bytes::Bytes::from(tail)) },
        );
    use futures_util::StreamExt;
    let body = head
        .chain(file_chunks(file, served.record.size))
        .chain(tail);
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            format!("multipart/mixed; boundary={boundary}"),
        )
        .header(header::CONTENT_LENGTH, length)
        .body(Body::from_stream(body))
        .map_err(|e| Error::internal(e).into())
}
