//! Mesh authentication: who is calling a `/mesh/` route.
//!
//! In scope: nodes, by an RFC 9421 signature (`edgecoder_proto::httpsig`)
//! with their registered key (`keyid`), a nonce stored per key in SQL
//! (UNIQUE, pruned after the window) and a per-node request budget counted
//! only after the signature and nonce checks pass, so nobody can spend
//! another node's budget; users, by an access token the identity function
//! vouches for (roles from its storage, step-up from `auth_time`); other
//! functions, by the service credential. Out of scope: what each route lets
//! them do.
//!
//! The derived components are the request as the client addressed it: the
//! scheme and authority the runtime reports (Cloudflare's URL, Spin's
//! `spin-full-url`, natively `Host`, or `X-Forwarded-Proto`/`-Host` from a
//! trusted proxy), the path and query as received.

use edgecoder_kernel::http_types::HeaderMap;
use edgecoder_kernel::{Caller, Request, Services, Statement, Value, ratelimit, tokens};
use edgecoder_proto::httpsig::{self, Signed, Target};
use edgecoder_proto::keys::key_id;
use edgecoder_proto::mesh::{Capabilities, NodeKind, NodeStatus, Sandbox, Telemetry};
use edgecoder_proto::{Error as SigError, NodeId};
use p256::ecdsa::VerifyingKey;

use crate::Error;

/// Roles that operate the coordinator.
pub const OPERATOR_ROLES: [&str; 2] = ["coordinator_owner", "system_admin"];

/// How recent a sign-in must be for operator decisions (the auth function's
/// step-up window).
pub const STEP_UP_WINDOW_SECS: i64 = 10 * 60;

/// A registered node, as stored.
#[derive(Debug, Clone)]
pub struct Node {
    /// Node id.
    pub node_id: String,
    /// Its role.
    pub kind: NodeKind,
    /// The enrolling user.
    pub owner_id: String,
    /// Where it stands.
    pub status: NodeStatus,
    /// Current key id.
    pub key_id: String,
    /// Declared capabilities.
    pub capabilities: Capabilities,
    /// Last heartbeat telemetry.
    pub telemetry: Option<Telemetry>,
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
    Ok(edgecoder_proto::keys::parse_public_key(b64)?)
}

/// A node id from a path or a body, or `invalid_node_id`.
pub fn node_id(id: &str) -> Result<NodeId, Error> {
    Ok(NodeId::parse(id)?)
}

/// Whether the request carries signature headers at all.
pub fn is_signed(req: &Request) -> bool {
    req.headers.contains_key("signature-input") || req.headers.contains_key("signature")
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The request as RFC 9421 derives its components from it.
pub fn target(req: &Request) -> Result<Target, Error> {
    let authority = req
        .ctx
        .authority
        .as_deref()
        .or_else(|| header(&req.headers, "host"))
        .ok_or(SigError::Malformed("the request names no authority"))?;
    Ok(Target::new(
        req.method.as_str(),
        req.ctx.scheme.as_deref().unwrap_or("http"),
        authority,
        &req.path,
        req.query.as_deref(),
    )?)
}

/// The signature this coordinator accepts, or the refusal.
fn params(req: &Request) -> Result<Signed, Error> {
    match Signed::from_headers(&req.headers) {
        Err(SigError::Missing) => Err(Error::Unauthorized),
        other => Ok(other?),
    }
}

/// Checks the request's signature with `key` and consumes its nonce.
async fn verify_with(
    s: &Services,
    req: &Request,
    signed: &Signed,
    key: &VerifyingKey,
) -> Result<(), Error> {
    let now = s.clock.now_ms();
    let pending = signed.prepare(&target(req)?, &req.headers, &req.body, now.div_euclid(1000))?;
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
    let p = &signed.params;
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
    let signed = params(req)?;
    let kid = key_id(key);
    if signed.params.keyid != kid {
        return Err(SigError::Invalid.into());
    }
    verify_with(s, req, &signed, key).await?;
    if let Some(ip) = req.ctx.client_ip {
        // Each registration costs a nonce row, an audit event and, on Spin,
        // a call to auth.
        charge(
            s,
            &format!("register:{ip}"),
            crate::Settings::of(s)?.register_per_minute,
        )
        .await?;
    }
    Ok(kid)
}

const NODE_COLUMNS: &str =
    "node_id, kind, owner_id, status, key_id, public_key, capabilities, telemetry";

fn node_from(rows: &edgecoder_kernel::Rows, i: usize) -> Result<Node, Error> {
    let text = |c: &str| rows.get_str(i, c).unwrap_or_default().to_owned();
    let corrupt = |what: &str| edgecoder_kernel::Error::Storage(format!("mesh_nodes.{what}"));
    Ok(Node {
        node_id: text("node_id"),
        kind: NodeKind::parse(&text("kind")).ok_or_else(|| corrupt("kind"))?,
        owner_id: text("owner_id"),
        status: NodeStatus::parse(&text("status")),
        key_id: text("key_id"),
        // A node whose stored capabilities no longer read gets no sandbox,
        // so no work, rather than a failed request.
        capabilities: serde_json::from_str(&text("capabilities")).unwrap_or(Capabilities {
            sandbox: Sandbox::None,
            cpu_cores: 1,
            memory_mb: 0,
            gpu: None,
            models: Vec::new(),
        }),
        telemetry: rows
            .get_str(i, "telemetry")
            .and_then(|t| serde_json::from_str(t).ok()),
    })
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
    if rows.rows.is_empty() {
        return Ok(None);
    }
    node_from(&rows, 0).map(Some)
}

/// A request signed by a registered node's current key, whatever its status;
/// the node's request budget is charged.
pub async fn signed_node(s: &Services, req: &Request) -> Result<Node, Error> {
    let signed = params(req)?;
    let rows = s
        .sql
        .execute(Statement::new(
            format!("SELECT {NODE_COLUMNS} FROM mesh_nodes WHERE key_id = ?1"),
            vec![signed.params.keyid.as_str().into()],
        ))
        .await?;
    let Some(raw) = rows.get_blob(0, "public_key") else {
        return Err(Error::UnknownKey);
    };
    let key = VerifyingKey::from_sec1_bytes(raw)
        .map_err(|_| Error::Kernel(edgecoder_kernel::Error::Storage("stored key".into())))?;
    let node = node_from(&rows, 0)?;
    verify_with(s, req, &signed, &key).await?;
    charge(
        s,
        &node.node_id,
        crate::Settings::of(s)?.node_rate_per_minute,
    )
    .await?;
    Ok(node)
}

/// A request signed by an `active` node.
pub async fn active_node(s: &Services, req: &Request) -> Result<Node, Error> {
    let node = signed_node(s, req).await?;
    if node.status != NodeStatus::Active {
        return Err(Error::NodeNotActive);
    }
    Ok(node)
}

/// Task submissions per submitter per minute.
pub const SUBMIT_PER_MINUTE: i64 = 120;

/// Counts one request against `bucket`'s per-minute budget of `limit` (a
/// node id, or `register:<ip>` / `submit:<actor>`), with the kernel's one
/// limiter.
pub async fn charge(s: &Services, bucket: &str, limit: i64) -> Result<(), Error> {
    let rule = ratelimit::Rule {
        name: "mesh",
        limit,
        window_ms: ratelimit::MINUTE,
        kind: ratelimit::Kind::Block,
    };
    Ok(ratelimit::hit(s, &rule, bucket).await?)
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
