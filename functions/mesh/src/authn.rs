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
use edgecoder_kernel::{Caller, Request, Services, audit, ratelimit};
use edgecoder_proto::httpsig::{self, Signed, Target};
use edgecoder_proto::keys::key_id;
use edgecoder_proto::mesh::NodeStatus;
use edgecoder_proto::{Error as SigError, NodeId};
use p256::ecdsa::VerifyingKey;

use crate::{Error, store};

/// Roles that operate the coordinator.
pub const OPERATOR_ROLES: [&str; 2] = ["coordinator_owner", "system_admin"];

/// How recent a sign-in must be for operator decisions (the auth function's
/// step-up window).
pub const STEP_UP_WINDOW_SECS: i64 = 10 * 60;

pub use crate::store::nodes::Node;

/// A signed-in user calling with an access token. No function calls the
/// mesh, so no service token is accepted here.
#[derive(Debug, Clone)]
pub struct Bearer(pub Caller);

impl Bearer {
    /// The audit actor (and task submitter).
    pub fn actor(&self) -> String {
        format!("user:{}", self.0.user_id)
    }

    /// Whether the caller operates the coordinator.
    pub fn is_operator(&self) -> bool {
        OPERATOR_ROLES.iter().any(|r| self.0.has_role(r))
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

/// The signature this coordinator accepts, or the refusal. A request
/// addressed to an origin this coordinator does not serve is refused before
/// any key is looked up: where the same key is registered with two
/// coordinators, one must not accept what was signed for the other.
fn params(s: &Services, req: &Request) -> Result<Signed, Error> {
    let signed = match Signed::from_headers(&req.headers) {
        Err(SigError::Missing) => return Err(Error::Unauthorized),
        other => other?,
    };
    let origins = &crate::Settings::of(s)?.origins;
    if !origins.is_empty() && !origins.contains(&target(req)?.origin()) {
        return Err(Error::Misdirected);
    }
    Ok(signed)
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
    if !store::fresh_nonce(s.sql.as_ref(), &p.keyid, &p.nonce, now, cutoff).await? {
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
    // Each registration costs a signature check, a nonce row, an audit
    // event and, on Spin, a call to auth.
    let limit = crate::Settings::of(s)?.register_per_minute;
    possession(s, req, key, "register", limit).await
}

/// A request signed by the key it carries (proof of possession: a node
/// registering, a coordinator asking to peer), with `keyid` the key's id.
/// The budget of `limit` per minute is charged first, per client address
/// (IPv6 by /64, which one client can fill), under `bucket`.
pub async fn possession(
    s: &Services,
    req: &Request,
    key: &VerifyingKey,
    bucket: &str,
    limit: i64,
) -> Result<String, Error> {
    if let Some(subject) = ratelimit::ip_subject(&req.ctx) {
        charge(s, &format!("{bucket}:{subject}"), limit).await?;
    }
    let signed = params(s, req)?;
    let kid = key_id(key);
    if signed.params.keyid != kid {
        return Err(SigError::Invalid.into());
    }
    verify_with(s, req, &signed, key).await?;
    Ok(kid)
}

/// A request signed by an active peer coordinator's pinned key (RFC 9421,
/// with the same nonce, digest and origin rules as node requests). A key no
/// peer is pinned to is 401 `unknown_peer`; a peer that is not active (not
/// approved by both sides, suspended, removed) is 403 `peer_not_approved`,
/// after its signature is checked.
pub async fn signed_peer(s: &Services, req: &Request) -> Result<store::peers::Peer, Error> {
    let signed = params(s, req)?;
    let Some(peer) = store::peers::by_key(s.sql.as_ref(), &signed.params.keyid).await? else {
        return Err(Error::UnknownPeer);
    };
    // Every key a peer row holds (pending ones too) is charged before its
    // signature is checked: a stranger's pending request buys no free
    // verifications, nonce rows or audit events.
    charge(
        s,
        &format!("peer:{}", peer.key_id),
        PEER_REQUESTS_PER_MINUTE,
    )
    .await?;
    let key = VerifyingKey::from_sec1_bytes(&peer.public_key)
        .map_err(|_| Error::Kernel(edgecoder_kernel::Error::Storage("stored peer key".into())))?;
    verify_with(s, req, &signed, &key).await?;
    if peer.banned {
        return Err(audit::denied(
            s,
            &req.ctx,
            &format!("peer:{}", peer.origin),
            "mesh.peer.blacklisted",
            Some(&peer.origin),
            serde_json::json!({"path": req.path}),
            Error::PeerBlacklisted,
        )
        .await);
    }
    if peer.status() != store::peers::PeerStatus::Active {
        return Err(audit::denied(
            s,
            &req.ctx,
            &format!("peer:{}", peer.origin),
            "mesh.peer.refused",
            Some(&peer.origin),
            serde_json::json!({"path": req.path, "status": peer.status()}),
            Error::PeerNotApproved,
        )
        .await);
    }
    store::peers::seen(s.sql.as_ref(), &peer.origin, s.clock.now_ms()).await?;
    Ok(peer)
}

/// A node by id.
pub async fn load_node(s: &Services, node_id: &str) -> Result<Option<Node>, Error> {
    store::nodes::by_id(s.sql.as_ref(), node_id).await
}

/// A request signed by a registered node's current key, whatever its status;
/// the node's request budget is charged.
pub async fn signed_node(s: &Services, req: &Request) -> Result<Node, Error> {
    let signed = params(s, req)?;
    let Some((node, point)) = store::nodes::by_key(s.sql.as_ref(), &signed.params.keyid).await?
    else {
        return Err(Error::UnknownKey);
    };
    let key = VerifyingKey::from_sec1_bytes(&point)
        .map_err(|_| Error::Kernel(edgecoder_kernel::Error::Storage("stored key".into())))?;
    verify_with(s, req, &signed, &key).await?;
    if let Err(e) = charge(
        s,
        &node.node_id,
        crate::Settings::of(s)?.node_rate_per_minute,
    )
    .await
    {
        // Counted only now, after its signature and nonce held.
        crate::reputation::note(
            s,
            &req.ctx,
            &node.node_id,
            crate::reputation::Event::RateLimited,
        )
        .await;
        return Err(e);
    }
    // After the signature: only the node itself learns that it is banned.
    if node.banned {
        return Err(audit::denied(
            s,
            &req.ctx,
            &node.actor(),
            "mesh.node.blacklisted",
            Some(&node.node_id),
            serde_json::json!({"path": req.path}),
            Error::NodeBlacklisted,
        )
        .await);
    }
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

/// Signed requests one peer coordinator may make per minute.
pub const PEER_REQUESTS_PER_MINUTE: i64 = 1200;

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

/// A caller who may submit tasks: a signed-in user with a verified email.
pub async fn submitter(s: &Services, req: &Request) -> Result<Bearer, Error> {
    let caller = bearer(s, req).await?;
    if !caller.0.email_verified {
        return Err(Error::Forbidden);
    }
    let owner = [(
        crate::store::blacklist::SubjectKind::Owner,
        caller.0.user_id.as_str(),
    )];
    if crate::blacklist::covers(s, &owner).await? {
        return Err(Error::AccountBlacklisted);
    }
    Ok(caller)
}

/// Counts a submission against the caller's per-minute allowance (wasm and
/// inference tasks share it).
pub async fn charge_submission(s: &Services, caller: &Bearer) -> Result<(), Error> {
    charge(s, &format!("submit:{}", caller.actor()), SUBMIT_PER_MINUTE).await
}

/// The bearer caller: a user's access token, checked with the identity
/// function (current session and roles).
pub async fn bearer(s: &Services, req: &Request) -> Result<Bearer, Error> {
    let Some(token) = req.bearer() else {
        return Err(Error::Unauthorized);
    };
    match s.identity.caller(token).await? {
        Some(c) => Ok(Bearer(c)),
        None => Err(Error::InvalidToken),
    }
}

/// An operator (coordinator_owner or system_admin) with a recent sign-in.
pub async fn operator(s: &Services, req: &Request) -> Result<Caller, Error> {
    let Bearer(c) = bearer(s, req).await?;
    if !OPERATOR_ROLES.iter().any(|r| c.has_role(r)) {
        return Err(Error::Forbidden);
    }
    if s.clock.now_ms() / 1000 - c.auth_time > STEP_UP_WINDOW_SECS {
        return Err(Error::StepUpRequired);
    }
    Ok(c)
}
