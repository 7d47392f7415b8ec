//! The identity function's rate-limit rules, applied with the kernel's one
//! limiter ([`edgecoder_kernel::ratelimit`]). Out of scope: counting and
//! checking (the kernel), and which handler applies which rule (the handlers).

pub use edgecoder_kernel::ratelimit::*;

/// Failed logins per client address.
pub const LOGIN_FAILURES_PER_IP: Rule = Rule {
    name: "login_ip",
    limit: 100,
    window_ms: 15 * MINUTE,
    kind: Kind::Block,
};
/// Failed logins per (account, client address): blocks the guesser only.
pub const LOGIN_FAILURES_PER_ACCOUNT_IP: Rule = Rule {
    name: "login_acct_ip",
    limit: 10,
    window_ms: 15 * MINUTE,
    kind: Kind::Block,
};
/// Failed logins per account from anywhere: soft.
pub const LOGIN_FAILURES_PER_ACCOUNT: Rule = Rule {
    name: "login_acct",
    limit: 30,
    window_ms: 15 * MINUTE,
    kind: Kind::Spacing(5_000),
};
/// Signups per client address (generous: offices and campuses share one
/// address; the per-email limit stops mailbombing). The limit is the
/// `signup_per_ip_per_hour` setting's.
pub const SIGNUP_PER_IP: Rule = Rule {
    name: "signup_ip",
    limit: 100,
    window_ms: HOUR,
    kind: Kind::Block,
};
/// Signups per email address.
pub const SIGNUP_PER_EMAIL: Rule = Rule {
    name: "signup_email",
    limit: 5,
    window_ms: HOUR,
    kind: Kind::Block,
};
/// Verification resends per client address.
pub const RESEND_PER_IP: Rule = Rule {
    name: "resend_ip",
    limit: 20,
    window_ms: HOUR,
    kind: Kind::Block,
};
/// Verification resends per email address.
pub const RESEND_PER_EMAIL: Rule = Rule {
    name: "resend_email",
    limit: 5,
    window_ms: HOUR,
    kind: Kind::Block,
};
/// Password-reset requests per client address.
pub const RESET_PER_IP: Rule = Rule {
    name: "reset_ip",
    limit: 20,
    window_ms: HOUR,
    kind: Kind::Block,
};
/// Password-reset requests per email address.
pub const RESET_PER_EMAIL: Rule = Rule {
    name: "reset_email",
    limit: 5,
    window_ms: HOUR,
    kind: Kind::Block,
};

/// Anonymous passkey sign-in requests (options and verification) per
/// client address: each stores a challenge or checks a signature.
pub const PASSKEY_PER_IP: Rule = Rule {
    name: "passkey_ip",
    limit: 300,
    window_ms: 15 * MINUTE,
    kind: Kind::Block,
};

/// OAuth flows started and completed per client address: each start stores
/// a state record, each callback costs outbound requests to the provider.
pub const OAUTH_PER_IP: Rule = Rule {
    name: "oauth_ip",
    limit: 300,
    window_ms: 15 * MINUTE,
    kind: Kind::Block,
};

/// Node enrollments per user.
pub const ENROLL_PER_USER: Rule = Rule {
    name: "enroll_user",
    limit: 50,
    window_ms: HOUR,
    kind: Kind::Block,
};
