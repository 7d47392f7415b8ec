-- Ledger I: the transparency log. Entries keep the exact bytes that were
-- hashed; every complete subtree hash is stored by (level, index) so proofs
-- read O(log n) rows; `ledger_state` is the single row writers compare-and-set
-- on, so appends are gap-free under concurrency; a checkpoint size is signed
-- at most once (PRIMARY KEY), so two roots for one size can never be signed.

CREATE TABLE ledger_entries (
    idx              INTEGER PRIMARY KEY,             -- 0-based leaf index
    entry            BLOB NOT NULL,                   -- the envelope bytes exactly as hashed
    leaf_hash        BLOB NOT NULL,                   -- blake3(0x00 || entry)
    payload_type     TEXT NOT NULL,
    principal        TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL UNIQUE,            -- "<principal> <client key>"
    created_at       INTEGER NOT NULL
);

CREATE TABLE ledger_nodes (
    level  INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    hash   BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

CREATE TABLE ledger_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    size        INTEGER NOT NULL,
    root        BLOB NOT NULL,
    writer      TEXT NOT NULL,                        -- random token of the last successful writer
    updated_at  INTEGER NOT NULL
);
INSERT INTO ledger_state (id, size, root, writer, updated_at)
VALUES (1, 0, X'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262', 'genesis', 0);

CREATE TABLE ledger_checkpoints (
    size        INTEGER PRIMARY KEY,
    root        BLOB NOT NULL,
    note        TEXT NOT NULL,                        -- the signed note, as served
    created_at  INTEGER NOT NULL
);
