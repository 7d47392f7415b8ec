-- Ledger I, credits: double-entry accounts and transfers. A transfer's
-- postings always sum to zero; balances of accounts that may not overdraw
-- never go below zero (checked inside the same batch that applies the
-- postings); each transfer is also a `credit-transfer/v1` log entry whose
-- index is stored with it.

CREATE TABLE credit_accounts (
    id            TEXT PRIMARY KEY,                  -- "user:<id>", "node:<id>", or a system account
    kind          TEXT NOT NULL CHECK (kind IN ('user', 'node', 'system')),
    balance       INTEGER NOT NULL DEFAULT 0,
    may_overdraw  INTEGER NOT NULL DEFAULT 0 CHECK (may_overdraw IN (0, 1)),
    created_at    INTEGER NOT NULL
);
-- `issuance` is where new credits come from (issuance epochs, with the
-- economy issue); `fees` collects fees.
INSERT INTO credit_accounts (id, kind, balance, may_overdraw, created_at) VALUES ('issuance', 'system', 0, 1, 0);
INSERT INTO credit_accounts (id, kind, balance, may_overdraw, created_at) VALUES ('fees', 'system', 0, 0, 0);

CREATE TABLE credit_transfers (
    id               TEXT PRIMARY KEY,
    idempotency_key  TEXT NOT NULL UNIQUE,           -- "<principal> <client key>"
    memo             TEXT,
    created_by       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    ledger_index     INTEGER                          -- its credit-transfer/v1 entry
);

CREATE TABLE credit_postings (
    transfer_id  TEXT NOT NULL REFERENCES credit_transfers(id),
    account_id   TEXT NOT NULL REFERENCES credit_accounts(id),
    amount       INTEGER NOT NULL CHECK (amount <> 0),
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (transfer_id, account_id)
);
CREATE INDEX credit_postings_account ON credit_postings (account_id, created_at);
