//! Mesh authentication: who is calling a `/mesh/` route.
//!
//! In scope: nodes, by an RFC 9421-shaped signature with their registered
//! key (`keyid`), a nonce stored per key in SQL (UNIQUE, pruned after the
//! window) and a per-node request budget counted only after the signature
//! and nonce checks pass, so nobody can spend another node's budget; users,
//! by an access token the identity function vouches for (roles from its
//! storage, step-up from `auth_time`); other functions, by the service
//! credential. Out of scope: what each route lets them do.
//!
//! `@target-uri` is the request target in origin form (path and query, as
//! sent): TLS-terminating proxies and the runtimes disagree on scheme and
//! authority, and a node's key is registered with one coordinator only.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgecoder_kernel::http_types::HeaderMap;
use edgecoder_kernel::httpsig::{self, SigError};
use edgecoder_kernel::keys::key_id;
use edgecoder_kernel::{Caller, Request, Services, Statement, Value, tokens};
use p256::ecdsa::VerifyingKey;
use serde_json::Value as Json;

use crate::Error;

/// Roles that operate the coordinator.
pub const OPERATOR_ROLES: [&str; 2] = ["coordinator_owner", "system_admin"];

/// How recent a sign-in must be for operator decisions (the auth function's
/// step-up window).
pub const STEP_UP_WINDOW_SECS: i64 = 10 * 60;

/// Longest nonce accepted.
const MAX_NONCE_CHARS: usize = 128;

/// A registered node, as stored.
#[derive(Debug, Clone)]
pub struct Node {
    /// Node id.
    pub node_id: String,
    /// `agent` or `coordinator`.
    pub kind: String,
    /// The enrolling user.
    pub owner_id: String,
    /// `pending_approval`, `active`, `rejected` or `suspended`.
    pub status: String,
    /// Current key id.
    pub key_id: String,
    /// Declared capabilities.
    pub capabilities: Json,
    /// Last heartbeat telemetry.
    pub telemetry: Option<Json>,
}

impl Node {
    /// The audit actor.
    pub fn actor(&self) -> String {
        format!("node:{}", self.node_id)
    }
}

/// A user or a function calling with a bearer credential.
#[derive(Debug, Clone)]
pub enum Bearer {
    /// A signed-in user.
    User(Caller),
    /// Another EdgeCoder function (the service credential).
    Service,
}

impl Bearer {
    /// The audit actor (and task submitter).
    pub fn actor(&self) -> String {
        match self {
            Bearer::User(c) => format!("user:{}", c.user_id),
            Bearer::Service => "service".to_owned(),
        }
    }

    /// Whether the caller operates the coordinator.
    pub fn is_operator(&self) -> bool {
        match self {
            Bearer::User(c) => OPERATOR_ROLES.iter().any(|r| c.has_role(r)),
            Bearer::Service => false,
        }
    }
}

/// Parses a SEC1 P-256 point sent as base64url.
pub fn parse_public_key(b64: &str) -> Result<VerifyingKey, Error> {
    let raw = URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('=').as_bytes())
        .map_err(|_| Error::InvalidPublicKey)?;
    VerifyingKey::from_sec1_bytes(&raw).map_err(|_| Error::InvalidPublicKey)
}

/// Whether the request carries signature headers at all.
pub fn is_signed(req: &Request) -> bool {
    req.headers.contains_key("signature-input") || req.headers.contains_key("signature")
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The request target as signed: path and query.
pub fn target(req: &Request) -> String {
    match &req.query {
        Some(q) => format!("{}?{q}", req.path),
        None => req.path.clone(),
    }
}

/// The parsed signature parameters, or the refusal.
fn params(req: &Request) -> Result<(httpsig::Params, String), Error> {
    let (Some(input), Some(sig)) = (
        header(&req.headers, "signature-input"),
        header(&req.headers, "signature"),
    ) else {
        return Err(Error::Unauthorized);
    };
    let p = httpsig::parse_input(input)?;
    if p.nonce.len() > MAX_NONCE_CHARS {
        return Err(SigError::Malformed("nonce too long").into());
    }
    Ok((p, sig.to_owned()))
}

/// Checks the request's signature with `key` and consumes its nonce.
async fn verify_with(
    s: &Services,
    req: &Request,
    p: &httpsig::Params,
    sig: &str,
    key: &VerifyingKey,
) -> Result<(), Error> {
    let now = s.clock.now_ms();
    let pending = httpsig::prepare(
        p,
        sig,
        header(&req.headers, "content-digest"),
        req.method.as_str(),
        &target(req),
        &req.body,
        now.div_euclid(1000),
    )?;
    let point = key.to_encoded_point(false);
    if !s
        .signatures
        .verify_p256(
            point.as_bytes(),
            pending.base.as_bytes(),
            &pending.signature,
        )
        .await?
    {
        return Err(SigError::Invalid.into());
    }
    // Only after the signature holds, so strangers cannot fill the table. A
    // nonce older than twice the skew can no longer come with an acceptable
    // `created`, so it is safe to forget.
    let cutoff = now - 2 * (httpsig::MAX_SKEW_SECS + 1) * 1000;
    let done = s
        .sql
        .batch(vec![
            Statement::new(
                "DELETE FROM mesh_nonces WHERE seen_at < ?1",
                vec![Value::Integer(cutoff)],
            ),
            Statement::new(
                "INSERT INTO mesh_nonces (key_id, nonce, seen_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key_id, nonce) DO NOTHING RETURNING nonce",
                vec![
                    p.keyid.as_str().into(),
                    p.nonce.as_str().into(),
                    Value::Integer(now),
                ],
            ),
        ])
        .await?;
    if done.get(1).is_none_or(|r| r.rows.is_empty()) {
        return Err(Error::ReplayDetected);
    }
    Ok(())
}

/// A registration: the request must be signed by the key it registers
/// (proof of possession), with `keyid` the key's id.
pub async fn signed_by_new_key(
    s: &Services,
    req: &Request,
    key: &VerifyingKey,
) -> Result<String, Error> {
    let (p, sig) = params(req)?;
    let kid = key_id(key);
    if p.keyid != kid {
        return Err(SigError::Invalid.into());
    }
    verify_with(s, req, &p, &sig, key).await?;
    if let Some(ip) = req.ctx.client_ip {
        // Each registration costs a nonce row, an audit event and, on Spin,
        // a call to auth.
        charge(
            s,
            &format!("register:{ip}"),
            s.config.mesh_register_per_minute,
        )
        .await?;
    }
    Ok(kid)
}

const NODE_COLUMNS: &str =
    "node_id, kind, owner_id, status, key_id, public_key, capabilities, telemetry";

fn node_from(rows: &edgecoder_kernel::Rows, i: usize) -> Node {
    let text = |c: &str| rows.get_str(i, c).unwrap_or_default().to_owned();
    Node {
        node_id: text("node_id"),
        kind: text("kind"),
        owner_id: text("owner_id"),
        status: text("status"),
        key_id: text("key_id"),
        capabilities: serde_json::from_str(&text("capabilities")).unwrap_or(Json::Null),
        telemetry: rows
            .get_str(i, "telemetry")
            .and_then(|t| serde_json::from_str(t).ok()),
    }
}

/// A node by id.
pub async fn load_node(s: &Services, node_id: &str) -> Result<Option<Node>, Error> {
    let rows = s
        .sql
        .execute(Statement::new(
            format!("SELECT {NODE_COLUMNS} FROM mesh_nodes WHERE node_id = ?1"),
            vec![node_id.into()],
        ))
        .await?;
    Ok((!rows.rows.is_empty()).then(|| node_from(&rows, 0)))
}

/// A request signed by a registered node's current key, whatever its status;
/// the node's request budget is charged.
pub async fn signed_node(s: &Services, req: &Request) -> Result<Node, Error> {
    let (p, sig) = params(req)?;
    let rows = s
        .sql
        .execute(Statement::new(
            format!("SELECT {NODE_COLUMNS} FROM mesh_nodes WHERE key_id = ?1"),
            vec![p.keyid.as_str().into()],
        ))
        .await?;
    let Some(raw) = rows.get_blob(0, "public_key") else {
        return Err(Error::UnknownKey);
    };
    let key = VerifyingKey::from_sec1_bytes(raw)
        .map_err(|_| Error::Kernel(edgecoder_kernel::Error::Storage("stored key".into())))?;
    let node = node_from(&rows, 0);
    verify_with(s, req, &p, &sig, &key).await?;
    charge(s, &node.node_id, s.config.mesh_node_rate_per_minute).await?;
    Ok(node)
}

/// A request signed by an `active` node.
pub async fn active_node(s: &Services, req: &Request) -> Result<Node, Error> {
    let node = signed_node(s, req).await?;
    if node.status != "active" {
        return Err(Error::NodeNotActive);
    }
    Ok(node)
}

/// Task submissions per submitter per minute.
pub const SUBMIT_PER_MINUTE: i64 = 120;

/// Counts one request against `bucket`'s per-minute budget of `limit` (a
/// node id, or `register:<ip>` / `submit:<actor>`).
pub async fn charge(s: &Services, bucket: &str, limit: i64) -> Result<(), Error> {
    let node_id = bucket;
    let now = s.clock.now_ms();
    let window = now - now.rem_euclid(60_000);
    let rows = s
        .sql
        .batch(vec![
            Statement::new(
                "DELETE FROM mesh_rate WHERE window_start < ?1",
                vec![Value::Integer(window - 60_000)],
            ),
            Statement::new(
                "INSERT INTO mesh_rate (node_id, window_start, count) VALUES (?1, ?2, 1) \
                 ON CONFLICT (node_id, window_start) DO UPDATE SET count = count + 1 RETURNING count",
                vec![node_id.into(), Value::Integer(window)],
            ),
        ])
        .await?;
    let count = rows
        .get(1)
        .and_then(|r| r.get_i64(0, "count"))
        .unwrap_or(i64::MAX);
    if count > limit {
        return Err(Error::RateLimited {
            retry_after_secs: (window + 60_000 - now + 999) / 1000,
        });
    }
    Ok(())
}

/// The bearer caller: the service credential, or a user's access token.
pub async fn bearer(s: &Services, req: &Request) -> Result<Bearer, Error> {
    let Some(token) = req.bearer() else {
        return Err(Error::Unauthorized);
    };
    if tokens::secret_matches(token, s.config.service_token.as_deref()) {
        return Ok(Bearer::Service);
    }
    match s.identity.caller(token).await? {
        Some(c) => Ok(Bearer::User(c)),
        None => Err(Error::InvalidToken),
    }
}

/// An operator (coordinator_owner or system_admin) with a recent sign-in.
pub async fn operator(s: &Services, req: &Request) -> Result<Caller, Error> {
    let Bearer::User(c) = bearer(s, req).await? else {
        return Err(Error::Forbidden);
    };
    if !OPERATOR_ROLES.iter().any(|r| c.has_role(r)) {
        return Err(Error::Forbidden);
    }
    if s.clock.now_ms() / 1000 - c.auth_time > STEP_UP_WINDOW_SECS {
        return Err(Error::StepUpRequired);
    }
    Ok(c)
}
