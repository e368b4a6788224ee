import Fastify from 'fastify'
import t from 'tap'
import tokenline from '../server/plugin.js'
import { BROWSER_UA, CHEAP_ARGON2, build, requestsTo, sidOf as sid } from './helpers.js'
import { assertLineage } from './invariants.js'

/*
 * The grace window for a racing reuse (RFC 9700 §4.14.2 rotation, made safe for a client that sends
 * one refresh twice): the immediate parent of the live token, presented again within `reuseGrace`
 * seconds of its first use by the same device, gets the same successor back, never a new branch.
 * Anything else that presents a consumed token is reuse.
 */

const GRACE = 10
const FIREFOX_UA = 'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0'

t.test('the same token twice inside the window gets the same successor, and only one child exists', async (t) => {
  const h = await build(t, { reuseGrace: GRACE })
  const login = await h.login()
  const first = await h.refresh(login.refresh_token as string)
  h.clock.advance(1)
  const second = await h.refresh(login.refresh_token as string)
  t.equal(first.status, 200)
  t.equal(second.status, 200, 'the racing duplicate succeeds')
  t.equal(second.body.refresh_token, first.body.refresh_token, 'byte-identical successor')
  t.not(second.body.access_token, first.body.access_token, 'each response has its own access token')
  t.equal(sid(second.body), sid(first.body))

  const lineage = await h.app.tokenline.store.lineage(sid(login))
  t.same(lineage.map((tok) => tok.generation), [0, 1], 'the database has exactly one child')
  t.equal(lineage[0]?.usedAt, h.clock.now() - 1000, 'the parent keeps its first use time')
  t.equal((await h.app.tokenline.store.findSession(sid(login)))?.revokedAt, null, 'the session is untouched')
  const events = await h.app.tokenline.store.listEvents({ sessionId: sid(login) })
  t.notOk(events.some((e) => e.type === 'reuse_detected'), 'no reuse recorded')
  t.ok(events.some((e) => e.type === 'refresh_replayed'), 'the grace replay is recorded')

  const next = await h.refresh(first.body.refresh_token as string)
  t.equal(next.status, 200, 'the shared successor goes on working')
  await assertLineage(t, h.database)
})

t.test('the grandparent never qualifies', async (t) => {
  const h = await build(t, { reuseGrace: GRACE })
  const login = await h.login()
  const rt1 = await h.refresh(login.refresh_token as string)
  h.clock.advance(1)
  const rt2 = await h.refresh(rt1.body.refresh_token as string)
  t.equal(rt2.status, 200)
  h.clock.advance(1)
  const replay = await h.refresh(login.refresh_token as string)
  t.equal(replay.status, 400, 'RT0 two seconds after its first use, but after RT1 was used too')
  t.equal(replay.body.error, 'invalid_grant')
  t.equal(replay.body.reason, 'reuse_detected')
  t.equal((await h.refresh(rt2.body.refresh_token as string)).body.reason, 'reuse_detected', 'the live token is revoked with it')
  t.equal((await h.app.tokenline.store.lineage(sid(login))).length, 3, 'no branch was minted')
  await assertLineage(t, h.database)
})

t.test('the window is measured from the first use and never slides', async (t) => {
  const h = await build(t, { reuseGrace: GRACE })
  const login = await h.login()
  const rt0 = login.refresh_token as string
  const first = await h.refresh(rt0)
  const successor = first.body.refresh_token
  h.clock.advance(5)
  const at5 = await h.refresh(rt0)
  t.equal(at5.status, 200, 'replay at 5 s is grace')
  t.equal(at5.body.refresh_token, successor)
  h.clock.advance(4.999)
  const at9999 = await h.refresh(rt0)
  t.equal(at9999.status, 200, 'replay at 9.999 s is grace')
  t.equal(at9999.body.refresh_token, successor)
  h.clock.advance(0.001)
  const at10 = await h.refresh(rt0)
  t.equal(at10.status, 400, 'replay at exactly 10 s is reuse: the 5 s and 9.999 s replays did not extend the window')
  t.equal(at10.body.reason, 'reuse_detected')
  t.equal((await h.refresh(successor as string)).body.reason, 'reuse_detected', 'and the session is over')
  t.same((await h.app.tokenline.store.lineage(sid(login))).map((tok) => tok.generation), [0, 1])
  await assertLineage(t, h.database)
})

t.test('grace 0 disables the window', async (t) => {
  const h = await build(t, { reuseGrace: 0 })
  const login = await h.login()
  const first = await h.refresh(login.refresh_token as string)
  t.equal(first.status, 200)
  const replay = await h.refresh(login.refresh_token as string)
  t.equal(replay.status, 400, 'an immediate replay, same instant, same device')
  t.equal(replay.body.reason, 'reuse_detected')
  t.equal((await h.refresh(first.body.refresh_token as string)).body.reason, 'reuse_detected')
  await assertLineage(t, h.database)
})

t.test('a replay from another user agent inside the window is reuse', async (t) => {
  const h = await build(t, { reuseGrace: GRACE })
  const chrome = { headers: { 'user-agent': BROWSER_UA } }
  const login = await h.login(chrome)
  const first = await h.refresh(login.refresh_token as string, chrome)
  t.equal(first.status, 200)
  h.clock.advance(1)
  const replay = await h.refresh(login.refresh_token as string, { headers: { 'user-agent': FIREFOX_UA } })
  t.equal(replay.status, 400, 'not grace: the successor is only handed back to the device that received it')
  t.equal(replay.body.reason, 'reuse_detected')
  t.equal((await h.refresh(first.body.refresh_token as string, chrome)).body.reason, 'reuse_detected')
  await assertLineage(t, h.database)
})

t.test('a replay from another device id inside the window is reuse', async (t) => {
  for (const other of ['device-2', undefined]) {
    await t.test(other === undefined ? 'device id missing' : 'device id changed', async (t) => {
      const h = await build(t, { reuseGrace: GRACE })
      const login = await h.login({ device_id: 'device-1' })
      const first = await h.refresh(login.refresh_token as string, { device_id: 'device-1' })
      t.equal(first.status, 200)
      h.clock.advance(1)
      const replay = await h.refresh(login.refresh_token as string, other === undefined ? {} : { device_id: other })
      t.equal(replay.status, 400)
      t.equal(replay.body.reason, 'reuse_detected')
      t.equal((await h.refresh(first.body.refresh_token as string, { device_id: 'device-1' })).body.reason, 'reuse_detected')
      await assertLineage(t, h.database)
    })
  }
})

t.test('once the successor has been used, even an earlier grace replay does not help', async (t) => {
  const h = await build(t, { reuseGrace: GRACE })
  const login = await h.login()
  const rt0 = login.refresh_token as string
  const first = await h.refresh(rt0)
  const again = await h.refresh(rt0)
  t.equal(again.body.refresh_token, first.body.refresh_token, 'a grace replay first')
  h.clock.advance(1)
  const rt2 = await h.refresh(first.body.refresh_token as string)
  t.equal(rt2.status, 200, 'then the successor is used')
  h.clock.advance(1)
  const late = await h.refresh(rt0)
  t.equal(late.status, 400, 'RT0 again, still inside its window')
  t.equal(late.body.reason, 'reuse_detected')
  await assertLineage(t, h.database)
})

t.test('the window survives a server restart', async (t) => {
  const h = await build(t, { reuseGrace: GRACE })
  const login = await h.login()
  const first = await h.refresh(login.refresh_token as string)
  t.equal(first.status, 200)
  await h.app.close()

  // A second process on the same file: everything grace needs is in the database.
  const app = Fastify()
  await app.register(tokenline, { database: h.database, argon2: CHEAP_ARGON2, now: h.clock.now, logEvents: false, reuseGrace: GRACE })
  await app.ready()
  t.teardown(() => app.close())
  h.clock.advance(2)
  const res = await requestsTo(app).refresh(login.refresh_token as string)
  t.equal(res.status, 200, 'the replay after the restart is grace')
  t.equal(res.body.refresh_token, first.body.refresh_token, 'with the same successor')
  await assertLineage(t, h.database)
})
