//! Errors and their wire form, RFC 9457 `application/problem+json`.
//!
//! In scope: the kernel's one error enum ([`Error`]), the [`Problem`] value every
//! handler failure becomes, and its rendering. Each problem carries a stable
//! snake_case `code` that clients may branch on; titles and details are for people.
//! Out of scope: the error enums of the function crates, which convert into
//! [`Problem`] themselves.
//!
//! A problem never carries raw request input or secrets: details are written by
//! us, not copied from the request or from a storage driver.

use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Longest `instance` (request path) echoed in a problem, in characters.
pub const MAX_INSTANCE_CHARS: usize = 256;

/// The kernel's errors: request-shape failures detected before any handler logic,
/// storage and configuration failures reported by the ports.
///
/// Every variant is listed in the problem catalogue ([`crate::problems`]):
/// `EnumIter` makes one value of each (fields at their defaults) and
/// `EnumMessage` gives its doc comment, which is the catalogue's description.
#[derive(Debug, Default, thiserror::Error, strum::EnumIter, strum::EnumMessage)]
pub enum Error {
    /// No resource exists at this path.
    #[default]
    #[error("no route for this path")]
    NotFound,
    /// The path exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// Methods the path does accept, for the `Allow` header.
        allow: Vec<http::Method>,
    },
    /// The body is larger than the configured cap.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The client did not send the body within the runtime's read timeout.
    #[error("request body not received in time")]
    RequestTimeout,
    /// The deployment is served over https and this request came over plain
    /// http (as the platform reports it).
    #[error("https required")]
    HttpsRequired,
    /// A bearer token was refused; the reason goes to the log only.
    #[strum(
        message = "The access token is missing, malformed, expired or not issued by this deployment: sign in again."
    )]
    #[error("invalid access token: {0}")]
    InvalidToken(&'static str),
    /// The KV key is empty or longer than the platforms allow.
    #[error("invalid KV key")]
    InvalidKvKey,
    /// A JSON route got a body that is not JSON.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// The body is not syntactically valid JSON.
    #[error("{0}")]
    InvalidJson(String),
    /// The body is JSON but does not have the expected shape or values.
    #[error("{0}")]
    InvalidRequest(String),
    /// A storage port failed (database or KV unreachable, statement error).
    #[error("storage error: {0}")]
    Storage(String),
    /// A statement would have broken a UNIQUE or PRIMARY KEY constraint;
    /// nothing was written. The ports report it as its own variant on every
    /// runtime, so callers decide what a conflict means without reading
    /// driver messages.
    #[strum(
        message = "The request conflicts with a concurrent change; nothing was written. Retry."
    )]
    #[error("unique constraint violated: {0}")]
    UniqueViolation(String),
    /// A rate limit refused the request.
    #[error("rate limited")]
    RateLimited {
        /// Seconds until a retry can succeed.
        retry_after_secs: i64,
    },
    /// An outbound HTTP call failed.
    #[error("outbound request failed: {0}")]
    Outbound(String),
    /// Configuration is missing or invalid; the function must not serve.
    #[error("configuration error: {0}")]
    Config(String),
    /// The caller is known but may not read or do this.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
}

impl Error {
    /// Shorthand for a storage failure from any displayable driver error.
    pub fn storage(e: impl std::fmt::Display) -> Self {
        Error::Storage(e.to_string())
    }
}

/// An RFC 9457 problem details object, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code; part of the API contract.
    pub code: &'static str,
    /// Short, human-readable summary of the problem type.
    pub title: &'static str,
    /// Human-readable explanation of this occurrence (never raw input).
    pub detail: Option<String>,
    /// Extra headers (`Allow`, `Retry-After`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// The underlying cause, for the operator's log; never rendered.
    pub internal: Option<String>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl Problem {
    /// A problem with a status, code and title.
    pub fn new(status: StatusCode, code: &'static str, title: &'static str) -> Self {
        Problem {
            status,
            code,
            title,
            detail: None,
            headers: Vec::new(),
            internal: None,
        }
    }

    /// Adds a detail line.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Renders the problem as a response; `instance` is the request path and
    /// `request_id` lets an operator find the matching log and audit lines.
    pub fn into_response(
        self,
        instance: Option<&str>,
        request_id: Option<&str>,
    ) -> crate::Response {
        // The instance is the request path: bounded, so a huge path is not
        // reflected back in full.
        let instance = instance.map(|p| match p.char_indices().nth(MAX_INSTANCE_CHARS) {
            Some((cut, _)) => &p[..cut],
            None => p,
        });
        let body = ProblemBody {
            type_: crate::problems::type_uri(self.code),
            title: self.title,
            status: self.status.as_u16(),
            code: self.code,
            detail: self.detail.as_deref(),
            instance,
            request_id,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = http::Response::new(bytes);
        *resp.status_mut() = self.status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            resp.headers_mut().append(name, value);
        }
        resp
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound => Problem::new(StatusCode::NOT_FOUND, "not_found", "Not found")
                .with_detail("No resource exists at this path."),
            Error::MethodNotAllowed { allow } => {
                let list = allow
                    .iter()
                    .map(http::Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut p = Problem::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "Method not allowed",
                )
                .with_detail(format!("This path accepts: {list}."));
                if let Ok(v) = HeaderValue::from_str(&list) {
                    p = p.with_header(header::ALLOW, v);
                }
                p
            }
            Error::PayloadTooLarge { limit } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            )
            .with_detail(format!("The request body must be at most {limit} bytes.")),
            // RFC 6750 §3: the challenge names the error; the reason (expired,
            // unknown key, ...) is not the client's business.
            Error::InvalidToken(reason) => Problem {
                internal: Some(format!("token refused: {reason}")),
                ..Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "Invalid access token",
                )
                .with_detail("The access token is missing, malformed, expired or not ours.")
                .with_header(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                )
            },
            Error::RequestTimeout => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "Request timeout",
            )
            .with_detail("The request body was not received in time."),
            // Keys are built by our code, so a bad one is our bug, not the
            // client's: a 5xx with the cause in the operator's log.
            Error::InvalidKvKey => Problem {
                internal: Some("KV key empty or over 512 bytes".into()),
                ..Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "Internal error",
                )
            },
            Error::Forbidden(what) => {
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden").with_detail(what)
            }
            Error::HttpsRequired => Problem::new(
                StatusCode::FORBIDDEN,
                "https_required",
                "HTTPS required",
            )
            .with_detail("This deployment is served over HTTPS only; nothing sent over plain HTTP is acted on."),
            Error::UnsupportedMediaType => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            )
            .with_detail("This route accepts application/json bodies only."),
            Error::InvalidJson(d) => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid_json", "Malformed JSON")
                    .with_detail(d)
            }
            Error::InvalidRequest(d) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Invalid request",
            )
            .with_detail(d),
            // Driver messages can name tables and constraints: keep them out of the
            // response (the runtime logs them with the request id).
            Error::RateLimited { retry_after_secs } => {
                let secs = retry_after_secs.max(1);
                let p = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Too many requests",
                )
                .with_detail(format!("Too many requests. Retry after {secs} seconds."));
                match HeaderValue::from_str(&secs.to_string()) {
                    Ok(v) => p.with_header(header::RETRY_AFTER, v),
                    Err(_) => p,
                }
            }
            // A conflict nobody anticipated: the request raced another.
            Error::UniqueViolation(m) => Problem {
                internal: Some(format!("unique constraint: {m}")),
                ..Problem::new(StatusCode::CONFLICT, "conflict", "Conflict")
                    .with_detail("The request conflicts with a concurrent change; retry.")
            },
            Error::Storage(m) => Problem {
                internal: Some(format!("storage: {m}")),
                ..Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "Storage unavailable",
                )
            },
            Error::Outbound(m) => Problem {
                internal: Some(format!("outbound: {m}")),
                ..Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    "Upstream service unavailable",
                )
            },
            Error::Config(m) => Problem {
                internal: Some(format!("config: {m}")),
                ..Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_misconfigured",
                    "Service misconfigured",
                )
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9457_fields() {
        let resp = Problem::from(Error::PayloadTooLarge { limit: 10 })
            .into_response(Some("/auth/x"), Some("rid"));
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let v: serde_json::Value = serde_json::from_slice(resp.body()).expect("json");
        assert_eq!(v["code"], "payload_too_large");
        assert_eq!(v["status"], 413);
        // A reference into this deployment's catalogue page.
        assert_eq!(v["type"], "/problems#payload_too_large");
        assert_eq!(v["instance"], "/auth/x");
        assert_eq!(v["request_id"], "rid");
    }

    #[test]
    fn storage_detail_is_not_leaked() {
        let resp =
            Problem::from(Error::storage("no such table: secret_things")).into_response(None, None);
        let body = String::from_utf8(resp.body().clone()).expect("utf8");
        assert!(!body.contains("secret_things"));
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn method_not_allowed_lists_allow() {
        let resp = Problem::from(Error::MethodNotAllowed {
            allow: vec![http::Method::GET, http::Method::HEAD],
        })
        .into_response(None, None);
        assert_eq!(resp.headers()[header::ALLOW], "GET, HEAD");
    }
}
