-- The log's tree hash becomes RFC 6962 SHA-256 (c2sp.org/merkle-tree), so
-- that C2SP witnesses and monitors written by others can check it; blake3
-- stays the content digest everywhere else. `tree_hash` names the hash a
-- log was built with: an empty log switches here; a log that already holds
-- blake3 entries keeps its old marker and the ledger refuses to serve or
-- extend it (there were no deployments to migrate).
ALTER TABLE ledger_state ADD COLUMN tree_hash TEXT NOT NULL DEFAULT 'blake3';

-- A checkpoint of the empty blake3 tree signs a root the new hash never
-- produces; only an empty log loses it.
DELETE FROM ledger_checkpoints
WHERE (SELECT size FROM ledger_state WHERE id = 1) = 0;

UPDATE ledger_state
SET tree_hash = 'rfc6962-sha256',
    root = X'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
WHERE id = 1 AND size = 0;
