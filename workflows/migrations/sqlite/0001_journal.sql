-- Workflows: one row each, holding the checkpoint, the lease and the wake-up time.
-- Times are milliseconds since the Unix epoch: wake_at on the workflow clock, leases on the wall clock.
CREATE TABLE workflows (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    version           INTEGER NOT NULL,
    run               INTEGER NOT NULL DEFAULT 1,
    state             TEXT NOT NULL,
    reason            TEXT,
    input             TEXT NOT NULL,
    output            TEXT,
    parent_id         TEXT,
    step_name         TEXT,
    step_seq          INTEGER,
    attempt           INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    wake_at           INTEGER NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    previous_owner    TEXT,
    epoch             INTEGER NOT NULL DEFAULT 0,
    takeovers         INTEGER NOT NULL DEFAULT 0,
    signal_version    INTEGER NOT NULL DEFAULT 0,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX workflows_runnable ON workflows (wake_at)
    WHERE lease_owner IS NULL AND state IN ('Pending', 'Running', 'Sleeping', 'WaitingSignal');
CREATE INDEX workflows_leases ON workflows (lease_expires_at) WHERE lease_owner IS NOT NULL;
CREATE INDEX workflows_owner ON workflows (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX workflows_state ON workflows (state);

-- History: the records of each durable operation (seq) of each run.
CREATE TABLE events (
    workflow_id  TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    run          INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    idx          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    epoch        INTEGER NOT NULL,
    owner        TEXT,
    at           INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, run, seq, idx)
);

CREATE TABLE signals (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id  TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    sent_at      INTEGER NOT NULL,
    consumed_at  INTEGER
);
CREATE INDEX signals_pending ON signals (workflow_id, name, id) WHERE consumed_at IS NULL;
