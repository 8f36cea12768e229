-- Workflows: one row each, holding the checkpoint, the lease and the wake-up time.
-- Times are milliseconds since the Unix epoch: wake_at on the workflow clock, leases on the wall clock.
CREATE TABLE workflows (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    version           INTEGER NOT NULL,
    run               BIGINT NOT NULL DEFAULT 1,
    state             TEXT NOT NULL,
    reason            TEXT,
    input             JSONB NOT NULL,
    output            JSONB,
    parent_id         TEXT,
    step_name         TEXT,
    step_seq          BIGINT,
    attempt           INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    wake_at           BIGINT NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    previous_owner    TEXT,
    epoch             BIGINT NOT NULL DEFAULT 0,
    takeovers         INTEGER NOT NULL DEFAULT 0,
    signal_version    BIGINT NOT NULL DEFAULT 0,
    cancel_requested  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
) WITH (fillfactor = 70);
-- Step commits change no indexed column (state stays Running, wake_at 0, the lease untouched),
-- so with room left on each page (fillfactor) they are HOT updates that touch no index.
CREATE INDEX workflows_runnable ON workflows (wake_at)
    WHERE lease_owner IS NULL AND state IN ('Pending', 'Running', 'Sleeping', 'WaitingSignal');
CREATE INDEX workflows_leases ON workflows (lease_expires_at) WHERE lease_owner IS NOT NULL;
CREATE INDEX workflows_owner ON workflows (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX workflows_state ON workflows (state);

-- History: the records of each durable operation (seq) of each run.
CREATE TABLE events (
    workflow_id  TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    run          BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    idx          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    payload      JSONB NOT NULL,
    epoch        BIGINT NOT NULL,
    owner        TEXT,
    at           BIGINT NOT NULL,
    PRIMARY KEY (workflow_id, run, seq, idx)
);

CREATE TABLE signals (
    id           BIGSERIAL PRIMARY KEY,
    workflow_id  TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    payload      JSONB NOT NULL,
    sent_at      BIGINT NOT NULL,
    consumed_at  BIGINT
);
CREATE INDEX signals_pending ON signals (workflow_id, name, id) WHERE consumed_at IS NULL;
