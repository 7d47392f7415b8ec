//! [`IdentityClient`] implementations for the other functions: in-process
//! over the shared database (native, the Worker), and over HTTP where each
//! component has its own store (Spin): `GET /auth/me` with the caller's own
//! access token, `POST /auth/nodes/redeem` with the mesh's service token.
//!
//! Out of scope: deciding what a caller may do (the calling function does).

use std::rc::Rc;

use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::{
    Caller, Clock, Config, Enrollment, Error as KernelError, IdentityClient, Outbound,
    OutboundRequest, Rng, SigningKey, Sql, async_trait,
};
use serde::Deserialize;

use crate::Error;
use crate::api::nodes;
use crate::session;

/// Answers from the auth function's own tables.
pub struct InProcess {
    /// The database holding users, sessions and enrollments.
    pub sql: Rc<dyn Sql>,
    /// Time source.
    pub clock: Rc<dyn Clock>,
    /// Settings (issuer, audience, verification keys).
    pub config: Config,
}

/// Credential refusals become "no caller"; storage failures stay errors.
fn refused(e: Error) -> Result<(), KernelError> {
    match e {
        Error::Kernel(k @ (KernelError::Storage(_) | KernelError::Config(_))) => Err(k),
        Error::Kernel(KernelError::Outbound(m)) => Err(KernelError::Outbound(m)),
        _ => Ok(()),
    }
}

#[async_trait(?Send)]
impl IdentityClient for InProcess {
    async fn caller(&self, access_token: &str) -> Result<Option<Caller>, KernelError> {
        let now = self.clock.now_ms();
        match session::authenticate_token(self.sql.as_ref(), &self.config, now, access_token).await
        {
            Ok(p) => Ok(Some(Caller {
                user_id: p.user_id,
                auth_time: p.auth_time,
                email_verified: p.email_verified,
                roles: p.roles,
            })),
            Err(e) => refused(e).map(|()| None),
        }
    }

    async fn redeem_enrollment(
        &self,
        token: &str,
        node_id: &str,
        kind: &str,
    ) -> Result<Option<Enrollment>, KernelError> {
        let now = self.clock.now_ms();
        match nodes::redeem(self.sql.as_ref(), now, token, node_id, kind).await {
            Ok(r) => Ok(Some(Enrollment {
                node_id: r.node_id,
                kind: r.kind,
                owner_id: r.owner_id,
            })),
            Err(e) => refused(e).map(|()| None),
        }
    }

    async fn block_enrollment(&self, user_id: &str, blocked: bool) -> Result<(), KernelError> {
        crate::store::enrollments::set_block(
            self.sql.as_ref(),
            user_id,
            blocked,
            self.clock.now_ms(),
        )
        .await
        .map_err(|e| match e {
            Error::Kernel(k) => k,
            other => KernelError::Storage(other.to_string()),
        })
    }
}

/// Asks the auth function over HTTP.
pub struct Http {
    /// Where the auth function is served (no trailing slash).
    pub base: String,
    /// The calling function and its `service_key`, for redemption.
    pub service: Option<(&'static str, SigningKey)>,
    /// Time source (token lifetimes).
    pub clock: Rc<dyn Clock>,
    /// Randomness (token ids).
    pub rng: Rc<dyn Rng>,
    /// Outbound HTTP.
    pub outbound: Rc<dyn Outbound>,
}

impl Http {
    /// POSTs `body` to `path` with the caller's service token, bound to
    /// this very request.
    async fn service_post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<edgecoder_kernel::OutboundResponse, KernelError> {
        let (caller, key) = self.service.as_ref().ok_or_else(|| {
            KernelError::Config("set service_key so the mesh can call the auth function".into())
        })?;
        let body = body.to_string().into_bytes();
        let service = edgecoder_kernel::service::mint(
            key,
            caller,
            crate::NAME,
            &edgecoder_kernel::service::request_digest("POST", path, &body),
            self.clock.now_ms(),
            &edgecoder_kernel::ports::random_hex(self.rng.as_ref(), 16),
        )?;
        self.outbound
            .send(OutboundRequest {
                method: Method::POST,
                url: format!("{}{path}", self.base),
                headers: vec![
                    ("authorization".into(), format!("Bearer {service}")),
                    ("content-type".into(), "application/json".into()),
                ],
                body,
            })
            .await
    }
}

#[derive(Deserialize)]
struct Me {
    id: String,
    email_verified: bool,
    roles: Vec<String>,
    auth_time: i64,
}

#[derive(Deserialize)]
struct Redeemed {
    node_id: String,
    kind: String,
    owner_id: String,
}

#[async_trait(?Send)]
impl IdentityClient for Http {
    async fn caller(&self, access_token: &str) -> Result<Option<Caller>, KernelError> {
        // A token with characters a header cannot carry is no token at all.
        if access_token.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
            return Ok(None);
        }
        let resp = self
            .outbound
            .send(OutboundRequest {
                method: Method::GET,
                url: format!("{}/auth/me", self.base),
                headers: vec![("authorization".into(), format!("Bearer {access_token}"))],
                body: Vec::new(),
            })
            .await?;
        match resp.status {
            200 => {
                let me: Me = serde_json::from_slice(&resp.body)
                    .map_err(|_| KernelError::Outbound("auth answered /auth/me oddly".into()))?;
                Ok(Some(Caller {
                    user_id: me.id,
                    auth_time: me.auth_time,
                    email_verified: me.email_verified,
                    roles: me.roles,
                }))
            }
            401 | 403 => Ok(None),
            s => Err(KernelError::Outbound(format!("auth answered {s}"))),
        }
    }

    async fn redeem_enrollment(
        &self,
        token: &str,
        node_id: &str,
        kind: &str,
    ) -> Result<Option<Enrollment>, KernelError> {
        let body = serde_json::json!({"enrollment_token": token, "node_id": node_id, "kind": kind});
        let resp = self.service_post("/auth/nodes/redeem", &body).await?;
        match resp.status {
            200 => {
                let r: Redeemed = serde_json::from_slice(&resp.body).map_err(|_| {
                    KernelError::Outbound("auth answered /auth/nodes/redeem oddly".into())
                })?;
                Ok(Some(Enrollment {
                    node_id: r.node_id,
                    kind: r.kind,
                    owner_id: r.owner_id,
                }))
            }
            400 => Ok(None),
            s => Err(KernelError::Outbound(format!(
                "auth answered {s} to a redemption"
            ))),
        }
    }

    async fn block_enrollment(&self, user_id: &str, blocked: bool) -> Result<(), KernelError> {
        let body = serde_json::json!({"user_id": user_id, "blocked": blocked});
        let resp = self
            .service_post("/auth/nodes/enrollment-blocks", &body)
            .await?;
        match resp.status {
            200 => Ok(()),
            s => Err(KernelError::Outbound(format!(
                "auth answered {s} to an enrollment block"
            ))),
        }
    }
}

/// The client of a deployment that cannot reach the auth function (503).
pub struct Unavailable(pub &'static str);

#[async_trait(?Send)]
impl IdentityClient for Unavailable {
    async fn caller(&self, _: &str) -> Result<Option<Caller>, KernelError> {
        Err(KernelError::Config(self.0.into()))
    }
    async fn redeem_enrollment(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<Enrollment>, KernelError> {
        Err(KernelError::Config(self.0.into()))
    }
    async fn block_enrollment(&self, _: &str, _: bool) -> Result<(), KernelError> {
        Err(KernelError::Config(self.0.into()))
    }
}
