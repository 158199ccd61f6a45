//! The one API error type: every error response body and status code, `/readyz` and
//! `/healthz` included, is decided here.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{ALLOW, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};

use crate::query::ParamError;
use crate::storage::NotReady;
use crate::supervise::Failure;

/// Seconds a client is told to wait when it may retry.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A bad query parameter.
    #[error("{0}")]
    BadRequest(#[from] ParamError),
    /// This replica cannot answer queries yet (or any more); the reason says why.
    #[error("not ready: {0}")]
    NotReady(#[from] NotReady),
    /// Shutdown has begun.
    #[error("shutting down")]
    ShuttingDown,
    /// A critical actor is gone: the replica is about to exit.
    #[error("{0}")]
    Dead(Failure),
    /// An actor did not answer (shutting down).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The response would exceed `--max-response-bytes`.
    #[error(
        "the response would exceed {limit} bytes (--max-response-bytes): narrow the query with aggregate, filter, limit, a shorter window or accumulate=true"
    )]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The query did not finish within `--query-timeout`.
    #[error(
        "the query did not finish within {} (--query-timeout): narrow it with aggregate, filter, limit, a shorter window or accumulate=true",
        humantime::format_duration(*.limit)
    )]
    Timeout {
        /// The deadline.
        limit: Duration,
    },
    /// The lane this query needs is full.
    #[error(
        "too many {lane} queries at once (at most {limit}{flag}): retry in {RETRY_AFTER_SECONDS} s, or narrow the query so it is cheap (aggregate, filter, limit, a shorter window)",
        flag = if *.lane == "heavy" { ", --max-heavy-queries" } else { ", --max-cheap-queries" }
    )]
    Overloaded {
        /// `cheap` or `heavy`.
        lane: &'static str,
        /// Its admission limit.
        limit: usize,
    },
    /// A bug: the query panicked.
    #[error("internal error: {0}")]
    Internal(String),
    /// No such route.
    #[error("no such endpoint: {0}")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The methods the route answers.
        allow: &'static str,
    },
    /// The request target was longer than the server accepts.
    #[error(
        "the request target is {bytes} bytes long, more than this server accepts: send long filters as fewer, shorter values, or split the query"
    )]
    UriTooLong {
        /// How long it was, as far as counted.
        bytes: u64,
    },
    /// The request head was larger than the server accepts.
    #[error("the request head is {bytes} bytes long, more than this server accepts")]
    HeadTooLarge {
        /// How long it was, as far as counted.
        bytes: u64,
    },
}

impl ApiError {
    /// The `result` label of `costmodel_queries`.
    pub fn label(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotReady(_) | ApiError::ShuttingDown | ApiError::Dead(_) => "not_ready",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::Timeout { .. } => "timeout",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::Unavailable(_) | ApiError::Internal(_) => "error",
            ApiError::NotFound(_)
            | ApiError::MethodNotAllowed { .. }
            | ApiError::UriTooLong { .. }
            | ApiError::HeadTooLarge { .. } => "bad_request",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotReady(_)
            | ApiError::ShuttingDown
            | ApiError::Dead(_)
            | ApiError::Unavailable(_)
            | ApiError::Timeout { .. }
            | ApiError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ApiError::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = self.status_code();
        let mut resp = HttpResponse::build(code);
        match self {
            // A client that retries a deadline or a full lane immediately only adds load; the
            // others clear up by themselves.
            ApiError::NotReady(_)
            | ApiError::Unavailable(_)
            | ApiError::Overloaded { .. }
            | ApiError::ShuttingDown => {
                resp.insert_header((RETRY_AFTER, RETRY_AFTER_SECONDS.to_string()));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                resp.insert_header((ALLOW, *allow));
            }
            _ => {}
        }
        if matches!(
            self,
            ApiError::UriTooLong { .. } | ApiError::HeadTooLarge { .. }
        ) {
            resp.insert_header((actix_web::http::header::CONNECTION, "close"));
        }
        resp.json(serde_json::json!({ "code": code.as_u16(), "status": "error", "message": self.to_string() }))
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}
