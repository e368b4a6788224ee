import type { DB } from './database.js'

/*
 * The only module with SQL. Every operation is an atomic unit; every multi-step write runs in one
 * `BEGIN IMMEDIATE` transaction, so two processes on one file serialise on the write lock instead of
 * failing a read→write upgrade with SQLITE_BUSY. Methods return promises so that a second, asynchronous
 * implementation (PostgreSQL) can sit behind the same interface; this one never awaits inside a
 * transaction.
 */

export interface UserRow {
  id: string
  username: string
  password_hash: string
  disabled_at: number | null
  created_at: number
  updated_at: number
}

export interface ClientRow {
  id: string
  secret_digest: Buffer | null
  delivery: 'cookie' | 'body' | 'both'
  grants: string
  scopes: string
  origins: string
  access_ttl: number | null
  idle_ttl: number | null
  session_ttl: number | null
  created_at: number
}

export interface SessionRow {
  id: string
  user_id: string
  client_id: string
  scope: string
  generation: number
  user_agent: string | null
  ip: string | null
  device_id: string | null
  created_at: number
  last_used_at: number
  idle_expires_at: number
  expires_at: number
  revoked_at: number | null
  revoked_reason: string | null
}

export interface TokenRow {
  digest: Buffer
  session_id: string
  generation: number
  parent_generation: number | null
  issued_at: number
  issued_ip: string | null
  issued_user_agent: string | null
  used_at: number | null
  used_ip: string | null
  used_user_agent: string | null
  used_device_id: string | null
  successor_sealed: Buffer | null
}

export interface KeyRow {
  kid: string
  alg: string
  private_pem: string
  public_jwk: string
  created_at: number
  retired_at: number | null
  expires_at: number | null
}

export interface EventInput {
  type: string
  user_id?: string | null
  session_id?: string | null
  client_id?: string | null
  ip?: string | null
  user_agent?: string | null
  reason?: string | null
  detail?: Record<string, unknown> | null
}

export interface EventRow extends Required<Omit<EventInput, 'detail'>> {
  id: number
  at: number
  detail: string | null
}

export interface RequestMeta {
  ip: string
  user_agent: string
  device_id: string | null
}

export interface NewSession {
  id: string
  user_id: string
  client_id: string
  scope: string
  meta: RequestMeta
  now: number
  idle_expires_at: number
  expires_at: number
  token_digest: Buffer
  events: EventInput[]
}

export interface RefreshState {
  token: TokenRow
  session: SessionRow
  user: UserRow
}

/** What the refresh grant decided, inside the transaction, from the state it was shown. */
export type RefreshDecision =
  | { kind: 'reject', revoke?: string, events: EventInput[], reason: string, description: string }
  | { kind: 'rotate', idle_expires_at: number, events: EventInput[] }
  | { kind: 'replay', events: EventInput[] }

export interface RefreshInput {
  digest: Buffer
  now: number
  meta: RequestMeta
  child_digest: Buffer
  /** The child token sealed under the presented one (see server/tokens/refresh-format.ts). */
  sealed: Buffer
  decide: (state: RefreshState) => RefreshDecision
}

export type RefreshResult =
  | { kind: 'not_found' }
  | { kind: 'rejected', decision: Extract<RefreshDecision, { kind: 'reject' }>, state: RefreshState }
  | { kind: 'rotated', state: RefreshState, generation: number, events: EventInput[] }
  | { kind: 'replayed', state: RefreshState, sealed: Buffer, events: EventInput[] }

/** A session with the network facts of the last request seen on it (the one its newest token was issued to). */
export interface SessionView extends SessionRow {
  last_ip: string | null
  last_user_agent: string | null
}

/** Password failures of one account name from one source (see db/migrations/003-login-failures.sql). */
export interface LoginFailureRow {
  username: string
  source: string
  failures: number
  locked_until: number
  updated_at: number
}

export interface LoginFailureInput {
  username: string
  source: string
  now: number
  /** Rows whose last failure is older than this are forgotten (deleted) along the way. */
  forgetBefore: number
  /** Runs inside the transaction: the row's next state (from the stored one) and the events to record. */
  decide: (prev: LoginFailureRow | undefined) => { failures: number, locked_until: number, events: EventInput[] }
}

/** What one janitor batch deleted. */
export interface PruneResult {
  sessions: number
  tokens: number
}

export interface Store {
  createUser: (u: { id: string, username: string, password_hash: string, now: number }) => Promise<void>
  findUserByUsername: (username: string) => Promise<UserRow | undefined>
  findUserById: (id: string) => Promise<UserRow | undefined>
  listUsers: () => Promise<UserRow[]>
  /** Sets a new hash; with `revokeReason` also revokes every live session of the user, in one transaction. */
  setPasswordHash: (userId: string, hash: string, now: number, revokeReason: string | null, events: EventInput[]) => Promise<number>
  /** Disables (revoking all live sessions) or enables a user. Returns the number of sessions revoked. */
  setUserDisabled: (userId: string, disabled: boolean, now: number, events: EventInput[]) => Promise<number>

  createClient: (c: Omit<ClientRow, 'created_at'> & { now: number }) => Promise<void>
  findClient: (id: string) => Promise<ClientRow | undefined>
  listClients: () => Promise<ClientRow[]>
  /** Whether any client lists `origin` (exactly) among its allowed browser origins. */
  originAllowed: (origin: string) => Promise<boolean>

  /** Inserts `make()`'s key unless a live key of that algorithm exists; returns the newest live key. */
  ensureSigningKey: (alg: string, make: () => Omit<KeyRow, 'created_at' | 'retired_at' | 'expires_at'>, now: number) => Promise<KeyRow>
  /** Keys still published in the JWKS at `now` (not past their expiry). */
  publishedKeys: (now: number) => Promise<KeyRow[]>
  /** Every stored key, newest first, without its private part (`tokenline keys list`). */
  listKeys: () => Promise<Array<Omit<KeyRow, 'private_pem'>>>
  /**
   * `tokenline keys rotate`, in one transaction: deletes keys already past their expiry, retires every
   * signing key (published until `retiredExpiresAt`) and inserts `key` as the signing key.
   * Returns the keys it retired.
   */
  rotateSigningKey: (key: Omit<KeyRow, 'created_at' | 'retired_at' | 'expires_at'>, now: number, retiredExpiresAt: number) => Promise<Array<Omit<KeyRow, 'private_pem'>>>
  /** The longest per-client access-token lifetime override, s; null when no client overrides it. */
  longestClientAccessTtl: () => Promise<number | null>
  /** A short fingerprint of the key table; it changes whenever a key is added, retired or deleted. */
  keysVersion: () => Promise<string>
  /** Proves the database answers a query; returns its schema version (`PRAGMA user_version`). */
  health: () => Promise<{ schemaVersion: number }>
  /** Number of sessions usable at `now`: not revoked, not past their idle or absolute expiry. */
  countLiveSessions: (now: number) => Promise<number>

  startSession: (s: NewSession) => Promise<void>
  refresh: (input: RefreshInput) => Promise<RefreshResult>
  findSession: (id: string) => Promise<SessionRow | undefined>
  revokeSession: (id: string, reason: string, now: number, events: EventInput[]) => Promise<boolean>

  /** A refresh token with its session and user, read only (revocation, introspection); undefined if never issued. */
  findRefreshToken: (digest: Buffer) => Promise<RefreshState | undefined>
  /** The user's usable sessions at `now` (not revoked, not past either expiry), newest first. */
  liveSessions: (userId: string, now: number) => Promise<SessionView[]>
  /** Every stored session of the user, whatever its state, newest first. */
  sessionsOfUser: (userId: string) => Promise<SessionView[]>
  /**
   * Revokes every unrevoked, unexpired session of the user except `except`, in one immediate
   * transaction; pushes a `session_revoked` event per session onto `events` (recorded with them).
   */
  revokeUserSessions: (userId: string, reason: string, now: number, except: string | null, events: EventInput[], who?: Omit<EventInput, 'type'>) => Promise<number>
  /** Deletes up to `limit` sessions whose absolute expiry is at or before `before`, and their lineage. */
  pruneSessions: (before: number, limit: number) => Promise<PruneResult>
  /** Deletes up to `limit` of the oldest security events recorded before `before`. */
  pruneEvents: (before: number, limit: number) => Promise<number>

  /** The failure counter of a normalised username from one source; undefined if it has none. */
  loginFailures: (username: string, source: string) => Promise<LoginFailureRow | undefined>
  /** Counts one failed password attempt, in one immediate transaction with its events. */
  recordLoginFailure: (input: LoginFailureInput) => Promise<LoginFailureRow>
  /** Clears the counter of one source, or every source with `null` (an operator's unlock). Returns rows deleted. */
  clearLoginFailures: (username: string, source: string | null, now: number, events: EventInput[]) => Promise<number>
  /** Whether any session of the user (whatever its state now) was started with this device id. */
  deviceKnown: (userId: string, deviceId: string) => Promise<boolean>

  recordEvents: (events: EventInput[], now: number) => Promise<void>
  listEvents: (filter: { user_id?: string, session_id?: string, limit?: number }) => Promise<EventRow[]>
  lineage: (sessionId: string) => Promise<TokenRow[]>

  close: () => void
}

export function createStore (db: DB): Store {
  const q = {
    insertUser: db.prepare('INSERT INTO users (id, username, password_hash, created_at, updated_at) VALUES (@id, @username, @password_hash, @now, @now)'),
    userByName: db.prepare<[string], UserRow>('SELECT * FROM users WHERE username = ?'),
    userById: db.prepare<[string], UserRow>('SELECT * FROM users WHERE id = ?'),
    users: db.prepare<[], UserRow>('SELECT * FROM users ORDER BY username'),
    setHash: db.prepare('UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?'),
    setDisabled: db.prepare('UPDATE users SET disabled_at = ?, updated_at = ? WHERE id = ?'),

    insertClient: db.prepare(`INSERT INTO clients (id, secret_digest, delivery, grants, scopes, origins, access_ttl, idle_ttl, session_ttl, created_at)
      VALUES (@id, @secret_digest, @delivery, @grants, @scopes, @origins, @access_ttl, @idle_ttl, @session_ttl, @now)`),
    client: db.prepare<[string], ClientRow>('SELECT * FROM clients WHERE id = ?'),
    clients: db.prepare<[], ClientRow>('SELECT * FROM clients ORDER BY id'),
    // Whole-word match in the space-separated list; instr, unlike LIKE, has no wildcards.
    originAllowed: db.prepare<[string], { ok: number }>("SELECT 1 AS ok FROM clients WHERE instr(' ' || origins || ' ', ' ' || ? || ' ') > 0 LIMIT 1"),

    liveKey: db.prepare<[string], KeyRow>('SELECT * FROM signing_keys WHERE alg = ? AND retired_at IS NULL ORDER BY created_at DESC LIMIT 1'),
    insertKey: db.prepare('INSERT INTO signing_keys (kid, alg, private_pem, public_jwk, created_at) VALUES (@kid, @alg, @private_pem, @public_jwk, @now)'),
    keyByKid: db.prepare<[string], KeyRow>('SELECT * FROM signing_keys WHERE kid = ?'),
    publishedKeys: db.prepare<[number], KeyRow>('SELECT * FROM signing_keys WHERE expires_at IS NULL OR expires_at > ? ORDER BY created_at DESC'),
    listKeys: db.prepare<[], Omit<KeyRow, 'private_pem'>>('SELECT kid, alg, public_jwk, created_at, retired_at, expires_at FROM signing_keys ORDER BY created_at DESC, kid'),
    signingKeys: db.prepare<[], Omit<KeyRow, 'private_pem'>>('SELECT kid, alg, public_jwk, created_at, retired_at, expires_at FROM signing_keys WHERE retired_at IS NULL'),
    retireKeys: db.prepare('UPDATE signing_keys SET retired_at = ?, expires_at = ? WHERE retired_at IS NULL'),
    deleteExpiredKeys: db.prepare('DELETE FROM signing_keys WHERE expires_at IS NOT NULL AND expires_at <= ?'),
    longestClientAccessTtl: db.prepare<[], { ttl: number | null }>('SELECT max(access_ttl) AS ttl FROM clients'),
    keysVersion: db.prepare<[], { v: string | null }>("SELECT group_concat(kid || ':' || coalesce(retired_at, '') || ':' || coalesce(expires_at, ''), ',') AS v FROM signing_keys"),
    ping: db.prepare<[], { one: number }>('SELECT 1 AS one'),
    countLiveSessions: db.prepare<{ now: number }, { n: number }>('SELECT count(*) AS n FROM sessions WHERE revoked_at IS NULL AND expires_at > @now AND idle_expires_at > @now'),

    insertSession: db.prepare(`INSERT INTO sessions (id, user_id, client_id, scope, generation, user_agent, ip, device_id, created_at, last_used_at, idle_expires_at, expires_at)
      VALUES (@id, @user_id, @client_id, @scope, 0, @user_agent, @ip, @device_id, @now, @now, @idle_expires_at, @expires_at)`),
    session: db.prepare<[string], SessionRow>('SELECT * FROM sessions WHERE id = ?'),
    insertToken: db.prepare(`INSERT INTO refresh_tokens (digest, session_id, generation, parent_generation, issued_at, issued_ip, issued_user_agent)
      VALUES (@digest, @session_id, @generation, @parent_generation, @now, @ip, @user_agent)`),
    token: db.prepare<[Buffer], TokenRow>('SELECT * FROM refresh_tokens WHERE digest = ?'),
    // Compare-and-set: consumes the token only if nobody has, and only if it is the live generation.
    consume: db.prepare(`UPDATE refresh_tokens SET used_at = @now, used_ip = @ip, used_user_agent = @user_agent, used_device_id = @device_id, successor_sealed = @sealed
      WHERE digest = @digest AND used_at IS NULL`),
    advance: db.prepare(`UPDATE sessions SET generation = generation + 1, last_used_at = @now, idle_expires_at = @idle_expires_at
      WHERE id = @id AND generation = @generation AND revoked_at IS NULL`),
    revokeSession: db.prepare('UPDATE sessions SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND revoked_at IS NULL'),
    liveSessionsOfUser: db.prepare<[string, number], { id: string, client_id: string }>('SELECT id, client_id FROM sessions WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ?'),
    lineage: db.prepare<[string], TokenRow>('SELECT * FROM refresh_tokens WHERE session_id = ? ORDER BY generation'),

    insertEvent: db.prepare(`INSERT INTO security_events (at, type, user_id, session_id, client_id, ip, user_agent, reason, detail)
      VALUES (@at, @type, @user_id, @session_id, @client_id, @ip, @user_agent, @reason, @detail)`),
    eventsAll: db.prepare<[number], EventRow>('SELECT * FROM security_events ORDER BY id DESC LIMIT ?'),
    eventsUser: db.prepare<[string, number], EventRow>('SELECT * FROM security_events WHERE user_id = ? ORDER BY id DESC LIMIT ?'),
    eventsSession: db.prepare<[string, number], EventRow>('SELECT * FROM security_events WHERE session_id = ? ORDER BY id DESC LIMIT ?'),

    // The newest token of a session was issued to the last request that used it (login or rotation).
    liveSessionViews: db.prepare<{ user_id: string, now: number }, SessionView>(`SELECT s.*, t.issued_ip AS last_ip, t.issued_user_agent AS last_user_agent
      FROM sessions s LEFT JOIN refresh_tokens t ON t.session_id = s.id AND t.generation = s.generation
      WHERE s.user_id = @user_id AND s.revoked_at IS NULL AND s.expires_at > @now AND s.idle_expires_at > @now
      ORDER BY s.created_at DESC, s.id`),
    sessionViews: db.prepare<[string], SessionView>(`SELECT s.*, t.issued_ip AS last_ip, t.issued_user_agent AS last_user_agent
      FROM sessions s LEFT JOIN refresh_tokens t ON t.session_id = s.id AND t.generation = s.generation
      WHERE s.user_id = ? ORDER BY s.created_at DESC, s.id`),
    expiredSessions: db.prepare<[number, number], { id: string }>('SELECT id FROM sessions WHERE expires_at <= ? ORDER BY expires_at LIMIT ?'),
    tokenCount: db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM refresh_tokens WHERE session_id = ?'),
    // ON DELETE CASCADE removes the session's lineage with it.
    deleteSession: db.prepare('DELETE FROM sessions WHERE id = ?'),
    pruneEvents: db.prepare('DELETE FROM security_events WHERE id IN (SELECT id FROM security_events WHERE at < ? ORDER BY at LIMIT ?)'),

    loginFailure: db.prepare<[string, string], LoginFailureRow>('SELECT * FROM login_failures WHERE username = ? AND source = ?'),
    upsertLoginFailure: db.prepare(`INSERT INTO login_failures (username, source, failures, locked_until, updated_at) VALUES (@username, @source, @failures, @locked_until, @now)
      ON CONFLICT (username, source) DO UPDATE SET failures = excluded.failures, locked_until = excluded.locked_until, updated_at = excluded.updated_at`),
    clearLoginFailure: db.prepare('DELETE FROM login_failures WHERE username = ? AND source = ?'),
    clearLoginFailuresAll: db.prepare('DELETE FROM login_failures WHERE username = ?'),
    // A few stale rows per failure keep the table bounded without a janitor of its own.
    forgetLoginFailures: db.prepare(`DELETE FROM login_failures WHERE (username, source) IN
      (SELECT username, source FROM login_failures WHERE updated_at < ? AND locked_until < ? ORDER BY updated_at LIMIT 16)`),
    deviceKnown: db.prepare<[string, string], { ok: number }>('SELECT 1 AS ok FROM sessions WHERE user_id = ? AND device_id = ? LIMIT 1')
  }

  const record = (events: EventInput[], now: number): void => {
    for (const e of events) {
      q.insertEvent.run({
        at: now,
        type: e.type,
        user_id: e.user_id ?? null,
        session_id: e.session_id ?? null,
        client_id: e.client_id ?? null,
        ip: e.ip ?? null,
        user_agent: e.user_agent ?? null,
        reason: e.reason ?? null,
        detail: e.detail == null ? null : JSON.stringify(e.detail)
      })
    }
  }

  const revokeUserSessions = (userId: string, reason: string, now: number, events: EventInput[], userEvent: Omit<EventInput, 'type'>): number => {
    const live = q.liveSessionsOfUser.all(userId, now)
    for (const s of live) {
      q.revokeSession.run(now, reason, s.id)
      events.push({ ...userEvent, type: 'session_revoked', session_id: s.id, client_id: s.client_id, reason })
    }
    return live.length
  }

  const setPasswordHash = db.transaction((userId: string, hash: string, now: number, revokeReason: string | null, events: EventInput[]): number => {
    q.setHash.run(hash, now, userId)
    const n = revokeReason === null ? 0 : revokeUserSessions(userId, revokeReason, now, events, { user_id: userId })
    record(events, now)
    return n
  })

  const setUserDisabled = db.transaction((userId: string, disabled: boolean, now: number, events: EventInput[]): number => {
    q.setDisabled.run(disabled ? now : null, now, userId)
    const n = disabled ? revokeUserSessions(userId, 'account_disabled', now, events, { user_id: userId }) : 0
    record(events, now)
    return n
  })

  const ensureSigningKey = db.transaction((alg: string, make: () => Omit<KeyRow, 'created_at' | 'retired_at' | 'expires_at'>, now: number): KeyRow => {
    const live = q.liveKey.get(alg)
    if (live !== undefined) return live
    const k = make()
    q.insertKey.run({ ...k, now })
    return q.keyByKid.get(k.kid) as KeyRow
  })

  const rotateSigningKey = db.transaction((key: Omit<KeyRow, 'created_at' | 'retired_at' | 'expires_at'>, now: number, retiredExpiresAt: number) => {
    // A key past its expiry signs nothing and verifies nothing any more: its private part goes.
    q.deleteExpiredKeys.run(now)
    const retired = q.signingKeys.all()
    q.retireKeys.run(now, retiredExpiresAt)
    q.insertKey.run({ ...key, now })
    return retired.map((k) => ({ ...k, retired_at: now, expires_at: retiredExpiresAt }))
  })

  const startSession = db.transaction((s: NewSession) => {
    q.insertSession.run({
      id: s.id,
      user_id: s.user_id,
      client_id: s.client_id,
      scope: s.scope,
      user_agent: s.meta.user_agent,
      ip: s.meta.ip,
      device_id: s.meta.device_id,
      now: s.now,
      idle_expires_at: s.idle_expires_at,
      expires_at: s.expires_at
    })
    q.insertToken.run({ digest: s.token_digest, session_id: s.id, generation: 0, parent_generation: null, now: s.now, ip: s.meta.ip, user_agent: s.meta.user_agent })
    record(s.events, s.now)
  })

  const refresh = db.transaction((input: RefreshInput): RefreshResult => {
    const token = q.token.get(input.digest)
    if (token === undefined) return { kind: 'not_found' }
    const session = q.session.get(token.session_id) as SessionRow
    const user = q.userById.get(session.user_id) as UserRow
    const state: RefreshState = { token, session, user }
    const decision = input.decide(state)

    if (decision.kind === 'reject') {
      if (decision.revoke !== undefined) q.revokeSession.run(input.now, decision.revoke, session.id)
      record(decision.events, input.now)
      return { kind: 'rejected', decision, state }
    }
    if (decision.kind === 'replay') {
      record(decision.events, input.now)
      return { kind: 'replayed', state, sealed: token.successor_sealed as Buffer, events: decision.events }
    }
    const m = input.meta
    const consumed = q.consume.run({ now: input.now, ip: m.ip, user_agent: m.user_agent, device_id: m.device_id, sealed: input.sealed, digest: input.digest })
    const advanced = q.advance.run({ now: input.now, idle_expires_at: decision.idle_expires_at, id: session.id, generation: token.generation })
    // Both compare-and-sets hold under the write lock; if either misses, the decision was made on a
    // stale view, which the immediate transaction rules out. Throwing rolls everything back.
    if (consumed.changes !== 1 || advanced.changes !== 1) throw new Error('rotation compare-and-set failed')
    const generation = token.generation + 1
    q.insertToken.run({ digest: input.child_digest, session_id: session.id, generation, parent_generation: token.generation, now: input.now, ip: m.ip, user_agent: m.user_agent })
    record(decision.events, input.now)
    return { kind: 'rotated', state, generation, events: decision.events }
  })

  const revokeSession = db.transaction((id: string, reason: string, now: number, events: EventInput[]): boolean => {
    const changed = q.revokeSession.run(now, reason, id).changes === 1
    if (changed) record(events, now)
    return changed
  })

  const recordEvents = db.transaction((events: EventInput[], now: number) => record(events, now))

  // Same write lock as rotation: a refresh either commits before this (and its child dies with the
  // session) or runs after it (and finds the session revoked). Never a live token left behind.
  const revokeAllOf = db.transaction((userId: string, reason: string, now: number, except: string | null, events: EventInput[], who: Omit<EventInput, 'type'>): number => {
    const before = events.length
    for (const s of q.liveSessionsOfUser.all(userId, now)) {
      if (s.id === except) continue
      q.revokeSession.run(now, reason, s.id)
      events.push({ ...who, type: 'session_revoked', user_id: userId, session_id: s.id, client_id: s.client_id, reason })
    }
    record(events, now)
    return events.length - before
  })

  const pruneSessions = db.transaction((before: number, limit: number): PruneResult => {
    const ids = q.expiredSessions.all(before, limit)
    let tokens = 0
    for (const { id } of ids) {
      tokens += q.tokenCount.get(id)?.n ?? 0
      q.deleteSession.run(id)
    }
    return { sessions: ids.length, tokens }
  })

  const recordLoginFailure = db.transaction((input: LoginFailureInput): LoginFailureRow => {
    q.forgetLoginFailures.run(input.forgetBefore, input.now)
    const prev = q.loginFailure.get(input.username, input.source)
    const next = input.decide(prev)
    q.upsertLoginFailure.run({ username: input.username, source: input.source, failures: next.failures, locked_until: next.locked_until, now: input.now })
    record(next.events, input.now)
    return { username: input.username, source: input.source, failures: next.failures, locked_until: next.locked_until, updated_at: input.now }
  })

  const clearLoginFailures = db.transaction((username: string, source: string | null, now: number, events: EventInput[]): number => {
    const n = source === null ? q.clearLoginFailuresAll.run(username).changes : q.clearLoginFailure.run(username, source).changes
    if (n > 0) record(events, now)
    return n
  })

  // A deferred transaction: one snapshot for the three reads, so the token, its session and its user agree.
  const findRefreshToken = db.transaction((digest: Buffer): RefreshState | undefined => {
    const token = q.token.get(digest)
    if (token === undefined) return undefined
    const session = q.session.get(token.session_id) as SessionRow
    return { token, session, user: q.userById.get(session.user_id) as UserRow }
  })

  return {
    async createUser (u) { q.insertUser.run(u) },
    async findUserByUsername (username) { return q.userByName.get(username) },
    async findUserById (id) { return q.userById.get(id) },
    async listUsers () { return q.users.all() },
    async setPasswordHash (userId, hash, now, revokeReason, events) { return setPasswordHash.immediate(userId, hash, now, revokeReason, events) },
    async setUserDisabled (userId, disabled, now, events) { return setUserDisabled.immediate(userId, disabled, now, events) },

    async createClient (c) { q.insertClient.run(c) },
    async findClient (id) { return q.client.get(id) },
    async listClients () { return q.clients.all() },
    async originAllowed (origin) {
      // A space inside the value would match across two list entries.
      if (origin === '' || /\s/.test(origin)) return false
      return q.originAllowed.get(origin) !== undefined
    },

    async ensureSigningKey (alg, make, now) { return ensureSigningKey.immediate(alg, make, now) },
    async publishedKeys (now) { return q.publishedKeys.all(now) },
    async listKeys () { return q.listKeys.all() },
    async rotateSigningKey (key, now, retiredExpiresAt) { return rotateSigningKey.immediate(key, now, retiredExpiresAt) },
    async longestClientAccessTtl () { return q.longestClientAccessTtl.get()?.ttl ?? null },
    async keysVersion () { return q.keysVersion.get()?.v ?? '' },
    async health () {
      q.ping.get()
      return { schemaVersion: db.pragma('user_version', { simple: true }) as number }
    },
    async countLiveSessions (now) { return q.countLiveSessions.get({ now })?.n ?? 0 },

    async startSession (s) { startSession.immediate(s) },
    async refresh (input) { return refresh.immediate(input) },
    async findSession (id) { return q.session.get(id) },
    async revokeSession (id, reason, now, events) { return revokeSession.immediate(id, reason, now, events) },

    async findRefreshToken (digest) { return findRefreshToken.deferred(digest) },
    async liveSessions (userId, now) { return q.liveSessionViews.all({ user_id: userId, now }) },
    async sessionsOfUser (userId) { return q.sessionViews.all(userId) },
    async revokeUserSessions (userId, reason, now, except, events, who = {}) { return revokeAllOf.immediate(userId, reason, now, except, events, who) },
    async pruneSessions (before, limit) { return pruneSessions.immediate(before, limit) },
    async pruneEvents (before, limit) { return q.pruneEvents.run(before, limit).changes },

    async loginFailures (username, source) { return q.loginFailure.get(username, source) },
    async recordLoginFailure (input) { return recordLoginFailure.immediate(input) },
    async clearLoginFailures (username, source, now, events) { return clearLoginFailures.immediate(username, source, now, events) },
    async deviceKnown (userId, deviceId) { return q.deviceKnown.get(userId, deviceId) !== undefined },

    async recordEvents (events, now) { recordEvents.immediate(events, now) },
    async listEvents ({ user_id: userId, session_id: sessionId, limit = 1000 }) {
      if (sessionId !== undefined) return q.eventsSession.all(sessionId, limit)
      if (userId !== undefined) return q.eventsUser.all(userId, limit)
      return q.eventsAll.all(limit)
    },
    async lineage (sessionId) { return q.lineage.all(sessionId) },

    close () { if (db.open) db.close() }
  }
}
