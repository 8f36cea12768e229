-- Every event is written through its workflow's row (a fenced UPDATE, or an append that
-- share-locks the row), and workflows are never deleted, so the foreign key only cost each
-- append a trigger and a second row lock.
ALTER TABLE events DROP CONSTRAINT events_workflow_id_fkey;
