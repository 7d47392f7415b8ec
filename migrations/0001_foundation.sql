-- Foundation: the persisted audit-event sink shared by every function.
-- Applied by `wrangler d1 migrations apply` (Workers), by `edgecoder migrate` /
-- `edgecoder serve` (native) and by the Spin component itself; all three record
-- it in the `d1_migrations` table.

CREATE TABLE audit_events (
    id          TEXT PRIMARY KEY,                -- random 128-bit hex
    time        INTEGER NOT NULL,                -- ms since the Unix epoch
    actor       TEXT NOT NULL,                   -- "user:<id>", "node:<id>", "service:<fn>", "system:<task>", "anonymous"
    action      TEXT NOT NULL,                   -- dotted verb, e.g. "schema.migrate"
    target      TEXT,                            -- what the action was about
    outcome     TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    request_id  TEXT,
    client_ip   TEXT,
    details     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
);

CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_action_time ON audit_events (action, time);
CREATE INDEX audit_events_actor_time ON audit_events (actor, time);
