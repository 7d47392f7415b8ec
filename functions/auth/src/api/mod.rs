//! HTTP handlers, one module per resource: [`accounts`] (sign-up, email
//! verification, login, passwords), [`sessions`] (refresh, sign-out, `me`,
//! step-up), [`admin`] (roles, users, audit, bootstrap), [`nodes`]
//! (enrollment), [`passkeys`] (WebAuthn ceremonies) and [`oauth`] (sign-in
//! with OAuth / OpenID Connect providers). Handlers parse and authorise;
//! storage goes through [`crate::store`], which holds their SQL.

pub mod accounts;
pub mod admin;
pub mod nodes;
pub mod oauth;
pub mod passkeys;
pub mod sessions;

use edgecoder_kernel::router::{ResponseDoc, err, ok};
use serde_json::{Value as Json, json};

use crate::schemas;

/// `v` with the refusal every bearer-authenticated route may answer.
pub(crate) fn authed(mut v: Vec<ResponseDoc>) -> Vec<ResponseDoc> {
    v.push(err(401, "authentication_required / invalid_token"));
    v
}

/// The documented answer of routes that start a session.
pub(crate) fn token_response_docs() -> Vec<ResponseDoc> {
    let what = "OAuth 2.0 token response \
                {access_token, token_type, expires_in, refresh_token (device clients)}";
    vec![ok(200, what).with_schema(schemas::token())]
}

/// The JSON Schema of a presented opaque token (emailed, refresh, enrollment, app code).
pub(crate) fn token_schema() -> Json {
    json!({"type": "string"})
}

/// The JSON Schema of the `client` a session is for.
pub(crate) fn client_schema() -> Json {
    json!({"enum": ["browser", "device"]})
}
