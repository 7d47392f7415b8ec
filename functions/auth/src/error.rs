//! The auth function's one error enum and its problem+json mapping.
//!
//! Every variant maps to a stable `code`. Credential failures are deliberately
//! coarse (`invalid_credentials`, `token_invalid`, `invalid_refresh_token`):
//! the client learns that it failed, never which part.

use edgecoder_kernel::Problem;
use edgecoder_kernel::http_types::{HeaderValue, StatusCode, header};

/// What can go wrong in the auth function.
#[derive(Debug, thiserror::Error, strum::EnumIter, strum::EnumMessage)]
pub enum Error {
    /// The password breaks a policy rule (named by the string).
    #[error("weak password: {0}")]
    WeakPassword(&'static str),
    /// The email address is not syntactically valid.
    #[error("invalid email")]
    InvalidEmail,
    /// The password hasher failed (parameters or encoding; not the client's fault).
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// Wrong password or unknown account (indistinguishable on purpose).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// An emailed one-time token is unknown, used or expired.
    #[error("token invalid")]
    TokenInvalid,
    /// A refresh token is unknown, rotated, revoked or expired.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// No bearer credential on a route that needs one.
    #[error("authentication required")]
    AuthenticationRequired,
    /// The access token's session was revoked.
    #[error("session revoked")]
    SessionRevoked,
    /// The last authentication is older than the step-up window.
    #[error("step-up required")]
    StepUpRequired,
    /// The caller lacks the role the route needs.
    #[error("forbidden")]
    Forbidden,
    /// The action needs a verified email address.
    #[error("email not verified")]
    EmailUnverified,
    /// The mesh banned this account: no enrollment tokens.
    #[error("account blacklisted")]
    AccountBlacklisted,
    /// A cookie-authenticated request without an allowed `Origin`.
    #[error("csrf rejected")]
    CsrfRejected,
    /// A node id outside `^[a-z0-9][a-z0-9._-]{2,62}$`.
    #[error("invalid node id")]
    InvalidNodeId,
    /// The node id is enrolled by someone else.
    #[error("node owned by another user")]
    NodeOwnedByAnotherUser,
    /// The password was chosen before the address was verified and never
    /// confirmed by its owner since.
    #[error("password unconfirmed")]
    PasswordUnconfirmed,
    /// The account holds as many pending enrollments or node ids as it may.
    #[error("too many enrollments")]
    TooManyEnrollments,
    /// No such node enrollment visible to the caller.
    #[error("node not found")]
    NodeNotFound,
    /// No such session of the caller.
    #[error("session not found")]
    SessionNotFound,
    /// No such user.
    #[error("user not found")]
    UserNotFound,
    /// A role name that cannot be granted.
    #[error("invalid role")]
    InvalidRole,
    /// Revoking this would leave no `system_admin`.
    #[error("last admin")]
    LastAdmin,
    /// An enrollment token that cannot be redeemed (unknown, used, expired,
    /// superseded, deleted, or for another node id or kind).
    #[error("enrollment token invalid")]
    EnrollmentTokenInvalid,
    /// The bootstrap secret is wrong, unset, or an admin already exists.
    #[error("bootstrap refused")]
    BootstrapRefused,
    /// A service route called without the service credential.
    #[error("service unauthorized")]
    ServiceUnauthorized,
    /// A WebAuthn response failed a check.
    #[error("passkey refused: {0}")]
    Passkey(#[from] crate::webauthn::Refusal),
    /// The challenge is unknown, used, expired, another user's, or for the
    /// other ceremony.
    #[error("passkey challenge invalid")]
    PasskeyChallengeInvalid,
    /// Unknown credential, or a signature that does not verify with it (one
    /// answer for both, so assertions cannot probe which ids exist).
    #[error("passkey assertion invalid")]
    PasskeyAssertionInvalid,
    /// The assertion's user handle is not the credential owner's.
    #[error("passkey user mismatch")]
    PasskeyUserMismatch,
    /// The backup-eligible flag changed since registration.
    #[error("passkey backup eligibility changed")]
    PasskeyBackupStateChanged,
    /// The signature counter did not increase: possibly a cloned key.
    #[error("passkey clone suspected")]
    PasskeyCloneSuspected,
    /// The credential id is registered already.
    #[error("passkey exists")]
    PasskeyExists,
    /// No such passkey of the caller.
    #[error("passkey not found")]
    PasskeyNotFound,
    /// Deleting this would leave no way to sign in.
    #[error("last sign-in method")]
    LastSignInMethod,
    /// No relying party is configured (no `allowed_origins`).
    #[error("passkeys disabled")]
    PasskeysDisabled,
    /// No such OAuth provider is configured.
    #[error("oauth provider unknown")]
    OAuthProviderUnknown,
    /// The callback's state is unknown, used, expired, for another provider
    /// or from another browser.
    #[error("oauth state invalid")]
    OAuthStateInvalid,
    /// The callback's `iss` (RFC 9207) is not the provider's issuer.
    #[error("oauth issuer mismatch")]
    OAuthIssuerMismatch,
    /// The provider refused the code, or its answer was unusable.
    #[error("oauth token exchange failed: {0}")]
    OAuthTokenExchangeFailed(String),
    /// Discovery, JWKS or a user API of the provider could not be read.
    #[error("oauth provider unavailable: {0}")]
    OAuthProviderUnavailable(String),
    /// The ID token failed a check (named by the string).
    #[error("id token invalid: {0}")]
    IdTokenInvalid(&'static str),
    /// The provider gave no email address to sign in or create an account with.
    #[error("oauth email missing")]
    OAuthEmailMissing,
    /// A local account has the email, but linking automatically is not safe.
    #[error("account exists, sign in to link")]
    AccountExistsSignInToLink,
    /// The provider account is already linked to another user.
    #[error("oauth identity linked elsewhere")]
    OAuthIdentityLinkedElsewhere,
    /// The user already has a link to this provider.
    #[error("oauth provider already linked")]
    OAuthProviderAlreadyLinked,
    /// No link to this provider on the caller's account.
    #[error("oauth link not found")]
    OAuthLinkNotFound,
    /// A native app's one-time code is unknown, used, expired or its
    /// verifier does not match.
    #[error("oauth code invalid")]
    OAuthCodeInvalid,
    /// A kernel error (storage, request shape, configuration).
    #[error(transparent)]
    Kernel(#[from] edgecoder_kernel::Error),
}

fn problem(status: StatusCode, code: &'static str, title: &'static str, detail: &str) -> Problem {
    Problem::new(status, code, title).with_detail(detail)
}

impl From<Error> for Problem {
    fn from(e: Error) -> Problem {
        use StatusCode as S;
        match e {
            Error::WeakPassword(rule) => problem(
                S::BAD_REQUEST,
                "weak_password",
                "Weak password",
                match rule {
                    "too_short" => "The password must be at least 12 characters long.",
                    "too_long" => "The password must be at most 256 bytes long.",
                    "contains_email" => {
                        "The password must not contain the email address's local part."
                    }
                    "common" => {
                        "The password is commonly used or appears in breached-password lists; choose another."
                    }
                    "repetitive" => "The password is a repeated character or pattern.",
                    "sequential" => {
                        "The password is a sequence (digits, letters or a keyboard row)."
                    }
                    _ => "The password does not meet the policy.",
                },
            ),
            Error::InvalidEmail => problem(
                S::BAD_REQUEST,
                "invalid_email",
                "Invalid email",
                "The email address is not valid.",
            ),
            Error::Hashing(m) => Problem {
                internal: Some(format!("argon2: {m}")),
                ..Problem::new(S::INTERNAL_SERVER_ERROR, "internal_error", "Internal error")
            },
            Error::InvalidCredentials => problem(
                S::UNAUTHORIZED,
                "invalid_credentials",
                "Invalid credentials",
                "The email address or password is wrong.",
            ),
            Error::TokenInvalid => problem(
                S::BAD_REQUEST,
                "token_invalid",
                "Invalid token",
                "The token is unknown, already used or expired.",
            ),
            Error::InvalidRefreshToken => problem(
                S::UNAUTHORIZED,
                "invalid_refresh_token",
                "Invalid refresh token",
                "The refresh token is unknown, already used, revoked or expired. Sign in again.",
            ),
            Error::AuthenticationRequired => problem(
                S::UNAUTHORIZED,
                "authentication_required",
                "Authentication required",
                "Send an access token as `Authorization: Bearer <token>`.",
            )
            .with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"edgecoder\""),
            ),
            Error::SessionRevoked => problem(
                S::UNAUTHORIZED,
                "invalid_token",
                "Invalid access token",
                "The session this token belongs to was signed out.",
            )
            .with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"edgecoder\", error=\"invalid_token\""),
            ),
            Error::StepUpRequired => problem(
                S::FORBIDDEN,
                "step_up_required",
                "Step-up required",
                "This operation needs a recent sign-in. Call POST /auth/step-up and retry with the new token.",
            ),
            Error::Forbidden => problem(
                S::FORBIDDEN,
                "forbidden",
                "Forbidden",
                "Your roles do not allow this operation.",
            ),
            Error::AccountBlacklisted => problem(
                S::FORBIDDEN,
                "account_blacklisted",
                "Account blacklisted",
                "This account is on the coordinator's blacklist: it cannot enroll nodes.",
            ),
            Error::EmailUnverified => problem(
                S::FORBIDDEN,
                "email_unverified",
                "Email not verified",
                "Verify the account's email address first.",
            ),
            Error::CsrfRejected => problem(
                S::FORBIDDEN,
                "csrf_rejected",
                "Cross-site request refused",
                "Cookie-authenticated requests must come from an allowed Origin.",
            ),
            Error::InvalidNodeId => problem(
                S::BAD_REQUEST,
                "invalid_node_id",
                "Invalid node id",
                "A node id is 3 to 63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit.",
            ),
            Error::NodeOwnedByAnotherUser => problem(
                S::CONFLICT,
                "node_owned_by_another_user",
                "Node owned by another user",
                "This node id is enrolled by another account.",
            ),
            Error::PasswordUnconfirmed => problem(
                S::FORBIDDEN,
                "password_unconfirmed",
                "Password needs confirming",
                "This password was set before the address was verified. Reset it (the mail goes to the address) to use a password again.",
            ),
            Error::TooManyEnrollments => problem(
                S::CONFLICT,
                "too_many_enrollments",
                "Too many enrollments",
                "This account has 10 enrollments waiting to be redeemed (or 1000 node ids); redeem or delete some first.",
            ),
            Error::NodeNotFound => problem(
                S::NOT_FOUND,
                "node_not_found",
                "Node not found",
                "No such node enrollment.",
            ),
            Error::SessionNotFound => problem(
                S::NOT_FOUND,
                "session_not_found",
                "Session not found",
                "No such active session.",
            ),
            Error::UserNotFound => problem(
                S::NOT_FOUND,
                "user_not_found",
                "User not found",
                "No such user.",
            ),
            Error::InvalidRole => problem(
                S::BAD_REQUEST,
                "invalid_role",
                "Invalid role",
                "Grantable roles are coordinator_owner and system_admin.",
            ),
            Error::LastAdmin => problem(
                S::CONFLICT,
                "last_admin",
                "Last administrator",
                "Refusing to remove the last system_admin.",
            ),
            Error::EnrollmentTokenInvalid => problem(
                S::BAD_REQUEST,
                "enrollment_token_invalid",
                "Invalid enrollment token",
                "The enrollment token is unknown, used, expired, superseded or for another node.",
            ),
            Error::BootstrapRefused => problem(
                S::FORBIDDEN,
                "bootstrap_refused",
                "Bootstrap refused",
                "The bootstrap secret is wrong or not configured, or an administrator already exists.",
            ),
            Error::ServiceUnauthorized => problem(
                S::UNAUTHORIZED,
                "service_unauthorized",
                "Service credential required",
                "This route is for EdgeCoder functions only.",
            ),
            Error::Passkey(r) => {
                use crate::webauthn::Refusal as R;
                let (code, detail) = match r {
                    R::Malformed(_) => (
                        "passkey_malformed",
                        "The WebAuthn response is not well formed.",
                    ),
                    R::Type => (
                        "passkey_type_invalid",
                        "clientDataJSON.type is not this ceremony's.",
                    ),
                    R::Origin => (
                        "passkey_origin_invalid",
                        "The origin is not an allowed origin of this relying party.",
                    ),
                    R::RpId => (
                        "passkey_rp_id_invalid",
                        "rpIdHash is not this relying party's id.",
                    ),
                    R::UserPresence => (
                        "passkey_user_presence_missing",
                        "The authenticator did not assert user presence.",
                    ),
                    R::UserVerification => (
                        "passkey_user_verification_missing",
                        "The authenticator did not verify the user.",
                    ),
                    R::Algorithm => (
                        "passkey_algorithm_unsupported",
                        "Accepted algorithms: ES256, EdDSA (Ed25519), RS256.",
                    ),
                    R::Signature => (
                        "passkey_signature_invalid",
                        "The signature does not verify.",
                    ),
                    R::Attestation => (
                        "passkey_attestation_unsupported",
                        "Accepted attestation: none, or packed self attestation.",
                    ),
                };
                problem(S::BAD_REQUEST, code, "Passkey refused", detail)
            }
            Error::PasskeyChallengeInvalid => problem(
                S::BAD_REQUEST,
                "passkey_challenge_invalid",
                "Passkey challenge invalid",
                "The challenge is unknown, used, expired, or belongs to another ceremony or user.",
            ),
            Error::PasskeyAssertionInvalid => problem(
                S::UNAUTHORIZED,
                "passkey_assertion_invalid",
                "Passkey assertion invalid",
                "The passkey is not registered here, or its signature does not verify.",
            ),
            Error::PasskeyUserMismatch => problem(
                S::UNAUTHORIZED,
                "passkey_user_mismatch",
                "Passkey user mismatch",
                "The user handle is not the passkey owner's.",
            ),
            Error::PasskeyBackupStateChanged => problem(
                S::UNAUTHORIZED,
                "passkey_backup_state_changed",
                "Passkey changed",
                "The passkey's backup eligibility changed since it was registered.",
            ),
            Error::PasskeyCloneSuspected => problem(
                S::UNAUTHORIZED,
                "passkey_clone_suspected",
                "Passkey may be cloned",
                "The signature counter went backwards; the passkey is flagged.",
            ),
            Error::PasskeyExists => problem(
                S::CONFLICT,
                "passkey_exists",
                "Passkey exists",
                "This passkey is registered already.",
            ),
            Error::PasskeyNotFound => problem(
                S::NOT_FOUND,
                "passkey_not_found",
                "Passkey not found",
                "No such passkey.",
            ),
            Error::LastSignInMethod => problem(
                S::CONFLICT,
                "last_sign_in_method",
                "Last sign-in method",
                "Add a password, a passkey or a linked provider before removing this one.",
            ),
            Error::PasskeysDisabled => problem(
                S::NOT_FOUND,
                "passkeys_disabled",
                "Passkeys disabled",
                "This deployment has no relying party configured (allowed_origins).",
            ),
            Error::OAuthProviderUnknown => problem(
                S::NOT_FOUND,
                "oauth_provider_unknown",
                "Unknown sign-in provider",
                "No such provider is configured; GET /auth/capabilities lists them.",
            ),
            Error::OAuthStateInvalid => problem(
                S::BAD_REQUEST,
                "oauth_state_invalid",
                "Sign-in attempt invalid",
                "The sign-in attempt is unknown, used, expired, or was started in another browser. Start again.",
            ),
            Error::OAuthIssuerMismatch => problem(
                S::BAD_REQUEST,
                "oauth_issuer_mismatch",
                "Wrong issuer",
                "The authorization response names another issuer (RFC 9207).",
            ),
            Error::OAuthTokenExchangeFailed(_) => problem(
                S::BAD_GATEWAY,
                "oauth_token_exchange_failed",
                "Token exchange failed",
                "The provider did not accept the authorization code.",
            ),
            Error::OAuthProviderUnavailable(_) => problem(
                S::BAD_GATEWAY,
                "oauth_provider_unavailable",
                "Provider unavailable",
                "The sign-in provider could not be reached or answered unusably.",
            ),
            Error::IdTokenInvalid(why) => problem(
                S::UNAUTHORIZED,
                "oauth_id_token_invalid",
                "ID token invalid",
                &format!("The provider's ID token failed a check: {why}."),
            ),
            Error::OAuthEmailMissing => problem(
                S::BAD_REQUEST,
                "oauth_email_missing",
                "No email address",
                "The provider shared no email address this service accepts (an ASCII address); allow the email scope and try again.",
            ),
            Error::AccountExistsSignInToLink => problem(
                S::CONFLICT,
                "account_exists_sign_in_to_link",
                "Account exists",
                "An account with this email exists. Sign in to it, then link this provider from your account.",
            ),
            Error::OAuthIdentityLinkedElsewhere => problem(
                S::CONFLICT,
                "oauth_identity_linked_elsewhere",
                "Linked to another account",
                "This provider account already signs in to another EdgeCoder account.",
            ),
            Error::OAuthProviderAlreadyLinked => problem(
                S::CONFLICT,
                "oauth_provider_already_linked",
                "Already linked",
                "Your account already has a link to this provider; remove it first.",
            ),
            Error::OAuthLinkNotFound => problem(
                S::NOT_FOUND,
                "oauth_link_not_found",
                "Link not found",
                "Your account has no link to this provider.",
            ),
            Error::OAuthCodeInvalid => problem(
                S::BAD_REQUEST,
                "oauth_code_invalid",
                "Code invalid",
                "The one-time code is unknown, used or expired, or the code_verifier does not match.",
            ),
            Error::Kernel(k) => k.into(),
        }
    }
}

/// The auth function's entries in the problem catalogue: one per variant,
/// and one per passkey refusal.
pub fn problem_types() -> Vec<(&'static str, edgecoder_kernel::problems::Meaning)> {
    use edgecoder_kernel::problems::{Example, catalogue};
    use strum::{EnumMessage, IntoEnumIterator};
    let examples = Error::iter().flat_map(|e| -> Vec<Example<Error>> {
        match e {
            Error::Passkey(_) => crate::webauthn::Refusal::iter()
                .map(|r| Example {
                    doc: r.get_documentation(),
                    error: Error::Passkey(r),
                })
                .collect(),
            // The kernel lists its own.
            Error::Kernel(_) => Vec::new(),
            e => vec![Example {
                doc: e.get_message().or_else(|| e.get_documentation()),
                error: e,
            }],
        }
    });
    catalogue("auth", examples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_failures_name_the_rule() {
        let p = Problem::from(Error::WeakPassword("contains_email"));
        assert_eq!(p.code, "weak_password");
        assert_eq!(p.status, StatusCode::BAD_REQUEST);
        assert!(p.detail.unwrap_or_default().contains("local part"));
        assert_eq!(Problem::from(Error::InvalidEmail).code, "invalid_email");
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        let p = Problem::from(Error::Kernel(edgecoder_kernel::Error::RateLimited {
            retry_after_secs: 42,
        }));
        assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            p.headers
                .iter()
                .any(|(n, v)| n == header::RETRY_AFTER && v == "42")
        );
    }
}
