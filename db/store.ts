/*
 * What Tokenline keeps, in its own words: the domain types the server works with and the `Store`
 * interface a database engine implements (db/sqlite/ is the one today). Nothing here knows SQL; an
 * engine maps its rows to these types at its boundary.
 *
 * The contract every engine keeps: each method is one atomic unit, and every multi-step write
 * (rotation, revocation, a login failure with its events) is one transaction that holds the write
 * lock from its first read, so a decision is never made on a view another writer can change before
 * the decision is written. Methods return promises so that an engine may be asynchronous.
 *
 * All times are integer milliseconds since the Unix epoch (UTC), except lifetimes, which are seconds.
 */

export interface User {
  /** Stable and opaque; the access token's `sub`. */
  id: string
  /** Normalised: NFC, trimmed, lower case (server/security/passwords.ts). */
  username: string
  /** An argon2id PHC string. */
  passwordHash: string
  disabledAt: number | null
  createdAt: number
  updatedAt: number
}

/** Where a client receives its refresh token: the response body, an HttpOnly cookie, or both. */
export type Delivery = 'cookie' | 'body' | 'both'

export interface Client {
  /** The `client_id`. */
  id: string
  /** SHA-256 of the secret; null for a public client. */
  secretDigest: Buffer | null
  delivery: Delivery
  /** Space-separated grant types it may use. */
  grants: string
  /** Space-separated scopes it may request. */
  scopes: string
  /** Space-separated browser origins allowed to use it. */
  origins: string
  /** Per-client lifetimes, s; null keeps the server's setting. */
  accessTtl: number | null
  idleTtl: number | null
  sessionTtl: number | null
  createdAt: number
}

/** One login on one device: the family of refresh tokens rotated from the login's. */
export interface Session {
  id: string
  userId: string
  clientId: string
  scope: string
  /** The generation of the one live refresh token. */
  generation: number
  /** The request facts bound at login (RFC 9700 §4.14.2 sender-constraining, best effort). */
  userAgent: string | null
  ip: string | null
  deviceId: string | null
  createdAt: number
  lastUsedAt: number
  /** Usable while now < idleExpiresAt; every rotation moves it, never past `expiresAt`. */
  idleExpiresAt: number
  /** Absolute; rotation never moves it. */
  expiresAt: number
  revokedAt: number | null
  revokedReason: string | null
}

/** A session with the network facts of the last request seen on it (the one its newest token was issued to). */
export interface SessionView extends Session {
  lastIp: string | null
  lastUserAgent: string | null
}

/** One entry of a session's lineage: a refresh token ever issued, appended and marked, never rewritten. */
export interface RefreshTokenRecord {
  /** SHA-256 of the token; the token itself is never stored. */
  digest: Buffer
  sessionId: string
  /** 0 at login, +1 per rotation. */
  generation: number
  /** null for the login's token. */
  parentGeneration: number | null
  issuedAt: number
  issuedIp: string | null
  issuedUserAgent: string | null
  /** The first, consuming use; set once, so a grace window measured from it never slides. */
  usedAt: number | null
  usedIp: string | null
  usedUserAgent: string | null
  usedDeviceId: string | null
  /** The child token, sealed under this one (server/tokens/refresh-format.ts); null until it is used. */
  successorSealed: Buffer | null
}

export interface SigningKey {
  kid: string
  alg: string
  privatePem: string
  /** The public JWK as JSON text, public members only. */
  publicJwk: string
  createdAt: number
  /** No longer signs; still published until `expiresAt`. */
  retiredAt: number | null
  /** Dropped from the JWKS after this; null while it signs. */
  expiresAt: number | null
}

/** A key as generated, before the store dates it. */
export type NewSigningKey = Pick<SigningKey, 'kid' | 'alg' | 'privatePem' | 'publicJwk'>

/** A key without its private part, for listings. */
export type PublicSigningKey = Omit<SigningKey, 'privatePem'>

/** A security event to record. It never carries a token, password, secret or cookie. */
export interface SecurityEvent {
  type: string
  userId?: string | null
  sessionId?: string | null
  clientId?: string | null
  ip?: string | null
  userAgent?: string | null
  reason?: string | null
  detail?: Record<string, unknown> | null
}

/** A security event as recorded, with its place in the audit trail. */
export interface StoredSecurityEvent {
  id: number
  at: number
  type: string
  userId: string | null
  sessionId: string | null
  clientId: string | null
  ip: string | null
  userAgent: string | null
  reason: string | null
  /** The event's detail as JSON text. */
  detail: string | null
}

/** The binding-relevant facts of a request (server/http/request-meta.ts `requestMeta`). */
export interface RequestMeta {
  ip: string
  userAgent: string
  deviceId: string | null
}

/** Password failures of one account name from one source (server/security/lockout.ts). */
export interface LoginFailures {
  /** Normalised, like `User.username`; also names that have no account. */
  username: string
  /** '' for unknown devices; a known device's key (a digest) otherwise. */
  source: string
  /** Consecutive failures since the last success. */
  failures: number
  /** Attempts before this are answered like a wrong password; 0 when not locked. */
  lockedUntil: number
  /** The last failure. */
  updatedAt: number
}

export interface NewUser {
  id: string
  username: string
  passwordHash: string
  now: number
}

export type NewClient = Omit<Client, 'createdAt'> & { now: number }

/** The fields `tokenline client update` may change; the ones left out stay as they are. */
export type ClientChange = Partial<Pick<Client, 'delivery' | 'grants' | 'scopes' | 'origins'>>

export interface NewSession {
  id: string
  userId: string
  clientId: string
  scope: string
  meta: RequestMeta
  now: number
  idleExpiresAt: number
  expiresAt: number
  /** Digest of the login's refresh token, generation 0. */
  tokenDigest: Buffer
  events: SecurityEvent[]
}

/** A refresh token with its session and user, as one consistent read. */
export interface RefreshState {
  token: RefreshTokenRecord
  session: Session
  user: User
}

/**
 * What the refresh grant decided, inside the transaction, from the state it was shown. The store acts
 * on `kind`, `revoke`, `idleExpiresAt` and `events`, and hands the whole decision back in the result,
 * so a grant may carry its own fields (its answer, the scope it granted) through it.
 */
export type RefreshVerdict =
  | { kind: 'reject', /** Revoke the session with this reason. */ revoke?: string, events: SecurityEvent[] }
  | { kind: 'rotate', idleExpiresAt: number, events: SecurityEvent[] }
  | { kind: 'replay', events: SecurityEvent[] }

export interface RefreshInput<V extends RefreshVerdict = RefreshVerdict> {
  /** Digest of the presented token. */
  digest: Buffer
  now: number
  meta: RequestMeta
  /** Digest of the child token a rotation issues. */
  childDigest: Buffer
  /** The child token sealed under the presented one (server/tokens/refresh-format.ts). */
  sealed: Buffer
  /** Runs inside the transaction; its verdict is written before anyone else can write. */
  decide: (state: RefreshState) => V
}

export type RefreshResult<V extends RefreshVerdict = RefreshVerdict> =
  | { kind: 'not_found' }
  | { kind: 'rejected', state: RefreshState, decision: Extract<V, { kind: 'reject' }> }
  | { kind: 'rotated', state: RefreshState, decision: Extract<V, { kind: 'rotate' }>, generation: number }
  | { kind: 'replayed', state: RefreshState, decision: Extract<V, { kind: 'replay' }>, sealed: Buffer }

export interface LoginFailureInput {
  username: string
  source: string
  now: number
  /** Counters whose last failure is older than this are forgotten (deleted) along the way. */
  forgetBefore: number
  /** Runs inside the transaction: the counter's next state (from the stored one) and the events to record. */
  decide: (prev: LoginFailures | undefined) => { failures: number, lockedUntil: number, events: SecurityEvent[] }
}

/** What one janitor batch deleted. */
export interface PruneResult {
  sessions: number
  tokens: number
}

export type StoreErrorCode =
  /** A compare-and-set missed: the state changed under a decision made inside the same transaction. */
  | 'conflict'
  /** The database cannot be reached (or answered too slowly); nothing was written. The caller may retry later. */
  | 'unavailable'

/** A fixed-window request budget shared by every process and instance on the database (server/http/throttle.ts). */
export interface BudgetCount {
  /** Requests counted in the current window. */
  count: number
  /** When the current window ends, ms; 0 when the key has no open window. */
  resetAt: number
}

/**
 * A budget's row is deleted once its window has been over for this long (ms). Any ended window counts
 * nothing already; the margin only keeps a process whose clock runs behind from seeing its window cut short.
 */
export const BUDGET_STALE_MS = 60_000

/** One table's rows, for `tokenline copy` (in this order: a row only refers to rows of earlier kinds). */
export type CopyBatch =
  | { kind: 'users', rows: User[] }
  | { kind: 'clients', rows: Client[] }
  | { kind: 'signing_keys', rows: SigningKey[] }
  | { kind: 'sessions', rows: Session[] }
  | { kind: 'refresh_tokens', rows: RefreshTokenRecord[] }
  | { kind: 'security_events', rows: StoredSecurityEvent[] }
  | { kind: 'login_failures', rows: LoginFailures[] }
  | { kind: 'budgets', rows: Array<BudgetCount & { key: string }> }

/** A failure the store itself detects (an engine's own errors, like a busy database, pass through as they are). */
export class StoreError extends Error {
  readonly code: StoreErrorCode

  constructor (code: StoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'StoreError'
    this.code = code
  }
}

export interface Store {
  createUser: (user: NewUser) => Promise<void>
  findUserByUsername: (username: string) => Promise<User | undefined>
  findUserById: (id: string) => Promise<User | undefined>
  listUsers: () => Promise<User[]>
  /**
   * Sets a new password hash and records `events`; with `revokeReason`, also revokes every live session
   * of the user in the same transaction (their `session_revoked` events are appended to `events`).
   * Returns the number of sessions revoked.
   */
  setPasswordHash: (change: { userId: string, passwordHash: string, now: number, revokeReason?: string, events: SecurityEvent[] }) => Promise<number>
  /**
   * Disables (revoking every live session, as `setPasswordHash` does) or enables a user, and records
   * `events`. Returns the number of sessions revoked.
   */
  setUserDisabled: (change: { userId: string, disabled: boolean, now: number, events: SecurityEvent[] }) => Promise<number>

  createClient: (client: NewClient) => Promise<void>
  findClient: (id: string) => Promise<Client | undefined>
  listClients: () => Promise<Client[]>
  /** Whether any client lists `origin` (exactly) among its allowed browser origins. */
  originAllowed: (origin: string) => Promise<boolean>
  /**
   * Changes the given fields of a client and records `events`, in one transaction. Returns the client
   * as it was and as it is now, or undefined (recording nothing) if there is no such client.
   */
  updateClient: (update: { clientId: string, change: ClientChange, now: number, events: SecurityEvent[] }) => Promise<{ before: Client, after: Client } | undefined>
  /**
   * Removes a client, in one transaction: revokes every live session of it (reason `client_removed`,
   * a `session_revoked` event each with `actor`'s fields, appended to `events`), records `events`, then deletes the client
   * row. Returns the number of sessions revoked, or undefined (recording nothing) if there is no such client.
   *
   * The row is deleted, not marked removed: the schema's ON DELETE CASCADE then deletes the client's
   * sessions and their lineage with it. A removed client is thereby refused by every reader that looks
   * clients up (client authentication, CORS, cookie delivery) without any of them having to know about
   * a "removed" mark, and its tokens stop working at once (its client_id no longer authenticates, and
   * its refresh tokens are no longer found). What happened stays in the audit trail: security_events
   * has no foreign key, so the `session_revoked` events (with user, session and client) and the
   * caller's own event outlive the rows; what does not is the lineage (`tokenline lineage`) of those
   * sessions, which the janitor would delete at their expiry anyway.
   */
  removeClient: (removal: { clientId: string, now: number, events: SecurityEvent[], actor?: Omit<SecurityEvent, 'type'> }) => Promise<number | undefined>

  /** Inserts `make()`'s key unless a live key of that algorithm exists; returns the newest live key. */
  ensureSigningKey: (alg: string, make: () => NewSigningKey, now: number) => Promise<SigningKey>
  /** Keys still published in the JWKS at `now` (not past their expiry). */
  publishedKeys: (now: number) => Promise<SigningKey[]>
  /** Every stored key, newest first, without its private part (`tokenline keys list`). */
  listKeys: () => Promise<PublicSigningKey[]>
  /**
   * `tokenline keys rotate`, in one transaction: deletes keys already past their expiry, retires every
   * signing key (published until `retiredUntil`) and inserts `key` as the signing key.
   * Returns the keys it retired.
   */
  rotateSigningKey: (rotation: { key: NewSigningKey, now: number, retiredUntil: number }) => Promise<PublicSigningKey[]>
  /** The longest per-client access-token lifetime override, s; null when no client overrides it. */
  longestClientAccessTtl: () => Promise<number | null>
  /** A short fingerprint of the key table; it changes whenever a key is added, retired or deleted. */
  keysVersion: () => Promise<string>
  /** Proves the database answers a query; returns its schema version and the one this build expects. */
  health: () => Promise<{ schemaVersion: number, expectedVersion: number }>
  /** Number of sessions usable at `now`: not revoked, not past their idle or absolute expiry. */
  countLiveSessions: (now: number) => Promise<number>

  /** A new session with its generation-0 refresh token and `events`, in one transaction. */
  startSession: (session: NewSession) => Promise<void>
  /**
   * RFC 6749 §6 with rotation: reads the presented token, its session and its user, lets `decide`
   * judge them, and writes the verdict (consume the token and issue the child, hand back the sealed
   * successor, or reject, maybe revoking), all in one transaction.
   */
  refresh: <V extends RefreshVerdict>(input: RefreshInput<V>) => Promise<RefreshResult<V>>
  findSession: (id: string) => Promise<Session | undefined>
  /** Revokes one session unless already revoked, recording `events` only if it did. Returns whether it did. */
  revokeSession: (revocation: { sessionId: string, reason: string, now: number, events: SecurityEvent[] }) => Promise<boolean>

  /** A refresh token with its session and user, read only (revocation, introspection); undefined if never issued. */
  findRefreshToken: (digest: Buffer) => Promise<RefreshState | undefined>
  /** The user's usable sessions at `now` (not revoked, not past either expiry), newest first. */
  liveSessions: (userId: string, now: number) => Promise<SessionView[]>
  /** Every stored session of the user, whatever its state, newest first. */
  sessionsOfUser: (userId: string) => Promise<SessionView[]>
  /**
   * Revokes every unrevoked, unexpired session of the user except `except`, in one transaction, with
   * a `session_revoked` event per session carrying `actor`'s fields (who asked, from where). Returns
   * the events it recorded.
   */
  revokeUserSessions: (revocation: { userId: string, reason: string, now: number, except?: string, actor?: Omit<SecurityEvent, 'type'> }) => Promise<SecurityEvent[]>
  /** Deletes up to `limit` sessions whose absolute expiry is at or before `before`, and their lineage. */
  pruneSessions: (before: number, limit: number) => Promise<PruneResult>
  /** Deletes up to `limit` of the oldest security events recorded before `before`. Returns how many. */
  pruneEvents: (before: number, limit: number) => Promise<number>

  /** The failure counter of a normalised username from one source; undefined if it has none. */
  loginFailures: (username: string, source: string) => Promise<LoginFailures | undefined>
  /** Whether the normalised username has a failure counter from any source. */
  hasLoginFailures: (username: string) => Promise<boolean>
  /** Counts one failed password attempt, in one transaction with its events. */
  recordLoginFailure: (input: LoginFailureInput) => Promise<LoginFailures>
  /**
   * Clears the counter of one source, or of every source when `source` is omitted (an operator's
   * unlock), recording `events` if any was cleared. Returns the number of counters cleared.
   */
  clearLoginFailures: (clear: { username: string, source?: string, now: number, events: SecurityEvent[] }) => Promise<number>
  /** Whether any session of the user (whatever its state now) was started with this device id. */
  deviceKnown: (userId: string, deviceId: string) => Promise<boolean>

  /**
   * Counts one request against the budget `key`, atomically across every process on the database:
   * a window of `windowMs` opens at the first hit after the previous one ended. Returns the count.
   * Keeps the storage bounded: a few budgets whose window ended long ago are deleted along the way.
   */
  hitBudget: (key: string, windowMs: number, now: number) => Promise<BudgetCount>
  /** The budget's current window, without counting; `{ count: 0, resetAt: 0 }` when none is open at `now`. */
  peekBudget: (key: string, now: number) => Promise<BudgetCount>

  recordEvents: (events: SecurityEvent[], now: number) => Promise<void>
  /** The newest events first: of one session, else of one user, else all; at most `limit` (1000). */
  listEvents: (filter: { userId?: string, sessionId?: string, limit?: number }) => Promise<StoredSecurityEvent[]>
  /** Every refresh token of the session, by generation. */
  lineage: (sessionId: string) => Promise<RefreshTokenRecord[]>

  /** `tokenline copy`: whether the database holds no user, client, key, session or event yet. */
  isEmpty: () => Promise<boolean>
  /** `tokenline copy`: every row, table by table, in `CopyBatch` order, a bounded batch at a time. */
  exportRows: () => AsyncIterable<CopyBatch>
  /** `tokenline copy`: inserts rows exactly as exported (ids, times, digests and marks unchanged). */
  importRows: (batch: CopyBatch) => Promise<void>

  close: () => Promise<void>
}
