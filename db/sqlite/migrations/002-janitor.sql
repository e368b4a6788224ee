-- Tokenline schema, version 2: indexes for the janitor and the sessions API.
-- All times are integer milliseconds since the Unix epoch (UTC).

-- The janitor deletes security events older than the retention period, oldest first.
CREATE INDEX security_events_at ON security_events (at);

-- The sessions API and `tokenline sessions` list a user's sessions, newest first.
DROP INDEX sessions_user;
CREATE INDEX sessions_user ON sessions (user_id, created_at);
