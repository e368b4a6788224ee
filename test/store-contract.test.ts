/*
 * The store contract (db/store.ts), run against each engine: a SQLite file and a PostgreSQL database.
 * Every operation of the interface, what it returns, what it leaves behind, and the lineage invariants
 * after the writes. The server's behaviour rests on exactly these promises, so an engine that passes
 * here behaves like the other one behind the same HTTP API. PostgreSQL is skipped (with how to enable
 * it) where none is available; in CI it always runs.
 */
import { createHash, randomBytes } from 'node:crypto'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { openStore } from '../db/open.js'
import type { RefreshInput, RefreshState, RefreshVerdict, SecurityEvent, Store } from '../db/store.js'
import { assertLineage } from './invariants.js'
import { sharedPostgres, skipWithoutPostgres } from './postgres.js'

const OPTS = { pgPoolSize: 5, pgStatementTimeoutMs: 5000 }
const T0 = 1_700_000_000_000
const HOUR = 3_600_000
const META = { ip: '192.0.2.1', userAgent: 'contract/1.0', deviceId: null }

const digest = (s: string): Buffer => createHash('sha256').update(s).digest()
const id = (prefix: string): string => `${prefix}-${randomBytes(6).toString('hex')}`

interface Engine { name: string, database: (t: Test) => Promise<string | undefined> }

const engines: Engine[] = [
  { name: 'sqlite', database: async (t) => join(t.testdir({}), 'contract.db') },
  {
    name: 'postgres',
    database: async (t) => {
      const server = await sharedPostgres()
      if (server === undefined) skipWithoutPostgres(t)
      return await server?.database(t)
    }
  }
]

/** A fresh store on a fresh database, closed when `t` ends; with user alice and client app. */
async function fresh (t: Test, engine: Engine): Promise<{ store: Store, database: string, alice: string } | undefined> {
  const database = await engine.database(t)
  if (database === undefined) return undefined
  const store = await openStore(database, OPTS)
  t.teardown(async () => await store.close())
  const alice = id('user')
  await store.createUser({ id: alice, username: 'alice', passwordHash: '$argon2id$fake', now: T0 })
  await store.createClient({ id: 'app', secretDigest: null, delivery: 'body', grants: 'password refresh_token', scopes: 'read', origins: 'https://a.example https://b.example', accessTtl: null, idleTtl: null, sessionTtl: null, now: T0 })
  return { store, database, alice }
}

/** A session of `userId` with its login token `token`. */
async function login (store: Store, userId: string, token: string, opts: { now?: number, expiresAt?: number, deviceId?: string | null, events?: SecurityEvent[], clientId?: string } = {}): Promise<string> {
  const sessionId = id('sess')
  const now = opts.now ?? T0
  const clientId = opts.clientId ?? 'app'
  await store.startSession({
    id: sessionId,
    userId,
    clientId,
    scope: 'read',
    meta: { ...META, deviceId: opts.deviceId ?? null },
    now,
    idleExpiresAt: now + 24 * HOUR,
    expiresAt: opts.expiresAt ?? now + 30 * 24 * HOUR,
    tokenDigest: digest(token),
    events: opts.events ?? [{ type: 'session_started', userId, sessionId, clientId }]
  })
  return sessionId
}

/** A refresh of `token` into `child` whose verdict is: rotate while unused, replay the successor if used, never revoke. */
function refreshInput (token: string, child: string, now = T0 + 1000, judge?: (s: RefreshState) => RefreshVerdict): RefreshInput {
  return {
    digest: digest(token),
    now,
    meta: { ip: '198.51.100.7', userAgent: 'contract/2.0', deviceId: 'dev-1' },
    childDigest: digest(child),
    sealed: Buffer.from(`sealed:${child}`),
    decide: judge ?? ((s) => s.token.usedAt === null
      ? { kind: 'rotate', idleExpiresAt: now + 24 * HOUR, events: [{ type: 'token_rotated', sessionId: s.session.id, userId: s.user.id }] }
      : { kind: 'replay', events: [] })
  }
}

for (const engine of engines) {
  t.test(engine.name, async (t) => {
    t.test('users: create, find by name and id, list in name order, a taken name refused', async (t) => {
      const s = await fresh(t, engine)
      if (s === undefined) return
      const { store, alice } = s
      await store.createUser({ id: 'u-b', username: 'bob', passwordHash: 'h-b', now: T0 + 5 })
      t.match(await store.findUserByUsername('alice'), { id: alice, username: 'alice', passwordHash: '$argon2id$fake', disabledAt: null, createdAt: T0, updatedAt: T0 })
      t.equal((await store.findUserById('u-b'))?.username, 'bob')
      t.equal(await store.findUserById('nobody'), undefined, 'an unknown id is undefined')
      t.equal(await store.findUserByUsername('ALICE'), undefined, 'names are matched exactly (normalised by the caller)')
      t.same((await store.listUsers()).map((u) => u.username), ['alice', 'bob'])
      await t.rejects(store.createUser({ id: 'u-c', username: 'bob', passwordHash: 'x', now: T0 }), 'a second bob is refused')
      t.same((await store.listUsers()).length, 2, 'and nothing was added')
    })

    t.test('clients: create, find with the secret digest intact, list, origins matched exactly, longest access lifetime', async (t) => {
      const s = await fresh(t, engine)
      if (s === undefined) return
      const { store } = s
      t.equal(await store.longestClientAccessTtl(), null, 'no override yet')
      const secret = digest('s3cret')
      await store.createClient({ id: 'svc', secretDigest: secret, delivery: 'both', grants: 'password', scopes: '', origins: '', accessTtl: 300, idleTtl: 60, sessionTtl: 600, now: T0 + 1 })
      const svc = await store.findClient('svc')
      t.ok(svc?.secretDigest?.equals(secret), 'the digest reads back byte for byte')
      t.match(svc, { delivery: 'both', grants: 'password', accessTtl: 300, idleTtl: 60, sessionTtl: 600, createdAt: T0 + 1 })
      t.equal((await store.findClient('app'))?.secretDigest, null, 'a public client has none')
      t.same((await store.listClients()).map((c) => c.id), ['app', 'svc'])
      t.equal(await store.longestClientAccessTtl(), 300)
      t.ok(await store.originAllowed('https://a.example'))
      t.ok(await store.originAllowed('https://b.example'))
      for (const o of ['https://a.exampl', 'a.example', 'https://a.example https://b.example', '', '%', '_', 'https://%.example']) {
        t.notOk(await store.originAllowed(o), `not allowed: ${JSON.stringify(o)}`)
      }
    })

    t.test('clients: an update changes only the given fields, with its events; an unknown client is undefined', async (t) => {
      const s = await fresh(t, engine)
      if (s === undefined) return
      const { store } = s
      const first = await store.updateClient({ clientId: 'app', change: { origins: 'https://c.example' }, now: T0 + 5, events: [{ type: 'client_updated', clientId: 'app', detail: { n: 1 } }] })
      t.match(first?.before, { id: 'app', delivery: 'body', grants: 'password refresh_token', scopes: 'read', origins: 'https://a.example https://b.example', createdAt: T0 })
      t.match(first?.after, { id: 'app', delivery: 'body', grants: 'password refresh_token', scopes: 'read', origins: 'https://c.example', createdAt: T0 })
      t.notOk(await store.originAllowed('https://a.example'), 'an origin taken off the list is refused at once')
      t.ok(await store.originAllowed('https://c.example'))
      const second = await store.updateClient({ clientId: 'app', change: { delivery: 'cookie', grants: 'refresh_token', scopes: '' }, now: T0 + 6, events: [{ type: 'client_updated', clientId: 'app', detail: { n: 2 } }] })
      t.match(second?.after, { delivery: 'cookie', grants: 'refresh_token', scopes: '', origins: 'https://c.example' }, 'an empty scope list is a change, not an omission')
      t.match(await store.findClient('app'), { delivery: 'cookie', grants: 'refresh_token', scopes: '', origins: 'https://c.example', secretDigest: null })
      t.same((await store.updateClient({ clientId: 'app', change: {}, now: T0 + 7, events: [] }))?.after, second?.after, 'no change changes nothing')
      t.equal(await store.updateClient({ clientId: 'nobody', change: { delivery: 'body' }, now: T0 + 8, events: [{ type: 'client_updated', clientId: 'nobody' }] }), undefined)
      t.same((await store.listEvents({})).filter((e) => e.type === 'client_updated').map((e) => [e.clientId, e.at, e.detail]),
        [['app', T0 + 6, '{"n":2}'], ['app', T0 + 5, '{"n":1}']], 'events recorded for the updates that happened only')
    })

    t.test('clients: removal revokes the live sessions with events, then deletes the client, its sessions and their lineage', async (t) => {
      const s = await fresh(t, engine)
      if (s === undefined) return
      const { store, alice, database } = s
      await store.createClient({ id: 'other', secretDigest: null, delivery: 'body', grants: 'password refresh_token', scopes: '', origins: 'https://o.example', accessTtl: null, idleTtl: null, sessionTtl: null, now: T0 })
      const a = await login(store, alice, 'a0', { now: T0 })
      const b = await login(store, alice, 'b0', { now: T0 + 1 })
      const revoked = await login(store, alice, 'r0', { now: T0 + 2 })
      await store.revokeSession({ sessionId: revoked, reason: 'logout', now: T0 + 3, events: [] })
      const expired = await login(store, alice, 'x0', { now: T0 - 2 * HOUR, expiresAt: T0 - HOUR })
      const kept = await login(store, alice, 'o0', { now: T0 + 4, clientId: 'other' })
      t.equal((await store.refresh(refreshInput('a0', 'a1', T0 + 10))).kind, 'rotated')

      const events: SecurityEvent[] = [{ type: 'client_removed', clientId: 'app', detail: { via: 'test' } }]
      t.equal(await store.removeClient({ clientId: 'app', now: T0 + 100, events, actor: { detail: { via: 'test' } } }), 2, 'the two live sessions, not the revoked or expired one')
      t.same(events.map((e) => [e.type, e.sessionId ?? null, e.reason ?? null]),
        [['client_removed', null, null], ['session_revoked', a, 'client_removed'], ['session_revoked', b, 'client_removed']], 'the revocations appended to the caller\'s events, oldest session first')
      t.equal(await store.findClient('app'), undefined, 'the client is gone')
      t.same((await store.listClients()).map((c) => c.id), ['other'])
      t.notOk(await store.originAllowed('https://a.example'), 'its origins with it')
      for (const sid of [a, b, revoked, expired]) t.equal(await store.findSession(sid), undefined, 'its sessions are deleted')
      t.same(await store.lineage(a), [], 'with their lineage')
      t.equal((await store.refresh(refreshInput('a1', 'a2', T0 + 200))).kind, 'not_found', 'its live token no longer works')
      t.equal(await store.findRefreshToken(digest('b0')), undefined)
      t.ok(await store.findSession(kept), 'another client\'s session stays')
      t.equal((await store.refresh(refreshInput('o0', 'o1', T0 + 200))).kind, 'rotated', 'and works')

      const trail = await store.listEvents({ userId: alice })
      t.same(trail.filter((e) => e.type === 'session_revoked' && e.reason === 'client_removed').map((e) => [e.sessionId, e.clientId, e.at, e.detail]).reverse(),
        [[a, 'app', T0 + 100, '{"via":"test"}'], [b, 'app', T0 + 100, '{"via":"test"}']], 'the audit trail keeps the revocations, with the actor')
      t.ok(trail.some((e) => e.type === 'session_started' && e.sessionId === a), 'and what came before')
      t.equal((await store.listEvents({})).filter((e) => e.type === 'client_removed').length, 1)

      t.equal(await store.removeClient({ clientId: 'app', now: T0 + 300, events: [{ type: 'client_removed', clientId: 'app' }] }), undefined, 'removed once')
      t.equal((await store.listEvents({})).filter((e) => e.type === 'client_removed').length, 1, 'and recorded once')
      await t.rejects(login(store, alice, 'late0', { now: T0 + 400 }), 'no session can start on a removed client')
      await assertLineage(t, database)
    })

    t.test('signing keys: one live key per algorithm however many ask at once, rotation retires and expires', async (t) => {
      const s = await fresh(t, engine)
      if (s === undefined) return
      const { store } = s
      let made = 0
      const make = (): { kid: string, alg: string, privatePem: string, publicJwk: string } => ({ kid: `k${++made}`, alg: 'ES256', privatePem: `pem${made}`, publicJwk: `{"kid":"k${made}"}` })
      const keys = await Promise.all(Array.from({ length: 6 }, async () => await store.ensureSigningKey('ES256', make, T0)))
      t.equal(made, 1, 'generated once')
      t.same(new Set(keys.map((k) => k.kid)), new Set(['k1']), 'every caller got the same key')
      t.match(keys[0], { kid: 'k1', alg: 'ES256', privatePem: 'pem1', retiredAt: null, expiresAt: null, createdAt: T0 })
      const v1 = await store.keysVersion()
      const retired = await store.rotateSigningKey({ key: { kid: 'k2', alg: 'ES256', privatePem: 'pem2', publicJwk: '{}' }, now: T0 + HOUR, retiredUntil: T0 + 2 * HOUR })
      t.same(retired.map((k) => [k.kid, k.retiredAt, k.expiresAt]), [['k1', T0 + HOUR, T0 + 2 * HOUR]])
      t.not(await store.keysVersion(), v1, 'the version moves with a rotation')
      t.equal((await store.ensureSigningKey('ES256', make, T0 + HOUR)).kid, 'k2', 'the new key signs')
      t.same((await store.publishedKeys(T0 + HOUR)).map((k) => k.kid), ['k2', 'k1'], 'both published, newest first')
      t.same((await store.publishedKeys(T0 + 2 * HOUR)).map((k) => k.kid), ['k2'], 'the retired key leaves the JWKS at its expiry')
      const listed = await store.listKeys()
      t.same(listed.map((k) => k.kid), ['k2', 'k1'])
      t.notOk(listed.some((k) => 'privatePem' in k), 'listings carry no private part')
      await store.rotateSigningKey({ key: { kid: 'k3', alg: 'ES256', privatePem: 'pem3', publicJwk: '{}' }, now: T0 + 3 * HOUR, retiredUntil: T0 + 4 * HOUR })
      t.same((await store.listKeys()).map((k) => k.kid), ['k3', 'k2'], 'a key past its expiry is deleted by the next rotation')
    })

    t.test('health: the schema is this build\'s', async (t) => {
      const s = await fresh(t, engine)
      if (s === undefined) return
      const h = await s.store.health()
      t.ok(h.schemaVersion > 0)
      t.equal(h.schemaVersion, h.expectedVersion)
    })

    t.test('sessions: login, rotation, replay, rejection with revocation, unknown tokens', async (t) => {
      const s = await fresh(t, engine)
      if (s === undefined) return
      const { store, alice, database } = s
      const sid = await login(store, alice, 'rt0')
      t.match(await store.findSession(sid), { userId: alice, clientId: 'app', scope: 'read', generation: 0, ip: META.ip, userAgent: META.userAgent, revokedAt: null })
      t.equal((await store.listEvents({ sessionId: sid }))[0]?.type, 'session_started', 'the login\'s events are recorded with it')

      const r1 = await store.refresh(refreshInput('rt0', 'rt1'))
      t.equal(r1.kind, 'rotated')
      if (r1.kind === 'rotated') t.equal(r1.generation, 1)
      const [g0, g1] = await store.lineage(sid)
      t.match(g0, { generation: 0, parentGeneration: null, usedAt: T0 + 1000, usedIp: '198.51.100.7', usedUserAgent: 'contract/2.0', usedDeviceId: 'dev-1' })
      t.same(g0?.successorSealed, Buffer.from('sealed:rt1'), 'the sealed successor is kept on the parent')
      t.match(g1, { generation: 1, parentGeneration: 0, usedAt: null, issuedAt: T0 + 1000, issuedIp: '198.51.100.7' })
      t.ok(g1?.digest.equals(digest('rt1')))
      t.match(await store.findSession(sid), { generation: 1, lastUsedAt: T0 + 1000, idleExpiresAt: T0 + 1000 + 24 * HOUR })

      const replay = await store.refresh(refreshInput('rt0', 'other'))
      t.equal(replay.kind, 'replayed')
      if (replay.kind === 'replayed') t.same(replay.sealed, Buffer.from('sealed:rt1'), 'the replay hands back the one successor')
      t.equal((await store.lineage(sid)).length, 2, 'a replay issues nothing')

      const rejected = await store.refresh(refreshInput('rt0', 'x', T0 + 2000, () => ({ kind: 'reject', revoke: 'reuse_detected', events: [{ type: 'reuse_detected', sessionId: sid }] })))
      t.equal(rejected.kind, 'rejected')
      t.match(await store.findSession(sid), { revokedAt: T0 + 2000, revokedReason: 'reuse_detected' })
      t.equal((await store.listEvents({ sessionId: sid }))[0]?.type, 'reuse_detected')
      const late = await store.refresh(refreshInput('rt1', 'rt2', T0 + 3000, (st) => st.session.revokedAt === null
        ? { kind: 'rotate', idleExpiresAt: T0 + HOUR, events: [] }
        : { kind: 'reject', revoke: 'again', events: [] }))
      t.equal(late.kind, 'rejected', 'the newest token of a revoked session is refused')
      t.equal((await store.findSession(sid))?.revokedReason, 'reuse_detected', 'a second revocation keeps the first reason and time')

      t.same(await store.refresh(refreshInput('never-issued', 'y')), { kind: 'not_found' })
      t.equal(await store.findRefreshToken(digest('never-issued')), undefined)
      const found = await store.findRefreshToken(digest('rt1'))
      t.match(found, { token: { generation: 1 }, session: { id: sid }, user: { id: alice } })
      await assertLineage(t, database)
    })

    t.test('a rotation that cannot be written changes nothing: a rotate verdict on a revoked session', async (t) => {
      const s = await fresh(t, engine)
      if (s === undefined) return
      const { store, alice, database } = s
      const sid = await login(store, alice, 'rt0')
      t.ok(await store.revokeSession({ sessionId: sid, reason: 'logout', now: T0 + 10, events: [{ type: 'session_revoked', sessionId: sid }] }))
      // A verdict that ignores the revocation: the store must still not rotate (its own compare-and-set).
      const verdicts: string[] = []
      const r = await store.refresh(refreshInput('rt0', 'rt1', T0 + 20, (st) => {
        verdicts.push(st.session.revokedAt === null ? 'live' : 'revoked')
        return verdicts.length === 1 && st.session.revokedAt === null
          ? { kind: 'rotate', idleExpiresAt: T0 + HOUR, events: [] }
          : { kind: 'reject', events: [] }
      }))
      t.equal(r.kind, 'rejected')
      t.equal((await store.lineage(sid)).length, 1, 'no child')
      t.equal((await store.lineage(sid))[0]?.usedAt, null, 'the token was not consumed')
      await assertLineage(t, database)
    })

    t.test('twenty concurrent refreshes of one token: exactly one rotation, every other a replay of its successor', async (t) => {
      const s = await fresh(t, engine)
      if (s === undefined) return
      const { store, alice, database } = s
      const sid = await login(store, alice, 'rt0')
      const results = await Promise.all(Array.from({ length: 20 }, async (_, i) => await store.refresh(refreshInput('rt0', `child-${i}`))))
      const rotated = results.filter((r) => r.kind === 'rotated')
      t.equal(rotated.length, 1, 'one rotation')
      const sealed = new Set(results.filter((r) => r.kind === 'replayed').map((r) => (r as { sealed: Buffer }).sealed.toString()))
      t.equal(sealed.size, 1, 'the replays agree on one successor')
      t.equal((await store.lineage(sid)).length, 2)
      t.equal((await store.findSession(sid))?.generation, 1)
      await assertLineage(t, database)
    })

    t.test('revocations: one session once, a user\'s sessions but one with the actor\'s facts, on password change and disable', async (t) => {
      const s = await fresh(t, engine)
      if (s === undefined) return
      const { store, alice, database } = s
      const a = await login(store, alice, 'a0', { now: T0 })
      const b = await login(store, alice, 'b0', { now: T0 + 1 })
      const c = await login(store, alice, 'c0', { now: T0 + 2 })
      const expired = await login(store, alice, 'd0', { now: T0 - 2 * HOUR, expiresAt: T0 - HOUR })
      t.equal(await store.countLiveSessions(T0 + 10), 3, 'the expired one is not live')
      t.same((await store.liveSessions(alice, T0 + 10)).map((v) => v.id), [c, b, a], 'newest first')
      t.same((await store.sessionsOfUser(alice)).map((v) => v.id), [c, b, a, expired], 'every state')
      t.match((await store.liveSessions(alice, T0 + 10))[0], { lastIp: META.ip, lastUserAgent: META.userAgent })

      t.equal(await store.revokeSession({ sessionId: a, reason: 'logout', now: T0 + 20, events: [{ type: 'session_revoked', sessionId: a, reason: 'logout' }] }), true)
      t.equal(await store.revokeSession({ sessionId: a, reason: 'again', now: T0 + 30, events: [{ type: 'session_revoked', sessionId: a, reason: 'again' }] }), false, 'only once')
      t.same((await store.listEvents({ sessionId: a })).filter((e) => e.type === 'session_revoked').map((e) => e.reason), ['logout'], 'its event only the first time')

      const events = await store.revokeUserSessions({ userId: alice, reason: 'logout_all', now: T0 + 40, except: c, actor: { ip: '203.0.113.9', userAgent: 'admin/1', detail: { by: 'api' } } })
      t.same(events.map((e) => [e.type, e.sessionId, e.reason, e.ip, e.userAgent, e.clientId]), [['session_revoked', b, 'logout_all', '203.0.113.9', 'admin/1', 'app']])
      t.equal((await store.findSession(c))?.revokedAt, null, 'the excepted session stays')
      t.equal((await store.findSession(expired))?.revokedAt, null, 'an expired one is not revoked again')
      t.equal((await store.listEvents({ sessionId: b }))[0]?.detail, JSON.stringify({ by: 'api' }), 'the event is recorded with its detail as JSON')

      const n = await store.setPasswordHash({ userId: alice, passwordHash: 'new-hash', now: T0 + 50, revokeReason: 'password_changed', events: [{ type: 'password_changed', userId: alice }] })
      t.equal(n, 1, 'the last live session goes with the password change')
      t.match(await store.findUserById(alice), { passwordHash: 'new-hash', updatedAt: T0 + 50 })
      t.equal((await store.findSession(c))?.revokedReason, 'password_changed')

      const d = await login(store, alice, 'e0', { now: T0 + 60 })
      t.equal(await store.setUserDisabled({ userId: alice, disabled: true, now: T0 + 70, events: [] }), 1)
      t.match(await store.findUserById(alice), { disabledAt: T0 + 70 })
      t.equal((await store.findSession(d))?.revokedReason, 'account_disabled')
      t.equal(await store.setUserDisabled({ userId: alice, disabled: false, now: T0 + 80, events: [] }), 0)
      t.match(await store.findUserById(alice), { disabledAt: null })
      t.equal(await store.countLiveSessions(T0 + 90), 0)
      await assertLineage(t, database)
    })

    t.test('pruning: sessions past their absolute expiry with their lineage, in bounded batches; old events', async (t) => {
      const s = await fresh(t, engine)
      if (s === undefined) return
      const { store, alice, database } = s
      const old = await Promise.all([0, 1, 2].map(async (i) => await login(store, alice, `old${i}`, { now: T0 - 3 * HOUR, expiresAt: T0 - HOUR + i })))
      await store.refresh(refreshInput('old0', 'old0-1', T0 - 2 * HOUR))
      const keep = await login(store, alice, 'keep0')
      t.same(await store.pruneSessions(T0, 2), { sessions: 2, tokens: 3 }, 'a batch of two: three tokens between them')
      t.same(await store.pruneSessions(T0, 2), { sessions: 1, tokens: 1 })
      t.same(await store.pruneSessions(T0, 2), { sessions: 0, tokens: 0 })
      for (const sid of old) t.equal(await store.findSession(sid), undefined)
      t.same(await store.lineage(old[0] as string), [], 'the lineage went with its session')
      t.ok(await store.findSession(keep))

      await store.recordEvents([{ type: 'a' }, { type: 'b' }], T0 - 10)
      await store.recordEvents([{ type: 'c' }], T0 + 10)
      const older = (await store.listEvents({})).filter((e) => e.at < T0).length
      t.ok(older >= 3)
      t.equal(await store.pruneEvents(T0, 1), 1, 'at most the limit')
      t.equal(await store.pruneEvents(T0, 100), older - 1, 'then the rest older than the cutoff')
      t.notOk((await store.listEvents({})).some((e) => e.at < T0), 'nothing older remains')
      await assertLineage(t, database)
    })

    t.test('events: recorded in order, listed newest first, by user, by session, limited', async (t) => {
      const s = await fresh(t, engine)
      if (s === undefined) return
      const { store, alice } = s
      const sid = await login(store, alice, 'rt0', { events: [] })
      await store.recordEvents([
        { type: 'one', userId: alice, sessionId: sid, clientId: 'app', ip: '192.0.2.9', userAgent: 'ua', reason: 'r', detail: { n: 1 } },
        { type: 'two', userId: alice },
        { type: 'three' }
      ], T0 + 5)
      const all = await store.listEvents({})
      t.same(all.map((e) => e.type), ['three', 'two', 'one'], 'newest first, in the order recorded')
      t.ok(all.every((e, i) => i === 0 || (all[i - 1] as { id: number }).id > e.id), 'ids increase with recording')
      t.match(all[2], { at: T0 + 5, userId: alice, sessionId: sid, clientId: 'app', ip: '192.0.2.9', userAgent: 'ua', reason: 'r', detail: '{"n":1}' })
      t.match(all[0], { userId: null, sessionId: null, clientId: null, ip: null, userAgent: null, reason: null, detail: null })
      t.same((await store.listEvents({ userId: alice })).map((e) => e.type), ['two', 'one'])
      t.same((await store.listEvents({ sessionId: sid })).map((e) => e.type), ['one'])
      t.same((await store.listEvents({ limit: 1 })).map((e) => e.type), ['three'])
    })

    t.test('login failures: counted one after another under concurrency, per source, cleared, forgotten when stale', async (t) => {
      const s = await fresh(t, engine)
      if (s === undefined) return
      const { store } = s
      t.equal(await store.loginFailures('alice', ''), undefined)
      t.notOk(await store.hasLoginFailures('alice'))
      const input = (source: string, now: number): Parameters<Store['recordLoginFailure']>[0] => ({
        username: 'alice',
        source,
        now,
        forgetBefore: now - 24 * HOUR,
        decide: (prev) => ({ failures: (prev?.failures ?? 0) + 1, lockedUntil: (prev?.failures ?? 0) + 1 >= 5 ? now + 60_000 : 0, events: [{ type: 'login_failed', reason: source }] })
      })
      await Promise.all(Array.from({ length: 10 }, async () => await store.recordLoginFailure(input('', T0))))
      t.match(await store.loginFailures('alice', ''), { failures: 10, lockedUntil: T0 + 60_000, updatedAt: T0 }, 'ten concurrent failures, ten counted')
      await store.recordLoginFailure(input('dev-key', T0 + 1))
      t.equal((await store.loginFailures('alice', 'dev-key'))?.failures, 1, 'a known device counts apart')
      t.ok(await store.hasLoginFailures('alice'))
      t.equal(await store.clearLoginFailures({ username: 'alice', source: 'dev-key', now: T0 + 2, events: [{ type: 'unlocked' }] }), 1)
      t.equal(await store.loginFailures('alice', 'dev-key'), undefined)
      t.equal(await store.clearLoginFailures({ username: 'alice', now: T0 + 3, events: [{ type: 'unlocked' }] }), 1)
      t.equal(await store.clearLoginFailures({ username: 'alice', now: T0 + 4, events: [{ type: 'unlocked' }] }), 0)
      t.equal((await store.listEvents({})).filter((e) => e.type === 'unlocked').length, 2, 'events only when something was cleared')
      t.notOk(await store.hasLoginFailures('alice'))

      await store.recordLoginFailure(input('', T0))
      await store.recordLoginFailure({ ...input('', T0 + 25 * HOUR), username: 'bob' })
      t.equal(await store.loginFailures('alice', ''), undefined, 'a counter idle past the cutoff is forgotten by a later failure')
    })

    t.test('devices: known once a session of the user started with it', async (t) => {
      const s = await fresh(t, engine)
      if (s === undefined) return
      const { store, alice } = s
      t.notOk(await store.deviceKnown(alice, 'phone'))
      await login(store, alice, 'rt0', { deviceId: 'phone' })
      t.ok(await store.deviceKnown(alice, 'phone'))
      t.notOk(await store.deviceKnown(alice, 'tablet'))
      t.notOk(await store.deviceKnown('someone-else', 'phone'))
    })

    t.test('request budgets: counted across callers, a window reopens at its end, peeking counts nothing', async (t) => {
      const s = await fresh(t, engine)
      if (s === undefined) return
      const { store } = s
      t.same(await store.peekBudget('k', T0), { count: 0, resetAt: 0 })
      const hits = await Promise.all(Array.from({ length: 10 }, async () => await store.hitBudget('k', 60_000, T0)))
      t.same(hits.map((h) => h.count).sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'no hit lost, none counted twice')
      t.same(await store.peekBudget('k', T0 + 1), { count: 10, resetAt: T0 + 60_000 })
      t.same(await store.peekBudget('k', T0 + 2), { count: 10, resetAt: T0 + 60_000 }, 'peeking counts nothing')
      t.same(await store.hitBudget('other', 60_000, T0), { count: 1, resetAt: T0 + 60_000 }, 'keys count apart')
      t.same(await store.peekBudget('k', T0 + 60_000), { count: 0, resetAt: 0 }, 'the window is over at its end')
      t.same(await store.hitBudget('k', 60_000, T0 + 60_000), { count: 1, resetAt: T0 + 120_000 }, 'and the next hit opens a new one')
    })
  })
}

t.test('postgres: instances starting together migrate once; janitors running together split the work', async (t) => {
  const server = await sharedPostgres()
  if (server === undefined) return skipWithoutPostgres(t)
  const database = await server.database(t)
  const stores = await Promise.all(Array.from({ length: 4 }, async () => await openStore(database, OPTS)))
  t.teardown(async () => { for (const s of stores) await s.close() })
  const health = await Promise.all(stores.map(async (s) => await s.health()))
  t.ok(health.every((h) => h.schemaVersion === h.expectedVersion), 'all four at the latest schema')
  const { default: pg } = await import('pg')
  const c = new pg.Client({ connectionString: database })
  await c.connect()
  const applied = (await c.query<{ version: number, n: string }>('SELECT version, count(*) AS n FROM tokenline_migrations GROUP BY version ORDER BY version')).rows
  await c.end()
  t.ok(applied.length > 0 && applied.every((r) => r.n === '1'), `each migration applied exactly once (${JSON.stringify(applied)})`)

  const [a] = stores as [Store, ...Store[]]
  const alice = id('user')
  await a.createUser({ id: alice, username: 'alice', passwordHash: 'h', now: T0 })
  await a.createClient({ id: 'app', secretDigest: null, delivery: 'body', grants: 'refresh_token', scopes: '', origins: '', accessTtl: null, idleTtl: null, sessionTtl: null, now: T0 })
  for (let i = 0; i < 60; i++) await login(a, alice, `old-${i}`, { now: T0 - 2 * HOUR, expiresAt: T0 - HOUR })
  // Four janitors at once, in small batches, until none finds anything: no error, no session deleted twice.
  const totals = await Promise.all(stores.map(async (s) => {
    let n = 0
    for (;;) {
      const r = await s.pruneSessions(T0, 5)
      if (r.sessions === 0) return n
      n += r.sessions
    }
  }))
  t.equal(totals.reduce((x, y) => x + y, 0), 60, `the 60 expired sessions deleted once between them (${totals.join(' + ')})`)
  t.equal(await a.countLiveSessions(T0 - 2 * HOUR + 1), 0)
  await assertLineage(t, database)
})
