import { decodeJwt } from 'jose'
import t from 'tap'
import { basicAuth, build, sidOf as sid, type TokenBody } from './helpers.js'
import { assertLineage } from './invariants.js'
import { cookieRefresh, maxAge, refreshCookie } from './set-cookie.js'

/*
 * Rotation and reuse detection (RFC 6749 §6, RFC 9700 §4.14.2): every refresh consumes the presented
 * token and hands out its child; a consumed token coming back ends the whole session.
 */

const GRACE = 10

t.test('each refresh returns a new token and consumes the old one', async (t) => {
  const h = await build(t, { reuseGrace: GRACE })
  const login = await h.login()
  const seen = new Set([login.refresh_token])
  let current = login.refresh_token as string
  for (let i = 1; i <= 3; i++) {
    h.clock.advance(1)
    const r = await h.refresh(current)
    t.equal(r.status, 200, `refresh ${i} succeeds`)
    t.type(r.body.refresh_token, 'string')
    t.notOk(seen.has(r.body.refresh_token), `refresh ${i} hands out a token never seen before`)
    t.equal(sid(r.body), sid(login), 'the access token stays in the same session')
    seen.add(r.body.refresh_token)
    current = r.body.refresh_token as string
  }
  const lineage = await h.app.tokenline.store.lineage(sid(login))
  t.same(lineage.map((tok) => tok.generation), [0, 1, 2, 3], 'one lineage, four generations')
  t.same(lineage.map((tok) => tok.usedAt !== null), [true, true, true, false], 'every token but the newest is consumed')
  t.same(lineage.map((tok) => tok.parentGeneration), [null, 0, 1, 2], 'each token names its parent')
  await assertLineage(t, h.database)
})

t.test('replaying a consumed token revokes the whole session, the newest token included', async (t) => {
  const h = await build(t, { reuseGrace: GRACE })
  const store = h.app.tokenline.store
  // Another session of the same user (another tab or device), started before the breach.
  const other = await h.login()
  const login = await h.login()
  const tokens = [login.refresh_token as string]
  for (let i = 1; i <= 3; i++) {
    const r = await h.refresh(tokens[i - 1] as string)
    t.equal(r.status, 200)
    tokens.push(r.body.refresh_token as string)
  }
  h.clock.advance(GRACE + 1)

  const replay = await h.refresh(tokens[0] as string)
  t.equal(replay.status, 400)
  t.equal(replay.body.error, 'invalid_grant')
  t.equal(replay.body.reason, 'reuse_detected', 'the replay of RT0 is called reuse')
  t.notMatch(JSON.stringify(replay.body), /tlrt_/, 'the error carries no token')

  for (const [i, token] of tokens.entries()) {
    const r = await h.refresh(token)
    t.equal(r.status, 400, `RT${i} no longer refreshes`)
    t.equal(r.body.error, 'invalid_grant')
    t.equal(r.body.reason, 'reuse_detected', `RT${i} is refused as part of a session ended by reuse`)
  }

  const session = await store.findSession(sid(login))
  t.equal(session?.revokedReason, 'reuse_detected', 'the session is revoked for reuse')
  const events = await store.listEvents({ sessionId: sid(login) })
  const reuse = events.filter((e) => e.type === 'reuse_detected')
  t.equal(reuse.length, 1, 'one reuse event, for the first replay only')
  t.same(JSON.parse(reuse[0]?.detail ?? 'null'), { replayed: 0, live: 3 }, 'the event names the replayed and the live generation')
  t.equal(reuse[0]?.userId, session?.userId)
  t.equal(reuse[0]?.clientId, 'cli')
  t.notMatch(JSON.stringify(events), /tlrt_/, 'no event carries a token')
  t.ok(events.some((e) => e.type === 'session_revoked' && e.reason === 'reuse_detected'), 'the revocation is recorded with its reason')

  const lineage = await store.lineage(sid(login))
  t.equal(lineage.length, 4, 'the refused requests minted nothing')

  // Families are independent (Keycloak refreshTokenReuseOnDifferentTab).
  const sibling = await h.refresh(other.refresh_token as string)
  t.equal(sibling.status, 200, 'the other session of the same user still refreshes')
  t.not(sid(sibling.body), sid(login))

  // A fresh login starts a new, working family; the old one stays dead.
  const again = await h.login()
  t.type(again.access_token, 'string', 'a new login works')
  const next = await h.refresh(again.refresh_token as string)
  t.equal(next.status, 200, 'and its token refreshes')
  t.equal((await h.refresh(tokens[3] as string)).body.reason, 'reuse_detected', 'the old family stays revoked')
  await assertLineage(t, h.database)
})

t.test('scope on refresh only narrows, and only the access token', async (t) => {
  const h = await build(t, { reuseGrace: GRACE })
  const login = await h.login()
  t.equal(login.scope, 'read write')

  const narrow = await h.refresh(login.refresh_token as string, { params: { scope: 'read' } })
  t.equal(narrow.status, 200)
  t.equal(narrow.body.scope, 'read', 'the response reports the narrowed scope')
  t.equal(decodeJwt(narrow.body.access_token).scope, 'read', 'the access token carries the narrowed scope')
  t.equal((await h.app.tokenline.store.findSession(sid(login)))?.scope, 'read write', 'the session keeps what was granted')

  // RFC 6749 §6: the new refresh token keeps the original scope.
  const full = await h.refresh(narrow.body.refresh_token as string)
  t.equal(full.status, 200)
  t.equal(full.body.scope, 'read write', 'a later refresh without scope gets the full scope back')
  t.equal(decodeJwt(full.body.access_token).scope, 'read write')

  const explicit = await h.refresh(full.body.refresh_token as string, { params: { scope: 'write read' } })
  t.equal(explicit.status, 200, 'asking for all of the granted scope is not widening')
  await assertLineage(t, h.database)
})

t.test('a wider scope is refused and consumes nothing', async (t) => {
  const h = await build(t, { reuseGrace: GRACE })
  const res = await h.token({ grant_type: 'password', client_id: 'cli', username: 'alice', password: 'correct horse battery staple', scope: 'read' })
  const login = res.json() as TokenBody
  t.equal(login.scope, 'read')

  for (const scope of ['read write', 'admin', 'read admin']) {
    const wide = await h.refresh(login.refresh_token as string, { params: { scope } })
    t.equal(wide.status, 400, `scope "${scope}" is refused`)
    t.equal(wide.body.error, 'invalid_scope')
    t.equal(wide.body.refresh_token, undefined)
  }
  const lineage = await h.app.tokenline.store.lineage(sid(login))
  t.same(lineage.map((tok) => tok.usedAt), [null], 'the token was not consumed')

  // Past the grace window, so only an unconsumed token could still succeed.
  h.clock.advance(GRACE + 1)
  const ok = await h.refresh(login.refresh_token as string)
  t.equal(ok.status, 200, 'the same token still refreshes')
  t.equal(ok.body.scope, 'read', 'with the scope the session was granted')
  await assertLineage(t, h.database)
})

t.test('a refresh token only works for the client it was issued to', async (t) => {
  const h = await build(t, { reuseGrace: GRACE })
  await h.addClient({ id: 'cli2', scopes: 'read write' })
  const login = await h.login()
  const token = login.refresh_token as string

  const attempts: Array<{ name: string, params: Record<string, string>, headers: Record<string, string> }> = [
    { name: 'another public client', params: { client_id: 'cli2' }, headers: {} },
    { name: 'a confidential client (Basic)', params: {}, headers: { authorization: basicAuth('svc', 'svc-secret') } },
    { name: 'a confidential client (body secret)', params: { client_id: 'svc', client_secret: 'svc-secret' }, headers: {} }
  ]
  for (const a of attempts) {
    const res = await h.token({ grant_type: 'refresh_token', refresh_token: token, ...a.params }, { headers: a.headers })
    const body = res.json() as TokenBody
    t.equal(res.statusCode, 400, `${a.name}: 400`)
    t.equal(body.error, 'invalid_grant', `${a.name}: invalid_grant`)
    t.equal(body.reason, 'client_mismatch', `${a.name}: reason client_mismatch`)
  }

  // Another client's attempt says nothing about who holds the token: the owner keeps its session.
  h.clock.advance(GRACE + 1)
  const session = await h.app.tokenline.store.findSession(sid(login))
  t.equal(session?.revokedAt, null, 'the session is not revoked')
  const owner = await h.refresh(token)
  t.equal(owner.status, 200, 'the owner can still refresh with the same token')
  await assertLineage(t, h.database)
})

t.test("a disabled user's refresh fails, and keeps failing once re-enabled", async (t) => {
  const h = await build(t, { reuseGrace: GRACE })
  const store = h.app.tokenline.store
  const login = await h.login()
  const alice = await store.findUserByUsername('alice')
  if (alice === undefined) throw new Error('seeded user missing')
  await store.setUserDisabled({ userId: alice.id, disabled: true, now: h.clock.now(), events: [] })

  const r = await h.refresh(login.refresh_token as string)
  t.equal(r.status, 400)
  t.equal(r.body.error, 'invalid_grant')
  t.equal(r.body.reason, 'account_disabled', 'the reason says why')

  // Disabling ended the sessions (ASVS 5.0 7.4.2); enabling the account does not bring them back.
  await store.setUserDisabled({ userId: alice.id, disabled: false, now: h.clock.now(), events: [] })
  const after = await h.refresh(login.refresh_token as string)
  t.equal(after.status, 400, 'the old session stays dead')
  t.equal(after.body.error, 'invalid_grant')
  t.equal(after.body.reason, 'session_revoked')
  const fresh = await h.login()
  t.equal((await h.refresh(fresh.refresh_token as string)).status, 200, 'a new login works again')
  await assertLineage(t, h.database)
})

t.test('unknown, malformed and forged tokens are invalid_grant without touching a session', async (t) => {
  const h = await build(t, { reuseGrace: GRACE })
  const login = await h.login()
  const real = login.refresh_token as string
  const flipped = real.slice(0, 10) + (real[10] === 'A' ? 'B' : 'A') + real.slice(11)
  for (const [name, token] of [['garbage', 'not-a-token'], ['one char flipped', flipped], ['truncated', real.slice(0, -1)]] as const) {
    const r = await h.refresh(token)
    t.equal(r.status, 400, `${name}: 400`)
    t.equal(r.body.error, 'invalid_grant', `${name}: invalid_grant`)
  }
  t.equal((await h.refresh(real)).status, 200, 'the real token is unaffected')
  await assertLineage(t, h.database)
})

t.test('cookie delivery: the cookie rotates, and a replayed cookie ends the session and clears it', async (t) => {
  const h = await build(t, { reuseGrace: GRACE })
  // No Origin and no Sec-Fetch-*: a cookie jar outside a browser (curl), which the CSRF check lets through.
  const CURL = { headers: {} }
  const login = await h.token({ grant_type: 'password', client_id: 'web', username: 'alice', password: 'correct horse battery staple' })
  const rt0 = refreshCookie(login)?.value as string
  t.equal((login.json() as TokenBody).refresh_token, undefined, 'cookie clients never see the token in the body')

  const first = await cookieRefresh(h, rt0, CURL)
  t.equal(first.statusCode, 200)
  const rt1 = refreshCookie(first)?.value as string
  t.not(rt1, rt0, 'the cookie value changes on refresh')

  h.clock.advance(GRACE + 1)
  const replay = await cookieRefresh(h, rt0, CURL)
  t.equal(replay.statusCode, 400)
  t.equal((replay.json() as TokenBody).reason, 'reuse_detected')
  const cleared = refreshCookie(replay)
  t.equal(cleared?.value, '', 'the failing response clears the cookie')
  t.equal(maxAge(cleared), 0, 'with Max-Age=0')
  t.equal(cleared?.attrs.get('path'), '/token', 'on the path it was set for')
  t.equal((await cookieRefresh(h, rt1, CURL)).json().reason, 'reuse_detected', 'and the live cookie is dead too')
  await assertLineage(t, h.database)
})
