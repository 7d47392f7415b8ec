//! JSON Schemas of the auth function's response bodies, for `/openapi.json`.

use serde_json::{Value as Json, json};

fn object(required: &[&str], properties: Json) -> Json {
    json!({"type": "object", "required": required, "properties": properties})
}

fn time() -> Json {
    json!({"type": "string", "format": "date-time"})
}

fn roles() -> Json {
    json!({"type": "array", "items": {"enum": ["user", "coordinator_owner", "system_admin"]}})
}

/// `{status}` answers, optionally with the number of sessions revoked.
pub fn status() -> Json {
    object(
        &["status"],
        json!({"status": {"type": "string"}, "sessions_revoked": {"type": "integer"}}),
    )
}

/// The OAuth 2.0 token response (RFC 6749 §5.1).
pub fn token() -> Json {
    object(
        &["access_token", "token_type", "expires_in"],
        json!({
            "access_token": {"type": "string", "description": "ES256 JWT"},
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer", "maximum": 900},
            "refresh_token": {"type": "string", "description": "device clients only; browsers get the edgecoder_refresh cookie"},
        }),
    )
}

/// `GET /auth/me`.
pub fn me() -> Json {
    object(
        &["id", "email", "email_verified", "roles", "created_at"],
        json!({
            "id": {"type": "string"},
            "email": {"type": "string", "format": "email"},
            "email_verified": {"type": "boolean"},
            "display_name": {"type": ["string", "null"]},
            "roles": roles(),
            "created_at": time(),
            "session_id": {"type": "string"},
            "auth_time": {"type": "integer", "description": "Unix seconds of the last authentication"},
        }),
    )
}

/// `GET /auth/sessions`.
pub fn sessions() -> Json {
    object(
        &["sessions"],
        json!({"sessions": {"type": "array", "items": object(
            &["id", "client", "created_at", "last_used_at", "current"],
            json!({
                "id": {"type": "string"},
                "client": {"enum": ["browser", "device"]},
                "created_at": time(),
                "last_used_at": time(),
                "client_ip": {"type": ["string", "null"]},
                "user_agent": {"type": ["string", "null"]},
                "current": {"type": "boolean"},
            }),
        )}}),
    )
}

/// A user's roles after a change.
pub fn user_roles() -> Json {
    object(
        &["id", "roles"],
        json!({"id": {"type": "string"}, "roles": roles()}),
    )
}

/// `GET /auth/admin/users`.
pub fn users() -> Json {
    object(
        &["users", "next"],
        json!({
            "users": {"type": "array", "items": object(
                &["id", "email", "email_verified", "roles", "created_at"],
                json!({
                    "id": {"type": "string"},
                    "email": {"type": "string"},
                    "email_verified": {"type": "boolean"},
                    "display_name": {"type": ["string", "null"]},
                    "roles": roles(),
                    "created_at": time(),
                }),
            )},
            "next": {"type": ["string", "null"], "description": "pass as ?after= for the next page"},
        }),
    )
}

/// `GET /auth/admin/audit`.
pub fn audit() -> Json {
    object(
        &["events"],
        json!({"events": {"type": "array", "items": object(
            &["id", "time", "actor", "action", "outcome"],
            json!({
                "id": {"type": "string"},
                "time": time(),
                "actor": {"type": "string"},
                "action": {"type": "string"},
                "target": {"type": ["string", "null"]},
                "outcome": {"enum": ["success", "failure", "denied"]},
                "request_id": {"type": ["string", "null"]},
                "client_ip": {"type": ["string", "null"]},
                "details": {},
            }),
        )}}),
    )
}

/// `POST /auth/nodes/enroll`.
pub fn enrollment() -> Json {
    object(
        &["node_id", "kind", "enrollment_token", "expires_at"],
        json!({
            "node_id": {"type": "string"},
            "kind": {"enum": ["agent", "coordinator", "gpu-host"]},
            "enrollment_token": {"type": "string", "description": "shown once"},
            "expires_at": time(),
        }),
    )
}

/// `GET /auth/nodes`.
pub fn nodes() -> Json {
    object(
        &["nodes"],
        json!({"nodes": {"type": "array", "items": object(
            &["node_id", "kind", "state"],
            json!({
                "node_id": {"type": "string"},
                "kind": {"enum": ["agent", "coordinator", "gpu-host"]},
                "state": {"enum": ["token_pending", "token_expired", "redeemed"]},
                "created_at": time(),
                "updated_at": time(),
                "token_expires_at": time(),
            }),
        )}}),
    )
}

/// `POST /auth/nodes/redeem`.
pub fn redeemed() -> Json {
    object(
        &["node_id", "kind", "owner_id"],
        json!({"node_id": {"type": "string"}, "kind": {"enum": ["agent", "coordinator", "gpu-host"]}, "owner_id": {"type": "string"}}),
    )
}

/// `GET /auth/capabilities`.
pub fn capabilities() -> Json {
    object(
        &["password", "passkeys", "oauth_providers"],
        json!({
            "password": {"type": "boolean"},
            "passkeys": object(&["enabled"], json!({"enabled": {"type": "boolean"}, "rp_id": {"type": ["string", "null"]}})),
            "oauth_providers": {"type": "array", "items": object(&["id", "name", "protocol", "start"], json!({
                "id": {"type": "string"}, "name": {"type": "string"},
                "protocol": {"enum": ["oidc", "oauth2"]}, "start": {"type": "string"},
            }))},
        }),
    )
}

/// `GET /auth/oauth/links`.
pub fn oauth_links() -> Json {
    object(
        &["links"],
        json!({"links": {"type": "array", "items": object(&["provider", "created_at"], json!({
            "provider": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "email": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
            "last_used_at": {"type": ["string", "null"], "format": "date-time"},
        }))}}),
    )
}

/// `POST /auth/oauth/{provider}/link/start`.
pub fn oauth_link_start() -> Json {
    object(
        &["authorization_url"],
        json!({"authorization_url": {"type": "string"}}),
    )
}

/// `DELETE /auth/oauth/links/{provider}`.
pub fn oauth_unlinked() -> Json {
    object(
        &["provider", "status"],
        json!({"provider": {"type": "string"}, "status": {"const": "deleted"}}),
    )
}

fn descriptors() -> Json {
    json!({"type": "array", "items": object(&["type", "id"], json!({
        "type": {"const": "public-key"}, "id": {"type": "string", "contentEncoding": "base64url"},
        "transports": {"type": "array", "items": {"type": "string"}},
    }))})
}

/// `PublicKeyCredentialCreationOptionsJSON` (WebAuthn L3).
pub fn passkey_creation_options() -> Json {
    object(
        &[
            "rp",
            "user",
            "challenge",
            "pubKeyCredParams",
            "authenticatorSelection",
            "attestation",
        ],
        json!({
            "rp": object(&["id", "name"], json!({"id": {"type": "string"}, "name": {"type": "string"}})),
            "user": object(&["id", "name", "displayName"], json!({
                "id": {"type": "string", "description": "opaque random handle, base64url"},
                "name": {"type": "string"}, "displayName": {"type": "string"},
            })),
            "challenge": {"type": "string", "contentEncoding": "base64url"},
            "pubKeyCredParams": {"type": "array", "items": object(&["type", "alg"], json!({"type": {"const": "public-key"}, "alg": {"enum": [-7, -8, -257]}}))},
            "timeout": {"type": "integer"},
            "excludeCredentials": descriptors(),
            "authenticatorSelection": {"type": "object"},
            "attestation": {"const": "none"},
        }),
    )
}

/// `PublicKeyCredentialRequestOptionsJSON` (WebAuthn L3).
pub fn passkey_request_options() -> Json {
    object(
        &["challenge", "rpId", "allowCredentials", "userVerification"],
        json!({
            "challenge": {"type": "string", "contentEncoding": "base64url"},
            "timeout": {"type": "integer"},
            "rpId": {"type": "string"},
            "allowCredentials": descriptors(),
            "userVerification": {"const": "required"},
        }),
    )
}

fn passkey_props() -> Json {
    json!({
        "id": {"type": "string", "contentEncoding": "base64url"},
        "name": {"type": "string"},
        "alg": {"enum": [-7, -8, -257]},
        "aaguid": {"type": "string"},
        "transports": {"type": "array", "items": {"type": "string"}},
        "backup_eligible": {"type": "boolean"},
        "backed_up": {"type": "boolean"},
        "created_at": time(),
        "last_used_at": {"type": ["string", "null"], "format": "date-time"},
        "clone_suspected": {"type": "boolean"},
    })
}

/// One passkey (registration answer, rename answer).
pub fn passkey() -> Json {
    object(&["id", "name"], passkey_props())
}

/// `GET /auth/passkeys`.
pub fn passkeys() -> Json {
    object(
        &["passkeys"],
        json!({"passkeys": {"type": "array", "items": object(&["id", "name", "alg"], passkey_props())}}),
    )
}

/// `{id, status}` answers.
pub fn deleted() -> Json {
    object(
        &["id", "status"],
        json!({"id": {"type": "string"}, "status": {"const": "deleted"}}),
    )
}
