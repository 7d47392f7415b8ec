-- Economy: credits move with tasks, in the coordinator's database (the
-- mesh's), so that an escrow, a payment or a refund is one batch with the
-- task's state change. Submitting escrows the task's price into the
-- `escrow` system account; an accepted result pays it out to the node
-- owners (minus the fee to `fees`), a failure or an expiry refunds it.
-- `settlement` moves from NULL once, to 'paid' or 'refunded', in the batch
-- that writes the transfer (keyed "settle:<task>").

ALTER TABLE mesh_tasks ADD COLUMN price INTEGER;                 -- escrowed credits, all replicas; NULL: unpriced (before the economy)
ALTER TABLE mesh_tasks ADD COLUMN payer TEXT;                    -- the account the escrow came from
ALTER TABLE mesh_tasks ADD COLUMN replicas INTEGER NOT NULL DEFAULT 1;
ALTER TABLE mesh_tasks ADD COLUMN settlement TEXT CHECK (settlement IS NULL OR settlement IN ('paid', 'refunded'));
ALTER TABLE mesh_tasks ADD COLUMN settlement_transfer TEXT;
ALTER TABLE mesh_tasks ADD COLUMN payees TEXT CHECK (payees IS NULL OR json_valid(payees));  -- as its completion entry names them
CREATE INDEX mesh_tasks_unsettled ON mesh_tasks (status) WHERE price IS NOT NULL AND settlement IS NULL;
CREATE INDEX mesh_tasks_payer ON mesh_tasks (payer) WHERE price IS NOT NULL AND settlement IS NULL;

INSERT INTO credit_accounts (id, kind, balance, may_overdraw, created_at) VALUES ('escrow', 'system', 0, 0, 0);

-- Transfers whose credit-transfer/v1 entry is still to be appended.
CREATE INDEX credit_transfers_unlogged ON credit_transfers (created_at) WHERE ledger_index IS NULL;

-- Redundant execution: each replica's agreeing result, one per node and one
-- per owner (two nodes of one owner do not make two opinions).
CREATE TABLE mesh_task_replies (
    task_id        TEXT NOT NULL REFERENCES mesh_tasks(id),
    node_id        TEXT NOT NULL,
    owner_id       TEXT NOT NULL,
    lease_id       TEXT NOT NULL,
    output_digest  TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (task_id, node_id)
);
CREATE UNIQUE INDEX mesh_task_replies_owner ON mesh_task_replies (task_id, owner_id);

-- Issuance epochs. A close counts the completions appended at log indices
-- [from_index, through_index); its credits are applied (transfers out of
-- `issuance`) only once `final` is set, when the quorum of coordinators has
-- signed the close entry.
CREATE TABLE econ_epochs (
    epoch              INTEGER PRIMARY KEY,
    epoch_secs         INTEGER NOT NULL,
    from_index         INTEGER NOT NULL,
    through_index      INTEGER NOT NULL,
    pool               INTEGER NOT NULL,
    total_work         INTEGER NOT NULL,
    accounts           INTEGER NOT NULL,
    allocation_digest  TEXT NOT NULL,
    close_payload      TEXT NOT NULL,                -- the exact issuance-epoch/v1 close payload
    close_index        INTEGER,                      -- its log entry
    credits_logged     INTEGER NOT NULL DEFAULT 0,   -- credit entries appended so far
    quorum             INTEGER NOT NULL,
    final              INTEGER NOT NULL DEFAULT 0 CHECK (final IN (0, 1)),
    closed_at          INTEGER NOT NULL,
    finalized_at       INTEGER
);
CREATE TABLE econ_allocations (
    epoch        INTEGER NOT NULL REFERENCES econ_epochs(epoch),
    account      TEXT NOT NULL,
    work         INTEGER NOT NULL,
    amount       INTEGER NOT NULL,
    transfer_id  TEXT NOT NULL UNIQUE,
    ledger_index INTEGER,                             -- its credit entry
    PRIMARY KEY (epoch, account)
);
CREATE INDEX econ_allocations_account ON econ_allocations (account);
-- Coordinators' signatures over a close entry (DSSE, their coordinator keys).
CREATE TABLE econ_close_signatures (
    epoch       INTEGER NOT NULL REFERENCES econ_epochs(epoch),
    origin      TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    signature   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (epoch, origin)
);

-- A replica whose result another replica contradicts is a reputation event
-- of its own (the CHECK lists kinds, so the table is rebuilt).
CREATE TABLE mesh_reputation_events_v2 (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id  TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('accepted', 'lease_expired', 'result_refused', 'rate_limited', 'replica_disagreement')),
    at       INTEGER NOT NULL
);
INSERT INTO mesh_reputation_events_v2 (id, node_id, kind, at) SELECT id, node_id, kind, at FROM mesh_reputation_events;
DROP TABLE mesh_reputation_events;
ALTER TABLE mesh_reputation_events_v2 RENAME TO mesh_reputation_events;
CREATE INDEX mesh_reputation_events_node ON mesh_reputation_events (node_id, at);

-- Peers' closes this coordinator checks before it signs them: the priced
-- work of each completion read (and proven) from a peer's log by the
-- federation pull, per payee, until a close covers it; and each close seen
-- there, with the verdict and this coordinator's signature.
CREATE TABLE econ_peer_work (
    origin   TEXT NOT NULL,
    idx      INTEGER NOT NULL,
    task_id  TEXT NOT NULL,
    account  TEXT NOT NULL,
    work     INTEGER NOT NULL,
    PRIMARY KEY (origin, idx, account)
);
-- A task counts once per peer, at its first accepted completion.
CREATE TABLE econ_peer_tasks (
    origin   TEXT NOT NULL,
    task_id  TEXT NOT NULL,
    idx      INTEGER NOT NULL,
    PRIMARY KEY (origin, task_id)
);
-- Where this coordinator started reading each peer's economy, and the last
-- close of the peer it checked: the next must follow it.
CREATE TABLE econ_peer_state (
    origin        TEXT PRIMARY KEY,
    first_index   INTEGER NOT NULL,
    last_epoch    INTEGER,
    last_through  INTEGER
);
CREATE TABLE econ_peer_closes (
    origin       TEXT NOT NULL,
    epoch        INTEGER NOT NULL,
    close_index  INTEGER NOT NULL,
    verdict      TEXT NOT NULL CHECK (verdict IN ('signed', 'mismatch', 'unverifiable')),
    reason       TEXT,
    key_id       TEXT,
    signature    TEXT,
    delivered    INTEGER NOT NULL DEFAULT 0 CHECK (delivered IN (0, 1)),
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (origin, epoch)
);
