-- What each workflow publishes (Ctx::publish): one JSON value, replaced by each publish and kept
-- across runs. Not indexed, so a publish stays a HOT update.
ALTER TABLE workflows ADD COLUMN published JSONB;
