-- Identity II, passkeys: WebAuthn credentials, the opaque user handles
-- authenticators store (never the email or the internal user id), and
-- single-use ceremony challenges (stored as blake3 hashes, consumed by one
-- DELETE … RETURNING so two racing responses cannot both use one).

CREATE TABLE webauthn_user_handles (
    user_id  TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    handle   TEXT NOT NULL UNIQUE                    -- base64url of 32 random bytes
);

CREATE TABLE webauthn_credentials (
    id                  TEXT PRIMARY KEY,            -- base64url credential id
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    public_key          BLOB NOT NULL,               -- COSE_Key bytes as registered
    alg                 INTEGER NOT NULL CHECK (alg IN (-7, -8, -257)),
    sign_count          INTEGER NOT NULL,
    backup_eligible     INTEGER NOT NULL CHECK (backup_eligible IN (0, 1)),
    backed_up           INTEGER NOT NULL CHECK (backed_up IN (0, 1)),
    transports          TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(transports)),
    aaguid              TEXT NOT NULL,
    name                TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    last_used_at        INTEGER,
    clone_suspected_at  INTEGER
);
CREATE INDEX webauthn_credentials_user ON webauthn_credentials (user_id);

CREATE TABLE webauthn_challenges (
    challenge_hash  TEXT PRIMARY KEY,
    ceremony        TEXT NOT NULL CHECK (ceremony IN ('registration', 'authentication', 'step_up')),
    user_id         TEXT,                            -- the user (registration, step-up); NULL for sign-in
    session_id      TEXT,                            -- the session the ceremony was started in
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX webauthn_challenges_expiry ON webauthn_challenges (expires_at);
