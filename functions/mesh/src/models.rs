//! The model supply chain at the coordinator: per-family source policies,
//! signed releases, staged rollouts with health gates, and what each GPU
//! host is told to serve.
//!
//! In scope: `PUT/GET /mesh/models/policies` (who signs a family, where it
//! may be fetched from, its size cap, whether it is allowed; changed only by
//! an operator with step-up, each change a `model-policy/v1` ledger entry and
//! an audit event); `POST/GET /mesh/models/releases` (a DSSE envelope checked
//! against the family's policy on the way in); `/mesh/models/rollouts` (start,
//! state and history, advance, halt, roll back; every transition a
//! `model-rollout/v1` ledger entry and an audit event); the heartbeat's part
//! (storing per-release reports, judging open rollouts, the assignments and
//! policy a host gets); which models a host may be given tasks for.
//!
//! Out of scope: fetching and verifying files (the GPU host's resolver),
//! the pure rollout rules ([`crate::rollout`]), the wire types
//! (`edgecoder_proto::supply`).

use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::{JSON, json_response, ok_json};
use edgecoder_kernel::http_types::{Method, StatusCode};
use edgecoder_kernel::router::{RouteDoc, endpoint, err, object, ok};
use edgecoder_kernel::{Request, RequestContext, Response, Router, Services};
use edgecoder_proto::keys::{key_id, parse_public_key};
use edgecoder_proto::mesh::{NodeKind, NodeStatus};
use edgecoder_proto::model::{self, Envelope, ModelManifest};
use edgecoder_proto::supply::{
    Assignment, Assignments, Failure, MAX_KEYS, MAX_ORIGINS, ModelState, ModelStatus, SourcePolicy,
    check_url,
};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::authn::{self, Node};
use crate::rollout::{self, Gates, Health, Stage, Verdict};
use crate::store::models::{self as db, Release, Rollout, StoredPolicy};
use crate::{DOCS, Error, rfc3339};

/// The ledger payload type of source-policy changes.
pub const MODEL_POLICY_V1: &str = "edgecoder.dev/model-policy/v1";
/// The ledger payload type of release registrations.
pub const MODEL_RELEASE_V1: &str = "edgecoder.dev/model-release/v1";
/// The ledger payload type of rollout transitions.
pub const MODEL_ROLLOUT_V1: &str = "edgecoder.dev/model-rollout/v1";
/// A host counts towards a rollout while it heartbeats this recently.
pub const LIVE_MS: i64 = 5 * 60_000;
/// Largest release a policy may allow (64 GiB).
pub const MAX_RELEASE_BYTES: u64 = 64 << 30;
/// A release stops being assigned this long before its manifest expires,
/// so that a host whose clock runs ahead never refuses one it was given.
pub const EXPIRY_MARGIN_MS: i64 = 5 * 60_000;
/// How often heartbeats judge an open rollout without news.
pub const JUDGE_EVERY_MS: i64 = 10_000;
/// The actor of transitions the coordinator makes by itself.
pub const COORDINATOR: &str = "coordinator";

fn invalid(m: &str) -> Error {
    edgecoder_kernel::Error::InvalidRequest(m.to_owned()).into()
}

/// The family of `name@version` (or of a bare family name).
pub fn family_of(model: &str) -> &str {
    model.split_once('@').map_or(model, |(f, _)| f)
}

/// Whether `f` is a family name: the part of a model name before `@`.
pub fn valid_family(f: &str) -> bool {
    edgecoder_proto::inference::valid_model_name(&format!("{f}@0"))
}

/// A publisher key as operators have it: a SEC1 point in base64url (as node
/// keys are sent) or base64 SPKI DER (as `edgecoder keygen --public` prints).
fn publisher_key(text: &str) -> Result<p256::ecdsa::VerifyingKey, Error> {
    use p256::pkcs8::DecodePublicKey as _;
    if let Ok(k) = parse_public_key(text) {
        return Ok(k);
    }
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.as_bytes())
        .ok()
        .filter(|der| der.len() <= 200)
        .and_then(|der| p256::ecdsa::VerifyingKey::from_public_key_der(&der).ok())
        .ok_or(Error::InvalidPublicKey)
}

fn reason_of(r: &Option<String>) -> Result<Option<&str>, Error> {
    match r.as_deref() {
        Some(r) if r.is_empty() || r.len() > 500 || r.chars().any(char::is_control) => {
            Err(invalid("reason is 1 to 500 printable characters."))
        }
        other => Ok(other),
    }
}

/// Appends a ledger entry; on failure runs `undo` and notes the failure.
async fn log(
    s: &Services,
    ctx: &RequestContext,
    actor: &str,
    action: &str,
    target: &str,
    entry: (&str, &Json, &str),
) -> Result<u64, Error> {
    let (payload_type, payload, key) = entry;
    match s
        .ledger
        .append(payload_type, payload.to_string().as_bytes(), key)
        .await
    {
        Ok(i) => Ok(i),
        Err(e) => {
            audit::note(
                s,
                ctx,
                actor,
                action,
                Some(target),
                Outcome::Failure,
                json!({"reason": "ledger_unavailable"}),
            )
            .await?;
            Err(e.into())
        }
    }
}

// ---------------------------------------------------------------- policies

/// `PUT /mesh/models/policies/{family}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    keys: Vec<String>,
    threshold: u32,
    origins: Vec<String>,
    max_bytes: u64,
    allowed: bool,
    reason: Option<String>,
}

async fn put_policy(s: &Services, req: Request) -> Result<Response, Error> {
    let family = req.param("family").unwrap_or_default().to_owned();
    let caller = authn::operator(s, &req).await?;
    let actor = format!("user:{}", caller.user_id);
    if !valid_family(&family) {
        return Err(invalid(
            "the family is a model name without its version: lowercase letters, digits, . _ -",
        ));
    }
    let body: PolicyBody = req.json()?;
    let reason = reason_of(&body.reason)?;
    if reason.is_none() {
        return Err(invalid("reason is required: policy changes are logged."));
    }
    if body.keys.is_empty() || body.keys.len() > MAX_KEYS {
        return Err(invalid("keys lists 1 to 16 publisher keys."));
    }
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for k in &body.keys {
        let key = publisher_key(k)?;
        let id = key_id(&key);
        if ids.contains(&id) {
            return Err(invalid("keys lists each key once."));
        }
        ids.push(id);
        // Stored in one form, whichever was sent.
        keys.push(base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            key.to_encoded_point(false).as_bytes(),
        ));
    }
    if body.threshold == 0 || body.threshold as usize > body.keys.len() {
        return Err(invalid("threshold is 1 to the number of keys."));
    }
    if body.origins.is_empty() || body.origins.len() > MAX_ORIGINS {
        return Err(invalid("origins lists 1 to 16 origins."));
    }
    if let Some(bad) = body.origins.iter().find(|o| check_url(o).is_err()) {
        return Err(Error::Release(
            Failure::SourceNotAllowed,
            format!(
                "{bad:?} is not an https:// origin (or a file:/// directory) of plain path segments"
            ),
        ));
    }
    if body.max_bytes == 0 || body.max_bytes > MAX_RELEASE_BYTES {
        return Err(invalid("max_bytes is 1 to 64 GiB."));
    }
    let sql = s.sql.as_ref();
    let before = db::policy(sql, &family).await?;
    let now = s.clock.now_ms();
    let policy = SourcePolicy {
        family: family.clone(),
        keys,
        threshold: body.threshold,
        origins: body.origins,
        max_bytes: body.max_bytes,
        allowed: body.allowed,
        version: 0,
    };
    let version = db::put_policy(sql, &policy, &actor, now, reason).await?;
    let payload = json!({
        "family": family,
        "key_ids": ids,
        "keys": policy.keys,
        "threshold": policy.threshold,
        "origins": policy.origins,
        "max_bytes": policy.max_bytes,
        "allowed": policy.allowed,
        "version": version,
        "previous_version": before.as_ref().map(|b| b.policy.version),
        "actor": actor,
        "reason": reason,
        "changed_at": rfc3339(now),
    });
    let action = "mesh.model.policy";
    let entry = (
        MODEL_POLICY_V1,
        &payload,
        &*format!("model-policy:{family}:{version}:{now}"),
    );
    let index = match log(s, &req.ctx, &actor, action, &family, entry).await {
        Ok(i) => i,
        Err(e) => {
            db::restore_policy(sql, &family, version, before.as_ref()).await?;
            return Err(e);
        }
    };
    audit::note(
        s,
        &req.ctx,
        &actor,
        action,
        Some(&family),
        Outcome::Success,
        json!({"version": version, "allowed": policy.allowed, "threshold": policy.threshold,
               "key_ids": payload["key_ids"], "origins": policy.origins, "ledger_index": index, "reason": reason}),
    )
    .await?;
    let stored = db::policy(sql, &family)
        .await?
        .ok_or(Error::FamilyUnknown)?;
    Ok(ok_json(&json!({"policy": stored, "ledger_index": index})))
}

async fn list_policies(s: &Services, req: Request) -> Result<Response, Error> {
    authn::operator(s, &req).await?;
    let policies = db::policies(s.sql.as_ref()).await?;
    let version = db::policy_version(s.sql.as_ref()).await?;
    Ok(ok_json(
        &json!({"policy_version": version, "policies": policies}),
    ))
}

// ---------------------------------------------------------------- releases

/// `POST /mesh/models/releases` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    envelope: Envelope,
    source: String,
}

/// The manifest inside an envelope, unverified: only to find the family
/// whose policy then verifies it.
fn claimed(env: &Envelope) -> Result<ModelManifest, Error> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(env.payload.as_bytes())
        .ok()
        .and_then(|p| serde_json::from_slice::<ModelManifest>(&p).ok())
        .ok_or_else(|| {
            Error::Release(
                Failure::SignatureInvalid,
                "the envelope's payload is not a model manifest".into(),
            )
        })
}

/// Checks a release against its family's policy at `now_secs`.
pub fn check_release(
    policy: &SourcePolicy,
    envelope: &Envelope,
    source: &str,
    now_secs: i64,
) -> Result<model::Verified, Error> {
    policy
        .check_release(envelope, source, now_secs, None)
        .map_err(|(f, why)| Error::Release(f, why))
}

async fn register_release(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::operator(s, &req).await?;
    let actor = format!("user:{}", caller.user_id);
    let body: ReleaseBody = req.json()?;
    let claim = claimed(&body.envelope)?;
    if !valid_family(&claim.name) {
        return Err(Error::Release(
            Failure::ModelNotApproved,
            "the manifest's name is not a model name".into(),
        ));
    }
    let sql = s.sql.as_ref();
    let Some(policy) = db::policy(sql, &claim.name).await? else {
        return Err(Error::FamilyUnknown);
    };
    let now = s.clock.now_ms();
    let action = "mesh.model.release";
    let verified = match check_release(&policy.policy, &body.envelope, &body.source, now / 1000) {
        Ok(v) => v,
        Err(e) => {
            let code = match &e {
                Error::Release(f, _) => f.as_str(),
                _ => "invalid",
            };
            return Err(audit::denied(
                s,
                &req.ctx,
                &actor,
                action,
                Some(&claim.model()),
                json!({"reason": code}),
                e,
            )
            .await);
        }
    };
    let m = &verified.manifest;
    let release = Release {
        model: m.model(),
        family: m.name.clone(),
        digest: verified.digest.clone(),
        envelope: body.envelope,
        source: body.source,
        total_bytes: i64::try_from(m.files.iter().fold(0u64, |t, f| t.saturating_add(f.size)))
            .unwrap_or(i64::MAX),
        expires_at: m.expires_at.saturating_mul(1000),
        created_by: actor.clone(),
        created_at: now,
        ledger_index: None,
    };
    match s.sql.execute(db::insert_release(&release)).await {
        Ok(_) => {}
        Err(edgecoder_kernel::Error::UniqueViolation(_)) => return Err(Error::ReleaseExists),
        Err(e) => return Err(e.into()),
    }
    // What hosts may be told to run is on the record: the release's
    // identity, its signers and where it comes from.
    let payload = json!({
        "model": release.model,
        "digest": release.digest,
        "signers": verified.signers,
        "publisher": m.publisher,
        "files": m.files,
        "expires_at": rfc3339(release.expires_at),
        "source": release.source,
        "policy_version": policy.policy.version,
        "actor": actor,
        "registered_at": rfc3339(now),
    });
    let entry = (
        MODEL_RELEASE_V1,
        &payload,
        &*format!("model-release:{}:{now}", release.digest),
    );
    let index = match log(s, &req.ctx, &actor, action, &release.model, entry).await {
        Ok(i) => i,
        Err(e) => {
            db::delete_release(sql, &release.model, &release.digest).await?;
            return Err(e);
        }
    };
    db::set_release_index(sql, &release.model, index).await?;
    audit::note(
        s,
        &req.ctx,
        &actor,
        action,
        Some(&release.model),
        Outcome::Success,
        json!({"digest": release.digest, "signers": verified.signers, "source": release.source, "ledger_index": index}),
    )
    .await?;
    Ok(json_response(
        StatusCode::CREATED,
        JSON,
        &json!({
            "model": release.model,
            "digest": release.digest,
            "signers": verified.signers,
            "total_bytes": release.total_bytes,
            "expires_at": rfc3339(release.expires_at),
            "source": release.source,
            "ledger_index": index,
        }),
    ))
}

async fn list_releases(s: &Services, req: Request) -> Result<Response, Error> {
    authn::operator(s, &req).await?;
    let family = req.query_param("family");
    let releases = db::releases(s.sql.as_ref(), family.as_deref()).await?;
    let shown: Vec<Json> = releases
        .iter()
        .map(|r| {
            json!({"model": r.model, "family": r.family, "digest": r.digest, "source": r.source,
                   "total_bytes": r.total_bytes, "expires_at": rfc3339(r.expires_at),
                   "created_by": r.created_by, "created_at": rfc3339(r.created_at),
                   "ledger_index": r.ledger_index})
        })
        .collect();
    Ok(ok_json(&json!({"releases": shown})))
}

// ---------------------------------------------------------------- rollouts

/// Whether a host declared the family at registration (as `family` or any
/// `family@version`).
fn declares(declared: &[String], family: &str) -> bool {
    declared.iter().any(|m| family_of(m) == family)
}

/// Whether a host's approval covers `model`: it declared the bare family
/// (any version the operator rolls out), or exactly this `name@version` (a
/// pin, which no rollout widens).
fn may_serve(declared: &[String], model: &str) -> bool {
    declared.iter().any(|m| m == model || m == family_of(model))
}

/// Live hosts of a family.
async fn family_hosts(s: &Services, family: &str) -> Result<Vec<db::Host>, Error> {
    let since = s.clock.now_ms() - LIVE_MS;
    Ok(db::live_hosts(s.sql.as_ref(), since)
        .await?
        .into_iter()
        .filter(|h| declares(&h.declared, family))
        .collect())
}

/// What a host is on for a family: the release and the rollout behind it;
/// nothing if that release is outside the host's approval or expired.
async fn assigned(
    s: &Services,
    family: &str,
    node_id: &str,
    declared: &[String],
) -> Result<Option<(Release, Option<String>)>, Error> {
    let sql = s.sql.as_ref();
    // The candidates in order: the rollout's release for a host in its
    // stage, else what hosts outside it keep (the previous version, or the
    // family's current one). The first that the host's approval covers and
    // that is not about to expire is the answer; a host pinned to another
    // version gets nothing rather than a way around rollouts.
    let candidates: Vec<(String, Option<String>)> = match db::open_rollout(sql, family).await? {
        Some(r) => {
            let mut c = Vec::new();
            if rollout::in_stage(&r.stages, r.stage, &r.canary, &r.id, node_id) {
                c.push((r.model.clone(), Some(r.id.clone())));
            }
            c.extend(r.previous.map(|p| (p, None)));
            c
        }
        None => db::current(sql, family)
            .await?
            .map(|m| (m, None))
            .into_iter()
            .collect(),
    };
    let fresh_until = s.clock.now_ms() + EXPIRY_MARGIN_MS;
    for (model, rollout_id) in candidates {
        if !may_serve(declared, &model) {
            continue;
        }
        if let Some(release) = db::release(sql, &model).await?
            && release.expires_at > fresh_until
            && release.ledger_index.is_some()
        {
            return Ok(Some((release, rollout_id)));
        }
    }
    Ok(None)
}

/// A stage's health: the hosts it covers and their reports on its release.
async fn stage_health(s: &Services, r: &Rollout) -> Result<(Health, Vec<Json>), Error> {
    let sql = s.sql.as_ref();
    let release = db::release(sql, &r.model)
        .await?
        .ok_or(Error::ReleaseNotFound)?;
    let hosts = family_hosts(s, &r.family).await?;
    let reports = db::health(sql, &r.model, s.clock.now_ms() - LIVE_MS).await?;
    let mut h = Health::default();
    let mut shown = Vec::new();
    for host in &hosts {
        let on_new = may_serve(&host.declared, &r.model)
            && rollout::in_stage(&r.stages, r.stage, &r.canary, &r.id, &host.node_id);
        let report = reports
            .iter()
            .find(|x| x.node_id == host.node_id && x.status.release_digest == release.digest);
        shown.push(json!({
            "node_id": host.node_id,
            "model": if on_new { Some(r.model.as_str()) } else { r.previous.as_deref() },
            "report": report,
        }));
        if !on_new {
            continue;
        }
        h.hosts += 1;
        let Some(rep) = report else { continue };
        match rep.status.state {
            ModelState::Verified => h.verified += 1,
            // A download that failed is retried by the host, and an expiry is
            // the release's end of life (judged below): pending, not a
            // verdict on the release's integrity.
            ModelState::Failed
                if matches!(
                    rep.status.failure,
                    Some(Failure::FetchFailed | Failure::ManifestExpired)
                ) => {}
            ModelState::Failed => h.failed.push((
                host.node_id.clone(),
                rep.status
                    .failure
                    .map_or("unknown", |f| f.as_str())
                    .to_owned(),
            )),
            ModelState::Pending => {}
        }
        h.requests = h.requests.saturating_add(rep.status.requests);
        h.errors = h.errors.saturating_add(rep.status.errors);
        h.p99_ms = h.p99_ms.max(rep.status.p99_ms);
        h.per_host
            .push((host.node_id.clone(), rep.status.requests, rep.status.errors));
    }
    Ok((h, shown))
}

fn health_json(h: &Health) -> Json {
    json!({"hosts": h.hosts, "verified": h.verified, "failed": h.failed, "requests": h.requests,
           "errors": h.errors, "error_rate": h.error_rate(), "p99_ms": h.p99_ms})
}

/// Moves a rollout, then logs the move; the move is undone if the ledger
/// cannot take it. `None` if another request moved it first.
#[allow(clippy::too_many_arguments)]
async fn step(
    s: &Services,
    ctx: &RequestContext,
    r: &Rollout,
    to_status: &str,
    to_stage: usize,
    action: &str,
    actor: &str,
    reason: Option<&str>,
    detail: Json,
) -> Result<Option<u64>, Error> {
    let now = s.clock.now_ms();
    let sql = s.sql.as_ref();
    let done = sql
        .batch(db::transition(r, to_status, to_stage, action, actor, reason, &detail, now).to_vec())
        .await?;
    if done.first().is_none_or(|d| d.rows.is_empty()) {
        return Ok(None);
    }
    let seq = done
        .get(1)
        .and_then(|d| d.get_i64(0, "seq"))
        .unwrap_or_default();
    let payload = json!({
        "rollout_id": r.id,
        "family": r.family,
        "model": r.model,
        "previous": r.previous,
        "action": action,
        "from_stage": r.stage,
        "to_stage": to_stage,
        "stage": r.stages.get(to_stage).map(|st| st.name.as_str()),
        "status": to_status,
        "actor": actor,
        "reason": reason,
        "detail": detail,
        "at": rfc3339(now),
    });
    let audit_action = format!("mesh.model.rollout.{action}");
    let entry = (
        MODEL_ROLLOUT_V1,
        &payload,
        // The time makes each attempt its own key: a retry after an
        // ambiguous failure never collides with a different payload.
        &*format!("model-rollout:{}:{seq}:{now}", r.id),
    );
    let index = match log(s, ctx, actor, &audit_action, &r.id, entry).await {
        Ok(i) => i,
        Err(e) => {
            db::undo_transition(sql, r, (to_status, to_stage, now), seq).await?;
            return Err(e);
        }
    };
    db::set_event_index(sql, &r.id, seq, index).await?;
    audit::note(
        s,
        ctx,
        actor,
        &audit_action,
        Some(&r.id),
        Outcome::Success,
        json!({"model": r.model, "from_stage": r.stage, "to_stage": to_stage, "status": to_status,
               "ledger_index": index, "reason": reason, "detail": payload["detail"]}),
    )
    .await?;
    Ok(Some(index))
}

/// Stops a rollout whose gate failed, and rolls it back if it says so.
async fn fail(
    s: &Services,
    ctx: &RequestContext,
    r: &Rollout,
    why: &str,
    detail: Json,
) -> Result<(), Error> {
    let Some(_) = step(
        s,
        ctx,
        r,
        "halted",
        r.stage,
        "halt",
        COORDINATOR,
        Some(why),
        detail.clone(),
    )
    .await?
    else {
        return Ok(());
    };
    if r.auto_rollback {
        let halted = Rollout {
            status: "halted".into(),
            updated_at: s.clock.now_ms(),
            ..r.clone()
        };
        let halted = db::rollout(s.sql.as_ref(), &r.id).await?.unwrap_or(halted);
        step(
            s,
            ctx,
            &halted,
            "rolled_back",
            halted.stage,
            "rollback",
            COORDINATOR,
            Some(why),
            detail,
        )
        .await?;
    }
    Ok(())
}

/// Judges an active rollout's stage and acts on the verdict: advance (or
/// complete), halt and roll back, or wait.
pub async fn tick(s: &Services, ctx: &RequestContext, r: &Rollout) -> Result<Verdict, Error> {
    if r.status != "active" {
        return Ok(Verdict::Wait(format!("the rollout is {}", r.status)));
    }
    let (h, _) = stage_health(s, r).await?;
    let age = u64::try_from((s.clock.now_ms() - r.stage_started_at) / 1000).unwrap_or_default();
    let expiring = db::release(s.sql.as_ref(), &r.model)
        .await?
        .is_none_or(|rel| rel.expires_at <= s.clock.now_ms() + EXPIRY_MARGIN_MS);
    let verdict = if expiring {
        Verdict::Fail("the release expires before the rollout can finish".into())
    } else {
        rollout::judge(&r.gates, &h, age, false)
    };
    let detail = json!({"health": health_json(&h), "stage_secs": age});
    match &verdict {
        Verdict::Pass if r.stage + 1 >= r.stages.len() => {
            step(
                s,
                ctx,
                r,
                "complete",
                r.stage,
                "complete",
                COORDINATOR,
                Some("the last stage's gate held"),
                detail,
            )
            .await?;
        }
        Verdict::Pass => {
            step(
                s,
                ctx,
                r,
                "active",
                r.stage + 1,
                "advance",
                COORDINATOR,
                Some("the stage's gate held"),
                detail,
            )
            .await?;
        }
        Verdict::Fail(why) => fail(s, ctx, r, why, detail).await?,
        Verdict::Wait(_) => {}
    }
    Ok(verdict)
}

/// `POST /mesh/models/rollouts` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    model: String,
    stages: Vec<Stage>,
    #[serde(default)]
    gates: Gates,
    #[serde(default = "yes")]
    auto_rollback: bool,
    reason: Option<String>,
}

fn yes() -> bool {
    true
}

async fn start_rollout(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::operator(s, &req).await?;
    let actor = format!("user:{}", caller.user_id);
    let body: StartBody = req.json()?;
    let reason = reason_of(&body.reason)?;
    rollout::validate(&body.stages, &body.gates)?;
    let sql = s.sql.as_ref();
    // Only a release whose registration is in the log can be rolled out.
    let Some(release) = db::release(sql, &body.model)
        .await?
        .filter(|r| r.ledger_index.is_some())
    else {
        return Err(Error::ReleaseNotFound);
    };
    let Some(policy) = db::policy(sql, &release.family).await? else {
        return Err(Error::FamilyUnknown);
    };
    let now = s.clock.now_ms();
    // The release must still pass its family's policy as it stands now
    // (keys may have been revoked since it was registered).
    check_release(
        &policy.policy,
        &release.envelope,
        &release.source,
        now / 1000,
    )?;
    if db::open_rollout(sql, &release.family).await?.is_some() {
        return Err(Error::RolloutInProgress);
    }
    let previous = db::current(sql, &release.family).await?;
    if previous.as_deref() == Some(release.model.as_str()) {
        return Err(Error::RolloutState(
            "this release is already the family's current version",
        ));
    }
    let id = s.new_id();
    let mut canary = Vec::new();
    if let Some(n) = body.stages.first().and_then(|st| st.hosts) {
        let mut hosts: Vec<db::Host> = family_hosts(s, &release.family)
            .await?
            .into_iter()
            .filter(|h| may_serve(&h.declared, &release.model))
            .collect();
        hosts.sort_by_key(|h| rollout::position(&id, &h.node_id));
        canary = hosts
            .into_iter()
            .take(n as usize)
            .map(|h| h.node_id)
            .collect();
    }
    let r = Rollout {
        id: id.clone(),
        family: release.family.clone(),
        model: release.model.clone(),
        previous,
        stages: body.stages,
        gates: body.gates,
        auto_rollback: body.auto_rollback,
        stage: 0,
        status: "active".into(),
        canary,
        stage_started_at: now,
        created_by: actor.clone(),
        created_at: now,
        updated_at: now,
    };
    let detail = json!({"release_digest": release.digest, "canary": r.canary, "stages": r.stages, "gates": r.gates});
    let inserted = sql
        .batch(vec![
            db::insert_rollout(&r),
            db::event(&r, "start", None, Some(0), &actor, reason, &detail, now),
        ])
        .await;
    match inserted {
        Ok(_) => {}
        Err(edgecoder_kernel::Error::UniqueViolation(_)) => return Err(Error::RolloutInProgress),
        Err(e) => return Err(e.into()),
    }
    let payload = json!({
        "rollout_id": id, "family": r.family, "model": r.model, "previous": r.previous,
        "action": "start", "from_stage": null, "to_stage": 0, "stage": r.stages[0].name,
        "status": "active", "actor": actor, "reason": reason, "detail": detail, "at": rfc3339(now),
    });
    let action = "mesh.model.rollout.start";
    let entry = (
        MODEL_ROLLOUT_V1,
        &payload,
        &*format!("model-rollout:{id}:1:{now}"),
    );
    let index = match log(s, &req.ctx, &actor, action, &id, entry).await {
        Ok(i) => i,
        Err(e) => {
            db::delete_rollout(sql, &id).await?;
            return Err(e);
        }
    };
    db::set_event_index(sql, &id, 1, index).await?;
    audit::note(
        s,
        &req.ctx,
        &actor,
        action,
        Some(&id),
        Outcome::Success,
        json!({"model": r.model, "previous": r.previous, "canary": r.canary, "ledger_index": index, "reason": reason}),
    )
    .await?;
    let shown = show(s, &r).await?;
    Ok(json_response(StatusCode::CREATED, JSON, &shown))
}

/// A rollout as operators see it: state, hosts, health, history.
async fn show(s: &Services, r: &Rollout) -> Result<Json, Error> {
    let (h, hosts) = stage_health(s, r).await?;
    let previous = match &r.previous {
        Some(p) => db::health(s.sql.as_ref(), p, s.clock.now_ms() - LIVE_MS).await?,
        None => Vec::new(),
    };
    let age = u64::try_from((s.clock.now_ms() - r.stage_started_at) / 1000).unwrap_or_default();
    let verdict = match rollout::judge(&r.gates, &h, age, false) {
        Verdict::Pass => json!({"gate": "pass"}),
        Verdict::Wait(w) => json!({"gate": "wait", "why": w}),
        Verdict::Fail(f) => json!({"gate": "fail", "why": f}),
    };
    Ok(json!({
        "id": r.id,
        "family": r.family,
        "model": r.model,
        "previous": r.previous,
        "status": r.status,
        "stage": r.stage,
        "stage_name": r.stages.get(r.stage).map(|st| st.name.as_str()),
        "stages": r.stages,
        "gates": r.gates,
        "auto_rollback": r.auto_rollback,
        "canary": r.canary,
        "stage_started_at": rfc3339(r.stage_started_at),
        "created_by": r.created_by,
        "created_at": rfc3339(r.created_at),
        "updated_at": rfc3339(r.updated_at),
        "health": health_json(&h),
        "verdict": verdict,
        "hosts": hosts,
        "previous_health": previous,
        "history": db::events(s.sql.as_ref(), &r.id).await?,
    }))
}

async fn load(s: &Services, req: &Request) -> Result<Rollout, Error> {
    let id = req.param("id").unwrap_or_default();
    if id.is_empty() || id.len() > 64 {
        return Err(Error::RolloutNotFound);
    }
    db::rollout(s.sql.as_ref(), id)
        .await?
        .ok_or(Error::RolloutNotFound)
}

async fn get_rollout(s: &Services, req: Request) -> Result<Response, Error> {
    authn::operator(s, &req).await?;
    let mut r = load(s, &req).await?;
    // Reading a rollout judges it too: the gates move on time as well as on
    // heartbeats.
    if r.status == "active" {
        tick(s, &req.ctx, &r).await?;
        r = load(s, &req).await?;
    }
    Ok(ok_json(&show(s, &r).await?))
}

async fn list_rollouts(s: &Services, req: Request) -> Result<Response, Error> {
    authn::operator(s, &req).await?;
    let family = req.query_param("family");
    let list = db::rollouts(s.sql.as_ref(), family.as_deref()).await?;
    let shown: Vec<Json> = list
        .iter()
        .map(|r| {
            json!({"id": r.id, "family": r.family, "model": r.model, "previous": r.previous,
                   "status": r.status, "stage": r.stage,
                   "stage_name": r.stages.get(r.stage).map(|st| st.name.as_str()),
                   "updated_at": rfc3339(r.updated_at)})
        })
        .collect();
    Ok(ok_json(&json!({"rollouts": shown})))
}

/// `POST /mesh/models/rollouts/{id}/(advance|halt|rollback)` body.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Operate {
    reason: Option<String>,
}

/// An operator's step on a rollout.
#[derive(Debug, Clone, Copy)]
enum Op {
    Advance,
    Halt,
    Rollback,
}

async fn operate(s: &Services, req: Request, op: Op) -> Result<Response, Error> {
    let caller = authn::operator(s, &req).await?;
    let actor = format!("user:{}", caller.user_id);
    let ctx = req.ctx.clone();
    let target = req.param("id").map(str::to_owned);
    match operate_as(s, req, op, &actor).await {
        // An operator's step the rollout's state or gates refused is on
        // record as much as one it took.
        Err(e @ (Error::GateNotMet(_) | Error::RolloutState(_))) => {
            let action = match op {
                Op::Advance => "mesh.rollout.advance",
                Op::Halt => "mesh.rollout.halt",
                Op::Rollback => "mesh.rollout.rollback",
            };
            let reason = e.to_string();
            Err(audit::denied(
                s,
                &ctx,
                &actor,
                action,
                target.as_deref(),
                json!({ "reason": reason }),
                e,
            )
            .await)
        }
        other => other,
    }
}

async fn operate_as(s: &Services, req: Request, op: Op, actor: &str) -> Result<Response, Error> {
    let actor = actor.to_owned();
    let body: Operate = if req.body.is_empty() {
        Operate::default()
    } else {
        req.json()?
    };
    let reason = reason_of(&body.reason)?;
    let r = load(s, &req).await?;
    if !r.open() {
        return Err(Error::RolloutState(
            "the rollout is finished (complete or rolled back)",
        ));
    }
    let (h, _) = stage_health(s, &r).await?;
    let detail = json!({"health": health_json(&h)});
    let moved = match op {
        Op::Halt if r.status == "halted" => {
            return Err(Error::RolloutState("the rollout is halted already"));
        }
        Op::Halt => {
            step(
                s, &req.ctx, &r, "halted", r.stage, "halt", &actor, reason, detail,
            )
            .await?
        }
        Op::Rollback => {
            step(
                s,
                &req.ctx,
                &r,
                "rolled_back",
                r.stage,
                "rollback",
                &actor,
                reason,
                detail,
            )
            .await?
        }
        Op::Advance => {
            // By hand the waiting gates may be skipped, never the safety
            // ones: no host refused the release, enough hosts verified it.
            match rollout::judge(&r.gates, &h, 0, true) {
                Verdict::Pass => {}
                Verdict::Wait(w) | Verdict::Fail(w) => return Err(Error::GateNotMet(w)),
            }
            if r.stage + 1 >= r.stages.len() {
                step(
                    s, &req.ctx, &r, "complete", r.stage, "complete", &actor, reason, detail,
                )
                .await?
            } else {
                step(
                    s,
                    &req.ctx,
                    &r,
                    "active",
                    r.stage + 1,
                    "advance",
                    &actor,
                    reason,
                    detail,
                )
                .await?
            }
        }
    };
    if moved.is_none() {
        return Err(Error::RolloutState(
            "the rollout changed meanwhile; read it and retry",
        ));
    }
    let r = load(s, &req).await?;
    Ok(ok_json(&show(s, &r).await?))
}

// ---------------------------------------------------------------- hosts

/// What `node` should serve now, one release per family it declared.
pub async fn assignments(s: &Services, node: &Node) -> Result<Assignments, Error> {
    let sql = s.sql.as_ref();
    let policy_version = db::policy_version(sql).await?;
    let mut out = Vec::new();
    if node.kind != NodeKind::GpuHost || node.status != NodeStatus::Active {
        return Ok(Assignments {
            policy_version,
            assignments: out,
        });
    }
    let declared = &node.capabilities.models;
    let mut families: Vec<&str> = declared.iter().map(|m| family_of(m)).collect();
    families.sort_unstable();
    families.dedup();
    for family in families {
        let Some(StoredPolicy { policy, .. }) = db::policy(sql, family).await? else {
            continue;
        };
        if !policy.allowed {
            continue;
        }
        let Some((release, rollout_id)) = assigned(s, family, &node.node_id, declared).await?
        else {
            continue;
        };
        out.push(Assignment {
            model: release.model,
            release_digest: release.digest,
            envelope: release.envelope,
            source: release.source,
            policy,
            rollout_id,
        });
    }
    Ok(Assignments {
        policy_version,
        assignments: out,
    })
}

/// Whether a heartbeat reports the release `digest` of `model` verified and
/// served.
fn reports_verified(t: &edgecoder_proto::mesh::Telemetry, model: &str, digest: &str) -> bool {
    t.models.iter().any(|m| m == model)
        && t.model_status.iter().any(|st| {
            st.model == model && st.release_digest == digest && st.state == ModelState::Verified
        })
}

/// The models `node` may be given tasks for: assigned to it, and reported
/// by its last heartbeat as verified (that very release) and served.
pub async fn servable(s: &Services, node: &Node) -> Result<Vec<String>, Error> {
    let Some(t) = &node.telemetry else {
        return Ok(Vec::new());
    };
    Ok(assignments(s, node)
        .await?
        .assignments
        .into_iter()
        .filter(|a| reports_verified(t, &a.model, &a.release_digest))
        .map(|a| a.model)
        .collect())
}

/// Whether some live host is assigned `model` and serves it.
pub async fn served(s: &Services, model: &str) -> Result<bool, Error> {
    let family = family_of(model);
    if db::policy(s.sql.as_ref(), family)
        .await?
        .is_none_or(|p| !p.policy.allowed)
    {
        return Ok(false);
    }
    for h in family_hosts(s, family).await? {
        let Some(t) = &h.telemetry else { continue };
        if !t.models.iter().any(|m| m == model) {
            continue;
        }
        if let Some((release, _)) = assigned(s, family, &h.node_id, &h.declared).await?
            && release.model == model
            && reports_verified(t, model, &release.digest)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The heartbeat's part: store the host's reports (auditing each change of
/// verification state), judge the open rollouts of its families, and answer
/// its assignments.
pub async fn heartbeat(
    s: &Services,
    ctx: &RequestContext,
    node: &Node,
) -> Result<Option<Assignments>, Error> {
    if node.kind != NodeKind::GpuHost {
        return Ok(None);
    }
    // Only reports on releases assigned to this host count (and are kept):
    // a host cannot speak for another family's rollout, nor fill the table
    // with names of its own invention.
    let assigned = assignments(s, node).await?;
    let reports: Vec<ModelStatus> = node
        .telemetry
        .as_ref()
        .map(|t| t.model_status.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|r| {
            assigned
                .assignments
                .iter()
                .any(|a| a.model == r.model && a.release_digest == r.release_digest)
        })
        .cloned()
        .collect();
    let now = s.clock.now_ms();
    let changed = db::store_health(s.sql.as_ref(), &node.node_id, &reports, now).await?;
    let changed_here: Vec<String> = changed.iter().map(|m| m.model.clone()).collect();
    for m in changed {
        let outcome = match m.state {
            ModelState::Failed => Outcome::Failure,
            _ => Outcome::Success,
        };
        audit::note(
            s,
            ctx,
            &node.actor(),
            "mesh.model.verify",
            Some(&m.model),
            outcome,
            json!({"release_digest": m.release_digest, "state": m.state, "failure": m.failure}),
        )
        .await?;
    }
    if node.status != NodeStatus::Active {
        return Ok(None);
    }
    let mut families: Vec<&str> = node
        .capabilities
        .models
        .iter()
        .map(|m| family_of(m))
        .collect();
    families.sort_unstable();
    families.dedup();
    for family in families {
        let Some(r) = db::open_rollout(s.sql.as_ref(), family).await? else {
            continue;
        };
        // A report that changed is judged at once (a refusal stops a canary
        // on the heartbeat that brings it); otherwise one heartbeat per
        // interval judges the rollout, not every host's.
        let news = changed_here.iter().any(|m| m == &r.model);
        if !news && !db::claim_judging(s.sql.as_ref(), &r.id, now, JUDGE_EVERY_MS).await? {
            continue;
        }
        if let Err(e) = tick(s, ctx, &r).await {
            // Judged again on a later heartbeat; the host still gets its
            // answer, and the operator sees why the rollout did not move.
            let p: edgecoder_kernel::Problem = e.into();
            audit::note(
                s,
                ctx,
                COORDINATOR,
                "mesh.model.rollout.judge",
                Some(&r.id),
                Outcome::Failure,
                json!({"code": p.code}),
            )
            .await?;
        }
    }
    assignments(s, node).await.map(Some)
}

// ---------------------------------------------------------------- routes

fn operator_errors(
    mut v: Vec<edgecoder_kernel::router::ResponseDoc>,
) -> Vec<edgecoder_kernel::router::ResponseDoc> {
    v.push(err(401, "mesh_unauthorized / invalid_token"));
    v.push(err(403, "forbidden / step_up_required"));
    v
}

fn docs() -> [RouteDoc; 10] {
    let policy_body = object(
        &[
            "keys",
            "threshold",
            "origins",
            "max_bytes",
            "allowed",
            "reason",
        ],
        json!({
            "keys": {"type": "array", "items": {"type": "string", "description": "P-256 public key: SEC1 point in base64url, or SPKI DER in base64 (edgecoder keygen --public)"}, "maxItems": 16},
            "threshold": {"type": "integer", "minimum": 1},
            "origins": {"type": "array", "items": {"type": "string", "description": "https://… or file:///…"}, "maxItems": 16},
            "max_bytes": {"type": "integer", "minimum": 1},
            "allowed": {"type": "boolean"},
            "reason": {"type": "string", "maxLength": 500},
        }),
    );
    let release_body = object(
        &["envelope", "source"],
        json!({
            "envelope": {"type": "object", "description": "DSSE envelope {payload, payloadType, signatures} of an application/vnd.edgecoder.model-manifest.v1+json"},
            "source": {"type": "string", "description": "https:// (or file:///) base under which each manifest path is fetched"},
        }),
    );
    let stage = json!({"type": "object", "properties": {"name": {"type": "string"}, "hosts": {"type": "integer"}, "percent": {"type": "number"}}});
    let start_body = object(
        &["model", "stages"],
        json!({
            "model": {"type": "string", "description": "name@version of a registered release"},
            "stages": {"type": "array", "items": stage, "maxItems": 8},
            "gates": {"type": "object", "properties": {
                "max_error_rate": {"type": "number"}, "max_p99_ms": {"type": "integer"},
                "min_requests": {"type": "integer"}, "min_verified_hosts": {"type": "integer"},
                "min_stage_secs": {"type": "integer"}}},
            "auto_rollback": {"type": "boolean"},
            "reason": {"type": "string", "maxLength": 500},
        }),
    );
    let op_body = || object(&[], json!({"reason": {"type": "string", "maxLength": 500}}));
    [
        DOCS.op(
            "put_model_policy",
            "Set a model family's source policy: publisher keys and threshold, origins, size cap, allowed (operator, step-up); audited and logged in the ledger",
            policy_body,
            operator_errors(vec![ok(200, "{policy, ledger_index}"), err(400, "invalid_request / invalid_public_key"), err(422, "source_not_allowed")]),
        ),
        DOCS.op(
            "list_model_policies",
            "Model families' source policies and the policy version (operator)",
            None,
            operator_errors(vec![ok(200, "{policy_version, policies}")]),
        ),
        DOCS.op(
            "register_model_release",
            "Register a signed release: the envelope is verified against its family's policy (operator, step-up); audited and logged in the ledger",
            release_body,
            operator_errors(vec![
                ok(201, "{model, digest, signers, total_bytes, expires_at, source, ledger_index}"),
                err(404, "model_family_unknown"),
                err(409, "release_exists"),
                err(422, "signature_invalid / manifest_expired / model_not_approved / source_not_allowed"),
            ]),
        ),
        DOCS.op(
            "list_model_releases",
            "Registered releases, newest first (?family=) (operator)",
            None,
            operator_errors(vec![ok(200, "{releases}")]),
        ),
        DOCS.op(
            "start_model_rollout",
            "Start a staged rollout of name@version: stages (a pinned canary, then rising percents to 100) and gates (operator, step-up); logged",
            start_body,
            operator_errors(vec![
                ok(201, "rollout"),
                err(400, "invalid_request"),
                err(404, "release_not_found / model_family_unknown"),
                err(409, "rollout_in_progress / invalid_transition"),
                err(422, "signature_invalid / manifest_expired / model_not_approved / source_not_allowed"),
            ]),
        ),
        DOCS.op(
            "list_model_rollouts",
            "Rollouts, newest first (?family=) (operator)",
            None,
            operator_errors(vec![ok(200, "{rollouts}")]),
        ),
        DOCS.op(
            "get_model_rollout",
            "A rollout's state, hosts, per-version health, gate verdict and history (operator); judges the gate first",
            None,
            operator_errors(vec![ok(200, "rollout"), err(404, "rollout_not_found")]),
        ),
        DOCS.op(
            "advance_model_rollout",
            "Advance a rollout by hand (operator, step-up): the safety gates (no refusals, enough verified hosts) must hold; logged",
            op_body(),
            operator_errors(vec![ok(200, "rollout"), err(404, "rollout_not_found"), err(409, "invalid_transition / gate_not_met")]),
        ),
        DOCS.op(
            "halt_model_rollout",
            "Halt a rollout where it stands (operator, step-up); logged",
            op_body(),
            operator_errors(vec![ok(200, "rollout"), err(404, "rollout_not_found"), err(409, "invalid_transition")]),
        ),
        DOCS.op(
            "rollback_model_rollout",
            "Roll a rollout back: every host returns to the previous version (operator, step-up); logged",
            op_body(),
            operator_errors(vec![ok(200, "rollout"), err(404, "rollout_not_found"), err(409, "invalid_transition")]),
        ),
    ]
}

/// The model supply routes.
pub fn routes(r: Router) -> Router {
    let [
        put,
        list_p,
        reg,
        list_r,
        start,
        list_o,
        get_o,
        adv,
        halt,
        back,
    ] = docs();
    r.route(
        Method::PUT,
        "/mesh/models/policies/{family}",
        endpoint(|s, r| async move { put_policy(&s, r).await }),
        put,
    )
    .route(
        Method::GET,
        "/mesh/models/policies",
        endpoint(|s, r| async move { list_policies(&s, r).await }),
        list_p,
    )
    .route(
        Method::POST,
        "/mesh/models/releases",
        endpoint(|s, r| async move { register_release(&s, r).await }),
        reg,
    )
    .route(
        Method::GET,
        "/mesh/models/releases",
        endpoint(|s, r| async move { list_releases(&s, r).await }),
        list_r,
    )
    .route(
        Method::POST,
        "/mesh/models/rollouts",
        endpoint(|s, r| async move { start_rollout(&s, r).await }),
        start,
    )
    .route(
        Method::GET,
        "/mesh/models/rollouts",
        endpoint(|s, r| async move { list_rollouts(&s, r).await }),
        list_o,
    )
    .route(
        Method::GET,
        "/mesh/models/rollouts/{id}",
        endpoint(|s, r| async move { get_rollout(&s, r).await }),
        get_o,
    )
    .route(
        Method::POST,
        "/mesh/models/rollouts/{id}/advance",
        endpoint(|s, r| async move { operate(&s, r, Op::Advance).await }),
        adv,
    )
    .route(
        Method::POST,
        "/mesh/models/rollouts/{id}/halt",
        endpoint(|s, r| async move { operate(&s, r, Op::Halt).await }),
        halt,
    )
    .route(
        Method::POST,
        "/mesh/models/rollouts/{id}/rollback",
        endpoint(|s, r| async move { operate(&s, r, Op::Rollback).await }),
        back,
    )
}
