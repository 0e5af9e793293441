//! The Matrix error a request ends with: an `errcode`, a message for a
//! person, and the HTTP status the spec gives that code.

use std::fmt;

use ruma::api::client::uiaa::UiaaInfo;

/// The spec's error codes this server answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    Forbidden,
    UnknownToken,
    MissingToken,
    BadJson,
    NotJson,
    NotFound,
    Unrecognized,
    UserInUse,
    InvalidUsername,
    InvalidParam,
    MissingParam,
    UserDeactivated,
    GuestAccessForbidden,
    TooLarge,
    ProfileTooLarge,
    KeyTooLarge,
    LimitExceeded,
    RoomInUse,
    UnsupportedRoomVersion,
    DuplicateAnnotation,
    /// A key or signature that does not verify (end-to-end encryption).
    InvalidSignature,
    /// A key backup write to a version that is not the latest.
    WrongRoomKeysVersion,
    /// An asynchronous upload whose file is already there.
    CannotOverwriteMedia,
    /// Media created with `/create` whose file has not come yet.
    NotYetUploaded,
    /// A federation request whose signature does not check out.
    Unauthorized,
    /// A join or knock from a server that supports none of the room's versions.
    IncompatibleRoomVersion,
    /// A restricted join: the user is in none of the rooms that let them in,
    /// as far as this server knows.
    UnableToGrantJoin,
    /// A restricted join: no user of this server may invite.
    UnableToAuthoriseJoin,
    /// A sliding sync `pos` the server does not know (any more).
    UnknownPos,
    /// A user id or alias an application service claims exclusively.
    Exclusive,
    /// An appservice's token where the endpoint takes none of its kind.
    AppserviceLoginUnsupported,
    /// An appservice ping: the appservice has no `url`.
    UrlNotSet,
    /// An appservice ping: it answered with an error status.
    BadStatus,
    /// An appservice ping: it could not be reached.
    ConnectionFailed,
    /// An appservice ping: it did not answer in time.
    ConnectionTimeout,
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forbidden => "M_FORBIDDEN",
            Self::UnknownToken => "M_UNKNOWN_TOKEN",
            Self::MissingToken => "M_MISSING_TOKEN",
            Self::BadJson => "M_BAD_JSON",
            Self::NotJson => "M_NOT_JSON",
            Self::NotFound => "M_NOT_FOUND",
            Self::Unrecognized => "M_UNRECOGNIZED",
            Self::UserInUse => "M_USER_IN_USE",
            Self::InvalidUsername => "M_INVALID_USERNAME",
            Self::InvalidParam => "M_INVALID_PARAM",
            Self::MissingParam => "M_MISSING_PARAM",
            Self::UserDeactivated => "M_USER_DEACTIVATED",
            Self::GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            Self::TooLarge => "M_TOO_LARGE",
            Self::ProfileTooLarge => "M_PROFILE_TOO_LARGE",
            Self::KeyTooLarge => "M_KEY_TOO_LARGE",
            Self::LimitExceeded => "M_LIMIT_EXCEEDED",
            Self::RoomInUse => "M_ROOM_IN_USE",
            Self::UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            Self::DuplicateAnnotation => "M_DUPLICATE_ANNOTATION",
            Self::InvalidSignature => "M_INVALID_SIGNATURE",
            Self::WrongRoomKeysVersion => "M_WRONG_ROOM_KEYS_VERSION",
            Self::CannotOverwriteMedia => "M_CANNOT_OVERWRITE_MEDIA",
            Self::NotYetUploaded => "M_NOT_YET_UPLOADED",
            Self::Unauthorized => "M_UNAUTHORIZED",
            Self::IncompatibleRoomVersion => "M_INCOMPATIBLE_ROOM_VERSION",
            Self::UnableToGrantJoin => "M_UNABLE_TO_GRANT_JOIN",
            Self::UnableToAuthoriseJoin => "M_UNABLE_TO_AUTHORISE_JOIN",
            Self::UnknownPos => "M_UNKNOWN_POS",
            Self::Exclusive => "M_EXCLUSIVE",
            Self::AppserviceLoginUnsupported => "M_APPSERVICE_LOGIN_UNSUPPORTED",
            Self::UrlNotSet => "M_URL_NOT_SET",
            Self::BadStatus => "M_BAD_STATUS",
            Self::ConnectionFailed => "M_CONNECTION_FAILED",
            Self::ConnectionTimeout => "M_CONNECTION_TIMEOUT",
            Self::Unknown => "M_UNKNOWN",
        }
    }

    /// The status the spec pairs with this code.
    pub fn status(self) -> u16 {
        match self {
            Self::Forbidden
            | Self::UserDeactivated
            | Self::GuestAccessForbidden
            | Self::WrongRoomKeysVersion => 403,
            Self::UnknownToken | Self::MissingToken | Self::Unauthorized => 401,
            Self::NotFound | Self::Unrecognized => 404,
            Self::TooLarge => 413,
            Self::LimitExceeded => 429,
            Self::Unknown => 500,
            _ => 400,
        }
    }
}

/// A failed request, as the client will see it.
#[derive(Debug)]
pub enum Error {
    /// A plain Matrix error.
    Matrix {
        code: ErrorCode,
        message: String,
        /// Overrides the code's usual status (e.g. 405 for a wrong method).
        status: Option<u16>,
        /// `soft_logout` on `M_UNKNOWN_TOKEN`: the token expired, the device lives on.
        soft_logout: bool,
    },
    /// User-interactive auth: more stages are needed (401 with the flows).
    Uiaa(Box<UiaaInfo>),
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Matrix {
            code,
            message: message.into(),
            status: None,
            soft_logout: false,
        }
    }

    /// The HTTP status it is answered with: the one set, else its code's.
    pub fn status(&self) -> u16 {
        match self {
            Self::Matrix { code, status, .. } => status.unwrap_or_else(|| code.status()),
            Self::Uiaa(_) => 401,
        }
    }

    pub fn with_status(mut self, new_status: u16) -> Self {
        if let Self::Matrix { status, .. } = &mut self {
            *status = Some(new_status);
        }
        self
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadJson, message)
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParam, message)
    }

    pub fn unknown_token(soft_logout: bool) -> Self {
        Self::Matrix {
            code: ErrorCode::UnknownToken,
            message: if soft_logout {
                "The access token has expired; refresh it or log in again.".into()
            } else {
                "Unknown access token.".into()
            },
            status: None,
            soft_logout,
        }
    }

    /// An internal failure: logged in full here, shown to the client only as `M_UNKNOWN`.
    pub fn internal(what: impl fmt::Display) -> Self {
        tracing::error!("internal error: {what}");
        Self::new(ErrorCode::Unknown, "Internal server error.")
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Matrix { code, .. } => Some(*code),
            Self::Uiaa(_) => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Matrix { code, message, .. } => write!(f, "{}: {message}", code.as_str()),
            Self::Uiaa(_) => f.write_str("user-interactive authentication required"),
        }
    }
}

impl std::error::Error for Error {}

impl From<conduit_storage::Error> for Error {
    fn from(e: conduit_storage::Error) -> Self {
        Self::internal(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
