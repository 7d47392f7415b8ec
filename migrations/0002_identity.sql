-- Identity I: accounts, sessions and refresh-token families, one-time email
-- tokens, roles, node enrollments, SQL rate limits and the development outbox.
-- Every secret token is stored only as its blake3 hash (hex); single-use state
-- is consumed with conditional UPDATEs so two racing requests cannot both win.
-- Times are ms since the Unix epoch unless the column says otherwise.

CREATE TABLE users (
    id                 TEXT PRIMARY KEY,              -- random 128-bit hex
    email              TEXT NOT NULL UNIQUE,          -- trimmed, lowercased
    email_verified_at  INTEGER,
    password_hash      TEXT,                          -- Argon2id PHC string
    display_name       TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);

-- `user` is implicit for everyone and never stored.
CREATE TABLE user_roles (
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('coordinator_owner', 'system_admin')),
    granted_by  TEXT NOT NULL,                        -- "user:<id>" or "system:<how>"
    granted_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, role)
);

-- One row per sign-in; its refresh tokens form the family revoked together.
CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client          TEXT NOT NULL CHECK (client IN ('browser', 'device')),
    amr             TEXT NOT NULL CHECK (json_valid(amr)),   -- RFC 8176 values
    auth_time       INTEGER NOT NULL,                 -- Unix seconds of the last (step-up) authentication
    created_at      INTEGER NOT NULL,
    last_used_at    INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,                 -- sliding refresh expiry
    client_ip       TEXT,
    user_agent      TEXT,
    revoked_at      INTEGER,
    revoked_reason  TEXT
);
CREATE INDEX sessions_user ON sessions (user_id, created_at);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    rotated_at  INTEGER,                              -- set when exchanged; presenting it again is reuse
    replaced_by TEXT                                  -- the successor's hash (for the short reuse grace window)
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE email_tokens (
    token_hash   TEXT PRIMARY KEY,
    purpose      TEXT NOT NULL CHECK (purpose IN ('verify_email', 'password_reset')),
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    email        TEXT NOT NULL,                       -- the address it was sent to
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    consumed_at  INTEGER,
    consumed_by  TEXT                                 -- request id that consumed it; later statements of that batch key on it
);
CREATE INDEX email_tokens_user ON email_tokens (user_id, purpose);

-- At most one redeemable enrollment token per node id, bound to owner and kind.
CREATE TABLE node_enrollments (
    node_id            TEXT PRIMARY KEY,
    owner_id           TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind               TEXT NOT NULL CHECK (kind IN ('agent', 'coordinator')),
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    token_hash         TEXT NOT NULL UNIQUE,
    token_expires_at   INTEGER NOT NULL,
    token_redeemed_at  INTEGER
);
CREATE INDEX node_enrollments_owner ON node_enrollments (owner_id, created_at);

-- Fixed-window counters; `last_at` lets soft limits space attempts out.
CREATE TABLE rate_limits (
    key           TEXT PRIMARY KEY,                   -- "<rule>:<normalised subject>"
    window_start  INTEGER NOT NULL,
    count         INTEGER NOT NULL,
    last_at       INTEGER NOT NULL
);

-- Development mail: what would have been sent. Never used in production mode.
CREATE TABLE mail_outbox (
    id       TEXT PRIMARY KEY,
    time     INTEGER NOT NULL,
    to_addr  TEXT NOT NULL,
    subject  TEXT NOT NULL,
    body     TEXT NOT NULL
);
CREATE INDEX mail_outbox_to_time ON mail_outbox (to_addr, time);
