-- Identity II, OAuth / OpenID Connect sign-in: flows in progress (stored by
-- the blake3 hash of their `state`, single-use, bound to the browser by the
-- hash of a cookie secret), links from a provider's subject to a user, and
-- the one-time codes native apps exchange for a session.

CREATE TABLE oauth_states (
    state_hash      TEXT PRIMARY KEY,
    browser_hash    TEXT NOT NULL,                   -- blake3 of the browser cookie's secret
    provider        TEXT NOT NULL,
    code_verifier   TEXT NOT NULL,                   -- PKCE (RFC 7636), sent with the code
    nonce           TEXT NOT NULL,
    return_to       TEXT NOT NULL,
    purpose         TEXT NOT NULL CHECK (purpose IN ('sign_in', 'link')),
    user_id         TEXT REFERENCES users(id) ON DELETE CASCADE,  -- link: who asked
    app_challenge   TEXT,                            -- native app: its own S256 challenge
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX oauth_states_expiry ON oauth_states (expires_at);

CREATE TABLE oauth_links (
    provider      TEXT NOT NULL,
    subject       TEXT NOT NULL,                     -- the provider's stable user id (`sub`)
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    email         TEXT,                              -- as the provider last reported it
    email_verified INTEGER NOT NULL DEFAULT 0 CHECK (email_verified IN (0, 1)),  -- as the provider asserted at link time
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    PRIMARY KEY (provider, subject),
    UNIQUE (user_id, provider)
);

CREATE TABLE oauth_app_codes (
    code_hash   TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    challenge   TEXT NOT NULL,                       -- the app's S256 code_challenge
    provider    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX oauth_app_codes_expiry ON oauth_app_codes (expires_at);
