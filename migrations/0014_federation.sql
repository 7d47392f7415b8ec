-- Federation: the coordinators this one peers with. A peer is identified by
-- its origin and pinned to one coordinator key; the pin changes only through
-- a rotation signed by the pinned key. Both sides must approve: our
-- operator (`local_approved`) and the peer itself, by a request signed with
-- the pinned key (`remote_approved`). Nothing but the peering handshake is
-- exchanged until both are set. Rows are never deleted: a removed peer keeps
-- its history, and every change is also a `peer/v1` ledger entry.

CREATE TABLE mesh_peers (
    origin           TEXT PRIMARY KEY,             -- scheme://host[:port], as signatures name it
    key_id           TEXT NOT NULL,                -- the pinned coordinator key's id
    public_key       BLOB NOT NULL,                -- its SEC1 point
    local_approved   INTEGER NOT NULL CHECK (local_approved IN (0, 1)),
    remote_approved  INTEGER NOT NULL CHECK (remote_approved IN (0, 1)),
    suspended        INTEGER NOT NULL DEFAULT 0 CHECK (suspended IN (0, 1)),
    removed          INTEGER NOT NULL DEFAULT 0 CHECK (removed IN (0, 1)),
    ban_policy       TEXT NOT NULL DEFAULT 'review' CHECK (ban_policy IN ('trust', 'review', 'ignore')),
    version          INTEGER NOT NULL DEFAULT 1,   -- every change is a compare-and-set on it
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    last_seen_at     INTEGER                       -- last authenticated request from the peer
);
CREATE UNIQUE INDEX mesh_peers_key ON mesh_peers (key_id);

-- Witnessing (c2sp.org/tlog-witness): the logs this coordinator cosigns
-- (its peers' ledgers, and any an operator adds), each with the verifier
-- keys trusted for it and the latest checkpoint it cosigned. The size only
-- grows, by a compare-and-set on the size a request names.
CREATE TABLE mesh_witnessed_logs (
    origin      TEXT PRIMARY KEY,                 -- the checkpoint origin line
    vkeys       TEXT NOT NULL,                    -- JSON array of signed-note verifier keys (Ed25519)
    peer        TEXT,                             -- the peer whose ledger it is; NULL if an operator added it
    size        INTEGER NOT NULL DEFAULT 0,
    root        BLOB,
    note        TEXT,                             -- the checkpoint as cosigned, with our cosignature
    updated_at  INTEGER NOT NULL
);

-- The log side: what each configured witness last cosigned (its "old
-- size"), and the cosignatures collected per checkpoint size.
CREATE TABLE ledger_witness_state (
    witness     TEXT PRIMARY KEY,                 -- the witness key name
    size        INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE ledger_cosignatures (
    size        INTEGER NOT NULL,                 -- the checkpoint's tree size
    witness     TEXT NOT NULL,
    line        TEXT NOT NULL,                    -- the note signature line, verified before it was stored
    time        INTEGER NOT NULL,                 -- the cosignature's timestamp
    PRIMARY KEY (size, witness)
);

-- Gossip and blacklist propagation. Each peer's ledger is read in order
-- and checked against the checkpoint this coordinator cosigned (the
-- frontier of the entries read so far); only its own blacklist entries are
-- taken, by the peer's ban policy. Envelopes are remembered by digest until
-- their TTL passes, so a replay is refused.
CREATE TABLE mesh_peer_sync (
    peer          TEXT PRIMARY KEY,
    next_index    INTEGER NOT NULL DEFAULT 0,   -- the next index of the peer's log to read
    frontier      TEXT NOT NULL DEFAULT '[]',   -- JSON [[level, base64 hash]] of the entries before it
    due           INTEGER NOT NULL DEFAULT 1,   -- a push or a lag asked for a pull
    pulling_until INTEGER,                      -- a pull holds the peer until then (one at a time)
    synced_at     INTEGER,
    last_error    TEXT
);
CREATE TABLE mesh_gossip_seen (
    digest      TEXT PRIMARY KEY,
    peer        TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE TABLE mesh_ban_reviews (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    peer          TEXT NOT NULL,
    source_index  INTEGER NOT NULL,             -- the entry's index in the peer's log
    payload       TEXT NOT NULL,                -- the peer's blacklist/v1 payload, as logged
    status        TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'rejected')),
    decided_by    TEXT,
    decided_at    INTEGER,
    created_at    INTEGER NOT NULL,
    UNIQUE (peer, source_index)
);

-- The blacklist gains peer coordinators as subjects and, for entries a peer
-- made, the entry's index in that peer's log. SQLite cannot change a CHECK,
-- so the table is rebuilt with its rows (seq values kept: they are the
-- blacklist versions nodes hold). The new table's sequence continues from
-- the highest row kept; an entry undone after a failed ledger append at the
-- very top (a version never logged) may see its number again.
CREATE TABLE mesh_blacklist_v2 (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    action           TEXT NOT NULL CHECK (action IN ('add', 'lift')),
    subject_kind     TEXT NOT NULL CHECK (subject_kind IN ('node_key', 'node_id', 'owner', 'peer')),
    subject          TEXT NOT NULL,
    reason_code      TEXT NOT NULL,
    reason           TEXT NOT NULL,
    evidence_digest  TEXT,
    actor            TEXT NOT NULL,
    origin           TEXT NOT NULL,      -- 'local', or the peer coordinator it came from
    ledger_index     INTEGER,
    created_at       INTEGER NOT NULL,
    source_index     INTEGER             -- a peer's entry: its index in the peer's log
);
INSERT INTO mesh_blacklist_v2 (seq, action, subject_kind, subject, reason_code, reason, evidence_digest, actor, origin, ledger_index, created_at)
    SELECT seq, action, subject_kind, subject, reason_code, reason, evidence_digest, actor, origin, ledger_index, created_at FROM mesh_blacklist;
DROP TABLE mesh_blacklist;
ALTER TABLE mesh_blacklist_v2 RENAME TO mesh_blacklist;
CREATE INDEX mesh_blacklist_subject ON mesh_blacklist (subject_kind, subject, seq);
CREATE UNIQUE INDEX mesh_blacklist_source ON mesh_blacklist (origin, source_index) WHERE source_index IS NOT NULL;

-- Owners the mesh has banned (here or by a peer it trusts): the auth
-- function issues them no enrollment tokens. Written only by the mesh, over
-- its service path.
CREATE TABLE auth_enrollment_blocks (
    user_id     TEXT PRIMARY KEY,
    blocked_at  INTEGER NOT NULL
);

-- Reputation: what each node did, as the coordinator verified it after the
-- node's signature (results accepted or refused, leases let lapse,
-- rate-limit hits); the score is computed from these with decay, and old
-- events are pruned.
CREATE TABLE mesh_reputation_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id  TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('accepted', 'lease_expired', 'result_refused', 'rate_limited')),
    at       INTEGER NOT NULL
);
CREATE INDEX mesh_reputation_events_node ON mesh_reputation_events (node_id, at);
