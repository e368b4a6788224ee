import Fastify from 'fastify'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import t from 'tap'
import { prune } from '../server/sessions/janitor.js'
import tokenline from '../server/plugin.js'
import { build, CHEAP_ARGON2, sidOf, TestClock, type Harness } from './helpers.js'
import { assertLineage } from './invariants.js'
import { tokenline as cli } from './session-helpers.js'

/*
 * The janitor: sessions past their absolute expiry go, with their lineage, however they
 * ended; everything else stays — in particular every consumed token of a live session, so a replay
 * is still recognised as reuse. Old security events go after the retention period.
 */

const HOUR = 3600
const DAY = 86400

async function rotate (h: Harness, rt: string, times: number): Promise<string[]> {
  const chain = [rt]
  for (let i = 0; i < times; i++) {
    const r = await h.refresh(chain.at(-1) as string)
    if (r.status !== 200) throw new Error(JSON.stringify(r.body))
    chain.push(r.body.refresh_token as string)
  }
  return chain
}

async function count (h: Harness, table: 'sessions' | 'refresh_tokens' | 'security_events'): Promise<number> {
  const { default: Database } = await import('better-sqlite3')
  const db = new Database(h.database, { readonly: true })
  try {
    return (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n
  } finally {
    db.close()
  }
}

t.test('pruning removes exactly the sessions past their absolute expiry, and reuse detection keeps working', async (t) => {
  const h = await build(t, { sessionTtl: 10 * DAY, idleTtl: 3 * DAY, reuseGrace: 0 })
  const store = h.app.tokenline.store

  // Day 0: `old` (3 tokens) and `oldRevoked` (1 token) start; both will be past their absolute expiry.
  const old = await h.login()
  await rotate(h, old.refresh_token as string, 2)
  const oldRevoked = await h.login()
  await store.revokeSession({ sessionId: sidOf(oldRevoked.access_token), reason: 'logout', now: h.clock.now(), events: [] })

  // Day 5: `idle` (goes idle on day 8, within its absolute lifetime), `revoked`, and `live`.
  h.clock.advance(5 * DAY)
  const idle = await h.login()
  const revoked = await h.login()
  await store.revokeSession({ sessionId: sidOf(revoked.access_token), reason: 'logout', now: h.clock.now(), events: [] })
  const live = await h.login()
  h.clock.advance(HOUR)
  const liveChain = await rotate(h, live.refresh_token as string, 3)
  h.clock.advance(3 * DAY - HOUR)
  liveChain.push(...(await rotate(h, liveChain.at(-1) as string, 1)).slice(1))

  // Day 10: `old` and `oldRevoked` reach their absolute expiry.
  h.clock.advance(2 * DAY)
  t.equal(await count(h, 'sessions'), 5)
  t.equal(await count(h, 'refresh_tokens'), 3 + 1 + 1 + 1 + 5)

  const report = await h.app.tokenlineJanitor.run()
  t.same(report, { sessions: 2, tokens: 4, events: 0 }, 'two sessions and their four tokens')
  t.equal(await store.findSession(sidOf(old.access_token)), undefined, 'the expired session is gone')
  t.equal(await store.findSession(sidOf(oldRevoked.access_token)), undefined, 'so is the expired revoked one')
  t.same(await store.lineage(sidOf(old.access_token)), [], 'with its lineage (ON DELETE CASCADE)')
  for (const kept of [idle, revoked, live]) t.ok(await store.findSession(sidOf(kept.access_token)), 'sessions within their absolute lifetime stay, idle and revoked ones too')
  t.equal(await count(h, 'refresh_tokens'), 7, 'their lineage stays whole')
  t.same((await store.lineage(sidOf(live.access_token))).map((x) => x.usedAt !== null), [true, true, true, true, false], 'consumed tokens of the live session are kept')

  const pruned = await h.refresh(old.refresh_token as string)
  t.equal(pruned.body.error, 'invalid_grant', 'a pruned token is refused')
  t.equal(pruned.body.reason, 'token_invalid')
  t.same(await h.app.tokenlineJanitor.run(), { sessions: 0, tokens: 0, events: 0 }, 'a second pass finds nothing')

  // Reuse detection still works for the live session: its first token comes back.
  const replay = await h.refresh(liveChain[0] as string)
  t.equal(replay.body.reason, 'reuse_detected')
  t.equal((await h.refresh(liveChain.at(-1) as string)).body.reason, 'reuse_detected', 'and the live token died with its session')
  await assertLineage(t, h.database)
})

t.test('the absolute expiry boundary: a session is pruned at its expiry, not a millisecond before', async (t) => {
  const h = await build(t, { sessionTtl: HOUR, idleTtl: HOUR })
  const s = await h.login()
  h.clock.t += HOUR * 1000 - 1
  t.same(await h.app.tokenlineJanitor.run(), { sessions: 0, tokens: 0, events: 0 }, '1 ms before')
  h.clock.t += 1
  t.same(await h.app.tokenlineJanitor.run(), { sessions: 1, tokens: 1, events: 0 }, 'at its expiry (where refresh already says session_expired)')
  t.equal(await h.app.tokenline.store.findSession(sidOf(s.access_token)), undefined)
})

t.test('batches: many sessions go in small transactions, and all of them go', async (t) => {
  const h = await build(t, { sessionTtl: HOUR })
  const store = h.app.tokenline.store
  for (let i = 0; i < 23; i++) await h.login()
  h.clock.advance(2 * HOUR)
  const keep = await h.login()
  const seen: number[] = []
  const counting = { ...store, pruneSessions: async (before: number, limit: number) => { const r = await store.pruneSessions(before, limit); seen.push(r.sessions); return r } }
  const report = await prune(counting, h.clock.now(), 0, 5)
  t.same(seen, [5, 5, 5, 5, 3], 'five batches of at most five')
  t.same(report, { sessions: 23, tokens: 23, events: 0 })
  t.ok(await store.findSession(sidOf(keep.access_token)), 'the live session stays')
})

t.test('security events older than the retention period are pruned; 0 keeps them', async (t) => {
  const h = await build(t, { eventRetention: 30 * DAY, sessionTtl: 400 * DAY, idleTtl: 400 * DAY })
  const store = h.app.tokenline.store
  await h.login() // login_succeeded at day 0
  await h.login({ password: 'wrong' }) // login_failed at day 0
  h.clock.advance(20 * DAY)
  await h.login() // day 20
  h.clock.advance(10 * DAY)
  t.equal(await count(h, 'security_events'), 3)
  t.same(await h.app.tokenlineJanitor.run(), { sessions: 0, tokens: 0, events: 0 }, 'exactly 30 days old is kept')
  h.clock.advance(1)
  t.same(await h.app.tokenlineJanitor.run(), { sessions: 0, tokens: 0, events: 2 }, 'older than 30 days goes')
  t.same((await store.listEvents({})).map((e) => e.type), ['login_succeeded'], 'the day-20 event stays')
  h.clock.advance(365 * DAY)
  t.same(await prune(store, h.clock.now(), 0), { sessions: 0, tokens: 0, events: 0 }, 'retention 0 keeps every event')
})

t.test('tokenline prune runs the same pass and says what it pruned', async (t) => {
  const h = await build(t, { sessionTtl: DAY, idleTtl: DAY })
  // The CLI runs on the real clock: put these sessions and events well in its past.
  h.clock.t = Date.now() - 200 * DAY * 1000
  const a = await h.login()
  await rotate(h, a.refresh_token as string, 2)
  await h.login()
  h.clock.t = Date.now() - HOUR * 1000
  const live = await h.login()
  const r = await cli(h.database, ['prune'])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, 'pruned 2 expired sessions (4 refresh tokens) and 4 security events older than 90 days\n')
  t.ok(await h.app.tokenline.store.findSession(sidOf(live.access_token)), 'the live session stays')
  t.equal((await h.refresh(live.refresh_token as string)).status, 200)
  const again = await cli(h.database, ['prune'], '', { TOKENLINE_EVENT_RETENTION: '0' })
  t.equal(again.stdout, 'pruned 0 expired sessions (0 refresh tokens) and security events are kept forever (TOKENLINE_EVENT_RETENTION=0)\n')
})

t.test('the server runs the janitor on an unref\'d timer, logs what it pruned, and stops on close', async (t) => {
  const realSet = globalThis.setInterval
  const realClear = globalThis.clearInterval
  const timers: Array<{ fn: () => void, ms: number, unref: boolean, cleared: boolean }> = []
  // Capture the timer instead of waiting for it: the test fires it by hand.
  globalThis.setInterval = ((fn: () => void, ms: number) => {
    const timer = { fn, ms, unref: false, cleared: false }
    timers.push(timer)
    return { unref () { timer.unref = true; return this }, ref () { return this }, hasRef: () => !timer.unref, timer }
  }) as unknown as typeof setInterval
  globalThis.clearInterval = ((h: { timer?: { cleared: boolean } }) => { if (h?.timer !== undefined) h.timer.cleared = true }) as unknown as typeof clearInterval
  t.teardown(() => { globalThis.setInterval = realSet; globalThis.clearInterval = realClear })

  const lines: string[] = []
  const stream = new Writable({ write (chunk, _enc, cb) { lines.push(String(chunk)); cb() } })
  const clock = new TestClock()
  const app = Fastify({ logger: { level: 'info', stream } })
  await app.register(tokenline, { database: join(t.testdir({}), 'db.sqlite'), argon2: CHEAP_ARGON2, now: clock.now, janitorInterval: 120, sessionTtl: HOUR, logEvents: false })
  await app.ready()
  const timer = timers[0]
  t.equal(timers.length, 1, 'one timer')
  t.equal(timer?.ms, 120_000, 'every janitorInterval seconds')
  t.equal(timer?.unref, true, 'unref\'d: it never keeps the process alive')
  t.equal(app.tokenlineJanitor.scheduled, true)

  const store = app.tokenline.store
  await store.createUser({ id: 'u1', username: 'alice', passwordHash: 'x', now: clock.now() })
  await store.createClient({ id: 'cli', secretDigest: null, delivery: 'body', grants: 'password refresh_token', scopes: '', origins: '', accessTtl: null, idleTtl: null, sessionTtl: null, now: clock.now() })
  const meta = { ip: '127.0.0.1', userAgent: 'x', deviceId: null }
  await store.startSession({ id: 's1', userId: 'u1', clientId: 'cli', scope: '', meta, now: clock.now(), idleExpiresAt: clock.now() + HOUR * 1000, expiresAt: clock.now() + HOUR * 1000, tokenDigest: Buffer.alloc(32, 1), events: [] })
  clock.advance(HOUR)
  timer?.fn()
  await app.tokenlineJanitor.run() // joins the pass the tick started
  t.equal(await store.findSession('s1'), undefined, 'the tick pruned the expired session')
  const logged = lines.map((l) => JSON.parse(l) as { msg: string, janitor?: unknown }).find((l) => l.janitor !== undefined)
  t.match(logged, { msg: 'janitor pruned 1 sessions (1 refresh tokens) and 0 security events', janitor: { sessions: 1, tokens: 1, events: 0 } })

  await app.close()
  t.equal(timer?.cleared, true, 'stopped when the app closes')
  timer?.fn() // a late tick after close does nothing and throws nothing

  const off = await build(t, { janitorInterval: 0 })
  t.equal(off.app.tokenlineJanitor.scheduled, false, 'janitorInterval 0 disables the timer')
  t.same(await off.app.tokenlineJanitor.run(), { sessions: 0, tokens: 0, events: 0 }, 'a pass can still be run by hand')
})
