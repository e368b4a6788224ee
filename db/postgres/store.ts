import type pg from 'pg'
import type { CopyBatch, LoginFailures, RefreshInput, RefreshResult, RefreshState, RefreshVerdict, SecurityEvent, Store } from '../store.js'
import { BUDGET_STALE_MS, StoreError } from '../store.js'
import {
  COPY_ORDER, COPY_TABLES, copyBatch, copyRows, maybe, newEventRow, toBudget, toClient, toEvent, toKey, toLoginFailures, toPublicKey, toSession, toSessionView, toToken, toUser,
  type BudgetRow, type ClientRow, type EventRow, type KeyRow, type LoginFailureRow, type PublicKeyRow, type SessionRow, type SessionViewRow, type TokenRow, type UserRow
} from '../rows.js'
import { checkout, createPool, describeUrl, isRetryable, isTransient, latestPostgresMigration, migrate, schemaVersion, type PoolOptions } from './database.js'

/*
 * The PostgreSQL store (db/store.ts has the contract). Any number of instances share one database, and
 * each guarantee rests on PostgreSQL's own: a single statement is atomic, an UPDATE waits for a
 * concurrent writer of the same row and then re-checks its WHERE clause on the row as committed
 * (READ COMMITTED), and advisory locks serialise what has no row to lock yet.
 *
 * The refresh grant (the hot path) is two statements and no explicit transaction: one consistent read
 * of the token, its session and its user, then the grant's verdict written by one statement that holds
 * only if the session is still exactly as read (compare-and-set on its generation and revocation).
 * If another instance wrote first, the statement changes nothing and the refresh is decided again on
 * the new state, so a rotation happens once, a revocation is never overtaken, and every replay within
 * the grace window hands back the one successor. Other multi-step writes run in a transaction.
 *
 * A lost or overloaded database surfaces as StoreError 'unavailable' (503 with Retry-After); deadlocks
 * and serialization failures are retried a few times first.
 */

/** Rounds of read-decide-write before a refresh that keeps losing to other writers gives up (503). */
const MAX_ROUNDS = 8
/** Retries of a transaction PostgreSQL rolled back for a deadlock or a serialization failure. */
const MAX_RETRIES = 3

/** Columns of the events insert, fed from a JSON array in one parameter however many events there are. */
const EVENTS_FROM_JSON = `SELECT $1::bigint, e.type, e.user_id, e.session_id, e.client_id, e.ip, e.user_agent, e.reason, e.detail
  FROM json_to_recordset($2::json) AS e(type text, user_id text, session_id text, client_id text, ip text, user_agent text, reason text, detail text)`

const INSERT_EVENTS = `INSERT INTO security_events (at, type, user_id, session_id, client_id, ip, user_agent, reason, detail) ${EVENTS_FROM_JSON}`

// The statement supplies `at` itself ($1); each row's other columns travel in one JSON parameter.
const eventsJson = (events: SecurityEvent[]): string => JSON.stringify(events.map((e) => newEventRow(e, 0)))

/*
 * The hot path's statements, prepared once per connection (named). The read takes the session and the
 * user as JSON (neither has a binary column) so that one row carries all three without renaming.
 */
const READ_REFRESH = {
  name: 'tokenline_read_refresh',
  text: `SELECT t.*, to_json(s) AS s, to_json(u) AS u
    FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id
    WHERE t.digest = $1`
}

/*
 * A rotation: advance the session if it is still at the generation and unrevoked state the verdict
 * was made on, then consume the token (only if that happened), insert the child, record the events.
 * The child's generation comes from the consumed token: were the session advanced but the token
 * already consumed (which the lineage's invariant rules out), it would be NULL, the NOT NULL
 * constraint would fail and the whole statement would change nothing.
 */
const ROTATE = {
  name: 'tokenline_rotate',
  text: `WITH a AS (
      UPDATE sessions SET generation = generation + 1, last_used_at = $1, idle_expires_at = $3
      WHERE id = $4 AND generation = $5 AND revoked_at IS NULL
      RETURNING id),
    c AS (
      UPDATE refresh_tokens SET used_at = $1, used_ip = $6, used_user_agent = $7, used_device_id = $8, successor_sealed = $9
      WHERE digest = $10 AND used_at IS NULL AND EXISTS (SELECT 1 FROM a)
      RETURNING generation),
    i AS (
      INSERT INTO refresh_tokens (digest, session_id, generation, parent_generation, issued_at, issued_ip, issued_user_agent)
      SELECT $11, a.id, (SELECT c.generation + 1 FROM c), $5, $1, $6, $7 FROM a
      RETURNING generation),
    e AS (
      INSERT INTO security_events (at, type, user_id, session_id, client_id, ip, user_agent, reason, detail)
      ${EVENTS_FROM_JSON.replace('FROM json_to_recordset', 'FROM i, json_to_recordset')})
    SELECT generation FROM i`
}

/*
 * A verdict that rotates nothing (a replay, or a refusal that may revoke): recorded only if the session
 * is still at the generation and revocation state it was judged on.
 */
const SETTLE = {
  name: 'tokenline_settle',
  text: `WITH s AS (
      UPDATE sessions SET revoked_at = coalesce(revoked_at, $3), revoked_reason = coalesce(revoked_reason, $4)
      WHERE id = $5 AND generation = $6 AND revoked_at IS NOT DISTINCT FROM $7
      RETURNING id),
    e AS (
      INSERT INTO security_events (at, type, user_id, session_id, client_id, ip, user_agent, reason, detail)
      ${EVENTS_FROM_JSON.replace('FROM json_to_recordset', 'FROM s, json_to_recordset')})
    SELECT count(*)::int AS n FROM s`
}

const SESSION_VIEW = `SELECT s.*, t.issued_ip AS last_ip, t.issued_user_agent AS last_user_agent
  FROM sessions s LEFT JOIN refresh_tokens t ON t.session_id = s.id AND t.generation = s.generation`

type Query = (text: string | { name: string, text: string }, values?: unknown[]) => Promise<{ rows: any[], rowCount: number | null }>

/** Opens the pool, applies pending migrations and returns the store; a server it cannot reach is a one-line error naming it. */
export async function openPostgresStore (url: string, opts: PoolOptions): Promise<Store> {
  const pool = createPool(url, opts)
  try {
    await migrate(pool)
  } catch (err) {
    await pool.end().catch(() => {})
    const message = `cannot open the PostgreSQL database at ${describeUrl(url)}: ${(err as Error).message}`
    // Unreachable, or refusing us (a wrong password, a missing database): either way not usable now.
    throw new StoreError('unavailable', message, { cause: err })
  }
  return createPostgresStore(pool)
}

export function createPostgresStore (pool: pg.Pool): Store {
  const expectedVersion = latestPostgresMigration()

  /** Engine errors that mean "not now" become StoreError 'unavailable'; anything else passes through. */
  const unavailable = (err: unknown): unknown =>
    err instanceof StoreError || !isTransient(err) ? err : new StoreError('unavailable', `database unavailable: ${(err as Error).message}`, { cause: err })

  const query: Query = async (text, values) => {
    try {
      return await pool.query(text as string, values)
    } catch (err) {
      throw unavailable(err)
    }
  }

  /** Runs `fn` in one transaction on one connection, retrying a deadlock or serialization failure. */
  async function tx<T> (fn: (q: Query) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      let client: pg.PoolClient
      let release: (discard?: boolean) => void
      try {
        ({ client, release } = await checkout(pool))
      } catch (err) {
        throw unavailable(err)
      }
      let broken = false
      const q: Query = async (text, values) => await client.query(text as string, values)
      try {
        await q('BEGIN')
        const result = await fn(q)
        await q('COMMIT')
        return result
      } catch (err) {
        await client.query('ROLLBACK').catch(() => { broken = true })
        if (isRetryable(err) && attempt < MAX_RETRIES) continue
        broken ||= isTransient(err)
        throw unavailable(err)
      } finally {
        // A connection that failed mid-transaction is not handed to anyone else.
        release(broken)
      }
    }
  }

  const record = async (q: Query, events: SecurityEvent[], now: number): Promise<void> => {
    if (events.length > 0) await q(INSERT_EVENTS, [now, eventsJson(events)])
  }

  /** Revokes the user's unrevoked, unexpired sessions but `except`, in `q`'s transaction; appends their events. */
  const revokeLiveSessions = async (
    q: Query,
    { userId, reason, now, except, actor }: { userId: string, reason: string, now: number, except?: string, actor: Omit<SecurityEvent, 'type'> },
    events: SecurityEvent[]
  ): Promise<number> => {
    const { rows } = await q(`UPDATE sessions SET revoked_at = $1, revoked_reason = $2
      WHERE user_id = $3 AND revoked_at IS NULL AND expires_at > $1 AND id IS DISTINCT FROM $4
      RETURNING id, client_id, created_at`, [now, reason, userId, except ?? null])
    rows.sort((a, b) => a.created_at - b.created_at || (a.id < b.id ? -1 : 1))
    for (const s of rows) events.push({ ...actor, type: 'session_revoked', userId, sessionId: s.id, clientId: s.client_id, reason })
    return rows.length
  }

  const readRefresh = async (digest: Buffer): Promise<RefreshState | undefined> => {
    const row = (await query(READ_REFRESH, [digest])).rows[0] as (TokenRow & { s: SessionRow, u: UserRow }) | undefined
    if (row === undefined) return undefined
    return { token: toToken(row), session: toSession(row.s), user: toUser(row.u) }
  }

  async function refresh (input: RefreshInput): Promise<RefreshResult> {
    const m = input.meta
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const state = await readRefresh(input.digest)
      if (state === undefined) return { kind: 'not_found' }
      const { token, session } = state
      const decision = input.decide(state)
      const events = eventsJson(decision.events)

      if (decision.kind === 'rotate') {
        const { rows } = await query(ROTATE, [
          input.now, events, decision.idleExpiresAt, session.id, token.generation,
          m.ip, m.userAgent, m.deviceId, input.sealed, input.digest, input.childDigest
        ])
        if (rows.length === 1) return { kind: 'rotated', state, decision, generation: rows[0].generation }
        continue
      }
      const revoke = decision.kind === 'reject' ? decision.revoke : undefined
      const { rows } = await query(SETTLE, [
        input.now, events, revoke === undefined ? null : input.now, revoke ?? null, session.id, session.generation, session.revokedAt
      ])
      if (rows[0]?.n !== 1) continue
      if (decision.kind === 'replay') return { kind: 'replayed', state, decision, sealed: token.successorSealed as Buffer }
      return { kind: 'rejected', state, decision }
    }
    throw new StoreError('unavailable', 'the session kept changing under the refresh; retry')
  }

  /** Serialises writers of something that has no row to lock yet (a first failure counter, a first key). */
  const lock = async (q: Query, key: string): Promise<void> => { await q('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [key]) }

  return {
    async createUser (u) {
      await query('INSERT INTO users (id, username, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)', [u.id, u.username, u.passwordHash, u.now])
    },
    async findUserByUsername (username) { return maybe((await query('SELECT * FROM users WHERE username = $1', [username])).rows[0], toUser) },
    async findUserById (id) { return maybe((await query('SELECT * FROM users WHERE id = $1', [id])).rows[0], toUser) },
    async listUsers () { return (await query('SELECT * FROM users ORDER BY username')).rows.map(toUser) },
    async setPasswordHash (c) {
      return await tx(async (q) => {
        await q('UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3', [c.passwordHash, c.now, c.userId])
        const n = c.revokeReason === undefined ? 0 : await revokeLiveSessions(q, { userId: c.userId, reason: c.revokeReason, now: c.now, actor: { userId: c.userId } }, c.events)
        await record(q, c.events, c.now)
        return n
      })
    },
    async setUserDisabled (c) {
      return await tx(async (q) => {
        await q('UPDATE users SET disabled_at = $1, updated_at = $2 WHERE id = $3', [c.disabled ? c.now : null, c.now, c.userId])
        const n = c.disabled ? await revokeLiveSessions(q, { userId: c.userId, reason: 'account_disabled', now: c.now, actor: { userId: c.userId } }, c.events) : 0
        await record(q, c.events, c.now)
        return n
      })
    },

    async createClient (c) {
      await query(`INSERT INTO clients (id, secret_digest, delivery, grants, scopes, origins, access_ttl, idle_ttl, session_ttl, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, [c.id, c.secretDigest, c.delivery, c.grants, c.scopes, c.origins, c.accessTtl, c.idleTtl, c.sessionTtl, c.now])
    },
    async findClient (id) { return maybe((await query('SELECT * FROM clients WHERE id = $1', [id])).rows[0] as ClientRow | undefined, toClient) },
    async listClients () { return (await query('SELECT * FROM clients ORDER BY id')).rows.map(toClient) },
    async updateClient ({ clientId, change, now, events }) {
      return await tx(async (q) => {
        const before = (await q('SELECT * FROM clients WHERE id = $1 FOR UPDATE', [clientId])).rows[0] as ClientRow | undefined
        if (before === undefined) return undefined
        const after = (await q(`UPDATE clients SET delivery = coalesce($2, delivery), grants = coalesce($3, grants),
          scopes = coalesce($4, scopes), origins = coalesce($5, origins) WHERE id = $1 RETURNING *`,
        [clientId, change.delivery ?? null, change.grants ?? null, change.scopes ?? null, change.origins ?? null])).rows[0] as ClientRow
        await record(q, events, now)
        return { before: toClient(before), after: toClient(after) }
      })
    },
    async removeClient ({ clientId, now, events, actor }) {
      return await tx(async (q) => {
        // FOR UPDATE conflicts with the key-share lock a new session's foreign key takes on the client
        // row: a login of this client either committed before (and its session is revoked below) or
        // waits for this transaction and then fails, the client gone. A refresh's compare-and-set on a
        // session revoked or deleted here changes nothing, and it finds no token on its next round.
        if ((await q('SELECT 1 FROM clients WHERE id = $1 FOR UPDATE', [clientId])).rows.length === 0) return undefined
        const { rows } = await q(`UPDATE sessions SET revoked_at = $1, revoked_reason = 'client_removed'
          WHERE client_id = $2 AND revoked_at IS NULL AND expires_at > $1
          RETURNING id, user_id, created_at`, [now, clientId])
        rows.sort((a, b) => a.created_at - b.created_at || (a.id < b.id ? -1 : 1))
        for (const r of rows) events.push({ ...actor, type: 'session_revoked', userId: r.user_id, sessionId: r.id, clientId, reason: 'client_removed' })
        await record(q, events, now)
        // ON DELETE CASCADE removes the client's sessions, and their lineage, with it.
        await q('DELETE FROM clients WHERE id = $1', [clientId])
        return rows.length
      })
    },
    async originAllowed (origin) {
      // A space inside the value would match across two list entries; strpos, unlike LIKE, has no wildcards.
      if (origin === '' || /\s/.test(origin)) return false
      return (await query("SELECT 1 FROM clients WHERE strpos(' ' || origins || ' ', ' ' || $1 || ' ') > 0 LIMIT 1", [origin])).rows.length > 0
    },

    async ensureSigningKey (alg, make, now) {
      const live = async (q: Query): Promise<KeyRow | undefined> =>
        (await q('SELECT * FROM signing_keys WHERE alg = $1 AND retired_at IS NULL ORDER BY created_at DESC LIMIT 1', [alg])).rows[0]
      const found = await live(query)
      if (found !== undefined) return toKey(found)
      // Instances starting together: one generates the key, the others find it.
      return toKey(await tx(async (q) => {
        await lock(q, `signing_key:${alg}`)
        const existing = await live(q)
        if (existing !== undefined) return existing
        const k = make()
        return (await q('INSERT INTO signing_keys (kid, alg, private_pem, public_jwk, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING *',
          [k.kid, k.alg, k.privatePem, k.publicJwk, now])).rows[0] as KeyRow
      }))
    },
    async publishedKeys (now) {
      return (await query('SELECT * FROM signing_keys WHERE expires_at IS NULL OR expires_at > $1 ORDER BY created_at DESC', [now])).rows.map(toKey)
    },
    async listKeys () {
      return (await query('SELECT kid, alg, public_jwk, created_at, retired_at, expires_at FROM signing_keys ORDER BY created_at DESC, kid')).rows.map(toPublicKey)
    },
    async rotateSigningKey ({ key, now, retiredUntil }) {
      return await tx(async (q) => {
        await lock(q, 'signing_key_rotation')
        // A key past its expiry signs nothing and verifies nothing any more: its private part goes.
        await q('DELETE FROM signing_keys WHERE expires_at IS NOT NULL AND expires_at <= $1', [now])
        const retired = (await q(`UPDATE signing_keys SET retired_at = $1, expires_at = $2 WHERE retired_at IS NULL
          RETURNING kid, alg, public_jwk, created_at, retired_at, expires_at`, [now, retiredUntil])).rows as PublicKeyRow[]
        await q('INSERT INTO signing_keys (kid, alg, private_pem, public_jwk, created_at) VALUES ($1, $2, $3, $4, $5)', [key.kid, key.alg, key.privatePem, key.publicJwk, now])
        return retired.map(toPublicKey)
      })
    },
    async longestClientAccessTtl () { return (await query('SELECT max(access_ttl) AS ttl FROM clients')).rows[0]?.ttl ?? null },
    async keysVersion () {
      const { rows } = await query("SELECT string_agg(kid || ':' || coalesce(retired_at::text, '') || ':' || coalesce(expires_at::text, ''), ',' ORDER BY kid) AS v FROM signing_keys")
      return rows[0]?.v ?? ''
    },
    async health () {
      try {
        return { schemaVersion: await schemaVersion(pool), expectedVersion }
      } catch (err) {
        throw unavailable(err)
      }
    },
    async countLiveSessions (now) {
      return (await query('SELECT count(*)::int AS n FROM sessions WHERE revoked_at IS NULL AND expires_at > $1 AND idle_expires_at > $1', [now])).rows[0]?.n ?? 0
    },

    async startSession (s) {
      const m = s.meta
      await tx(async (q) => {
        await q(`INSERT INTO sessions (id, user_id, client_id, scope, generation, user_agent, ip, device_id, created_at, last_used_at, idle_expires_at, expires_at)
          VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8, $8, $9, $10)`, [s.id, s.userId, s.clientId, s.scope, m.userAgent, m.ip, m.deviceId, s.now, s.idleExpiresAt, s.expiresAt])
        await q(`INSERT INTO refresh_tokens (digest, session_id, generation, parent_generation, issued_at, issued_ip, issued_user_agent)
          VALUES ($1, $2, 0, NULL, $3, $4, $5)`, [s.tokenDigest, s.id, s.now, m.ip, m.userAgent])
        await record(q, s.events, s.now)
      })
    },
    async refresh<V extends RefreshVerdict> (input: RefreshInput<V>) {
      // The store hands back the decision it was given, so the result carries V's own fields.
      return await refresh(input as RefreshInput) as RefreshResult<V>
    },
    async findSession (id) { return maybe((await query('SELECT * FROM sessions WHERE id = $1', [id])).rows[0], toSession) },
    async revokeSession ({ sessionId, reason, now, events }) {
      const { rows } = await query(`WITH s AS (UPDATE sessions SET revoked_at = $1, revoked_reason = $3 WHERE id = $4 AND revoked_at IS NULL RETURNING id),
        e AS (INSERT INTO security_events (at, type, user_id, session_id, client_id, ip, user_agent, reason, detail)
          ${EVENTS_FROM_JSON.replace('FROM json_to_recordset', 'FROM s, json_to_recordset')})
        SELECT count(*)::int AS n FROM s`, [now, eventsJson(events), reason, sessionId])
      return rows[0]?.n === 1
    },

    async findRefreshToken (digest) { return await readRefresh(digest) },
    async liveSessions (userId, now) {
      return (await query(`${SESSION_VIEW} WHERE s.user_id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND s.idle_expires_at > $2
        ORDER BY s.created_at DESC, s.id`, [userId, now])).rows.map((r: SessionViewRow) => toSessionView(r))
    },
    async sessionsOfUser (userId) {
      return (await query(`${SESSION_VIEW} WHERE s.user_id = $1 ORDER BY s.created_at DESC, s.id`, [userId])).rows.map((r: SessionViewRow) => toSessionView(r))
    },
    async revokeUserSessions (r) {
      return await tx(async (q) => {
        const events: SecurityEvent[] = []
        await revokeLiveSessions(q, { ...r, actor: r.actor ?? {} }, events)
        await record(q, events, r.now)
        return events
      })
    },
    async pruneSessions (before, limit) {
      // SKIP LOCKED: janitors of several instances take disjoint batches instead of waiting on each other.
      const { rows } = await query(`WITH v AS (SELECT id FROM sessions WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED),
        n AS (SELECT count(*)::int AS tokens FROM refresh_tokens WHERE session_id IN (SELECT id FROM v)),
        d AS (DELETE FROM sessions WHERE id IN (SELECT id FROM v) RETURNING 1)
        SELECT (SELECT count(*)::int FROM d) AS sessions, (SELECT tokens FROM n) AS tokens`, [before, limit])
      return { sessions: rows[0]?.sessions ?? 0, tokens: rows[0]?.tokens ?? 0 }
    },
    async pruneEvents (before, limit) {
      const { rowCount } = await query(`DELETE FROM security_events WHERE id IN
        (SELECT id FROM security_events WHERE at < $1 ORDER BY at LIMIT $2 FOR UPDATE SKIP LOCKED)`, [before, limit])
      return rowCount ?? 0
    },

    async loginFailures (username, source) {
      return maybe((await query('SELECT * FROM login_failures WHERE username = $1 AND source = $2', [username, source])).rows[0] as LoginFailureRow | undefined, toLoginFailures)
    },
    async hasLoginFailures (username) { return (await query('SELECT 1 FROM login_failures WHERE username = $1 LIMIT 1', [username])).rows.length > 0 },
    async recordLoginFailure (input) {
      return await tx(async (q): Promise<LoginFailures> => {
        // Attempts on one account from one source, on any instance, are counted one after the other.
        await lock(q, `login_failures:${JSON.stringify([input.username, input.source])}`)
        // A few stale rows per failure keep the table bounded without a janitor of its own.
        await q(`DELETE FROM login_failures WHERE (username, source) IN
          (SELECT username, source FROM login_failures WHERE updated_at < $1 AND locked_until < $2 ORDER BY updated_at LIMIT 16 FOR UPDATE SKIP LOCKED)`,
        [input.forgetBefore, input.now])
        const prev = maybe((await q('SELECT * FROM login_failures WHERE username = $1 AND source = $2', [input.username, input.source])).rows[0] as LoginFailureRow | undefined, toLoginFailures)
        const next = input.decide(prev)
        await q(`INSERT INTO login_failures (username, source, failures, locked_until, updated_at) VALUES ($1, $2, $3, $4, $5)
          ON CONFLICT (username, source) DO UPDATE SET failures = excluded.failures, locked_until = excluded.locked_until, updated_at = excluded.updated_at`,
        [input.username, input.source, next.failures, next.lockedUntil, input.now])
        await record(q, next.events, input.now)
        return { username: input.username, source: input.source, failures: next.failures, lockedUntil: next.lockedUntil, updatedAt: input.now }
      })
    },
    async clearLoginFailures ({ username, source, now, events }) {
      return await tx(async (q) => {
        const { rowCount } = source === undefined
          ? await q('DELETE FROM login_failures WHERE username = $1', [username])
          : await q('DELETE FROM login_failures WHERE username = $1 AND source = $2', [username, source])
        const n = rowCount ?? 0
        if (n > 0) await record(q, events, now)
        return n
      })
    },
    async deviceKnown (userId, deviceId) {
      return (await query('SELECT 1 FROM sessions WHERE user_id = $1 AND device_id = $2 LIMIT 1', [userId, deviceId])).rows.length > 0
    },

    async hitBudget (key, windowMs, now) {
      // One statement: concurrent hits on any instance queue on the row and each sees the other's count.
      // Pruned per hit, like SQLite's: a few rows whose window ended long ago (SKIP LOCKED: never waits).
      const { rows } = await query({
        name: 'tokenline_hit_budget',
        text: `WITH f AS (DELETE FROM budgets WHERE key IN
            (SELECT key FROM budgets WHERE reset_at < $4 AND key <> $1 ORDER BY reset_at LIMIT 16 FOR UPDATE SKIP LOCKED))
          INSERT INTO budgets (key, count, reset_at) VALUES ($1, 1, $2::bigint + $3::bigint)
          ON CONFLICT (key) DO UPDATE SET
            count = CASE WHEN budgets.reset_at <= $2 THEN 1 ELSE budgets.count + 1 END,
            reset_at = CASE WHEN budgets.reset_at <= $2 THEN $2::bigint + $3::bigint ELSE budgets.reset_at END
          RETURNING count, reset_at`
      }, [key, now, windowMs, now - BUDGET_STALE_MS])
      return toBudget(rows[0] as BudgetRow)
    },
    async peekBudget (key, now) {
      const { rows } = await query({ name: 'tokenline_peek_budget', text: 'SELECT count, reset_at FROM budgets WHERE key = $1 AND reset_at > $2' }, [key, now])
      return maybe(rows[0] as BudgetRow | undefined, toBudget) ?? { count: 0, resetAt: 0 }
    },

    async recordEvents (events, now) { await record(query, events, now) },
    async listEvents ({ userId, sessionId, limit = 1000 }) {
      const [where, value] = sessionId !== undefined ? ['WHERE session_id = $2', sessionId] : userId !== undefined ? ['WHERE user_id = $2', userId] : ['', undefined]
      const values = value === undefined ? [limit] : [limit, value]
      return (await query(`SELECT * FROM security_events ${where} ORDER BY id DESC LIMIT $1`, values)).rows.map((r: EventRow) => toEvent(r))
    },
    async lineage (sessionId) {
      return (await query('SELECT * FROM refresh_tokens WHERE session_id = $1 ORDER BY generation', [sessionId])).rows.map((r: TokenRow) => toToken(r))
    },

    async isEmpty () {
      const { rows } = await query(`SELECT NOT (EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM clients) OR EXISTS (SELECT 1 FROM signing_keys)
        OR EXISTS (SELECT 1 FROM sessions) OR EXISTS (SELECT 1 FROM security_events)) AS empty`)
      return rows[0].empty === true
    },
    exportRows () { return exportRows(pool, unavailable) },
    async importRows (batch) {
      if (batch.rows.length === 0) return
      const { columns } = COPY_TABLES[batch.kind]
      const list = columns.join(', ')
      await tx(async (q) => {
        // One statement per batch: the rows travel as one JSON array (BYTEA in its text form, \x and hex).
        await q(`INSERT INTO ${batch.kind} (${list}) SELECT ${list} FROM json_populate_recordset(NULL::${batch.kind}, $1::json)`, [rowsJson(batch)])
        // The events keep their ids: the identity goes on after the highest, so new events never collide.
        if (batch.kind === 'security_events') await q("SELECT setval(pg_get_serial_sequence('security_events', 'id'), (SELECT max(id) FROM security_events))")
      })
    },

    async close () { await pool.end() }
  }
}

/** Rows per page of `tokenline copy`: a page, never a table, is in memory at a time. */
const COPY_PAGE = 1000

/** A batch as the JSON array json_populate_recordset reads: each BYTEA in its text form (\x and hex), which it parses back. */
const rowsJson = (batch: CopyBatch): string => JSON.stringify(copyRows(batch).map((row) =>
  Object.fromEntries(Object.entries(row).map(([k, v]) => [k, Buffer.isBuffer(v) ? `\\x${v.toString('hex')}` : v]))))

/**
 * Every table, in CopyBatch order, a page at a time (keyset pagination on the primary key), all read in
 * one REPEATABLE READ transaction on one connection: one snapshot, so a copy taken while servers write
 * is consistent (no token without its session).
 */
async function * exportRows (pool: pg.Pool, unavailable: (err: unknown) => unknown): AsyncIterable<CopyBatch> {
  let client: pg.PoolClient
  try {
    client = await pool.connect()
  } catch (err) {
    throw unavailable(err)
  }
  let broken = false
  let open = false
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
    open = true
    for (const kind of COPY_ORDER) {
      const { columns, key } = COPY_TABLES[kind]
      const select = `SELECT ${columns.join(', ')} FROM ${kind}`
      const order = `ORDER BY ${key.join(', ')} LIMIT ${COPY_PAGE}`
      const next = `${select} WHERE (${key.join(', ')}) > (${key.map((_, i) => `$${i + 1}`).join(', ')}) ${order}`
      let rows = (await client.query(`${select} ${order}`)).rows as Array<Record<string, unknown>>
      while (rows.length > 0) {
        const last = rows[rows.length - 1] as Record<string, unknown>
        yield copyBatch(kind, rows)
        if (rows.length < COPY_PAGE) break
        rows = (await client.query(next, key.map((k) => last[k]))).rows
      }
    }
    await client.query('COMMIT')
    open = false
  } catch (err) {
    broken = true
    throw unavailable(err)
  } finally {
    // Stopped early (its consumer failed): the snapshot ends. A connection that failed is not reused.
    if (open && !broken) await client.query('ROLLBACK').catch(() => { broken = true })
    client.release(broken)
  }
}
