//! The SQLite schema migrations, embedded, and how they are checked and applied.
//!
//! In scope: the ordered list of files in the repository's `migrations/`
//! directory (one set for every runtime), finding which are pending, and
//! applying them through the [`Sql`] port. Applied migrations are recorded in the
//! `d1_migrations` table with the exact layout `wrangler d1 migrations apply`
//! uses, so a database migrated by wrangler, by `edgecoder migrate` or by the
//! Spin component reads the same. Out of scope: deciding *when* to migrate (the
//! runtime: natively at start, on Spin on the first request that finds work
//! pending, on Workers by the operator with wrangler).
//!
//! The port runs one statement at a time (Spin's SQLite prepares only the
//! first statement of a string), so files are split into statements here: on
//! `;` outside quotes, comments and `CREATE TRIGGER ... END` bodies.

use serde_json::json;

use crate::audit::{AuditEvent, Outcome};
use crate::ports::random_hex;
use crate::{Clock, Error, Rng, Sql, Statement};

/// One migration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// File name, the key recorded in `d1_migrations`.
    pub name: &'static str,
    /// File contents.
    pub sql: &'static str,
}

/// Every migration, in the order applied.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_foundation.sql",
        sql: include_str!("../../../migrations/0001_foundation.sql"),
    },
    Migration {
        name: "0002_identity.sql",
        sql: include_str!("../../../migrations/0002_identity.sql"),
    },
    Migration {
        name: "0003_ledger.sql",
        sql: include_str!("../../../migrations/0003_ledger.sql"),
    },
    Migration {
        name: "0004_credits.sql",
        sql: include_str!("../../../migrations/0004_credits.sql"),
    },
    Migration {
        name: "0005_mesh.sql",
        sql: include_str!("../../../migrations/0005_mesh.sql"),
    },
    Migration {
        name: "0006_passkeys.sql",
        sql: include_str!("../../../migrations/0006_passkeys.sql"),
    },
    Migration {
        name: "0007_oauth.sql",
        sql: include_str!("../../../migrations/0007_oauth.sql"),
    },
    Migration {
        name: "0008_ledger_rfc6962.sql",
        sql: include_str!("../../../migrations/0008_ledger_rfc6962.sql"),
    },
    Migration {
        name: "0009_one_rate_limiter.sql",
        sql: include_str!("../../../migrations/0009_one_rate_limiter.sql"),
    },
    Migration {
        name: "0010_proven_credentials.sql",
        sql: include_str!("../../../migrations/0010_proven_credentials.sql"),
    },
    Migration {
        name: "0011_inference.sql",
        sql: include_str!("../../../migrations/0011_inference.sql"),
    },
    Migration {
        name: "0012_model_supply.sql",
        sql: include_str!("../../../migrations/0012_model_supply.sql"),
    },
    Migration {
        name: "0013_blacklist.sql",
        sql: include_str!("../../../migrations/0013_blacklist.sql"),
    },
    Migration {
        name: "0014_federation.sql",
        sql: include_str!("../../../migrations/0014_federation.sql"),
    },
    Migration {
        name: "0015_economy.sql",
        sql: include_str!("../../../migrations/0015_economy.sql"),
    },
];

/// Same layout as wrangler's, so either tool can take over from the other.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS d1_migrations(\
    id INTEGER PRIMARY KEY AUTOINCREMENT, \
    name TEXT UNIQUE, \
    applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL)";

/// Migrations not yet recorded as applied.
pub async fn pending(sql: &dyn Sql) -> Result<Vec<Migration>, Error> {
    let exists = sql
        .execute(Statement::new(
            "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'd1_migrations'",
            vec![],
        ))
        .await?;
    if exists.get_i64(0, "n").unwrap_or(0) == 0 {
        return Ok(MIGRATIONS.to_vec());
    }
    let rows = sql
        .execute(Statement::new("SELECT name FROM d1_migrations", vec![]))
        .await?;
    let applied: Vec<&str> = (0..rows.rows.len())
        .filter_map(|i| rows.get_str(i, "name"))
        .collect();
    Ok(MIGRATIONS
        .iter()
        .filter(|m| !applied.contains(&m.name))
        .copied()
        .collect())
}

/// Applies every pending migration, each as one atomic batch together with its
/// `d1_migrations` row and a `schema.migrate` audit event (the first migration
/// creates the audit table earlier in its own batch). Returns the names applied.
/// Safe to race: a loser's batch rolls back and finds nothing left to do.
pub async fn apply(
    sql: &dyn Sql,
    clock: &dyn Clock,
    rng: &dyn Rng,
    actor: &str,
) -> Result<Vec<&'static str>, Error> {
    sql.execute(Statement::new(CREATE_TABLE, vec![])).await?;
    let mut applied = Vec::new();
    for m in pending(sql).await? {
        let mut batch: Vec<Statement> = split_statements(m.sql)
            .into_iter()
            .map(|sql| Statement::new(sql, vec![]))
            .collect();
        batch.push(Statement::new(
            "INSERT INTO d1_migrations (name) VALUES (?1)",
            vec![m.name.into()],
        ));
        let event = AuditEvent {
            actor: actor.to_owned(),
            action: "schema.migrate".into(),
            target: Some(m.name.to_owned()),
            outcome: Outcome::Success,
            details: json!({ "migration": m.name }),
        };
        batch.push(event.statement(&random_hex(rng, 16), clock.now_ms(), None));
        if let Err(e) = sql.batch(batch).await {
            // Someone else may have applied it between our read and our write.
            if pending(sql).await?.iter().any(|p| p.name == m.name) {
                return Err(e);
            }
            continue;
        }
        applied.push(m.name);
    }
    Ok(applied)
}

/// Splits SQL text into statements, dropping comments-only fragments.
pub fn split_statements(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    // Inside `CREATE [TEMP] TRIGGER ... BEGIN ... END` a `;` does not end the
    // statement until the BEGIN (and any CASE ... END within) has closed.
    let mut in_trigger = false;
    let mut depth: u32 = 0;
    let mut words: Vec<String> = Vec::new();
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\'' | b'"' | b'`' => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == c {
                        // A doubled quote is an escaped quote.
                        if bytes.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'[' => {
                while i < bytes.len() && bytes[i] != b']' {
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b';' => {
                if !in_trigger || depth == 0 {
                    push_statement(&mut out, &text[start..=i.min(text.len() - 1)]);
                    start = i + 1;
                    in_trigger = false;
                    depth = 0;
                    words.clear();
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let s = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let w = text[s..i].to_ascii_uppercase();
                let is_trigger_keyword = w == "TRIGGER"
                    && words.first().is_some_and(|f| f == "CREATE")
                    && (words.len() == 1
                        || (words.len() == 2 && matches!(words[1].as_str(), "TEMP" | "TEMPORARY")));
                if is_trigger_keyword {
                    in_trigger = true;
                } else if in_trigger && (w == "BEGIN" || w == "CASE") {
                    depth += 1;
                } else if in_trigger && w == "END" {
                    depth = depth.saturating_sub(1);
                }
                words.push(w);
            }
            _ => i += 1,
        }
    }
    if start < text.len() {
        push_statement(&mut out, &text[start..]);
    }
    out
}

fn push_statement(out: &mut Vec<String>, raw: &str) {
    let trimmed = raw.trim();
    let has_code = split_has_code(trimmed);
    if has_code {
        out.push(trimmed.trim_end_matches(';').trim().to_owned());
    }
}

// True when the fragment holds something other than comments, whitespace and `;`.
fn split_has_code(s: &str) -> bool {
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after);
        } else if let Some(r) = rest.strip_prefix(';') {
            rest = r;
        } else {
            return !rest.is_empty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_semicolons_outside_quotes_and_comments() {
        let sql = "-- header; not a statement\nCREATE TABLE a (x TEXT DEFAULT 'a;b'); /* c; */\n\
                   INSERT INTO a VALUES (\"q;\"); -- trailing;\n";
        let got = split_statements(sql);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("-- header; not a statement\nCREATE TABLE a"));
        assert!(got[1].starts_with("/* c; */\nINSERT INTO a"));
    }

    #[test]
    fn keeps_trigger_bodies_whole() {
        let sql = "CREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE b SET n = n + 1; DELETE FROM c; END;\nSELECT 1;";
        let got = split_statements(sql);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].ends_with("END"));
        assert_eq!(got[1], "SELECT 1");
    }

    #[test]
    fn case_inside_a_trigger_does_not_end_it() {
        let sql = "CREATE TEMP TRIGGER t AFTER INSERT ON a BEGIN \
                   UPDATE b SET n = CASE WHEN n > 0 THEN n ELSE 0 END; END;\nSELECT 1;";
        let got = split_statements(sql);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].ends_with("END; END"), "{got:?}");
    }

    #[test]
    fn a_column_named_trigger_is_not_a_trigger() {
        let got = split_statements("CREATE TABLE x (trigger TEXT); CREATE TABLE y (z TEXT);");
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        let got = split_statements("INSERT INTO a VALUES ('it''s; fine'); SELECT 2");
        assert_eq!(
            got,
            vec!["INSERT INTO a VALUES ('it''s; fine')", "SELECT 2"]
        );
    }

    #[test]
    fn embedded_list_matches_the_migrations_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(
            on_disk, embedded,
            "add new files in migrations/ to MIGRATIONS"
        );
    }

    #[test]
    fn every_migration_splits_into_statements() {
        for m in MIGRATIONS {
            assert!(!split_statements(m.sql).is_empty(), "{}", m.name);
        }
    }
}
