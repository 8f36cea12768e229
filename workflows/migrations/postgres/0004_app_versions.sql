-- Application versions: the one that started each workflow and the highest that ran it, as text
-- to show and as major * 1000000 + minor * 1000 + patch for claims to compare. An engine claims
-- only workflows whose max_app_version_num is at most its own. Not indexed: claims filter the
-- rows their indexes already chose, and claims and commits stay HOT updates.
ALTER TABLE workflows
    ADD COLUMN app_version TEXT,
    ADD COLUMN max_app_version TEXT,
    ADD COLUMN max_app_version_num BIGINT NOT NULL DEFAULT 0;

-- The input of each run (continue-as-new and restarts replace the workflow's), so that a run's
-- history can be replayed from its start. Runs that began before this migration are lost but
-- for each workflow's current one.
CREATE TABLE runs (
    workflow_id  TEXT NOT NULL,
    run          BIGINT NOT NULL,
    input        JSONB NOT NULL,
    started_at   BIGINT NOT NULL,
    PRIMARY KEY (workflow_id, run)
);
INSERT INTO runs (workflow_id, run, input, started_at) SELECT id, run, input, updated_at FROM workflows;
