//! Durable rate limits in SQL (fixed windows, strongly consistent), the one
//! limiter every function uses (`rate_limits` table).
//!
//! In scope: [`Rule`]s and how they limit, how subjects are normalised
//! (emails lowercased by the caller; IPv6 clients grouped by /64, since one
//! host usually owns a whole /64), counting and checking. Out of scope: which
//! rules exist and which guards which route (each function defines its own:
//! `auth::ratelimit` for identity, `mesh::Settings` for nodes).
//!
//! Two kinds of rule. A **block** rule refuses every attempt once the window's
//! count is reached, until the window ends. A **spacing** rule is the soft
//! per-account limit: past its threshold, each client address may try that
//! account only once per `spacing`, so someone failing logins against a
//! victim's account from many addresses slows everyone down but cannot take
//! the victim's own turns (they are per address) or lock them out.
//!
//! Attempts are counted *before* the expensive work they guard ([`attempt`]:
//! one UPSERT that counts and returns the new count), so parallel requests
//! cannot all read a count under the limit; a success gives its count back
//! ([`refund`]).

use std::net::IpAddr;

use crate::{Error, RequestContext, Services, Statement, Value};

/// How a rule limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Refuse until the window ends.
    Block,
    /// Past the threshold, allow one attempt per this many ms.
    Spacing(i64),
}

/// A named limit: at most `limit` counted events per `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Key prefix and audit name.
    pub name: &'static str,
    /// Events per window.
    pub limit: i64,
    /// Window length.
    pub window_ms: i64,
    /// Behaviour past the limit.
    pub kind: Kind,
}

/// One minute, for window lengths.
pub const MINUTE: i64 = 60_000;
/// One hour.
pub const HOUR: i64 = 60 * MINUTE;

/// The rate-limit subject for a client address. `None` when the platform
/// reported none: per-address rules are then skipped rather than putting
/// every such client into one shared bucket anyone could exhaust.
pub fn ip_subject(ctx: &RequestContext) -> Option<String> {
    match ctx.client_ip.map(|ip| ip.to_canonical())? {
        IpAddr::V4(v4) => Some(v4.to_string()),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
        }
    }
}

/// Counts this attempt and refuses if it goes over `rule` (block rules).
pub async fn attempt(s: &Services, rule: &Rule, subject: &str) -> Result<(), Error> {
    hit(s, rule, subject).await
}

/// Gives back one counted attempt (it succeeded).
pub async fn refund(s: &Services, rule: &Rule, subject: &str) -> Result<(), Error> {
    s.sql
        .execute(Statement::new(
            "UPDATE rate_limits SET count = max(count - 1, 0) WHERE key = ?1",
            vec![key(rule, subject).into()],
        ))
        .await?;
    Ok(())
}

/// Whether `subject` has reached `rule`'s threshold in the current window.
pub async fn over(s: &Services, rule: &Rule, subject: &str) -> Result<bool, Error> {
    Ok(check(
        s,
        &Rule {
            kind: Kind::Block,
            ..*rule
        },
        subject,
    )
    .await
    .is_err())
}

/// Claims the next turn of a spacing rule for `turn_subject` (one statement:
/// of several racing requests exactly one gets the turn).
pub async fn claim_turn(s: &Services, rule: &Rule, turn_subject: &str) -> Result<(), Error> {
    let Kind::Spacing(spacing) = rule.kind else {
        return Ok(());
    };
    let now = s.clock.now_ms();
    let rows = s
        .sql
        .execute(Statement::new(
            "INSERT INTO rate_limits (key, window_start, count, last_at) VALUES (?1, ?2, 1, ?2) \
             ON CONFLICT (key) DO UPDATE SET \
               count = CASE WHEN ?2 - rate_limits.last_at >= ?3 THEN 1 ELSE rate_limits.count + 1 END, \
               last_at = CASE WHEN ?2 - rate_limits.last_at >= ?3 THEN ?2 ELSE rate_limits.last_at END \
             RETURNING count, last_at",
            vec![
                format!("{}_turn:{turn_subject}", rule.name).into(),
                Value::Integer(now),
                Value::Integer(spacing),
            ],
        ))
        .await?;
    // `count` restarts at 1 exactly when this request took the turn.
    match (rows.get_i64(0, "count"), rows.get_i64(0, "last_at")) {
        (Some(1), _) | (None, _) => Ok(()),
        (_, last) => {
            let last = last.unwrap_or(now);
            Err(Error::RateLimited {
                retry_after_secs: (spacing - (now - last) + 999) / 1000,
            })
        }
    }
}

fn key(rule: &Rule, subject: &str) -> String {
    format!("{}:{subject}", rule.name)
}

/// Refuses with [`Error::RateLimited`] if `rule` is exhausted for `subject`,
/// without counting this attempt.
pub async fn check(s: &Services, rule: &Rule, subject: &str) -> Result<(), Error> {
    let now = s.clock.now_ms();
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT window_start, count, last_at FROM rate_limits WHERE key = ?1",
            vec![key(rule, subject).into()],
        ))
        .await?;
    let (Some(start), Some(count), Some(last)) = (
        rows.get_i64(0, "window_start"),
        rows.get_i64(0, "count"),
        rows.get_i64(0, "last_at"),
    ) else {
        return Ok(());
    };
    verdict(rule, now, start, count, last, false)
}

/// Counts one event for `subject` and refuses if that goes over the limit.
pub async fn hit(s: &Services, rule: &Rule, subject: &str) -> Result<(), Error> {
    let now = s.clock.now_ms();
    let (start, count) = record(s, rule, subject, now).await?;
    verdict(rule, now, start, count, now, true)
}

/// Counts one event (a failure) for `subject`.
pub async fn count(s: &Services, rule: &Rule, subject: &str) -> Result<(), Error> {
    record(s, rule, subject, s.clock.now_ms()).await.map(|_| ())
}

/// Forgets `subject`'s count (e.g. after a successful login).
pub async fn clear(s: &Services, rule: &Rule, subject: &str) -> Result<(), Error> {
    s.sql
        .execute(Statement::new(
            "DELETE FROM rate_limits WHERE key = ?1",
            vec![key(rule, subject).into()],
        ))
        .await?;
    Ok(())
}

async fn record(s: &Services, rule: &Rule, subject: &str, now: i64) -> Result<(i64, i64), Error> {
    // One statement, so concurrent requests cannot lose counts.
    let rows = s
        .sql
        .execute(Statement::new(
            "INSERT INTO rate_limits (key, window_start, count, last_at) VALUES (?1, ?2, 1, ?2) \
             ON CONFLICT (key) DO UPDATE SET \
               count = CASE WHEN rate_limits.window_start <= ?2 - ?3 THEN 1 ELSE rate_limits.count + 1 END, \
               window_start = CASE WHEN rate_limits.window_start <= ?2 - ?3 THEN ?2 ELSE rate_limits.window_start END, \
               last_at = ?2 \
             RETURNING window_start, count",
            vec![
                key(rule, subject).into(),
                Value::Integer(now),
                Value::Integer(rule.window_ms),
            ],
        ))
        .await?;
    Ok((
        rows.get_i64(0, "window_start").unwrap_or(now),
        rows.get_i64(0, "count").unwrap_or(1),
    ))
}

/// The decision for a window state. `counted` says whether `count` already
/// includes this attempt.
fn verdict(
    rule: &Rule,
    now: i64,
    start: i64,
    count: i64,
    last: i64,
    counted: bool,
) -> Result<(), Error> {
    let window_end = start + rule.window_ms;
    if now >= window_end {
        return Ok(());
    }
    let over = if counted {
        count > rule.limit
    } else {
        count >= rule.limit
    };
    if !over {
        return Ok(());
    }
    let wait_ms = match rule.kind {
        Kind::Block => window_end - now,
        Kind::Spacing(spacing) => {
            if counted || now - last >= spacing {
                return Ok(());
            }
            spacing - (now - last)
        }
    };
    Err(Error::RateLimited {
        retry_after_secs: (wait_ms + 999) / 1000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGIN_FAILURES_PER_ACCOUNT_IP: Rule = Rule {
        name: "login_acct_ip",
        limit: 10,
        window_ms: 15 * MINUTE,
        kind: Kind::Block,
    };
    const SIGNUP_PER_EMAIL: Rule = Rule {
        name: "signup_email",
        limit: 5,
        window_ms: HOUR,
        kind: Kind::Block,
    };
    const LOGIN_FAILURES_PER_ACCOUNT: Rule = Rule {
        name: "login_acct",
        limit: 30,
        window_ms: 15 * MINUTE,
        kind: Kind::Spacing(5_000),
    };

    #[test]
    fn block_rules_refuse_until_the_window_ends() {
        let r = LOGIN_FAILURES_PER_ACCOUNT_IP;
        assert!(verdict(&r, 1_000, 0, 9, 900, false).is_ok());
        match verdict(&r, 1_000, 0, 10, 900, false) {
            Err(Error::RateLimited { retry_after_secs }) => {
                assert_eq!(retry_after_secs, (r.window_ms - 1_000) / 1000);
            }
            other => panic!("{other:?}"),
        }
        assert!(verdict(&r, r.window_ms, 0, 50, 900, false).is_ok());
        assert!(verdict(&SIGNUP_PER_EMAIL, 10, 0, 5, 10, true).is_ok());
        assert!(verdict(&SIGNUP_PER_EMAIL, 10, 0, 6, 10, true).is_err());
    }

    #[test]
    fn spacing_rules_only_slow_attempts_down() {
        let r = LOGIN_FAILURES_PER_ACCOUNT;
        assert!(verdict(&r, 10_000, 0, 500, 9_000, false).is_err());
        assert!(verdict(&r, 14_000, 0, 500, 9_000, false).is_ok());
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        let ctx = |ip: &str| RequestContext {
            request_id: "r".into(),
            client_ip: ip.parse().ok(),
            ..Default::default()
        };
        assert_eq!(
            ip_subject(&ctx("2001:db8:1:2:aaaa::1")),
            ip_subject(&ctx("2001:db8:1:2:bbbb::9"))
        );
        assert_eq!(
            ip_subject(&ctx("::ffff:10.0.0.1")).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(ip_subject(&ctx("nope")), None);
    }
}
