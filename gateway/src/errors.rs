//! The one place where domain errors become HTTP statuses (refusals before
//! the WebSocket upgrade) and WebSocket close codes (after it), in the
//! manner of livekit's `errors.go`. Nothing else in the gateway picks a
//! status or a close code.
//!
//! | refusal | HTTP | close |
//! |---|---|---|
//! | no or bad credential | 401 | |
//! | foreign or missing `Origin` | 403 | |
//! | no such lesson, or not yours (same body) | 404 | |
//! | forbidden, blocked, removed, denied, access ended | 403 | 4003 |
//! | waiting room locked | 403 | |
//! | lesson ended | 410 | 1000 |
//! | unsupported protocol version | | 4001 |
//! | first message not `hello` | | 4002 |
//! | rate limit abused | 429 | 4008 |
//! | joined again elsewhere | | 4009 |
//! | idle (no pong, no message) | | 4000 |
//! | server stopping, or connection too slow to keep up | 503 | 1001 |
//! | lesson moving between nodes (owner stopped, node draining) | 503, `Retry-After: 1` | 1001 |
//! | identity layer unavailable, internal | 503 / 500 | 1011 |

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chaperone_protocol::signal::{ErrorCode, Farewell, ServerMsg};

use crate::media::MediaError;

/// Why a request was refused before the upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// No credential, or one the authenticator did not accept.
    Unauthenticated,
    /// The `Origin` header is missing or not on the allowlist.
    Origin,
    /// The identity layer could not be asked (fail closed).
    Unavailable,
    /// The lesson is between nodes (its owner stopped and its lease has not
    /// lapsed yet, or the node asked is draining): try again in a second.
    Moving,
    /// The lesson (or the authenticator) refused with a typed code.
    Code(ErrorCode),
    /// The lesson is not open for joining yet: it opens at this moment (Unix ms).
    NotOpen(u64),
    /// The lesson's window (its end plus the grace, or staff's extension) has passed.
    Closed,
}

impl Refusal {
    /// The HTTP status for this refusal.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Unauthenticated => StatusCode::UNAUTHORIZED,
            Refusal::Origin | Refusal::NotOpen(_) => StatusCode::FORBIDDEN,
            Refusal::Closed => StatusCode::GONE,
            Refusal::Unavailable | Refusal::Moving => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Code(code) => http_status(code),
        }
    }

    /// The JSON body: the same shape as a signaling `error` message.
    pub fn body(self) -> String {
        match self {
            Refusal::Unauthenticated => r#"{"error":{"code":"unauthenticated"}}"#.to_owned(),
            Refusal::Origin => r#"{"error":{"code":"forbidden_origin"}}"#.to_owned(),
            Refusal::Unavailable => r#"{"error":{"code":"unavailable"}}"#.to_owned(),
            Refusal::Moving => r#"{"error":{"code":"moving"}}"#.to_owned(),
            Refusal::Code(code) => ServerMsg::Error { code, action: None }.encode(),
            Refusal::NotOpen(at) => {
                format!(r#"{{"error":{{"code":"not_open","opens_at_ms":{at}}}}}"#)
            }
            Refusal::Closed => r#"{"error":{"code":"closed"}}"#.to_owned(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), self.body()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self == Refusal::Moving {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// The HTTP status for a lesson's refusal to let someone join.
pub(crate) fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound | ErrorCode::UnknownParticipant => StatusCode::NOT_FOUND,
        ErrorCode::Forbidden
        | ErrorCode::Blocked
        | ErrorCode::Removed
        | ErrorCode::Locked
        | ErrorCode::NotAdmitted
        | ErrorCode::NotPermitted => StatusCode::FORBIDDEN,
        ErrorCode::Ended => StatusCode::GONE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Malformed | ErrorCode::BadText | ErrorCode::UnsupportedVersion => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::Held | ErrorCode::NotRecording => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Why an upgraded connection is being closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Close {
    /// The lesson said goodbye.
    Farewell(Farewell),
    /// `hello` named a version this build does not speak.
    UnsupportedVersion,
    /// The first message was not `hello`.
    HelloExpected,
    /// The client kept sending after being told it was rate limited.
    RateLimited,
    /// Nothing (not even a pong) arrived within the idle timeout.
    Idle,
    /// The server is stopping, or the connection could not keep up.
    GoingAway,
    /// Something failed on the server.
    Internal,
}

/// The WebSocket close code and reason for a close.
pub(crate) fn close_frame(close: Close) -> (u16, &'static str) {
    match close {
        Close::Farewell(f) => match f {
            Farewell::Ended => (1000, "ended"),
            Farewell::Denied => (4003, "denied"),
            Farewell::Removed => (4003, "removed"),
            Farewell::Blocked => (4003, "blocked"),
            Farewell::AccessEnded => (4003, "access ended"),
            Farewell::Replaced => (4009, "replaced"),
        },
        Close::UnsupportedVersion => (4001, "unsupported version"),
        Close::HelloExpected => (4002, "hello expected"),
        Close::RateLimited => (4008, "rate limited"),
        Close::Idle => (4000, "idle"),
        Close::GoingAway => (1001, "going away"),
        Close::Internal => (1011, "internal error"),
    }
}

/// The typed code a participant sees when the media plane refuses a
/// negotiation.
pub(crate) fn media_error_code(e: &MediaError) -> ErrorCode {
    match e {
        MediaError::SdpTooLong(_) => ErrorCode::TooLarge,
        MediaError::MalformedSdp(_) | MediaError::SdpRefused(_) => ErrorCode::Malformed,
        MediaError::NoPendingOffer
        | MediaError::UnknownParticipant { .. }
        | MediaError::AlreadyAdded { .. } => ErrorCode::InvalidState,
        _ => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_is_one_answer() {
        let a = Refusal::Code(ErrorCode::NotFound);
        assert_eq!(a.status(), StatusCode::NOT_FOUND);
        assert_eq!(a.body(), r#"{"error":{"code":"not_found"}}"#);
    }

    #[test]
    fn farewells_have_distinct_reasons_and_documented_codes() {
        assert_eq!(close_frame(Close::Farewell(Farewell::Ended)).0, 1000);
        assert_eq!(close_frame(Close::Farewell(Farewell::Replaced)).0, 4009);
        assert_eq!(close_frame(Close::Farewell(Farewell::Removed)).0, 4003);
        assert_eq!(close_frame(Close::UnsupportedVersion).0, 4001);
        assert_eq!(close_frame(Close::RateLimited).0, 4008);
    }
}
