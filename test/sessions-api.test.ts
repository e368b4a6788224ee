import t, { type Test } from 'tap'
import { build, BROWSER_UA, sidOf, type Harness } from './helpers.js'
import { sessionsApi, tokenline } from './session-helpers.js'

/*
 * The sessions API: the signed-in user lists and ends their own sessions with a bearer access token
 * (RFC 6750 §2.1) that is checked against its live session, so revocation is immediate there.
 */

const PHONE_UA = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1'

interface Listed { id: string, client_id: string, created_at: string, last_used_at: string, user_agent: string, ip: string, current: boolean }

async function list (t: Test, h: Harness, at: string): Promise<Listed[]> {
  const res = await sessionsApi(h, 'GET', '/sessions', at)
  t.equal(res.statusCode, 200, 'GET /sessions is 200')
  return res.json().sessions
}

t.test('GET /sessions lists the caller\'s live sessions, marks the current one, and shows the last request seen', async (t) => {
  const h = await build(t)
  await h.addUser('bob')
  const laptop = await h.login({ headers: { 'user-agent': BROWSER_UA }, ip: '198.51.100.7' })
  h.clock.advance(60)
  const phone = await h.login({ headers: { 'user-agent': PHONE_UA }, ip: '203.0.113.9' })
  await h.login({ headers: { 'user-agent': PHONE_UA }, ip: '203.0.113.9', username: 'bob' })
  const gone = await h.login({ headers: { 'user-agent': PHONE_UA } })
  await h.app.tokenline.store.revokeSession({ sessionId: sidOf(gone.access_token), reason: 'logout', now: h.clock.now(), events: [] })

  // The phone moves to another network (IP policy `log`): the list shows where it was seen last.
  h.clock.advance(60)
  const moved = await h.refresh(phone.refresh_token as string, { headers: { 'user-agent': PHONE_UA }, ip: '192.0.2.44' })
  t.equal(moved.status, 200)

  const res = await sessionsApi(h, 'GET', '/sessions', laptop.access_token)
  t.equal(res.headers['cache-control'], 'no-store', 'no-store on the sessions API')
  t.equal(res.headers.pragma, 'no-cache')
  const sessions = res.json().sessions as Listed[]
  const start = h.clock.now() - 120_000
  t.same(sessions, [
    {
      id: sidOf(phone.access_token),
      client_id: 'cli',
      created_at: new Date(start + 60_000).toISOString(),
      last_used_at: new Date(start + 120_000).toISOString(),
      user_agent: PHONE_UA,
      ip: '192.0.2.44',
      current: false
    },
    {
      id: sidOf(laptop.access_token),
      client_id: 'cli',
      created_at: new Date(start).toISOString(),
      last_used_at: new Date(start).toISOString(),
      user_agent: BROWSER_UA,
      ip: '198.51.100.7',
      current: true
    }
  ], 'newest first; bob\'s and the revoked session are not there')
  const fromPhone = await list(t, h, moved.body.access_token)
  t.same(fromPhone.map((s) => s.current), [true, false], 'current follows the calling token')
})

t.test('expired and idle sessions are not listed', async (t) => {
  const h = await build(t, { idleTtl: 100, sessionTtl: 1000, accessTokenTtl: 900 })
  const idle = await h.login()
  h.clock.advance(50)
  let active = await h.login()
  h.clock.advance(60) // `idle` is past its idle timeout now; `active` is not
  t.same((await list(t, h, active.access_token)).map((s) => s.id), [sidOf(active.access_token)])
  t.equal((await sessionsApi(h, 'GET', '/sessions', idle.access_token)).statusCode, 401, 'an idle session\'s access token is refused, before its exp')
  for (let i = 0; i < 11; i++) {
    h.clock.advance(90)
    active = (await h.refresh(active.refresh_token as string)).body
  }
  t.equal(active.error, 'invalid_grant', 'the absolute lifetime is over')
})

t.test('DELETE /sessions/:id ends one of the caller\'s sessions at once', async (t) => {
  const h = await build(t)
  const bobId = await h.addUser('bob')
  const a = await h.login()
  const b = await h.login()
  const bob = await h.login({ username: 'bob' })

  const res = await sessionsApi(h, 'DELETE', `/sessions/${sidOf(b.access_token)}`, a.access_token)
  t.equal(res.statusCode, 204)
  t.equal(res.body, '')
  t.equal(res.headers['cache-control'], 'no-store')
  t.same((await list(t, h, a.access_token)).map((s) => s.id), [sidOf(a.access_token)])
  t.equal((await h.refresh(b.refresh_token as string)).body.reason, 'session_revoked', 'its refresh token is dead')
  const bAt = await sessionsApi(h, 'GET', '/sessions', b.access_token)
  t.equal(bAt.statusCode, 401, 'and its access token is refused here at once')
  t.equal(bAt.json().error, 'invalid_token')

  for (const [name, id] of [['someone else\'s', sidOf(bob.access_token)], ['an unknown', 'nope'], ['an already revoked', sidOf(b.access_token)], ['a too long', 'x'.repeat(90)]]) {
    const r = await sessionsApi(h, 'DELETE', `/sessions/${id as string}`, a.access_token)
    t.equal(r.statusCode, 404, `${name as string} session: 404`)
    t.match(r.json(), { error: 'invalid_request', error_description: 'no such session' })
  }
  t.equal((await h.app.tokenline.store.findSession(sidOf(bob.access_token)))?.revokedAt, null, 'bob\'s session is untouched')
  t.equal((await list(t, h, bob.access_token)).length, 1)

  const events = await h.app.tokenline.store.listEvents({ sessionId: sidOf(b.access_token) })
  t.match(events.find((e) => e.type === 'session_revoked'), { reason: 'user_revoked', clientId: 'cli', detail: new RegExp(sidOf(a.access_token)) })
  t.equal((await h.app.tokenline.store.listEvents({ userId: bobId })).filter((e) => e.type === 'session_revoked').length, 0)

  // Ending the current session is allowed; its token stops working with it.
  t.equal((await sessionsApi(h, 'DELETE', `/sessions/${sidOf(a.access_token)}`, a.access_token)).statusCode, 204)
  t.equal((await sessionsApi(h, 'GET', '/sessions', a.access_token)).statusCode, 401)
})

t.test('DELETE /sessions?scope=others ends every session but the current one', async (t) => {
  const h = await build(t)
  await h.addUser('bob')
  const keep = await h.login()
  const others = [await h.login(), await h.login({ client: 'web' }), await h.login()]
  const bob = await h.login({ username: 'bob' })
  const res = await sessionsApi(h, 'DELETE', '/sessions?scope=others', keep.access_token)
  t.equal(res.statusCode, 200)
  t.same(res.json(), { revoked: 3 })
  t.same((await list(t, h, keep.access_token)).map((s) => s.id), [sidOf(keep.access_token)])
  for (const o of others) t.equal((await sessionsApi(h, 'GET', '/sessions', o.access_token)).statusCode, 401)
  t.equal((await h.refresh(keep.refresh_token as string)).status, 200, 'the current session lives on')
  t.equal((await list(t, h, bob.access_token)).length, 1, 'other users are not touched')
  t.same((await sessionsApi(h, 'DELETE', '/sessions?scope=others', keep.access_token)).json(), { revoked: 0 }, 'nothing left to end')

  for (const url of ['/sessions', '/sessions?scope=all', '/sessions?scope=others&scope=others']) {
    const r = await sessionsApi(h, 'DELETE', url, keep.access_token)
    t.equal(r.statusCode, 400, `${url}: 400`)
    t.equal(r.json().error, 'invalid_request')
  }
})

t.test('bad, expired or revoked bearer tokens get 401 invalid_token with a Bearer challenge', async (t) => {
  const h = await build(t, { accessTokenTtl: 60 })
  const login = await h.login()
  const none = await sessionsApi(h, 'GET', '/sessions')
  t.equal(none.statusCode, 401)
  t.equal(none.headers['www-authenticate'], 'Bearer realm="tokenline"', 'no credentials: a bare challenge (RFC 6750 §3.1)')
  t.equal(none.headers['cache-control'], 'no-store')
  const basic = await h.app.inject({ method: 'GET', url: '/sessions', headers: { authorization: 'Basic Y2xpOg==' } })
  t.equal(basic.statusCode, 401, 'another scheme counts as no bearer token')

  const bad = [
    ['garbage', 'garbage'],
    ['a refresh token', login.refresh_token as string],
    ['a forged signature', login.access_token.replace(/\.[^.]+$/, '.AAAA')],
    ['an alg=none token', Buffer.from('{"alg":"none","typ":"at+jwt"}').toString('base64url') + '.' + login.access_token.split('.')[1] + '.']
  ]
  for (const [name, token] of bad) {
    const r = await sessionsApi(h, 'GET', '/sessions', token)
    t.equal(r.statusCode, 401, `${name as string}: 401`)
    t.equal(r.json().error, 'invalid_token')
    t.type(r.json().error_description, 'string')
    t.equal(r.headers['www-authenticate'], 'Bearer error="invalid_token"')
  }
  const lower = await h.app.inject({ method: 'GET', url: '/sessions', headers: { authorization: `bearer ${login.access_token}` } })
  t.equal(lower.statusCode, 200, 'the scheme is case-insensitive')
  const inQuery = await h.app.inject({ method: 'GET', url: `/sessions?access_token=${login.access_token}` })
  t.equal(inQuery.statusCode, 400, 'a token in the query string is refused (RFC 6750 §2.3)')

  h.clock.advance(60)
  const expired = await sessionsApi(h, 'GET', '/sessions', login.access_token)
  t.equal(expired.statusCode, 401, 'an access token at its exp is refused')
  t.equal(expired.headers['www-authenticate'], 'Bearer error="invalid_token"')
})

t.test('a password change and a disabled account end every session, and their access tokens at once', async (t) => {
  const h = await build(t)
  // The CLI runs on the real clock: put the server's clock there too, so the sessions are live to it.
  h.clock.t = Date.now()
  const bobId = await h.addUser('bob')
  const alice = [await h.login(), await h.login({ client: 'web' }), await h.login()]
  const bob = await h.login({ username: 'bob' })
  for (const s of alice) t.equal((await sessionsApi(h, 'GET', '/sessions', s.access_token)).statusCode, 200)

  // The real CLI, on the database file the server is using.
  const passwd = await tokenline(h.database, ['user', 'passwd', 'alice'], 'a brand new passphrase\n')
  t.equal(passwd.code, 0, passwd.stderr)
  t.match(passwd.stdout, /revoked 3 sessions/)
  for (const s of alice) {
    const r = await sessionsApi(h, 'GET', '/sessions', s.access_token)
    t.equal(r.statusCode, 401, 'an access token of a session ended by the password change is refused')
    t.equal(r.json().error, 'invalid_token')
  }
  t.equal((await h.refresh(alice[0]?.refresh_token as string)).body.reason, 'session_revoked')
  t.equal((await sessionsApi(h, 'GET', '/sessions', bob.access_token)).statusCode, 200, 'other users keep their sessions')
  const aliceRow = await h.app.tokenline.store.findUserByUsername('alice')
  const revoked = (await h.app.tokenline.store.listEvents({ userId: aliceRow?.id as string })).filter((e) => e.type === 'session_revoked')
  t.same(revoked.map((e) => e.reason), ['password_changed', 'password_changed', 'password_changed'])

  const again = await h.login({ password: 'a brand new passphrase' })
  t.equal(again.token_type, 'Bearer', 'the new password logs in')
  const disable = await tokenline(h.database, ['user', 'disable', 'alice'])
  t.equal(disable.code, 0, disable.stderr)
  t.match(disable.stdout, /revoked 1 session/)
  t.equal((await sessionsApi(h, 'GET', '/sessions', again.access_token)).statusCode, 401, 'a disabled user\'s access token is refused at once')
  t.equal((await h.refresh(again.refresh_token as string)).body.error, 'invalid_grant', 'and so is the refresh token')
  t.equal((await h.login({ password: 'a brand new passphrase' })).error, 'invalid_grant', 'and new logins')

  const enable = await tokenline(h.database, ['user', 'enable', 'alice'])
  t.equal(enable.code, 0)
  t.equal((await sessionsApi(h, 'GET', '/sessions', again.access_token)).statusCode, 401, 'enabling does not revive old sessions')
  t.equal((await h.refresh(again.refresh_token as string)).body.reason, 'session_revoked')
  t.equal((await sessionsApi(h, 'GET', '/sessions', bob.access_token)).statusCode, 200)
  t.ok(bobId)
})
