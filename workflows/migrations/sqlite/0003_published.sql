-- What each workflow publishes (Ctx::publish): one JSON value, replaced by each publish and kept
-- across runs. Numbered as PostgreSQL's migration of the same change.
ALTER TABLE workflows ADD COLUMN published TEXT;
