-- The model supply chain: per-family source policies (who signs, where hosts
-- fetch from, how large, allowed at all), the releases operators register
-- (signed DSSE envelopes, verified on the way in), staged rollouts with their
-- history, and what each GPU host reports about each release.

CREATE TABLE model_policies (
    family      TEXT PRIMARY KEY,
    keys        TEXT NOT NULL,               -- JSON array of SEC1 points, base64url
    threshold   INTEGER NOT NULL CHECK (threshold >= 1),
    origins     TEXT NOT NULL,               -- JSON array of https:// or file:/// origins
    max_bytes   INTEGER NOT NULL CHECK (max_bytes > 0),
    allowed     INTEGER NOT NULL CHECK (allowed IN (0, 1)),
    version     INTEGER NOT NULL,            -- the coordinator-wide policy version of the last change
    updated_by  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    reason      TEXT
);

CREATE TABLE model_releases (
    model        TEXT PRIMARY KEY,           -- name@version
    family       TEXT NOT NULL,
    digest       TEXT NOT NULL UNIQUE,       -- blake3 of the signed manifest
    envelope     TEXT NOT NULL,              -- the DSSE envelope as JSON
    source       TEXT NOT NULL,
    total_bytes  INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,           -- ms
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    ledger_index INTEGER                     -- set once the registration is logged; unlogged releases are never used
);
CREATE INDEX model_releases_family ON model_releases (family, created_at);

CREATE TABLE model_rollouts (
    id                TEXT PRIMARY KEY,
    family            TEXT NOT NULL,
    model             TEXT NOT NULL REFERENCES model_releases(model),
    previous          TEXT,                  -- the version hosts outside the rollout keep
    stages            TEXT NOT NULL,         -- JSON [{name, hosts | percent}]
    gates             TEXT NOT NULL,         -- JSON {max_error_rate, max_p99_ms, min_requests, min_verified_hosts, min_stage_secs}
    auto_rollback     INTEGER NOT NULL CHECK (auto_rollback IN (0, 1)),
    stage             INTEGER NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('active', 'halted', 'rolled_back', 'complete')),
    canary            TEXT NOT NULL,         -- JSON array of node ids pinned at start
    stage_started_at  INTEGER NOT NULL,
    judged_at         INTEGER NOT NULL DEFAULT 0,  -- the last heartbeat that judged the gate (ms)
    created_by        TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
-- At most one rollout per family is under way (active or halted).
CREATE UNIQUE INDEX model_rollouts_one_open ON model_rollouts (family) WHERE status IN ('active', 'halted');
CREATE INDEX model_rollouts_family ON model_rollouts (family, updated_at);

CREATE TABLE model_rollout_events (
    rollout_id    TEXT NOT NULL REFERENCES model_rollouts(id),
    seq           INTEGER NOT NULL,
    at            INTEGER NOT NULL,
    action        TEXT NOT NULL CHECK (action IN ('start', 'advance', 'halt', 'rollback', 'complete')),
    from_stage    INTEGER,
    to_stage      INTEGER,
    actor         TEXT NOT NULL,
    reason        TEXT,
    detail        TEXT NOT NULL,             -- JSON: the gate figures behind the decision
    ledger_index  INTEGER,
    PRIMARY KEY (rollout_id, seq)
);

CREATE TABLE model_health (
    node_id         TEXT NOT NULL,
    model           TEXT NOT NULL,
    release_digest  TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'verified', 'failed')),
    failure         TEXT,
    requests        INTEGER NOT NULL,
    errors          INTEGER NOT NULL,
    p99_ms          INTEGER,
    reported_at     INTEGER NOT NULL,
    PRIMARY KEY (node_id, model)
);
CREATE INDEX model_health_model ON model_health (model, reported_at);
