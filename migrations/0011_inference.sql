-- Inference I: GPU hosts are a node kind of their own, and `inference` tasks
-- name a model instead of a module. SQLite cannot change a CHECK or a NOT NULL
-- in place, so the three tables are rebuilt (new table, copy, drop, rename);
-- nothing references them, so no foreign key is disturbed.

CREATE TABLE node_enrollments_v2 (
    node_id            TEXT PRIMARY KEY,
    owner_id           TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind               TEXT NOT NULL CHECK (kind IN ('agent', 'coordinator', 'gpu-host')),
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    token_hash         TEXT NOT NULL UNIQUE,
    token_expires_at   INTEGER NOT NULL,
    token_redeemed_at  INTEGER
);
INSERT INTO node_enrollments_v2 (node_id, owner_id, kind, created_at, updated_at, token_hash, token_expires_at, token_redeemed_at)
    SELECT node_id, owner_id, kind, created_at, updated_at, token_hash, token_expires_at, token_redeemed_at FROM node_enrollments;
DROP TABLE node_enrollments;
ALTER TABLE node_enrollments_v2 RENAME TO node_enrollments;
CREATE INDEX node_enrollments_owner ON node_enrollments (owner_id, created_at);

CREATE TABLE mesh_nodes_v2 (
    node_id            TEXT PRIMARY KEY,
    kind               TEXT NOT NULL CHECK (kind IN ('agent', 'coordinator', 'gpu-host')),
    owner_id           TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending_approval', 'active', 'rejected', 'suspended')),
    key_id             TEXT NOT NULL UNIQUE,
    public_key         BLOB NOT NULL,
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
INSERT INTO mesh_nodes_v2 (node_id, kind, owner_id, status, key_id, public_key, os, version, capabilities, telemetry,
                           last_heartbeat_at, registered_at, updated_at, decided_by, decided_at, decision_reason)
    SELECT node_id, kind, owner_id, status, key_id, public_key, os, version, capabilities, telemetry,
           last_heartbeat_at, registered_at, updated_at, decided_by, decided_at, decision_reason FROM mesh_nodes;
DROP TABLE mesh_nodes;
ALTER TABLE mesh_nodes_v2 RENAME TO mesh_nodes;
CREATE INDEX mesh_nodes_status ON mesh_nodes (status, registered_at);
CREATE INDEX mesh_nodes_owner ON mesh_nodes (owner_id);

-- An inference task's input (the prompt) is the submitter's: other users may
-- not name it by digest in tasks of their own. Blobs with no owner are
-- public, as every wasm task's inputs have been.
ALTER TABLE mesh_blobs ADD COLUMN owner TEXT;

-- A wasm task names its module; an inference task names its model, and its
-- input blob is the inference request (edgecoder_proto::inference).
CREATE TABLE mesh_tasks_v2 (
    id                TEXT PRIMARY KEY,
    submitter         TEXT NOT NULL,
    tenant            TEXT,
    kind              TEXT NOT NULL,
    module_digest     TEXT REFERENCES mesh_blobs(digest),
    input_digest      TEXT NOT NULL REFERENCES mesh_blobs(digest),
    model             TEXT,
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
    updated_at        INTEGER NOT NULL,
    CHECK ((kind = 'wasm' AND module_digest IS NOT NULL AND model IS NULL)
        OR (kind = 'inference' AND module_digest IS NULL AND model IS NOT NULL))
);
INSERT INTO mesh_tasks_v2 (id, submitter, tenant, kind, module_digest, input_digest, model, timeout_ms, memory_mb, fuel,
                           priority, status, attempts, max_attempts, lease_id, lease_node, lease_expires_at, result,
                           output, error_code, completed_by, ledger_index, created_at, updated_at)
    SELECT id, submitter, tenant, kind, module_digest, input_digest, NULL, timeout_ms, memory_mb, fuel,
           priority, status, attempts, max_attempts, lease_id, lease_node, lease_expires_at, result,
           output, error_code, completed_by, ledger_index, created_at, updated_at FROM mesh_tasks;
DROP TABLE mesh_tasks;
ALTER TABLE mesh_tasks_v2 RENAME TO mesh_tasks;
CREATE INDEX mesh_tasks_queue ON mesh_tasks (kind, status, priority DESC, created_at);
CREATE INDEX mesh_tasks_leases ON mesh_tasks (status, lease_expires_at);
