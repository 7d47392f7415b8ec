//! The mesh protocol as the device speaks it: signed requests and the
//! messages they carry.
//!
//! In scope: signing every request with the node key (RFC 9421 signatures
//! from `edgecoder_proto::httpsig`: `@method`, `@target-uri` (the absolute
//! URL sent to), `content-digest`, with `created`, a fresh 16-byte nonce and
//! the key id), the endpoints (register, node status, heartbeat, pull,
//! result), their bodies (`edgecoder_proto::mesh`, one definition with the
//! coordinator), and turning problem+json refusals into [`Error::Problem`].
//!
//! Out of scope: what to do with the answers (retry, back off, run tasks:
//! [`crate::runner`]) and where the key lives ([`crate::node`]). Redirects
//! are not followed: a signature covers one target.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p256::ecdsa::SigningKey;
use serde::Serialize;
use serde_json::Value;

use crate::Error;

/// Problem code for a node that is not (yet, or no longer) active.
pub const NODE_NOT_ACTIVE: &str = "node_not_active";
/// The problem code of a node the coordinator has banned.
pub const NODE_BLACKLISTED: &str = "node_blacklisted";
/// Problem code for a lease the coordinator no longer honours.
pub const LEASE_INVALID: &str = "lease_invalid";
/// Largest response body read (a pull carries the module and input inline).
const MAX_RESPONSE_BYTES: u64 = 64 << 20;
/// Retry delay when a 429 carries no usable `Retry-After`.
const DEFAULT_RETRY_AFTER_SECS: u64 = 5;
/// Upper bound on a `Retry-After` we honour, so a bad header cannot park the
/// agent for days.
const MAX_RETRY_AFTER_SECS: u64 = 600;

pub use edgecoder_proto::httpsig::SignedHeaders;
pub use edgecoder_proto::mesh::{
    Blob, Capabilities, FailureCode, HeartbeatResponse, NoTaskReason, Policy, RegisterRequest,
    RegisterResponse, Resources, Task, TaskResult, Telemetry,
};

/// Signs a request to the absolute `url`; `created` is Unix seconds;
/// `nonce` must never repeat for this key.
pub fn sign_request(
    key: &SigningKey,
    key_id: &str,
    method: &str,
    url: &str,
    body: &[u8],
    created: i64,
    nonce: &str,
) -> Result<SignedHeaders, Error> {
    let target = edgecoder_proto::httpsig::Target::from_url(method, url)?;
    Ok(edgecoder_proto::httpsig::sign(
        key, key_id, nonce, created, &target, body,
    )?)
}

/// A fresh nonce: 16 random bytes as lowercase hex.
pub fn new_nonce() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    crate::node::random_bytes(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A leased task, or a task whose body could not be understood (still
/// reported, so the lease is released rather than left to expire).
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// Task id.
    pub task_id: String,
    /// The lease to quote when reporting.
    pub lease_id: String,
    /// When the lease ends (as the coordinator wrote it).
    pub lease_expires_at: Option<Value>,
    /// The task, or why it could not be read.
    pub task: Result<Task, String>,
}

/// What a pull gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Pull {
    /// A task to run.
    Task(Box<Assignment>),
    /// Nothing now.
    NoWork {
        /// The coordinator's reason (`edgecoder-reason`), if given.
        reason: Option<NoTaskReason>,
    },
    /// Too many requests: wait this long.
    RetryAfter(Duration),
    /// The node is not approved yet, or suspended.
    NotActive,
}

/// A raw answer from the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshResponse {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After`, in seconds, when given as a number.
    pub retry_after: Option<u64>,
    /// `edgecoder-reason`.
    pub reason: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl MeshResponse {
    /// The body as JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::Protocol(format!(
                "status {} with an unreadable body: {e}",
                self.status
            ))
        })
    }

    /// The refusal this answer represents.
    pub fn problem(&self) -> Error {
        let doc: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
        Error::Problem {
            status: self.status,
            code: text("code").unwrap_or_else(|| format!("http_{}", self.status)),
            detail: text("detail").or_else(|| text("title")).unwrap_or_default(),
        }
    }
}

/// A client for one coordinator, signing with one node key.
pub struct MeshClient {
    /// `scheme://authority`.
    origin: String,
    /// Path prefix of the base URL (empty, or `/something` without a trailing `/`).
    prefix: String,
    key: SigningKey,
    key_id: String,
    http: ureq::Agent,
}

impl std::fmt::Debug for MeshClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshClient")
            .field("origin", &self.origin)
            .field("prefix", &self.prefix)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl MeshClient {
    /// A client for the coordinator at `base_url` (`http(s)://host[:port][/prefix]`).
    pub fn new(base_url: &str, key: SigningKey) -> Result<Self, Error> {
        let (origin, prefix) = split_base_url(base_url)?;
        let key_id = edgecoder_proto::keys::key_id(key.verifying_key());
        let config = ureq::Agent::config_builder()
            // Refusals are answers to read, not transport errors.
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(60)))
            .user_agent(concat!("edgecoder-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(MeshClient {
            origin,
            prefix,
            key,
            key_id,
            http: config.into(),
        })
    }

    /// The key id requests are signed with.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The absolute URL for `path` (what is signed and sent to).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}{path}", self.origin, self.prefix)
    }

    /// Sends a signed request. `path` starts with `/` and may carry `?query`;
    /// `body` is JSON (`None` for a GET: the empty body is still digested).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<MeshResponse, Error> {
        let url = self.url(path);
        let payload = body.unwrap_or_default();
        let headers = sign_request(
            &self.key,
            &self.key_id,
            method,
            &url,
            payload,
            unix_now(),
            &new_nonce()?,
        )?;
        let result = match (method, body) {
            ("GET", _) => with_signature(self.http.get(&url), &headers).call(),
            ("POST", Some(b)) => with_signature(self.http.post(&url), &headers)
                .header("content-type", "application/json")
                .send(b),
            ("POST", None) => with_signature(self.http.post(&url), &headers).send_empty(),
            _ => {
                return Err(Error::Config(format!("unsupported method {method}")));
            }
        };
        let mut response = result.map_err(|e| Error::Transport(e.to_string()))?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned())
        };
        let retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
        let reason = header("edgecoder-reason");
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| Error::Transport(format!("reading the answer: {e}")))?;
        Ok(MeshResponse {
            status,
            retry_after,
            reason,
            body,
        })
    }

    fn post_json<T: Serialize>(&self, path: &str, body: &T) -> Result<MeshResponse, Error> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| Error::Protocol(format!("cannot encode request: {e}")))?;
        self.send("POST", path, Some(&bytes))
    }

    /// `POST /mesh/nodes/register`.
    pub fn register(&self, request: &RegisterRequest) -> Result<RegisterResponse, Error> {
        let r = self.post_json("/mesh/nodes/register", request)?;
        match r.status {
            200 | 201 => r.json(),
            _ => Err(r.problem()),
        }
    }

    /// `GET /mesh/nodes/{node_id}`: the coordinator's view of the node.
    pub fn node(&self, node_id: &str) -> Result<Value, Error> {
        let r = self.send(
            "GET",
            &format!("/mesh/nodes/{}", path_segment(node_id)),
            None,
        )?;
        match r.status {
            200 => r.json(),
            _ => Err(r.problem()),
        }
    }

    /// `POST /mesh/heartbeat`.
    pub fn heartbeat(&self, telemetry: &Telemetry) -> Result<HeartbeatResponse, Error> {
        let r = self.post_json("/mesh/heartbeat", telemetry)?;
        match r.status {
            200 => r.json(),
            _ => Err(r.problem()),
        }
    }

    /// `POST /mesh/tasks/pull`.
    pub fn pull(&self) -> Result<Pull, Error> {
        let r = self.post_json("/mesh/tasks/pull", &serde_json::json!({}))?;
        match r.status {
            200 => parse_assignment(&r).map(|a| Pull::Task(Box::new(a))),
            204 => Ok(Pull::NoWork {
                reason: r.reason.as_deref().map(NoTaskReason::parse),
            }),
            429 => Ok(Pull::RetryAfter(Duration::from_secs(
                r.retry_after
                    .unwrap_or(DEFAULT_RETRY_AFTER_SECS)
                    .min(MAX_RETRY_AFTER_SECS),
            ))),
            403 => match r.problem() {
                Error::Problem { code, .. } if code == NODE_NOT_ACTIVE => Ok(Pull::NotActive),
                other => Err(other),
            },
            _ => Err(r.problem()),
        }
    }

    /// `POST /mesh/tasks/{id}/release`: gives a leased task back unfinished.
    pub fn release(&self, task_id: &str, lease_id: &str) -> Result<(), Error> {
        let path = format!("/mesh/tasks/{}/release", path_segment(task_id));
        let r = self.post_json(&path, &serde_json::json!({ "lease_id": lease_id }))?;
        match r.status {
            200..=299 => Ok(()),
            _ => Err(r.problem()),
        }
    }

    /// `POST /mesh/tasks/{id}/result`.
    pub fn report(&self, task_id: &str, result: &TaskResult) -> Result<(), Error> {
        let path = format!("/mesh/tasks/{}/result", path_segment(task_id));
        let r = self.post_json(&path, result)?;
        match r.status {
            200..=299 => Ok(()),
            _ => Err(r.problem()),
        }
    }
}

fn with_signature<B>(
    request: ureq::RequestBuilder<B>,
    headers: &SignedHeaders,
) -> ureq::RequestBuilder<B> {
    request
        .header("content-digest", &headers.content_digest)
        .header("signature-input", &headers.signature_input)
        .header("signature", &headers.signature)
        .header("accept", "application/json")
}

/// Reads a `200` pull: the lease and task id first, then the task itself, so
/// a task this agent cannot parse is still answered (as `outside_subset`).
fn parse_assignment(r: &MeshResponse) -> Result<Assignment, Error> {
    let doc: Value = r.json()?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let task_value = doc
        .get("task")
        .ok_or_else(|| Error::Protocol("pull answer without a task".into()))?;
    let task_id = text(task_value.get("id"))
        .ok_or_else(|| Error::Protocol("pulled task without an id".into()))?;
    let lease_id = text(doc.get("lease_id"))
        .ok_or_else(|| Error::Protocol("pulled task without a lease".into()))?;
    let task = serde_json::from_value::<Task>(task_value.clone()).map_err(|e| e.to_string());
    Ok(Assignment {
        task_id,
        lease_id,
        lease_expires_at: doc.get("lease_expires_at").cloned(),
        task,
    })
}

/// Registers `node` with the coordinator at `coordinator` using a one-time
/// enrollment token, declaring `capabilities`, and remembers the coordinator
/// in the node's settings. Device agents and GPU hosts register alike.
pub fn register_node(
    node: &mut crate::node::Node,
    coordinator: &str,
    enrollment_token: String,
    capabilities: edgecoder_proto::mesh::Capabilities,
) -> Result<RegisterResponse, Error> {
    let client = MeshClient::new(coordinator, node.signing_key().clone())?;
    let request = RegisterRequest {
        enrollment_token,
        node_id: node.node_id().to_owned(),
        kind: node.config().kind,
        public_key: node.public_key(),
        os: std::env::consts::OS.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        capabilities,
    };
    let answer = client.register(&request)?;
    node.set_coordinator(coordinator)?;
    Ok(answer)
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so an id
/// from the coordinator cannot change the path it is placed in.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `authority` (host, optional port) names this machine.
fn is_loopback(authority: &str) -> bool {
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Splits a base URL into origin and path prefix.
fn split_base_url(url: &str) -> Result<(String, String), Error> {
    let url = url.trim().trim_end_matches('/');
    let bad = |why: &str| Error::Config(format!("coordinator URL {url:?}: {why}"));
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    if url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain a query, a fragment or spaces"));
    }
    let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("needs a host and no user info"));
    }
    // The enrollment token and the task bytes travel over this connection:
    // plain http only to this machine.
    if url.starts_with("http://") && !is_loopback(authority) {
        return Err(bad("must be https (http only to localhost)"));
    }
    let scheme_len = url.len() - rest.len();
    let origin = format!("{}{authority}", &url[..scheme_len]);
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("/{prefix}")
    };
    Ok((origin, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgecoder_proto::httpsig::{self, Signed, Target};

    fn key() -> SigningKey {
        crate::node::generate_key().expect("key")
    }

    fn check(
        h: &SignedHeaders,
        method: &str,
        url: &str,
        body: &[u8],
        now: i64,
        key: &SigningKey,
    ) -> Result<Signed, edgecoder_proto::Error> {
        let mut headers = httpsig::HeaderMap::new();
        headers.insert("content-digest", h.content_digest.parse().expect("header"));
        headers.insert(
            "signature-input",
            h.signature_input.parse().expect("header"),
        );
        headers.insert("signature", h.signature.parse().expect("header"));
        let signed = Signed::from_headers(&headers)?;
        signed
            .prepare(&Target::from_url(method, url)?, &headers, body, now)?
            .verify(key.verifying_key())?;
        Ok(signed)
    }

    #[test]
    fn signed_headers_verify_with_the_protocol_crate() {
        let key = key();
        let kid = edgecoder_proto::keys::key_id(key.verifying_key());
        let body = br#"{"cpu_percent":1.5}"#;
        let nonce = new_nonce().expect("nonce");
        let now = unix_now();
        let url = "https://edge.example/mesh/heartbeat";
        let h = sign_request(&key, &kid, "POST", url, body, now, &nonce).expect("sign");
        let signed = check(&h, "POST", url, body, now, &key).expect("verifies");
        assert_eq!(signed.params.keyid, kid);
        assert_eq!(signed.params.nonce, nonce);
        assert_eq!(signed.params.created, now);
        assert!(
            h.signature_input
                .starts_with(r#"sig1=("@method" "@target-uri" "content-digest");"#)
        );
        // Another target, host or body does not.
        assert!(
            check(
                &h,
                "POST",
                "https://edge.example/mesh/tasks/pull",
                body,
                now,
                &key
            )
            .is_err()
        );
        assert!(
            check(
                &h,
                "POST",
                "https://other.example/mesh/heartbeat",
                body,
                now,
                &key
            )
            .is_err()
        );
        assert!(check(&h, "POST", url, b"{}", now, &key).is_err());
    }

    #[test]
    fn get_requests_sign_the_empty_body() {
        let key = key();
        let kid = edgecoder_proto::keys::key_id(key.verifying_key());
        let url = "http://127.0.0.1:8787/mesh/nodes/n1";
        let h = sign_request(&key, &kid, "GET", url, b"", 1_800_000_000, "ab").expect("sign");
        assert_eq!(h.content_digest, httpsig::content_digest(b""));
        check(&h, "GET", url, b"", 1_800_000_000, &key).expect("verifies");
    }

    #[test]
    fn nonces_are_fresh_lowercase_hex() {
        let a = new_nonce().expect("nonce");
        let b = new_nonce().expect("nonce");
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_ne!(a, b);
    }

    #[test]
    fn base_urls_split_into_origin_and_prefix() {
        assert_eq!(
            split_base_url("http://127.0.0.1:8787").expect("ok"),
            ("http://127.0.0.1:8787".into(), String::new())
        );
        assert_eq!(
            split_base_url("https://edge.example/api/").expect("ok"),
            ("https://edge.example".into(), "/api".into())
        );
        for bad in [
            "ftp://x",
            "127.0.0.1:8787",
            "http://",
            "http://u:p@host",
            "http://h/?q=1",
            "http://h/a b",
        ] {
            assert!(split_base_url(bad).is_err(), "{bad}");
        }
        let c = MeshClient::new("https://edge.example/api", key()).expect("client");
        assert_eq!(
            c.url("/mesh/heartbeat"),
            "https://edge.example/api/mesh/heartbeat"
        );
    }

    #[test]
    fn plain_http_is_for_this_machine_only() {
        for ok in [
            "http://localhost:8787",
            "http://127.0.0.1",
            "http://[::1]:8787",
            "https://edge.example",
        ] {
            assert!(split_base_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://edge.example",
            "http://10.0.0.2:8787",
            "http://localhost.evil.example",
        ] {
            assert!(split_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        assert_eq!(path_segment("task-1_a.b~"), "task-1_a.b~");
        assert_eq!(path_segment("../x?y"), "..%2Fx%3Fy");
    }

    #[test]
    fn problems_keep_their_code() {
        let r = MeshResponse {
            status: 409,
            retry_after: None,
            reason: None,
            body: br#"{"type":"about:blank","title":"Conflict","status":409,"code":"lease_invalid","detail":"expired"}"#.to_vec(),
        };
        let e = r.problem();
        assert_eq!(e.problem_code(), Some(LEASE_INVALID));
        assert!(!e.is_transient());
        let r = MeshResponse {
            status: 502,
            retry_after: None,
            reason: None,
            body: b"<html>".to_vec(),
        };
        let e = r.problem();
        assert_eq!(e.problem_code(), Some("http_502"));
        assert!(e.is_transient());
        let not_active = Error::Problem {
            status: 403,
            code: NODE_NOT_ACTIVE.into(),
            detail: String::new(),
        };
        assert!(!not_active.is_auth_refusal());
        let unknown_key = Error::Problem {
            status: 401,
            code: "signature_invalid".into(),
            detail: String::new(),
        };
        assert!(unknown_key.is_auth_refusal());
    }

    #[test]
    fn pulled_tasks_parse_and_unreadable_ones_still_carry_the_lease() {
        let body = serde_json::json!({
            "task": {
                "id": "t1", "kind": "wasm",
                "module": {"digest": "blake3:00", "bytes": "AA=="},
                "input": {"digest": "blake3:01", "bytes": ""},
                "timeout_ms": 1000, "resources": {"memory_mb": 16, "fuel": 1000}
            },
            "lease_id": "l1", "lease_expires_at": "2030-01-01T00:00:00Z"
        });
        let r = MeshResponse {
            status: 200,
            retry_after: None,
            reason: None,
            body: serde_json::to_vec(&body).expect("json"),
        };
        let a = parse_assignment(&r).expect("assignment");
        assert_eq!((a.task_id.as_str(), a.lease_id.as_str()), ("t1", "l1"));
        let task = a.task.expect("task");
        assert_eq!(task.resources.fuel, 1000);

        let body = serde_json::json!({"task": {"id": "t2", "kind": "wasm"}, "lease_id": "l2"});
        let r = MeshResponse {
            body: serde_json::to_vec(&body).expect("json"),
            ..r
        };
        let a = parse_assignment(&r).expect("assignment");
        assert_eq!(a.lease_id, "l2");
        assert!(a.task.is_err());
    }

    #[test]
    fn policies_tolerate_missing_fields_as_restrictions() {
        let p: Policy = serde_json::from_str(r#"{"work":"any"}"#).expect("policy");
        assert!(!p.wants_no_work());
        assert!(p.allowed_task_kinds.is_empty());
        assert_eq!(p.max_fuel, 0);
    }
}
