-- Application versions: the one that started each workflow and the highest that ran it, as text
-- to show and as major * 1000000 + minor * 1000 + patch for claims to compare. An engine claims
-- only workflows whose max_app_version_num is at most its own. Numbered as PostgreSQL's
-- migration of the same change.
ALTER TABLE workflows ADD COLUMN app_version TEXT;
ALTER TABLE workflows ADD COLUMN max_app_version TEXT;
ALTER TABLE workflows ADD COLUMN max_app_version_num INTEGER NOT NULL DEFAULT 0;

-- The input of each run (continue-as-new and restarts replace the workflow's), so that a run's
-- history can be replayed from its start. Runs that began before this migration are lost but
-- for each workflow's current one.
CREATE TABLE runs (
    workflow_id  TEXT NOT NULL,
    run          INTEGER NOT NULL,
    input        TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, run)
);
INSERT INTO runs (workflow_id, run, input, started_at) SELECT id, run, input, updated_at FROM workflows;
