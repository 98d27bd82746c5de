//! Why the review service refuses a request, and the one mapping of each
//! refusal to an HTTP status and a JSON body (`{"error", "message"}`).
//!
//! A refusal says no more than the viewer may know: a lesson outside the
//! session's scope is `not_found`, the same answer as no such lesson. Routes
//! must never build an error response of their own; they return a
//! [`Refusal`] (audited through `ReviewService::refuse` where the request
//! reached a lesson).

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A refused request. Mapped to a status and a JSON body in one place.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// No (live) review session, or a bad token.
    #[error("no review session: ask the gateway for access again")]
    Unauthenticated,
    /// The session's scope does not allow this.
    #[error("your review access does not allow this")]
    Forbidden,
    /// No such recording or file, or not in the session's scope (the same answer).
    #[error("not found")]
    NotFound,
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The requested range is not inside the file of `len` bytes.
    #[error("range not satisfiable")]
    Range {
        /// The file's length, for `Content-Range: bytes */len`.
        len: u64,
    },
    /// The store or the audit log failed: nothing was served.
    #[error("temporarily unavailable")]
    Unavailable,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Unauthenticated => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden => StatusCode::FORBIDDEN,
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::Invalid(_) => StatusCode::BAD_REQUEST,
            Refusal::Range { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine code.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Forbidden => "forbidden",
            Refusal::NotFound => "not_found",
            Refusal::Invalid(_) => "invalid",
            Refusal::Range { .. } => "range",
            Refusal::Unavailable => "unavailable",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        // A media player reads a 416 by its status and `Content-Range`
        // (RFC 9110, 15.5.17): no JSON body.
        if let Refusal::Range { len } = self {
            return (
                self.status(),
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response();
        }
        (
            self.status(),
            Json(json!({"error": self.code(), "message": self.to_string()})),
        )
            .into_response()
    }
}
