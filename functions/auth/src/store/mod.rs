//! Typed storage over the kernel's `Sql` port, one module per resource: the
//! only place the HTTP handlers' SQL lives. Handlers (`api`) call these and
//! never build statements themselves.
//!
//! In scope: [`users`] (accounts, passwords, profiles), [`roles`] (role
//! grants), [`sessions`] (sessions and their refresh-token families),
//! [`email_tokens`] (email verification and password-reset tokens),
//! [`enrollments`] (node enrollment tokens), [`passkeys`] (WebAuthn
//! credentials, user handles, challenges), [`oauth`] (provider links, flow
//! states, native apps' one-time codes). Audit events are read through the
//! kernel's `audit::query`.
//!
//! Out of scope: who may do what, rate limits and audit records (the
//! handlers), and the JSON shapes. Reads and single writes are `async fn`s
//! returning typed values; statements that must commit atomically with
//! others (often with an audit statement) are returned as
//! [`Statement`](edgecoder_kernel::Statement)s for the handler to batch, in
//! the order the handler's results are read in. Every secret token arrives
//! here already hashed. Storage-like modules outside `api` keep their own
//! SQL: `session` (authentication, session creation, the conditional audit
//! statement), `ratelimit` (the kernel's counters), `mail` (the outbox).

pub mod email_tokens;
pub mod enrollments;
pub mod oauth;
pub mod passkeys;
pub mod roles;
pub mod sessions;
pub mod users;
