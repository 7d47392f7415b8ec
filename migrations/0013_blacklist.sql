-- The blacklist: every add and lift is a row of its own (never a deletion);
-- the blacklist version is the highest seq. `mesh_bans` holds the bans in
-- force, one row per subject, so that enforcement is one indexed lookup per
-- request. 0005's table was never written; it is replaced.

DROP TABLE IF EXISTS mesh_blacklist;
CREATE TABLE mesh_blacklist (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    action           TEXT NOT NULL CHECK (action IN ('add', 'lift')),
    subject_kind     TEXT NOT NULL CHECK (subject_kind IN ('node_key', 'node_id', 'owner')),
    subject          TEXT NOT NULL,
    reason_code      TEXT NOT NULL,
    reason           TEXT NOT NULL,
    evidence_digest  TEXT,
    actor            TEXT NOT NULL,
    origin           TEXT NOT NULL,      -- 'local', or the peer coordinator it came from
    ledger_index     INTEGER,
    created_at       INTEGER NOT NULL
);
CREATE INDEX mesh_blacklist_subject ON mesh_blacklist (subject_kind, subject, seq);

CREATE TABLE mesh_bans (
    subject_kind  TEXT NOT NULL,
    subject       TEXT NOT NULL,
    seq           INTEGER NOT NULL,      -- the entry that put the ban in force
    PRIMARY KEY (subject_kind, subject)
);
