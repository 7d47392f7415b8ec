//! Requests and responses as every function sees them, and JSON body handling.
//!
//! In scope: the runtime-neutral [`Request`], response builders, the body cap
//! and the JSON decoding rules (media type first, then size, then syntax, then
//! shape). Out of scope: reading bodies off the wire, which each runtime does,
//! stopping at the cap + 1 bytes so an oversized body is never buffered whole.

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, RequestContext};

/// A response with a fully buffered body.
pub type Response = http::Response<Vec<u8>>;

/// RFC 3339 UTC time (milliseconds) for API responses.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `application/json`.
pub const JSON: &str = "application/json";
/// `application/health+json` (draft-inadarei-api-health-check).
pub const HEALTH_JSON: &str = "application/health+json";

/// An incoming request, as the runtime handed it over.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Path, percent-encoded as received.
    pub path: String,
    /// Raw query string, without `?`.
    pub query: Option<String>,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes (at most the cap + 1; see [`crate::Router::handle`]).
    pub body: Vec<u8>,
    /// Request id and client address.
    pub ctx: RequestContext,
    /// Path parameters filled in by the router.
    pub params: Vec<(String, String)>,
}

impl Request {
    /// A request with no body, headers or context; runtimes fill in the rest.
    pub fn new(method: Method, path_and_query: &str, ctx: RequestContext) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (normalize_path(p), Some(q.to_owned())),
            None => (normalize_path(path_and_query), None),
        };
        Request {
            method,
            path,
            query,
            headers: HeaderMap::new(),
            body: Vec::new(),
            ctx,
            params: Vec::new(),
        }
    }

    /// The `Authorization: Bearer` credential, if any.
    pub fn bearer(&self) -> Option<&str> {
        let v = self.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// A path parameter by name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Decodes a JSON body: 415 unless the media type is `application/json` (or
    /// a `+json` type), 400 `invalid_json` on a syntax error, 400
    /// `invalid_request` when the JSON does not have the expected shape. Details
    /// give a position, never the offending input.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        if !is_json_media_type(self.headers.get(header::CONTENT_TYPE)) {
            return Err(Error::UnsupportedMediaType);
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            use serde_json::error::Category;
            // A shape error can surface before a later syntax error (`[1,2`
            // fails as "wrong type" first), so a shape error is only reported
            // once the whole body is known to be well-formed JSON.
            let e = match e.classify() {
                Category::Data => {
                    match serde_json::from_slice::<serde::de::IgnoredAny>(&self.body) {
                        Ok(_) => {
                            return Error::InvalidRequest(format!(
                                "The JSON body does not have the expected fields or types (at line {} column {}).",
                                e.line(),
                                e.column()
                            ));
                        }
                        Err(syntax) => syntax,
                    }
                }
                _ => e,
            };
            Error::InvalidJson(format!(
                "The body is not valid JSON (at line {} column {}).",
                e.line(),
                e.column()
            ))
        })
    }
}

/// Resolves `.` and `..` segments (also percent-encoded as `%2e`) the way URL
/// parsers do, so every runtime routes the same path: Workers hands us URLs
/// already resolved, native and Spin hand us the raw request target.
pub fn normalize_path(raw: &str) -> String {
    let is_dot = |s: &str| s == "." || s.eq_ignore_ascii_case("%2e");
    let is_dot_dot = |s: &str| {
        matches!(s.len(), 2 | 4 | 6) && s.to_ascii_lowercase().replace("%2e", ".") == ".."
    };
    let segments: Vec<&str> = raw.split('/').skip(1).collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        if is_dot(seg) || is_dot_dot(seg) {
            if is_dot_dot(seg) {
                out.pop();
            }
            // A trailing dot segment leaves a directory path (`/a/b/..` -> `/a/`).
            if i == last {
                out.push("");
            }
        } else {
            out.push(seg);
        }
    }
    format!("/{}", out.join("/"))
}

/// Whether a `Content-Type` names JSON (`application/json` or `application/*+json`).
pub fn is_json_media_type(value: Option<&HeaderValue>) -> bool {
    let Some(Ok(raw)) = value.map(HeaderValue::to_str) else {
        return false;
    };
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == JSON || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether a declared `Content-Length` already exceeds `limit`. Runtimes call
/// this before reading the body so an oversized upload is refused unread.
pub fn declared_length_exceeds(headers: &HeaderMap, limit: usize) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// A JSON response with the given status and media type.
pub fn json_response<T: Serialize>(
    status: StatusCode,
    media_type: &'static str,
    body: &T,
) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = http::Response::new(bytes);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    resp
}

/// A 200 `application/json` response.
pub fn ok_json<T: Serialize>(body: &T) -> Response {
    json_response(StatusCode::OK, JSON, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ct: Option<&'static str>, body: &[u8]) -> Request {
        let mut r = Request::new(
            Method::POST,
            "/x?y=1",
            RequestContext {
                request_id: "r".into(),
                client_ip: None,
                ..Default::default()
            },
        );
        if let Some(ct) = ct {
            r.headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        r.body = body.to_vec();
        r
    }

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Shape {
        message: String,
    }

    #[test]
    fn splits_query() {
        let r = req(None, b"");
        assert_eq!(r.path, "/x");
        assert_eq!(r.query.as_deref(), Some("y=1"));
    }

    #[test]
    fn dot_segments_resolve_like_a_url_parser() {
        for (raw, want) in [
            ("/auth/health", "/auth/health"),
            ("/auth/../auth/health", "/auth/health"),
            ("/auth/./health", "/auth/health"),
            ("/auth/%2e%2E/mesh/health", "/mesh/health"),
            ("/../../auth/health", "/auth/health"),
            ("/auth/health/..", "/auth/"),
            ("/", "/"),
            ("/auth//health", "/auth//health"),
        ] {
            assert_eq!(normalize_path(raw), want, "{raw}");
        }
    }

    #[test]
    fn media_type_is_checked_first() {
        assert!(matches!(
            req(Some("text/plain"), b"{}").json::<Shape>(),
            Err(Error::UnsupportedMediaType)
        ));
        assert!(matches!(
            req(None, b"{}").json::<Shape>(),
            Err(Error::UnsupportedMediaType)
        ));
    }

    #[test]
    fn syntax_and_shape_errors_differ_and_do_not_echo() {
        let e = req(
            Some("application/json; charset=utf-8"),
            b"{\"message\": \"sec",
        )
        .json::<Shape>()
        .err()
        .expect("error");
        assert!(matches!(&e, Error::InvalidJson(d) if !d.contains("sec")));
        let e = req(
            Some("application/merge-patch+json"),
            b"{\"message\": 12345}",
        )
        .json::<Shape>()
        .err()
        .expect("error");
        assert!(matches!(&e, Error::InvalidRequest(d) if !d.contains("12345")));
    }

    #[test]
    fn truncated_json_is_a_syntax_error_even_when_the_shape_fails_first() {
        let e = req(Some("application/json"), b"[1,2")
            .json::<Shape>()
            .err()
            .expect("error");
        assert!(matches!(e, Error::InvalidJson(_)), "{e:?}");
    }

    #[test]
    fn declared_length() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
        assert!(declared_length_exceeds(&h, 10));
        assert!(!declared_length_exceeds(&h, 11));
    }
}
