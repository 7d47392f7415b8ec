//! Outbound mail: a Resend-compatible HTTP email API, or the development outbox.
//!
//! In scope: the messages identity sends (verification, sign-up notice,
//! password reset) and their delivery through the configured provider:
//! `POST {base}/emails` with a bearer key (the Resend API shape: `from`, `to`,
//! `subject`, `text`), or an INSERT into `mail_outbox` when `mail_provider` is
//! `outbox` (the kernel's config refuses that in production). Out of scope:
//! retries and bounces (the provider's job); HTML mail.
//!
//! Delivery failures are logged as audit events and never change the response
//! a client sees, so mail errors cannot become an account-existence oracle.

use crate::settings::{MailSettings, Settings};
use edgecoder_kernel::audit::{AuditEvent, Outcome};
use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::{OutboundRequest, RequestContext, Services, Statement};
use serde_json::json;

/// One message.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
}

/// The verification message for `token`.
pub fn verification(issuer: &str, to: &str, token: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Verify your EdgeCoder email address".into(),
        text: format!(
            "Open this link to verify your email address (valid for 24 hours):\n\n\
             {issuer}/auth/verify-email?token={token}\n\n\
             If you did not sign up for EdgeCoder, ignore this message.\n"
        ),
    }
}

/// The notice sent instead when someone signs up with a registered address.
pub fn already_registered(issuer: &str, to: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Someone tried to sign up with your EdgeCoder address".into(),
        text: format!(
            "Someone tried to create an EdgeCoder account with this address, which already has one.\n\
             If it was you, sign in at {issuer} or reset your password there. \
             Otherwise you can ignore this message; nothing changed.\n"
        ),
    }
}

/// The notice that a sign-in provider was linked to the account because
/// both sides had verified the address.
pub fn provider_linked(issuer: &str, to: &str, provider: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("{provider} sign-in was added to your EdgeCoder account"),
        text: format!(
            "Someone signed in to EdgeCoder with a {provider} account that uses this verified address, \
             so that {provider} account can now sign in to yours.\n\
             If it was not you, sign in at {issuer}, remove the link under your account's sign-in methods \
             and sign out everywhere.\n"
        ),
    }
}

/// The notice that a signed-in session linked a sign-in provider.
pub fn provider_link_added(issuer: &str, to: &str, provider: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("{provider} sign-in was added to your EdgeCoder account"),
        text: format!(
            "A {provider} account was linked to your EdgeCoder account from a signed-in session, \
             so it can now sign in to yours.\n\
             If it was not you, sign in at {issuer}, remove the link under your account's sign-in methods, \
             reset your password and sign out everywhere.\n"
        ),
    }
}

/// The notice that the address's proven owner claimed an account whose
/// password was set by someone who had not proven the address.
pub fn account_claimed(issuer: &str, to: &str, provider: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("{provider} sign-in now owns your EdgeCoder account"),
        text: format!(
            "You signed in with a {provider} account that proves this address. The account's password \
             had been chosen before the address was verified, so it was removed, with every session \
             and passkey made with it.\n\
             To sign in with a password again, reset it at {issuer}.\n"
        ),
    }
}

/// The password-reset message for `token`.
pub fn password_reset(to: &str, token: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Reset your EdgeCoder password".into(),
        text: format!(
            "Use this code to choose a new password (valid for 30 minutes, once):\n\n\
             {token}\n\n\
             Resetting signs you out everywhere. If you did not ask for this, ignore this message.\n"
        ),
    }
}

/// Refuses (503 `service_misconfigured`) when no provider is configured, so a
/// route that must send mail fails before changing anything.
pub fn require(s: &Services) -> Result<(), edgecoder_kernel::Error> {
    match Settings::of(s)?.mail {
        MailSettings::Unconfigured => Err(edgecoder_kernel::Error::Config(
            "no mail provider: set mail_api_key and mail_from".into(),
        )),
        _ => Ok(()),
    }
}

/// Delivers `mail`; failures are recorded, not returned. HTTP delivery runs
/// after the response (the `Defer` port), so how long the provider takes
/// cannot tell a client whether the address was registered.
pub async fn send(s: &Services, ctx: &RequestContext, mail: &Mail) {
    let failed = |why: String| AuditEvent {
        actor: "service:auth".into(),
        action: "auth.mail.failed".into(),
        target: None,
        outcome: Outcome::Failure,
        details: json!({ "subject": mail.subject, "error": why }),
    };
    let settings = match Settings::of(s) {
        Ok(st) => st,
        Err(e) => {
            let _ = edgecoder_kernel::audit::record(s, Some(ctx), &failed(e.to_string())).await;
            return;
        }
    };
    match &settings.mail {
        MailSettings::Unconfigured => {
            let _ = edgecoder_kernel::audit::record(
                s,
                Some(ctx),
                &failed("no mail provider configured".into()),
            )
            .await;
        }
        MailSettings::Outbox => {
            let stored = s
                .sql
                .execute(Statement::new(
                    "INSERT INTO mail_outbox (id, time, to_addr, subject, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                    vec![
                        s.new_id().into(),
                        s.clock.now_ms().into(),
                        mail.to.as_str().into(),
                        mail.subject.as_str().into(),
                        mail.text.as_str().into(),
                    ],
                ))
                .await;
            if let Err(e) = stored {
                let _ = edgecoder_kernel::audit::record(s, Some(ctx), &failed(e.to_string())).await;
            }
        }
        MailSettings::Http { base, key, from } => {
            let body = json!({
                "from": from,
                "to": [mail.to],
                "subject": mail.subject,
                "text": mail.text,
            });
            let req = OutboundRequest {
                method: Method::POST,
                url: format!("{base}/emails"),
                headers: vec![
                    ("authorization".into(), format!("Bearer {key}")),
                    ("content-type".into(), "application/json".into()),
                ],
                body: body.to_string().into_bytes(),
            };
            let outbound = s.outbound.clone();
            let sql = s.sql.clone();
            // The failure record is prepared now: the request is gone later.
            let event_id = s.new_id();
            let time = s.clock.now_ms();
            let ctx = ctx.clone();
            let subject = mail.subject.clone();
            s.defer.defer(Box::pin(async move {
                let why = match outbound.send(req).await {
                    Ok(r) if (200..300).contains(&r.status) => return,
                    Ok(r) => format!("email API answered {}", r.status),
                    Err(e) => e.to_string(),
                };
                let event = AuditEvent {
                    actor: "service:auth".into(),
                    action: "auth.mail.failed".into(),
                    target: None,
                    outcome: Outcome::Failure,
                    details: json!({ "subject": subject, "error": why }),
                };
                let _ = sql
                    .execute(event.statement(&event_id, time, Some(&ctx)))
                    .await;
            }));
        }
    }
}
