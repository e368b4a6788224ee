-- Tokenline schema, version 1. Never edit once released: add a new numbered file instead.
-- All times are integer milliseconds since the Unix epoch (UTC).

CREATE TABLE users (
  id            TEXT PRIMARY KEY,               -- stable opaque id; the JWT `sub`
  username      TEXT NOT NULL UNIQUE,           -- normalised: NFC, trimmed, lower case
  password_hash TEXT NOT NULL,                  -- argon2id PHC string
  disabled_at   INTEGER,
  created_at    INTEGER NOT NULL,
  updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE clients (
  id            TEXT PRIMARY KEY,               -- the client_id
  secret_digest BLOB,                           -- SHA-256 of the secret; NULL for public clients
  delivery      TEXT NOT NULL CHECK (delivery IN ('cookie', 'body', 'both')),
  grants        TEXT NOT NULL,                  -- space-separated grant types
  scopes        TEXT NOT NULL DEFAULT '',       -- space-separated scopes the client may request
  origins       TEXT NOT NULL DEFAULT '',       -- space-separated allowed browser origins
  access_ttl    INTEGER,                        -- per-client overrides, seconds; NULL = server default
  idle_ttl      INTEGER,
  session_ttl   INTEGER,
  created_at    INTEGER NOT NULL
) STRICT;

-- A session is one login on one device: the refresh-token family.
CREATE TABLE sessions (
  id              TEXT PRIMARY KEY,
  user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  client_id       TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
  scope           TEXT NOT NULL,
  generation      INTEGER NOT NULL DEFAULT 0,   -- generation of the one live token
  user_agent      TEXT,                         -- the fingerprint bound at login
  ip              TEXT,
  device_id       TEXT,
  created_at      INTEGER NOT NULL,
  last_used_at    INTEGER NOT NULL,
  idle_expires_at INTEGER NOT NULL,             -- usable while now < idle_expires_at
  expires_at      INTEGER NOT NULL,             -- absolute; rotation never moves it
  revoked_at      INTEGER,
  revoked_reason  TEXT
) STRICT;
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- The lineage: every refresh token ever issued, appended to and marked, never rewritten.
CREATE TABLE refresh_tokens (
  digest            BLOB PRIMARY KEY,           -- SHA-256 of the token; the token itself is never stored
  session_id        TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
  generation        INTEGER NOT NULL,           -- 0 at login, +1 per rotation
  parent_generation INTEGER,                    -- NULL for the login token
  issued_at         INTEGER NOT NULL,
  issued_ip         TEXT,
  issued_user_agent TEXT,
  used_at           INTEGER,                    -- first (consuming) use; set once, so grace never slides
  used_ip           TEXT,
  used_user_agent   TEXT,
  used_device_id    TEXT,
  successor_sealed  BLOB,                       -- the child token, sealed with a key only the parent's holder can derive
  UNIQUE (session_id, generation)
) STRICT, WITHOUT ROWID;

CREATE TABLE signing_keys (
  kid         TEXT PRIMARY KEY,
  alg         TEXT NOT NULL,
  private_pem TEXT NOT NULL,
  public_jwk  TEXT NOT NULL,                    -- JSON, public members only
  created_at  INTEGER NOT NULL,
  retired_at  INTEGER,                          -- no longer signs; still published until expires_at
  expires_at  INTEGER                           -- dropped from the JWKS after this
) STRICT;

CREATE TABLE security_events (
  id         INTEGER PRIMARY KEY,
  at         INTEGER NOT NULL,
  type       TEXT NOT NULL,
  user_id    TEXT,
  session_id TEXT,
  client_id  TEXT,
  ip         TEXT,
  user_agent TEXT,
  reason     TEXT,
  detail     TEXT                               -- JSON; never a secret
) STRICT;
CREATE INDEX security_events_user ON security_events (user_id, at);
CREATE INDEX security_events_session ON security_events (session_id, at);
