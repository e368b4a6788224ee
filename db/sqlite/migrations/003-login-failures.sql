-- Per-account password failures (RFC 6749 §4.3.2 brute-force protection). Kept in the database so a
-- restart does not hand an attacker a fresh budget. Times are integer milliseconds since the epoch.

CREATE TABLE login_failures (
  username     TEXT NOT NULL,                   -- normalised, like users.username; also names with no account
  source       TEXT NOT NULL,                   -- '' for unknown devices; a known device's key (a digest) otherwise
  failures     INTEGER NOT NULL,                -- consecutive failures since the last success
  locked_until INTEGER NOT NULL DEFAULT 0,      -- attempts before this are answered like a wrong password
  updated_at   INTEGER NOT NULL,                -- the last failure; rows idle for a day are forgotten
  PRIMARY KEY (username, source)
) STRICT, WITHOUT ROWID;
CREATE INDEX login_failures_updated ON login_failures (updated_at);
