//! The auth function's one error enum and its problem+json mapping.

use edgecoder_kernel::Problem;
use edgecoder_kernel::http_types::StatusCode;

/// What can go wrong in the auth function.
#[derive(Debug, thiserror::Error)]
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
    /// A kernel error (storage, request shape, configuration).
    #[error(transparent)]
    Kernel(#[from] edgecoder_kernel::Error),
}

impl From<Error> for Problem {
    fn from(e: Error) -> Problem {
        match e {
            Error::WeakPassword(rule) => Problem::new(
                StatusCode::BAD_REQUEST,
                "weak_password",
                "Weak password",
            )
            .with_detail(match rule {
                "too_short" => "The password must be at least 12 characters long.",
                "too_long" => "The password must be at most 256 bytes long.",
                "contains_email" => "The password must not contain the email address's local part.",
                _ => "The password does not meet the policy.",
            }),
            Error::InvalidEmail => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid_email", "Invalid email")
                    .with_detail("The email address is not valid.")
            }
            Error::Hashing(m) => Problem {
                internal: Some(format!("argon2: {m}")),
                ..Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "Internal error",
                )
            },
            Error::Kernel(k) => k.into(),
        }
    }
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
}
