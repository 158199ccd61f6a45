//! The one API error type: decides status code and JSON body in one place.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::query::ParamError;

/// Seconds a client is told to wait when no data is loaded yet.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A bad query parameter.
    #[error("{0}")]
    BadRequest(#[from] ParamError),
    /// No snapshot is loaded yet: answered at once, never waited for.
    #[error(
        "no cost data loaded yet: this replica has not read a backup or built the ETL; retry in {RETRY_AFTER_SECONDS} s"
    )]
    NotReady,
    /// An actor is gone (shutting down).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotReady | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = self.status_code();
        let mut resp = HttpResponse::build(code);
        if code == StatusCode::SERVICE_UNAVAILABLE {
            resp.insert_header(("Retry-After", RETRY_AFTER_SECONDS.to_string()));
        }
        resp.json(serde_json::json!({ "code": code.as_u16(), "status": "error", "message": self.to_string() }))
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}
