import type {
  BudgetCount, Client, CopyBatch, LoginFailures, NewSession, NewSigningKey, PruneResult, PublicSigningKey, RefreshInput, RefreshResult, RefreshState, RefreshVerdict, SecurityEvent, Store
} from '../store.js'
import { BUDGET_STALE_MS, StoreError } from '../store.js'
import { latestMigration, type DB } from './database.js'
import {
  COPY_ORDER, COPY_TABLES, copyBatch, copyRows, maybe, newEventRow, toBudget, toClient, toEvent, toKey, toLoginFailures, toPublicKey, toSession, toSessionView, toToken, toUser,
  type BudgetRow, type ClientRow, type CopyKind, type EventRow, type KeyRow, type LoginFailureRow, type PublicKeyRow, type SessionRow, type SessionViewRow, type TokenRow, type UserRow
} from '../rows.js'

/*
 * The SQLite store (db/store.ts has the contract), and the only module with SQL. Every multi-step
 * write runs in one `BEGIN IMMEDIATE` transaction, so two processes on one file serialise on the write
 * lock instead of failing a read→write upgrade with SQLITE_BUSY. better-sqlite3 is synchronous: the
 * methods return promises for the interface's sake, and nothing ever awaits inside a transaction.
 *
 * Rows keep the schema's snake_case names (migrations/*.sql) and never leave this module: each one
 * read is mapped to its domain type by db/rows.ts, once.
 */

export function createStore (db: DB): Store {
  const expectedVersion = latestMigration()
  const q = {
    insertUser: db.prepare('INSERT INTO users (id, username, password_hash, created_at, updated_at) VALUES (@id, @username, @passwordHash, @now, @now)'),
    userByName: db.prepare<[string], UserRow>('SELECT * FROM users WHERE username = ?'),
    userById: db.prepare<[string], UserRow>('SELECT * FROM users WHERE id = ?'),
    users: db.prepare<[], UserRow>('SELECT * FROM users ORDER BY username'),
    setHash: db.prepare('UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?'),
    setDisabled: db.prepare('UPDATE users SET disabled_at = ?, updated_at = ? WHERE id = ?'),

    insertClient: db.prepare(`INSERT INTO clients (id, secret_digest, delivery, grants, scopes, origins, access_ttl, idle_ttl, session_ttl, created_at)
      VALUES (@id, @secretDigest, @delivery, @grants, @scopes, @origins, @accessTtl, @idleTtl, @sessionTtl, @now)`),
    client: db.prepare<[string], ClientRow>('SELECT * FROM clients WHERE id = ?'),
    clients: db.prepare<[], ClientRow>('SELECT * FROM clients ORDER BY id'),
    // Whole-word match in the space-separated list; instr, unlike LIKE, has no wildcards.
    updateClient: db.prepare(`UPDATE clients SET delivery = coalesce(@delivery, delivery), grants = coalesce(@grants, grants),
      scopes = coalesce(@scopes, scopes), origins = coalesce(@origins, origins) WHERE id = @id`),
    liveSessionsOfClient: db.prepare<[string, number], { id: string, user_id: string }>(
      'SELECT id, user_id FROM sessions WHERE client_id = ? AND revoked_at IS NULL AND expires_at > ? ORDER BY created_at, id'),
    // ON DELETE CASCADE removes the client's sessions, and their lineage, with it.
    deleteClient: db.prepare('DELETE FROM clients WHERE id = ?'),
    originAllowed: db.prepare<[string], { ok: number }>("SELECT 1 AS ok FROM clients WHERE instr(' ' || origins || ' ', ' ' || ? || ' ') > 0 LIMIT 1"),

    liveKey: db.prepare<[string], KeyRow>('SELECT * FROM signing_keys WHERE alg = ? AND retired_at IS NULL ORDER BY created_at DESC LIMIT 1'),
    insertKey: db.prepare('INSERT INTO signing_keys (kid, alg, private_pem, public_jwk, created_at) VALUES (@kid, @alg, @privatePem, @publicJwk, @now)'),
    keyByKid: db.prepare<[string], KeyRow>('SELECT * FROM signing_keys WHERE kid = ?'),
    publishedKeys: db.prepare<[number], KeyRow>('SELECT * FROM signing_keys WHERE expires_at IS NULL OR expires_at > ? ORDER BY created_at DESC'),
    listKeys: db.prepare<[], PublicKeyRow>('SELECT kid, alg, public_jwk, created_at, retired_at, expires_at FROM signing_keys ORDER BY created_at DESC, kid'),
    signingKeys: db.prepare<[], PublicKeyRow>('SELECT kid, alg, public_jwk, created_at, retired_at, expires_at FROM signing_keys WHERE retired_at IS NULL'),
    retireKeys: db.prepare('UPDATE signing_keys SET retired_at = ?, expires_at = ? WHERE retired_at IS NULL'),
    deleteExpiredKeys: db.prepare('DELETE FROM signing_keys WHERE expires_at IS NOT NULL AND expires_at <= ?'),
    longestClientAccessTtl: db.prepare<[], { ttl: number | null }>('SELECT max(access_ttl) AS ttl FROM clients'),
    keysVersion: db.prepare<[], { v: string | null }>("SELECT group_concat(kid || ':' || coalesce(retired_at, '') || ':' || coalesce(expires_at, ''), ',') AS v FROM signing_keys"),
    ping: db.prepare<[], { one: number }>('SELECT 1 AS one'),
    countLiveSessions: db.prepare<{ now: number }, { n: number }>('SELECT count(*) AS n FROM sessions WHERE revoked_at IS NULL AND expires_at > @now AND idle_expires_at > @now'),

    insertSession: db.prepare(`INSERT INTO sessions (id, user_id, client_id, scope, generation, user_agent, ip, device_id, created_at, last_used_at, idle_expires_at, expires_at)
      VALUES (@id, @userId, @clientId, @scope, 0, @userAgent, @ip, @deviceId, @now, @now, @idleExpiresAt, @expiresAt)`),
    session: db.prepare<[string], SessionRow>('SELECT * FROM sessions WHERE id = ?'),
    insertToken: db.prepare(`INSERT INTO refresh_tokens (digest, session_id, generation, parent_generation, issued_at, issued_ip, issued_user_agent)
      VALUES (@digest, @sessionId, @generation, @parentGeneration, @now, @ip, @userAgent)`),
    token: db.prepare<[Buffer], TokenRow>('SELECT * FROM refresh_tokens WHERE digest = ?'),
    // Compare-and-set: consumes the token only if nobody has, and only if it is the live generation.
    consume: db.prepare(`UPDATE refresh_tokens SET used_at = @now, used_ip = @ip, used_user_agent = @userAgent, used_device_id = @deviceId, successor_sealed = @sealed
      WHERE digest = @digest AND used_at IS NULL`),
    advance: db.prepare(`UPDATE sessions SET generation = generation + 1, last_used_at = @now, idle_expires_at = @idleExpiresAt
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
    liveSessionViews: db.prepare<{ userId: string, now: number }, SessionViewRow>(`SELECT s.*, t.issued_ip AS last_ip, t.issued_user_agent AS last_user_agent
      FROM sessions s LEFT JOIN refresh_tokens t ON t.session_id = s.id AND t.generation = s.generation
      WHERE s.user_id = @userId AND s.revoked_at IS NULL AND s.expires_at > @now AND s.idle_expires_at > @now
      ORDER BY s.created_at DESC, s.id`),
    sessionViews: db.prepare<[string], SessionViewRow>(`SELECT s.*, t.issued_ip AS last_ip, t.issued_user_agent AS last_user_agent
      FROM sessions s LEFT JOIN refresh_tokens t ON t.session_id = s.id AND t.generation = s.generation
      WHERE s.user_id = ? ORDER BY s.created_at DESC, s.id`),
    expiredSessions: db.prepare<[number, number], { id: string }>('SELECT id FROM sessions WHERE expires_at <= ? ORDER BY expires_at LIMIT ?'),
    tokenCount: db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM refresh_tokens WHERE session_id = ?'),
    // ON DELETE CASCADE removes the session's lineage with it.
    deleteSession: db.prepare('DELETE FROM sessions WHERE id = ?'),
    pruneEvents: db.prepare('DELETE FROM security_events WHERE id IN (SELECT id FROM security_events WHERE at < ? ORDER BY at LIMIT ?)'),

    loginFailure: db.prepare<[string, string], LoginFailureRow>('SELECT * FROM login_failures WHERE username = ? AND source = ?'),
    upsertLoginFailure: db.prepare(`INSERT INTO login_failures (username, source, failures, locked_until, updated_at) VALUES (@username, @source, @failures, @lockedUntil, @now)
      ON CONFLICT (username, source) DO UPDATE SET failures = excluded.failures, locked_until = excluded.locked_until, updated_at = excluded.updated_at`),
    anyLoginFailure: db.prepare<[string], { ok: number }>('SELECT 1 AS ok FROM login_failures WHERE username = ? LIMIT 1'),
    clearLoginFailure: db.prepare('DELETE FROM login_failures WHERE username = ? AND source = ?'),
    clearLoginFailuresAll: db.prepare('DELETE FROM login_failures WHERE username = ?'),
    // A few stale rows per failure keep the table bounded without a janitor of its own.
    forgetLoginFailures: db.prepare(`DELETE FROM login_failures WHERE (username, source) IN
      (SELECT username, source FROM login_failures WHERE updated_at < ? AND locked_until < ? ORDER BY updated_at LIMIT 16)`),
    deviceKnown: db.prepare<[string, string], { ok: number }>('SELECT 1 AS ok FROM sessions WHERE user_id = ? AND device_id = ? LIMIT 1'),

    // One statement: the read of the old window and the write of the new count happen under one write
    // lock, so hits from any number of processes are each counted once. SET sees the row as it was.
    hitBudget: db.prepare<{ key: string, windowMs: number, now: number }, BudgetRow>(`INSERT INTO budgets (key, count, reset_at) VALUES (@key, 1, @now + @windowMs)
      ON CONFLICT (key) DO UPDATE SET
        count = CASE WHEN @now >= reset_at THEN 1 ELSE count + 1 END,
        reset_at = CASE WHEN @now >= reset_at THEN excluded.reset_at ELSE reset_at END
      RETURNING count, reset_at`),
    peekBudget: db.prepare<[string, number], BudgetRow>('SELECT count, reset_at FROM budgets WHERE key = ? AND reset_at > ?'),
    // Pruned per hit, not by the janitor: only hits add rows, and this bounds them whatever janitorInterval is (0 disables it).
    forgetBudgets: db.prepare('DELETE FROM budgets WHERE key IN (SELECT key FROM budgets WHERE reset_at < ? ORDER BY reset_at LIMIT 16)'),
    isEmpty: db.prepare<[], { empty: number }>(`SELECT NOT (EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM clients) OR EXISTS (SELECT 1 FROM signing_keys)
      OR EXISTS (SELECT 1 FROM sessions) OR EXISTS (SELECT 1 FROM security_events)) AS empty`)
  }

  /** Inserts events; only ever called inside a transaction that writes what they describe. */
  const record = (events: SecurityEvent[], now: number): void => {
    for (const e of events) q.insertEvent.run(newEventRow(e, now))
  }

  /**
   * Revokes the user's unrevoked, unexpired sessions but `except`, appending a `session_revoked` event
   * per session to `events` (recorded by the caller's transaction). Returns how many it revoked.
   */
  const revokeLiveSessions = (
    { userId, reason, now, except, actor }: { userId: string, reason: string, now: number, except?: string, actor: Omit<SecurityEvent, 'type'> },
    events: SecurityEvent[]
  ): number => {
    let n = 0
    for (const s of q.liveSessionsOfUser.all(userId, now)) {
      if (s.id === except) continue
      q.revokeSession.run(now, reason, s.id)
      events.push({ ...actor, type: 'session_revoked', userId, sessionId: s.id, clientId: s.client_id, reason })
      n++
    }
    return n
  }

  /** One rotation: reads the token, its session and user, applies the grant's decision. Run in a transaction. */
  const rotate = (input: RefreshInput): RefreshResult => {
    const tokenRow = q.token.get(input.digest)
    if (tokenRow === undefined) return { kind: 'not_found' }
    const token = toToken(tokenRow)
    const session = toSession(q.session.get(token.sessionId) as SessionRow)
    const state: RefreshState = { token, session, user: toUser(q.userById.get(session.userId) as UserRow) }
    const decision = input.decide(state)

    if (decision.kind === 'reject') {
      if (decision.revoke !== undefined) q.revokeSession.run(input.now, decision.revoke, session.id)
      record(decision.events, input.now)
      return { kind: 'rejected', state, decision }
    }
    if (decision.kind === 'replay') {
      record(decision.events, input.now)
      return { kind: 'replayed', state, decision, sealed: token.successorSealed as Buffer }
    }
    const m = input.meta
    const consumed = q.consume.run({ now: input.now, ip: m.ip, userAgent: m.userAgent, deviceId: m.deviceId, sealed: input.sealed, digest: input.digest })
    const advanced = q.advance.run({ now: input.now, idleExpiresAt: decision.idleExpiresAt, id: session.id, generation: token.generation })
    // Both compare-and-sets hold under the write lock; if either misses, the decision was made on a
    // stale view, which the immediate transaction rules out. Throwing rolls everything back.
    if (consumed.changes !== 1 || advanced.changes !== 1) throw new StoreError('conflict', 'rotation compare-and-set failed')
    const generation = token.generation + 1
    q.insertToken.run({ digest: input.childDigest, sessionId: session.id, generation, parentGeneration: token.generation, now: input.now, ip: m.ip, userAgent: m.userAgent })
    record(decision.events, input.now)
    return { kind: 'rotated', state, decision, generation }
  }

  /** The store's transactions, each run `.immediate()` (writes) or `.deferred()` (consistent reads) below. */
  const tx = {
    setPasswordHash: db.transaction((c: Parameters<Store['setPasswordHash']>[0]): number => {
      q.setHash.run(c.passwordHash, c.now, c.userId)
      const n = c.revokeReason === undefined ? 0 : revokeLiveSessions({ userId: c.userId, reason: c.revokeReason, now: c.now, actor: { userId: c.userId } }, c.events)
      record(c.events, c.now)
      return n
    }),

    setUserDisabled: db.transaction((c: Parameters<Store['setUserDisabled']>[0]): number => {
      q.setDisabled.run(c.disabled ? c.now : null, c.now, c.userId)
      const n = c.disabled ? revokeLiveSessions({ userId: c.userId, reason: 'account_disabled', now: c.now, actor: { userId: c.userId } }, c.events) : 0
      record(c.events, c.now)
      return n
    }),

    ensureSigningKey: db.transaction((alg: string, make: () => NewSigningKey, now: number): KeyRow => {
      const live = q.liveKey.get(alg)
      if (live !== undefined) return live
      const k = make()
      q.insertKey.run({ ...k, now })
      return q.keyByKid.get(k.kid) as KeyRow
    }),

    rotateSigningKey: db.transaction(({ key, now, retiredUntil }: Parameters<Store['rotateSigningKey']>[0]): PublicSigningKey[] => {
      // A key past its expiry signs nothing and verifies nothing any more: its private part goes.
      q.deleteExpiredKeys.run(now)
      const retired = q.signingKeys.all()
      q.retireKeys.run(now, retiredUntil)
      q.insertKey.run({ ...key, now })
      return retired.map((k) => ({ ...toPublicKey(k), retiredAt: now, expiresAt: retiredUntil }))
    }),

    startSession: db.transaction((s: NewSession) => {
      const m = s.meta
      q.insertSession.run({
        id: s.id,
        userId: s.userId,
        clientId: s.clientId,
        scope: s.scope,
        userAgent: m.userAgent,
        ip: m.ip,
        deviceId: m.deviceId,
        now: s.now,
        idleExpiresAt: s.idleExpiresAt,
        expiresAt: s.expiresAt
      })
      q.insertToken.run({ digest: s.tokenDigest, sessionId: s.id, generation: 0, parentGeneration: null, now: s.now, ip: m.ip, userAgent: m.userAgent })
      record(s.events, s.now)
    }),

    refresh: db.transaction(rotate),

    revokeSession: db.transaction(({ sessionId, reason, now, events }: Parameters<Store['revokeSession']>[0]): boolean => {
      const changed = q.revokeSession.run(now, reason, sessionId).changes === 1
      if (changed) record(events, now)
      return changed
    }),

    recordEvents: db.transaction((events: SecurityEvent[], now: number) => record(events, now)),

    updateClient: db.transaction(({ clientId, change, now, events }: Parameters<Store['updateClient']>[0]): { before: Client, after: Client } | undefined => {
      const before = q.client.get(clientId)
      if (before === undefined) return undefined
      q.updateClient.run({ id: clientId, delivery: change.delivery ?? null, grants: change.grants ?? null, scopes: change.scopes ?? null, origins: change.origins ?? null })
      record(events, now)
      return { before: toClient(before), after: toClient(q.client.get(clientId) as ClientRow) }
    }),

    // Same write lock as rotation and login: a refresh or a login of the client either commits before
    // this (and its session is revoked, then deleted) or runs after it (and finds no client).
    removeClient: db.transaction(({ clientId, now, events, actor }: Parameters<Store['removeClient']>[0]): number | undefined => {
      if (q.client.get(clientId) === undefined) return undefined
      const live = q.liveSessionsOfClient.all(clientId, now)
      for (const s of live) {
        q.revokeSession.run(now, 'client_removed', s.id)
        events.push({ ...actor, type: 'session_revoked', userId: s.user_id, sessionId: s.id, clientId, reason: 'client_removed' })
      }
      record(events, now)
      q.deleteClient.run(clientId)
      return live.length
    }),

    // Same write lock as rotation: a refresh either commits before this (and its child dies with the
    // session) or runs after it (and finds the session revoked). Never a live token left behind.
    revokeUserSessions: db.transaction((r: Parameters<Store['revokeUserSessions']>[0]): SecurityEvent[] => {
      const events: SecurityEvent[] = []
      revokeLiveSessions({ ...r, actor: r.actor ?? {} }, events)
      record(events, r.now)
      return events
    }),

    pruneSessions: db.transaction((before: number, limit: number): PruneResult => {
      const ids = q.expiredSessions.all(before, limit)
      let tokens = 0
      for (const { id } of ids) {
        tokens += q.tokenCount.get(id)?.n ?? 0
        q.deleteSession.run(id)
      }
      return { sessions: ids.length, tokens }
    }),

    // Immediate, like every write: the prune and the count share one lock and one commit.
    hitBudget: db.transaction((key: string, windowMs: number, now: number): BudgetCount => {
      q.forgetBudgets.run(now - BUDGET_STALE_MS)
      return toBudget(q.hitBudget.get({ key, windowMs, now }) as BudgetRow)
    }),

    recordLoginFailure: db.transaction((input: Parameters<Store['recordLoginFailure']>[0]): LoginFailures => {
      q.forgetLoginFailures.run(input.forgetBefore, input.now)
      const prev = maybe(q.loginFailure.get(input.username, input.source), toLoginFailures)
      const next = input.decide(prev)
      q.upsertLoginFailure.run({ username: input.username, source: input.source, failures: next.failures, lockedUntil: next.lockedUntil, now: input.now })
      record(next.events, input.now)
      return { username: input.username, source: input.source, failures: next.failures, lockedUntil: next.lockedUntil, updatedAt: input.now }
    }),

    clearLoginFailures: db.transaction(({ username, source, now, events }: Parameters<Store['clearLoginFailures']>[0]): number => {
      const n = source === undefined ? q.clearLoginFailuresAll.run(username).changes : q.clearLoginFailure.run(username, source).changes
      if (n > 0) record(events, now)
      return n
    }),

    // A deferred transaction: one snapshot for the three reads, so the token, its session and its user agree.
    findRefreshToken: db.transaction((digest: Buffer): RefreshState | undefined => {
      const row = q.token.get(digest)
      if (row === undefined) return undefined
      const token = toToken(row)
      const session = toSession(q.session.get(token.sessionId) as SessionRow)
      return { token, session, user: toUser(q.userById.get(session.userId) as UserRow) }
    })
  }

  /*
   * Group commit: the rotations that arrive in one turn of the event loop share one immediate
   * transaction, so the WAL is written and committed once for all of them instead of once each (the
   * commit is most of a rotation's cost). Each rotation runs in its own savepoint (a nested
   * better-sqlite3 transaction), so one that throws rolls back alone; if the commit itself fails, none
   * of them happened and every caller gets the error. Rotations of one token in the same batch see
   * each other's writes in arrival order, exactly as back-to-back transactions would.
   */
  const groupCommit = (() => {
    interface Pending { input: RefreshInput, resolve: (r: RefreshResult) => void, reject: (err: unknown) => void, result?: RefreshResult, error?: unknown, failed?: boolean }
    let queue: Pending[] = []
    const batch = db.transaction((items: Pending[]) => {
      for (const p of items) {
        try {
          p.result = tx.refresh(p.input)
        } catch (err) {
          p.failed = true
          p.error = err
        }
      }
    })
    const flush = (): void => {
      const items = queue
      queue = []
      try {
        if (items.length === 1) {
          const p = items[0] as Pending
          p.resolve(tx.refresh.immediate(p.input))
          return
        }
        batch.immediate(items)
      } catch (err) {
        for (const p of items) p.reject(err)
        return
      }
      for (const p of items) {
        if (p.failed === true) p.reject(p.error)
        else p.resolve(p.result as RefreshResult)
      }
    }
    return {
      async run (input: RefreshInput): Promise<RefreshResult> {
        return await new Promise((resolve, reject) => {
          if (queue.push({ input, resolve, reject }) === 1) setImmediate(flush)
        })
      }
    }
  })()

  const copy = copier(db)

  return {
    async createUser (u) { q.insertUser.run(u) },
    async findUserByUsername (username) { return maybe(q.userByName.get(username), toUser) },
    async findUserById (id) { return maybe(q.userById.get(id), toUser) },
    async listUsers () { return q.users.all().map(toUser) },
    async setPasswordHash (change) { return tx.setPasswordHash.immediate(change) },
    async setUserDisabled (change) { return tx.setUserDisabled.immediate(change) },

    async createClient (c) { q.insertClient.run(c) },
    async findClient (id) { return maybe(q.client.get(id), toClient) },
    async listClients () { return q.clients.all().map(toClient) },
    async updateClient (update) { return tx.updateClient.immediate(update) },
    async removeClient (removal) { return tx.removeClient.immediate(removal) },
    async originAllowed (origin) {
      // A space inside the value would match across two list entries.
      if (origin === '' || /\s/.test(origin)) return false
      return q.originAllowed.get(origin) !== undefined
    },

    async ensureSigningKey (alg, make, now) { return toKey(tx.ensureSigningKey.immediate(alg, make, now)) },
    async publishedKeys (now) { return q.publishedKeys.all(now).map(toKey) },
    async listKeys () { return q.listKeys.all().map(toPublicKey) },
    async rotateSigningKey (rotation) { return tx.rotateSigningKey.immediate(rotation) },
    async longestClientAccessTtl () { return q.longestClientAccessTtl.get()?.ttl ?? null },
    async keysVersion () { return q.keysVersion.get()?.v ?? '' },
    async health () {
      q.ping.get()
      return { schemaVersion: db.pragma('user_version', { simple: true }) as number, expectedVersion }
    },
    async countLiveSessions (now) { return q.countLiveSessions.get({ now })?.n ?? 0 },

    async startSession (s) { tx.startSession.immediate(s) },
    async refresh<V extends RefreshVerdict> (input: RefreshInput<V>) {
      // The transaction hands back the decision it was given, so the result carries V's own fields.
      return await groupCommit.run(input) as RefreshResult<V>
    },
    async findSession (id) { return maybe(q.session.get(id), toSession) },
    async revokeSession (revocation) { return tx.revokeSession.immediate(revocation) },

    async findRefreshToken (digest) { return tx.findRefreshToken.deferred(digest) },
    async liveSessions (userId, now) { return q.liveSessionViews.all({ userId, now }).map(toSessionView) },
    async sessionsOfUser (userId) { return q.sessionViews.all(userId).map(toSessionView) },
    async revokeUserSessions (revocation) { return tx.revokeUserSessions.immediate(revocation) },
    async pruneSessions (before, limit) { return tx.pruneSessions.immediate(before, limit) },
    async pruneEvents (before, limit) { return q.pruneEvents.run(before, limit).changes },

    async loginFailures (username, source) { return maybe(q.loginFailure.get(username, source), toLoginFailures) },
    async hasLoginFailures (username) { return q.anyLoginFailure.get(username) !== undefined },
    async recordLoginFailure (input) { return tx.recordLoginFailure.immediate(input) },
    async clearLoginFailures (clear) { return tx.clearLoginFailures.immediate(clear) },
    async deviceKnown (userId, deviceId) { return q.deviceKnown.get(userId, deviceId) !== undefined },

    async recordEvents (events, now) { tx.recordEvents.immediate(events, now) },
    async listEvents ({ userId, sessionId, limit = 1000 }) {
      if (sessionId !== undefined) return q.eventsSession.all(sessionId, limit).map(toEvent)
      if (userId !== undefined) return q.eventsUser.all(userId, limit).map(toEvent)
      return q.eventsAll.all(limit).map(toEvent)
    },
    async lineage (sessionId) { return q.lineage.all(sessionId).map(toToken) },

    async hitBudget (key, windowMs, now) { return tx.hitBudget.immediate(key, windowMs, now) },
    async peekBudget (key, now) {
      return maybe(q.peekBudget.get(key, now), toBudget) ?? { count: 0, resetAt: 0 }
    },

    async isEmpty () { return q.isEmpty.get()?.empty === 1 },
    exportRows () { return copy.exportRows() },
    async importRows (batch) { copy.importRows(batch) },

    async close () { if (db.open) db.close() }
  }
}

/** Rows per page of `tokenline copy`: a page, never a table, is in memory at a time. */
const COPY_PAGE = 1000

/**
 * `tokenline copy` on SQLite. The export reads every table in one read transaction (one snapshot, so a
 * copy taken while servers write is still consistent: no token without its session), a page at a time
 * by primary key; the import inserts each batch as it is, in one immediate transaction.
 */
function copier (db: DB): { exportRows: () => AsyncIterable<CopyBatch>, importRows: (batch: CopyBatch) => void } {
  // The budgets table comes with a later migration: copied only where the schema has it.
  const hasBudgets = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'budgets'").get() !== undefined
  const tables = COPY_ORDER.filter((kind) => kind !== 'budgets' || hasBudgets)

  type Statement = ReturnType<typeof db.prepare<unknown[], Record<string, unknown>>>
  const pages = new Map<CopyKind, { first: Statement, next: Statement }>(tables.map((kind) => {
    const { columns, key } = COPY_TABLES[kind]
    const select = `SELECT ${columns.join(', ')} FROM ${kind}`
    const order = `ORDER BY ${key.join(', ')} LIMIT ${COPY_PAGE}`
    const after = key.length === 1 ? `${key[0] as string} > ?` : `(${key.join(', ')}) > (${key.map(() => '?').join(', ')})`
    return [kind, { first: db.prepare<unknown[], Record<string, unknown>>(`${select} ${order}`), next: db.prepare<unknown[], Record<string, unknown>>(`${select} WHERE ${after} ${order}`) }]
  }))

  const inserts = new Map<CopyKind, ReturnType<DB['transaction']>>(tables.map((kind) => {
    const { columns } = COPY_TABLES[kind]
    const insert = db.prepare(`INSERT INTO ${kind} (${columns.join(', ')}) VALUES (${columns.map((c) => `@${c}`).join(', ')})`)
    return [kind, db.transaction((rows: unknown[]) => { for (const row of rows) insert.run(row) })]
  }))

  return {
    async * exportRows () {
      // Deferred: the snapshot is taken by the first read and held until the last page is read.
      db.exec('BEGIN')
      try {
        for (const kind of tables) {
          const { first, next } = pages.get(kind) as { first: Statement, next: Statement }
          const { key } = COPY_TABLES[kind]
          let rows = first.all()
          while (rows.length > 0) {
            const last = rows[rows.length - 1] as Record<string, unknown>
            yield copyBatch(kind, rows)
            if (rows.length < COPY_PAGE) break
            rows = next.all(...key.map((k) => last[k]))
          }
        }
      } finally {
        if (db.inTransaction) db.exec('COMMIT')
      }
    },
    importRows (batch) {
      if (batch.rows.length === 0) return
      // Without a budgets table (an older schema), its counters are dropped: they expire within a window anyway.
      const insert = inserts.get(batch.kind)
      if (insert !== undefined) insert.immediate(copyRows(batch))
    }
  }
}
