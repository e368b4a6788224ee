-- Per-address request budgets of the token endpoint (RFC 6749 §4.3.2; server/http/throttle.ts). Kept
-- in the database so that every process on the file counts against one budget, not one each.
-- Times are integer milliseconds since the epoch.

CREATE TABLE budgets (
  key      TEXT PRIMARY KEY,                    -- the budget and the address, e.g. 'password:203.0.113.9'
  count    INTEGER NOT NULL,                    -- requests counted in the current window
  reset_at INTEGER NOT NULL                     -- the window ends here; the next hit at or after it opens a new one
) STRICT, WITHOUT ROWID;
-- Rows of windows long ended are deleted a few at a time, oldest first.
CREATE INDEX budgets_reset ON budgets (reset_at);
