//! Rendering errors as the spec's JSON bodies.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use conduit_service::{Error, ErrorCode};
use http::StatusCode;
use serde_json::json;

/// A service error on its way out to the client.
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match self.0 {
            Error::Matrix {
                code,
                message,
                soft_logout,
                ..
            } => {
                let mut body = json!({ "errcode": code.as_str(), "error": message });
                if soft_logout {
                    body["soft_logout"] = true.into();
                }
                (status, Json(body)).into_response()
            }
            Error::Uiaa(info) => (status, Json(info)).into_response(),
        }
    }
}

/// `404 M_UNRECOGNIZED` for paths no endpoint serves.
pub async fn unrecognized_path() -> ApiError {
    ApiError(Error::new(ErrorCode::Unrecognized, "Unrecognized request."))
}

/// `405 M_UNRECOGNIZED` for a known path with a method it does not take.
pub async fn unrecognized_method() -> ApiError {
    ApiError(Error::new(ErrorCode::Unrecognized, "Unrecognized request method.").with_status(405))
}
