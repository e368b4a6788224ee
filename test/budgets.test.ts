import Database from 'better-sqlite3'
import Fastify from 'fastify'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { openDatabase } from '../db/sqlite/database.js'
import { createStore } from '../db/sqlite/store.js'
import { BUDGET_STALE_MS } from '../db/store.js'
import type { Store } from '../db/store.js'
import tokenline from '../server/plugin.js'
import { createPasswords } from '../server/security/passwords.js'
import { openStore as openAnyStore } from '../db/open.js'
import { build, CHEAP_ARGON2, PASSWORD, requestsTo } from './helpers.js'
import { sharedPostgres, skipWithoutPostgres } from './postgres.js'
import { mapLimit, sendForm, startFixture, tempDir, type Fixture } from './processes.js'

/*
 * The per-address budgets of the token endpoint (server/http/throttle.ts) are counted in the database,
 * so every process on it shares them. First the store's two methods on their own, with an injected
 * `now`; then Tokenline apps sharing one file in this process, on the test clock; then real server
 * processes (test/fixtures/server-process.mjs with TOKENLINE_TEST_THROTTLE) on one SQLite file, over
 * real sockets, where a budget spent at one process is spent at the other — and the same with the
 * processes on one PostgreSQL database, as instances on several hosts would be.
 */

const T0 = Date.UTC(2026, 0, 1)

function openStore (t: Test, file = join(tempDir(t), 'tokenline.db')): { store: Store, file: string } {
  const store = createStore(openDatabase(file))
  t.teardown(async () => await store.close())
  return { store, file }
}

/** The budgets table as it is on disk, key by key. */
function rows (file: string): Record<string, { count: number, resetAt: number }> {
  const db = new Database(file, { readonly: true, fileMustExist: true })
  try {
    const all = db.prepare<[], { key: string, count: number, reset_at: number }>('SELECT key, count, reset_at FROM budgets ORDER BY key').all()
    return Object.fromEntries(all.map((r) => [r.key, { count: r.count, resetAt: r.reset_at }]))
  } finally {
    db.close()
  }
}

t.test('store: hitBudget counts within a window, which ends exactly at resetAt', async (t) => {
  const { store } = openStore(t)
  t.same(await store.hitBudget('failures:192.0.2.1', 1000, T0), { count: 1, resetAt: T0 + 1000 }, 'the first hit opens a window of windowMs')
  t.same(await store.hitBudget('failures:192.0.2.1', 1000, T0 + 10), { count: 2, resetAt: T0 + 1000 }, 'the second counts in it; the window does not slide')
  t.same(await store.hitBudget('failures:192.0.2.1', 1000, T0 + 999), { count: 3, resetAt: T0 + 1000 }, 'one millisecond before its end: still the same window')
  t.same(await store.hitBudget('failures:192.0.2.1', 1000, T0 + 1000), { count: 1, resetAt: T0 + 2000 }, 'at resetAt: a new window, counted from this hit')
  t.same(await store.hitBudget('failures:192.0.2.1', 1000, T0 + 5000), { count: 1, resetAt: T0 + 6000 }, 'long after: a new window opens at the hit, not on a grid')
  t.same(await store.hitBudget('password:192.0.2.1', 60_000, T0 + 5000), { count: 1, resetAt: T0 + 65_000 }, 'another key is another budget')
  t.same(await store.hitBudget('failures:192.0.2.1', 1000, T0 + 5001), { count: 2, resetAt: T0 + 6000 }, '... and did not touch this one')
})

t.test('store: peekBudget reads the open window without counting', async (t) => {
  const { store } = openStore(t)
  t.same(await store.peekBudget('password:192.0.2.1', T0), { count: 0, resetAt: 0 }, 'no window yet')
  await store.hitBudget('password:192.0.2.1', 1000, T0)
  await store.hitBudget('password:192.0.2.1', 1000, T0)
  for (let i = 0; i < 5; i++) t.same(await store.peekBudget('password:192.0.2.1', T0 + 999), { count: 2, resetAt: T0 + 1000 }, `peek ${i + 1}: the count as it is`)
  t.same(await store.hitBudget('password:192.0.2.1', 1000, T0 + 999), { count: 3, resetAt: T0 + 1000 }, 'the peeks counted nothing')
  t.same(await store.peekBudget('password:192.0.2.1', T0 + 1000), { count: 0, resetAt: 0 }, 'at resetAt the window is over')
  t.same(await store.peekBudget('failures:192.0.2.1', T0), { count: 0, resetAt: 0 }, 'the other budget of the address is untouched')
})

t.test('store: two connections to one file count one budget', async (t) => {
  const { store: a, file } = openStore(t)
  const { store: b } = openStore(t, file)
  const counts: number[] = []
  for (let i = 0; i < 6; i++) counts.push((await (i % 2 === 0 ? a : b).hitBudget('failures:192.0.2.1', 1000, T0 + i)).count)
  t.same(counts, [1, 2, 3, 4, 5, 6], 'hits through either connection add to the same count')
  t.same(await a.peekBudget('failures:192.0.2.1', T0 + 6), { count: 6, resetAt: T0 + 1000 })
})

t.test('store: rows of windows long over are deleted by later hits, a few at a time', async (t) => {
  const { store, file } = openStore(t)
  for (let i = 0; i < 40; i++) await store.hitBudget(`failures:192.0.2.${i}`, 1000, T0)
  t.equal(Object.keys(rows(file)).length, 40, '40 budgets, all ending at T0 + 1000')

  const end = T0 + 1000
  await store.hitBudget('password:198.51.100.1', 1000, end + BUDGET_STALE_MS)
  t.equal(Object.keys(rows(file)).length, 41, `a window over for exactly ${BUDGET_STALE_MS} ms is kept`)

  const later = end + BUDGET_STALE_MS + 1
  const sizes: number[] = []
  for (let i = 0; i < 4; i++) {
    await store.hitBudget('password:198.51.100.1', 1000, later)
    sizes.push(Object.keys(rows(file)).length)
  }
  t.same(sizes, [25, 9, 1, 1], 'each hit deletes up to 16 stale rows, oldest first, until only live ones are left')
  t.same(rows(file), { 'password:198.51.100.1': { count: 5, resetAt: end + BUDGET_STALE_MS + 1000 } }, 'the live budget is untouched by the pruning')
  t.same(await store.peekBudget('failures:192.0.2.7', later), { count: 0, resetAt: 0 }, 'a deleted budget reads as no window')
  t.same(await store.hitBudget('failures:192.0.2.7', 1000, later), { count: 1, resetAt: later + 1000 }, 'and counts from 1 again')
})

t.test('two apps on one database file share the budgets, on the test clock', async (t) => {
  const h = await build(t, { throttleFailures: 3, throttleFailuresWindow: 10, throttlePassword: 2, throttlePasswordWindow: 10 })
  const other = Fastify()
  await other.register(tokenline, { database: h.database, argon2: CHEAP_ARGON2, now: h.clock.now, logEvents: false, throttleFailures: 3, throttleFailuresWindow: 10, throttlePassword: 2, throttlePasswordWindow: 10 })
  t.teardown(() => other.close())
  const h2 = requestsTo(other)
  const from = { ip: '203.0.113.5' }

  // A successful refresh at either app reads the failures budget and writes nothing.
  const rt = (await h.login(from)).refresh_token as string
  const next = await h2.refresh(rt, from)
  t.equal(next.status, 200, 'a refresh at the second app')
  t.same(Object.keys(rows(h.database)), ['password:203.0.113.5'], 'the login counted; the successful refresh left no row')

  t.equal((await h.refresh('tlrt_guess_1', from)).status, 400, 'failure 1 at the first app')
  t.equal((await h2.refresh('tlrt_guess_2', from)).status, 400, 'failure 2 at the second')
  h.clock.advance(9)
  t.equal((await h.refresh('tlrt_guess_3', from)).status, 400, 'failure 3, 9 s later: it spends the budget')
  const refused = await h2.refresh(next.body.refresh_token as string, from)
  t.equal(refused.status, 429, 'the second app refuses even a valid refresh from that address')
  t.equal(refused.res.headers['retry-after'], '1', 'until the window opened by failure 1 ends, 10 s after it')
  h.clock.advance(0.999)
  t.equal((await h.refresh(next.body.refresh_token as string, from)).status, 429, 'one millisecond before the end: still refused, at the first app too')
  h.clock.advance(0.001)
  t.equal((await h2.refresh(next.body.refresh_token as string, from)).status, 200, 'at the end of the window: served')

  // The password budget: 2 per window, the login above was 1 (its window is over by now).
  const codes: number[] = []
  for (const app of [h, h2, h, h2]) codes.push((await app.token({ grant_type: 'password', client_id: 'cli', username: 'alice', password: 'wrong' }, from)).statusCode)
  t.same(codes, [400, 400, 429, 429], 'two password grants per window, whichever app they reach')

  const events = (await h.app.tokenline.store.listEvents({ limit: 100 })).filter((e) => e.type === 'throttled')
  t.same(events.map((e) => [e.reason, e.ip]).sort(), [['failures', from.ip], ['password', from.ip]], 'one throttled event per budget and window, not one per app')
})

/** A fresh database (a SQLite file, or a PostgreSQL database) with user alice and the public body client `cli`. */
async function seed (t: Test, engine: Engine): Promise<string | undefined> {
  const database = engine === 'sqlite' ? join(tempDir(t), 'tokenline.db') : await postgresDatabase(t)
  if (database === undefined) return undefined
  const store = await openAnyStore(database, { pgPoolSize: 2, pgStatementTimeoutMs: 5000 })
  const now = Date.now()
  await store.createUser({ id: 'alice-id', username: 'alice', passwordHash: await createPasswords(CHEAP_ARGON2).hash(PASSWORD), now })
  await store.createClient({ id: 'cli', secretDigest: null, delivery: 'body', grants: 'password refresh_token', scopes: '', origins: '', accessTtl: null, idleTtl: null, sessionTtl: null, now })
  await store.close()
  return database
}

/** What the database holds, through the store: a budget's count now, and the throttled events. */
async function inDatabase (database: string, key: string): Promise<{ count: number, throttled: Array<{ reason: string | null, ip: string | null }> }> {
  const store = await openAnyStore(database, { pgPoolSize: 1, pgStatementTimeoutMs: 5000 })
  try {
    const { count } = await store.peekBudget(key, Date.now())
    const throttled = (await store.listEvents({})).filter((e) => e.type === 'throttled').map((e) => ({ reason: e.reason, ip: e.ip }))
    return { count, throttled }
  } finally {
    await store.close()
  }
}

async function postgresDatabase (t: Test): Promise<string | undefined> {
  const server = await sharedPostgres()
  if (server === undefined) skipWithoutPostgres(t)
  return await server?.database(t)
}

type Engine = 'sqlite' | 'postgres'

interface Reply { status: number, headers: Record<string, string>, body: { refresh_token?: string, error?: string, reason?: string } }

/** POST /token to one process over a connection of its own; a request cut off fails the test. */
async function post (proc: Fixture, params: Record<string, string>): Promise<Reply> {
  const res = await fetch(`${proc.url}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(params).toString() })
  const headers: Record<string, string> = {}
  res.headers.forEach((value, name) => { headers[name] = value })
  return { status: res.status, headers, body: await res.json() as Reply['body'] }
}

/** Both fixtures on one database, with both budgets at `budget` requests per hour. */
async function twoProcesses (t: Test, budget: number, engine: Engine): Promise<{ a: Fixture, b: Fixture, database: string } | undefined> {
  const database = await seed(t, engine)
  if (database === undefined) return undefined
  const env = { TOKENLINE_TEST_THROTTLE: String(budget) }
  const [a, b] = await Promise.all([startFixture(t, database, { env }), startFixture(t, database, { env })])
  return { a: a as Fixture, b: b as Fixture, database }
}

const BUDGET = 10

for (const engine of ['sqlite', 'postgres'] as const) {
  t.test(`two server processes on one ${engine} database: failures spent at A are spent at B`, async (t) => {
    const procs = await twoProcesses(t, BUDGET, engine)
    if (procs === undefined) return
    const { a, b, database } = procs
    const garbage = (i: number): Record<string, string> => ({ grant_type: 'refresh_token', client_id: 'cli', refresh_token: `tlrt_guess_${i}` })

    // Before: B serves this address normally.
    const login = await post(b, { grant_type: 'password', client_id: 'cli', username: 'alice', password: PASSWORD })
    t.equal(login.status, 200, 'B: a login')
    const refreshed = await post(b, { grant_type: 'refresh_token', client_id: 'cli', refresh_token: login.body.refresh_token as string })
    t.equal(refreshed.status, 200, 'B: a refresh')
    t.equal((await post(b, garbage(0))).status, 400, 'B: an unknown refresh token is an ordinary 400')

    // A spends the rest of the budget, the failures in parallel, each on a connection of its own.
    const spent = await Promise.all(Array.from({ length: BUDGET - 1 }, async (_, i) => {
      const o = await sendForm(`${a.url}/token`, garbage(i + 1)).outcome
      return o.kind === 'response' ? o.status : o.error
    }))
    t.same(spent, Array(BUDGET - 1).fill(400), `A: ${BUDGET - 1} parallel failures, all evaluated`)
    t.same((await inDatabase(database, 'failures:127.0.0.1')).count, BUDGET, 'every failure of both processes was counted once')

    const refused = await post(b, { grant_type: 'refresh_token', client_id: 'cli', refresh_token: refreshed.body.refresh_token as string })
    t.equal(refused.status, 429, 'B now refuses even a valid refresh from that address')
    const retryAfter = Number(refused.headers['retry-after'])
    t.ok(Number.isInteger(retryAfter) && retryAfter > 0 && retryAfter <= 3600, `with Retry-After in seconds until the window ends (${refused.headers['retry-after']})`)
    t.same(refused.body, { error: 'invalid_request', error_description: 'too many requests, retry later' }, 'the usual throttling body')
    t.equal((await post(a, garbage(99))).status, 429, 'and so does A')

    t.same((await inDatabase(database, '')).throttled, [{ reason: 'failures', ip: '127.0.0.1' }], 'one throttled event, from whichever process spent the budget')
    t.equal(a.stderr() + b.stderr(), '', 'no errors in either server log')
  })

  t.test(`two server processes on one ${engine} database: password grants sent to both at once get one budget`, async (t) => {
    const procs = await twoProcesses(t, BUDGET, engine)
    if (procs === undefined) return
    const { a, b, database } = procs
    const attempts = Array.from({ length: 3 * BUDGET }, (_, i) => i)
    // Four in flight, alternating processes: the two race on the budget without filling argon2's queue.
    const statuses = await mapLimit(attempts, 4, async (i) =>
      (await post(i % 2 === 0 ? a : b, { grant_type: 'password', client_id: 'cli', username: 'alice', password: `wrong ${i}` })).status)
    const by = (s: number): number => statuses.filter((x) => x === s).length
    t.equal(by(429), 2 * BUDGET, `exactly ${2 * BUDGET} of ${3 * BUDGET} refused: ${BUDGET} per window for the address, not ${BUDGET} per process`)
    t.equal(by(400) + by(503), BUDGET, `the other ${BUDGET} were evaluated (or met a full argon2 queue)`)
    const after = await inDatabase(database, 'password:127.0.0.1')
    t.same(after.count, 3 * BUDGET, 'every attempt counted once')
    t.same(after.throttled, [{ reason: 'password', ip: '127.0.0.1' }], 'one throttled event for both processes')
  })
}
