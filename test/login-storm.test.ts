import t from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import { Argon2Busy, createGate } from '../server/security/argon2-gate.js'
import { createPasswords } from '../server/security/passwords.js'
import { build, form, PASSWORD } from './helpers.js'

/*
 * A login storm must not starve refreshes (shared/reference/performance.md §7.1, §8.2 G2): argon2 runs
 * behind a concurrency cap with a short queue, the overflow gets 503 + Retry-After at once, and the
 * refresh path, which never hashes, keeps going.
 */

const PROD_ARGON2 = { memoryCost: 19456, timeCost: 2, parallelism: 1 }
/** Longer than any answer may take: an unanswered request is a failure, not a slow pass. */
const DEADLINE_MS = 60_000

const deadline = async <T>(p: Promise<T>, what: string): Promise<T> => {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer within ${DEADLINE_MS} ms`)), DEADLINE_MS) })
  try { return await Promise.race([p, late]) } finally { clearTimeout(timer) }
}

const refused = async (p: Promise<unknown>): Promise<boolean> => await p.then(() => false, (e: unknown) => e instanceof Argon2Busy)

t.test('60 parallel password grants (cap 2) while a session keeps refreshing', async (t) => {
  const h = await build(t, { argon2: PROD_ARGON2, argon2Concurrency: 2, throttlePassword: 20, throttleFailures: 60 })
  // alice's hash is made with production parameters, so every verify costs what it would in production.
  await h.app.tokenline.store.setPasswordHash({ userId: (await h.app.tokenline.store.findUserByUsername('alice'))!.id, passwordHash: await createPasswords(PROD_ARGON2).hash(PASSWORD), now: h.clock.now(), events: [] })
  await h.addUser('bob')
  let rt = (await h.login()).refresh_token as string

  const storm$ = { running: true }
  let refreshes = 0
  const refreshFailures: string[] = []
  const refreshLoop = (async () => {
    while (storm$.running) {
      const res = await h.token({ grant_type: 'refresh_token', client_id: 'cli', refresh_token: rt })
      if (res.statusCode !== 200) { refreshFailures.push(`${res.statusCode} ${res.body}`); return }
      rt = res.json().refresh_token
      refreshes++
      // Let the storm's requests interleave with ours.
      await new Promise((resolve) => setImmediate(resolve))
    }
  })()

  // 35 addresses with one login each (no per-IP budget applies: only the argon2 gate stands in the
  // way), and 25 logins from one address, whose last 5 are over its budget.
  const storm: Array<Promise<LightMyRequestResponse>> = []
  for (let i = 0; i < 60; i++) {
    const ip = i < 35 ? `198.18.${i}.1` : '198.18.200.1'
    const password = i % 3 === 0 ? 'wrong password' : PASSWORD
    storm.push(h.app.inject({ method: 'POST', url: '/token', remoteAddress: ip, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ grant_type: 'password', client_id: 'cli', username: i % 2 === 0 ? 'alice' : 'bob', password }) }))
  }
  const results = await deadline(Promise.all(storm), 'login storm')
  storm$.running = false
  await deadline(refreshLoop, 'refresh loop')

  const byStatus = new Map<number, number>()
  for (const r of results) byStatus.set(r.statusCode, (byStatus.get(r.statusCode) ?? 0) + 1)
  t.comment(`storm: ${JSON.stringify(Object.fromEntries(byStatus))}; refreshes completed meanwhile: ${refreshes}`)
  t.same([...byStatus.keys()].filter((s) => ![200, 400, 429, 503].includes(s)), [], 'only 200, 400, 429 and 503')
  t.ok((byStatus.get(503) ?? 0) > 0, 'the overflow is shed with 503')
  t.equal(byStatus.get(429), 5, 'the one address over its budget gets 429')
  t.ok((byStatus.get(200) ?? 0) > 0, 'the logins that got a slot succeeded')
  for (const r of results.filter((x) => x.statusCode === 503)) {
    if (r.headers['retry-after'] !== '1' || r.body !== '{"error":"temporarily_unavailable"}' || r.headers['cache-control'] !== 'no-store') {
      t.fail(`503 without Retry-After or with a different body: ${JSON.stringify(r.headers)} ${r.body}`)
      break
    }
  }
  t.same(refreshFailures, [], 'every refresh during the storm succeeded')
  t.ok(refreshes > 0, 'refreshes kept completing while the storm was being served')

  // Once it has passed, logins work again.
  t.equal((await h.login({ username: 'bob' })).token_type, 'Bearer', 'a login after the storm succeeds')
})

t.test('the gate: at most N at once, 2N waiting, the rest refused; a waiter gives up after the bound', async (t) => {
  const gate = createGate({ concurrency: 2, maxWaitMs: 1000 })
  let running = 0
  let peak = 0
  const releases: Array<() => void> = []
  const job = async (): Promise<void> => await gate.run(async () => {
    running++
    peak = Math.max(peak, running)
    await new Promise<void>((resolve) => releases.push(resolve))
    running--
  })
  const jobs = Array.from({ length: 8 }, job)
  const settled = jobs.map(async (p) => await p.then(() => 'done', (e: unknown) => e instanceof Argon2Busy ? 'busy' : 'other'))
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(gate.active, 2, 'two running')
  t.equal(gate.queued, 4, 'four waiting')
  // Finish everything that runs, in order, until all are done.
  while (releases.length > 0 || gate.active > 0) {
    releases.shift()?.()
    await new Promise((resolve) => setImmediate(resolve))
  }
  t.same(await Promise.all(settled), ['done', 'done', 'done', 'done', 'done', 'done', 'busy', 'busy'], 'six served in turn, two refused at once')
  t.equal(peak, 2, 'never more than two at once')

  const noQueue = createGate({ concurrency: 1, maxWaitMs: 0 })
  let release: () => void = () => {}
  const first = noQueue.run(async () => await new Promise<void>((resolve) => { release = resolve }))
  t.ok(await refused(noQueue.run(async () => {})), 'with no wait allowed, a second caller is refused')
  release()
  await first

  // A waiter that is not served within the bound is refused (a short real wait: 20 ms).
  const short = createGate({ concurrency: 1, maxWaitMs: 20 })
  let hold: () => void = () => {}
  const holder = short.run(async () => await new Promise<void>((resolve) => { hold = resolve }))
  t.ok(await refused(short.run(async () => {})), 'the waiter gives up')
  t.equal(short.queued, 0, 'and leaves the queue')
  hold()
  await holder
  t.equal(short.active, 0)
})

t.test('an outdated hash is still upgraded on login, through the gate', async (t) => {
  // The harness made alice's hash with cheap parameters; the server now wants production ones.
  const h = await build(t, { argon2: PROD_ARGON2, argon2Concurrency: 1 })
  t.equal((await h.login()).token_type, 'Bearer')
  const alice = await h.app.tokenline.store.findUserByUsername('alice')
  t.match(alice?.passwordHash, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/, 'rehashed with the current parameters')
  t.equal((await h.login()).token_type, 'Bearer', 'and the new hash verifies')
})
