-- Mesh I: node identities under approval, request nonces, per-node rate
-- windows, content-addressed blobs (frozen task inputs), tasks with leases,
-- and the blacklist's version counter. Times are ms since the Unix epoch.

-- A node's identity: the P-256 key it generated on the device. The key is
-- replaced only by a rotation signed with the current key, never by
-- registering again (node_id is the primary key).
CREATE TABLE mesh_nodes (
    node_id            TEXT PRIMARY KEY,
    kind               TEXT NOT NULL CHECK (kind IN ('agent', 'coordinator')),
    owner_id           TEXT NOT NULL,                 -- the enrolling user
    status             TEXT NOT NULL CHECK (status IN ('pending_approval', 'active', 'rejected', 'suspended')),
    key_id             TEXT NOT NULL UNIQUE,          -- short blake3 digest of the compressed point
    public_key         BLOB NOT NULL,                 -- SEC1 point
    os                 TEXT NOT NULL,
    version            TEXT NOT NULL,
    capabilities       TEXT NOT NULL CHECK (json_valid(capabilities)),
    telemetry          TEXT CHECK (telemetry IS NULL OR json_valid(telemetry)),
    last_heartbeat_at  INTEGER,
    registered_at      INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    decided_by         TEXT,
    decided_at         INTEGER,
    decision_reason    TEXT
);
CREATE INDEX mesh_nodes_status ON mesh_nodes (status, registered_at);
CREATE INDEX mesh_nodes_owner ON mesh_nodes (owner_id);

-- Keys a node used before a rotation: never reusable by anyone.
CREATE TABLE mesh_retired_keys (
    key_id      TEXT PRIMARY KEY,
    node_id     TEXT NOT NULL,
    retired_at  INTEGER NOT NULL
);

-- Nonces seen per key inside the signature window (replay defence).
CREATE TABLE mesh_nonces (
    key_id   TEXT NOT NULL,
    nonce    TEXT NOT NULL,
    seen_at  INTEGER NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX mesh_nonces_seen ON mesh_nonces (seen_at);

-- Signed requests per node per minute.
CREATE TABLE mesh_rate (
    node_id       TEXT NOT NULL,
    window_start  INTEGER NOT NULL,
    count         INTEGER NOT NULL,
    PRIMARY KEY (node_id, window_start)
);

-- Frozen task inputs, addressed by "blake3:<hex>" of their bytes.
CREATE TABLE mesh_blobs (
    digest      TEXT PRIMARY KEY,
    bytes       BLOB NOT NULL,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE mesh_tasks (
    id                TEXT PRIMARY KEY,
    submitter         TEXT NOT NULL,                  -- "user:<id>" or "service"
    tenant            TEXT,
    kind              TEXT NOT NULL,
    module_digest     TEXT NOT NULL REFERENCES mesh_blobs(digest),
    input_digest      TEXT NOT NULL REFERENCES mesh_blobs(digest),
    timeout_ms        INTEGER NOT NULL,
    memory_mb         INTEGER NOT NULL,
    fuel              INTEGER NOT NULL,
    priority          INTEGER NOT NULL DEFAULT 0,
    status            TEXT NOT NULL CHECK (status IN ('queued', 'leased', 'completed', 'failed')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    lease_id          TEXT,
    lease_node        TEXT,
    lease_expires_at  INTEGER,
    result            TEXT CHECK (result IS NULL OR json_valid(result)),
    output            BLOB,
    error_code        TEXT,
    completed_by      TEXT,
    ledger_index      INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX mesh_tasks_queue ON mesh_tasks (status, priority DESC, created_at);
CREATE INDEX mesh_tasks_leases ON mesh_tasks (status, lease_expires_at);

-- Blacklist changes; its version is the highest seq (federation fills it).
CREATE TABLE mesh_blacklist (
    seq         INTEGER PRIMARY KEY,
    key_id      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
