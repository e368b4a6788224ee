import t from 'tap'
import { build, type Harness } from './helpers.js'
import { COOKIE_NAME, SAME_ORIGIN, cookieLogin, cookieRefresh, post, refresh, refreshSetCookie, revoke, sessionsApi, sidOf } from './session-helpers.js'

/*
 * RFC 7009 revocation and browser logout (SPEC §3, §7; security.md J1-J4, X5). Revoking any token of
 * a session ends the whole session; unknown tokens are a quiet 200; another client's token is never
 * revoked.
 */

const basic = (id: string, secret: string): string => 'Basic ' + Buffer.from(`${id}:${secret}`).toString('base64')

/** A login with `cli` followed by two rotations: [rt0, rt1, rt2], rt2 live, and the last access token. */
async function family (h: Harness): Promise<{ rts: string[], at: string }> {
  const login = await h.login()
  const rts = [login.refresh_token as string]
  let at = login.access_token
  for (let i = 0; i < 2; i++) {
    const r = await refresh(h, rts[i] as string)
    rts.push(r.body.refresh_token as string)
    at = r.body.access_token
  }
  return { rts, at }
}

async function revokedReason (h: Harness, sid: string): Promise<string | null | undefined> {
  return (await h.app.tokenline.store.findSession(sid))?.revokedReason
}

t.test('revoking the live refresh token ends the session: every member of the family is refused', async (t) => {
  const h = await build(t)
  const other = await h.login()
  const { rts, at } = await family(h)
  const res = await revoke(h, { client_id: 'cli', token: rts[2] as string, token_type_hint: 'refresh_token' })
  t.equal(res.statusCode, 200)
  t.equal(res.body, '', 'an empty body')
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(res.headers.pragma, 'no-cache')
  t.match(refreshSetCookie(res), /^__Secure-tokenline-rt=;.*Max-Age=0/, 'the refresh cookie is cleared')
  t.match(refreshSetCookie(res), /Path=\/token/)
  t.equal(await revokedReason(h, sidOf(at)), 'logout')

  for (const [i, rt] of rts.entries()) {
    const r = await refresh(h, rt)
    t.equal(r.status, 400, `rt${i} is refused`)
    t.equal(r.body.error, 'invalid_grant')
    t.equal(r.body.reason, 'session_revoked', `rt${i}: the session was revoked, not a reuse`)
  }
  t.equal((await sessionsApi(h, 'GET', '/sessions', at)).statusCode, 401, 'the session\'s access token is refused by the sessions API')
  t.equal((await refresh(h, other.refresh_token as string)).status, 200, 'the user\'s other session lives on')

  const events = await h.app.tokenline.store.listEvents({ sessionId: sidOf(at) })
  const revoked = events.filter((e) => e.type === 'session_revoked')
  t.equal(revoked.length, 1, 'one session_revoked event')
  t.match(revoked[0], { reason: 'logout', clientId: 'cli', ip: '127.0.0.1', detail: /"token_type":"refresh_token"/ })
})

t.test('revoking a consumed refresh token, or an access token, ends the session too', async (t) => {
  const h = await build(t)
  const a = await family(h)
  t.equal((await revoke(h, { client_id: 'cli', token: a.rts[0] as string })).statusCode, 200)
  t.equal(await revokedReason(h, sidOf(a.at)), 'logout', 'an old generation names the same session')

  const b = await family(h)
  // A wrong hint is ignored (RFC 7009 §2.1: the server extends its search to every type).
  const res = await revoke(h, { client_id: 'cli', token: b.at, token_type_hint: 'refresh_token' })
  t.equal(res.statusCode, 200)
  t.equal(res.body, '')
  t.equal(await revokedReason(h, sidOf(b.at)), 'logout')
  t.equal((await refresh(h, b.rts[2] as string)).body.reason, 'session_revoked', 'the live refresh token died with its session')
  t.equal((await sessionsApi(h, 'GET', '/sessions', b.at)).statusCode, 401, 'and the access token itself')

  const c = await family(h)
  t.equal((await revoke(h, { client_id: 'cli', token: c.at, token_type_hint: 'something_else' })).statusCode, 200, 'an unknown hint is ignored')
  t.equal(await revokedReason(h, sidOf(c.at)), 'logout')
})

t.test('unknown, malformed, expired and already revoked tokens get a quiet 200 and change nothing', async (t) => {
  const h = await build(t, { accessTokenTtl: 60 })
  const live = await h.login()
  const expired = await h.login()
  h.clock.advance(61)
  const store = h.app.tokenline.store
  const before = (await store.listEvents({})).length
  const tokens = [
    'garbage',
    'tlrt_' + 'A'.repeat(49), // the right shape, a wrong checksum
    (live.refresh_token as string).slice(0, -1) + ((live.refresh_token as string).endsWith('A') ? 'B' : 'A'),
    expired.access_token, // past its exp: not a token any more
    live.access_token.replace(/\.[^.]+$/, '.AAAA'), // a forged signature
    'x'.repeat(4000)
  ]
  for (const token of tokens) {
    const res = await revoke(h, { client_id: 'cli', token })
    t.equal(res.statusCode, 200, `${token.slice(0, 12)}… -> 200`)
    t.equal(res.body, '')
  }
  t.equal(await revokedReason(h, sidOf(expired.access_token)), null, 'an expired access token revokes nothing')
  t.equal((await store.listEvents({})).length, before, 'and nothing was recorded')
  t.equal((await refresh(h, live.refresh_token as string)).status, 200, 'the live session is untouched')

  const gone = await h.login()
  t.equal((await revoke(h, { client_id: 'cli', token: gone.refresh_token as string })).statusCode, 200)
  t.equal((await revoke(h, { client_id: 'cli', token: gone.refresh_token as string })).statusCode, 200, 'revoking twice is still 200')
  const revokedEvents = (await store.listEvents({ sessionId: sidOf(gone.access_token) })).filter((e) => e.type === 'session_revoked')
  t.equal(revokedEvents.length, 1, 'and records the revocation once')
})

t.test('a missing token is invalid_request; so are bad bodies', async (t) => {
  const h = await build(t)
  const none = await revoke(h, { client_id: 'cli' })
  t.equal(none.statusCode, 400)
  t.match(none.json(), { error: 'invalid_request', error_description: 'missing required parameter token' })
  t.equal(none.headers['cache-control'], 'no-store', 'errors are not cached either')
  t.equal((await revoke(h, { client_id: 'cli', token: '' })).statusCode, 400, 'an empty token counts as missing (RFC 6749 §3.2)')
  const query = await h.app.inject({ method: 'POST', url: '/token/revoke?token=x', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'client_id=cli' })
  t.equal(query.statusCode, 400, 'never a token in the query string')
  const twice = await h.app.inject({ method: 'POST', url: '/token/revoke', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'client_id=cli&token=a&token=b' })
  t.equal(twice.statusCode, 400, 'a repeated parameter')
  const text = await h.app.inject({ method: 'POST', url: '/token/revoke', headers: { 'content-type': 'text/plain' }, payload: 'client_id=cli&token=a' })
  t.equal(text.statusCode, 400, 'a text/plain body')
  t.equal(text.json().error, 'invalid_request')
})

t.test('JSON bodies are accepted like form bodies', async (t) => {
  const h = await build(t)
  const login = await h.login()
  const res = await h.app.inject({ method: 'POST', url: '/token/revoke', payload: { client_id: 'cli', token: login.refresh_token } })
  t.equal(res.statusCode, 200)
  t.equal(await revokedReason(h, sidOf(login.access_token)), 'logout')
})

t.test('client authentication is the token endpoint\'s', async (t) => {
  const h = await build(t)
  const login = await h.login()
  const wrongBasic = await revoke(h, { token: login.refresh_token as string }, { headers: { authorization: basic('svc', 'wrong') } })
  t.equal(wrongBasic.statusCode, 401)
  t.equal(wrongBasic.json().error, 'invalid_client')
  t.match(wrongBasic.headers['www-authenticate'], /^Basic /)
  const wrongBody = await revoke(h, { client_id: 'svc', client_secret: 'wrong', token: login.refresh_token as string })
  t.equal(wrongBody.statusCode, 400)
  t.equal(wrongBody.json().error, 'invalid_client')
  t.notOk(wrongBody.headers['www-authenticate'])
  t.equal((await revoke(h, { client_id: 'nobody', token: login.refresh_token as string })).json().error, 'invalid_client')
  t.equal((await revoke(h, { token: login.refresh_token as string })).statusCode, 400, 'no client at all')
  t.equal(await revokedReason(h, sidOf(login.access_token)), null, 'nothing was revoked by the failed attempts')
})

t.test('another client\'s token: 400 to a confidential client, a silent 200 to a public one, and it stays valid', async (t) => {
  const h = await build(t)
  const store = h.app.tokenline.store
  const cliLogin = await h.login()
  // svc is confidential: h.login sends no secret, so log in by hand.
  const svc = (await h.token({ grant_type: 'password', client_id: 'svc', client_secret: 'svc-secret', username: 'alice', password: 'correct horse battery staple' })).json()

  for (const token of [cliLogin.refresh_token as string, cliLogin.access_token]) {
    const res = await revoke(h, { token }, { headers: { authorization: basic('svc', 'svc-secret') } })
    t.equal(res.statusCode, 400)
    t.match(res.json(), { error: 'invalid_request', error_description: 'token was issued to another client' })
  }
  t.equal(await revokedReason(h, sidOf(cliLogin.access_token)), null)
  const next = await refresh(h, cliLogin.refresh_token as string)
  t.equal(next.status, 200, 'cli\'s token still works')

  for (const token of [svc.refresh_token as string, svc.access_token as string]) {
    const res = await revoke(h, { client_id: 'cli', token })
    t.equal(res.statusCode, 200, 'a public client gets a silent 200')
    t.equal(res.body, '')
  }
  t.equal(await revokedReason(h, sidOf(svc.access_token)), null)
  const svcNext = await h.token({ grant_type: 'refresh_token', client_id: 'svc', client_secret: 'svc-secret', refresh_token: svc.refresh_token })
  t.equal(svcNext.statusCode, 200, 'svc\'s token still works')

  const alice = await store.findUserByUsername('alice')
  const refused = (await store.listEvents({ userId: alice?.id as string })).filter((e) => e.type === 'revocation_refused')
  t.equal(refused.length, 4, 'every refused attempt is on the audit trail')
  t.ok(refused.every((e) => e.reason === 'client_mismatch'))

  // The owner can still revoke its own.
  t.equal((await revoke(h, { token: svc.refresh_token }, { headers: { authorization: basic('svc', 'svc-secret') } })).statusCode, 200)
  t.equal(await revokedReason(h, sidOf(svc.access_token)), 'logout')
})

t.test('browser logout with the refresh cookie: same-origin only, and the cookie is cleared', async (t) => {
  const h = await build(t)
  const { cookie, access_token: at } = await cookieLogin(h)

  const crossSite = await revoke(h, { client_id: 'web' }, { headers: { ...SAME_ORIGIN, 'sec-fetch-site': 'cross-site', origin: 'https://evil.example' }, cookies: { [COOKIE_NAME]: cookie } })
  t.equal(crossSite.statusCode, 403, 'a cross-site logout is refused')
  t.equal(crossSite.json().reason, 'csrf_rejected')
  t.equal(refreshSetCookie(crossSite), undefined, 'and the cookie is left alone')
  const sibling = await revoke(h, { client_id: 'web' }, { headers: { ...SAME_ORIGIN, 'sec-fetch-site': 'same-site' }, cookies: { [COOKIE_NAME]: cookie } })
  t.equal(sibling.statusCode, 403, 'a sibling subdomain is refused too')
  const badOrigin = await revoke(h, { client_id: 'web' }, { headers: { ...SAME_ORIGIN, origin: 'null' }, cookies: { [COOKIE_NAME]: cookie } })
  t.equal(badOrigin.statusCode, 403, 'Origin: null never matches')
  t.equal(await revokedReason(h, sidOf(at)), null, 'the session is untouched')

  const rotated = await cookieRefresh(h, cookie)
  t.equal(rotated.statusCode, 200, 'and the cookie still refreshes')
  const live = rotated.cookies.find((c) => c.name === COOKIE_NAME)?.value as string

  const res = await revoke(h, { client_id: 'web' }, { headers: SAME_ORIGIN, cookies: { [COOKIE_NAME]: live } })
  t.equal(res.statusCode, 200)
  t.equal(res.body, '')
  const cleared = refreshSetCookie(res) ?? ''
  t.match(cleared, /^__Secure-tokenline-rt=;/, 'the cookie is emptied')
  for (const attr of ['Max-Age=0', 'Path=/token', 'HttpOnly', 'Secure', 'SameSite=Strict']) t.ok(cleared.includes(attr), attr)
  t.equal(await revokedReason(h, sidOf(at)), 'logout')
  const after = await cookieRefresh(h, live)
  t.equal(after.statusCode, 400)
  t.equal(after.json().reason, 'session_revoked')

  // curl with a cookie jar sends neither Origin nor Sec-Fetch-Site: not a browser, no CSRF to fear.
  const second = await cookieLogin(h)
  const curl = await revoke(h, { client_id: 'web' }, { cookies: { [COOKIE_NAME]: second.cookie } })
  t.equal(curl.statusCode, 200)
  t.equal(await revokedReason(h, sidOf(second.access_token)), 'logout')

  const noCookie = await revoke(h, { client_id: 'web' }, { headers: SAME_ORIGIN })
  t.equal(noCookie.statusCode, 400, 'no token and no cookie is invalid_request')
})

t.test('routes follow the plugin prefix, and the cookie path with them', async (t) => {
  const h = await build(t, { prefix: '/auth' })
  const login = await h.app.inject({ method: 'POST', url: '/auth/token', payload: { grant_type: 'password', client_id: 'cli', username: 'alice', password: 'correct horse battery staple' } })
  const rt = login.json().refresh_token as string
  const at = login.json().access_token as string
  const listed = await sessionsApi(h, 'GET', '/auth/sessions', at)
  t.equal(listed.statusCode, 200, 'the sessions API is under the prefix too')
  t.equal(listed.json().sessions.length, 1)
  t.equal((await sessionsApi(h, 'GET', '/sessions', at)).statusCode, 404, 'and not outside it')
  const res = await post(h, '/auth/token/revoke', { client_id: 'cli', token: rt })
  t.equal(res.statusCode, 200)
  t.match(refreshSetCookie(res), /Path=\/auth\/token/)
  t.equal((await h.app.inject({ method: 'POST', url: '/auth/token', payload: { grant_type: 'refresh_token', client_id: 'cli', refresh_token: rt } })).json().reason, 'session_revoked')
  const meta = (await h.app.inject({ method: 'GET', url: '/auth/.well-known/oauth-authorization-server' })).json()
  t.equal(meta.revocation_endpoint, 'http://localhost:3000/auth/token/revoke')
  t.same(meta.revocation_endpoint_auth_methods_supported, ['none', 'client_secret_basic', 'client_secret_post'])
  t.equal(meta.introspection_endpoint, 'http://localhost:3000/auth/token/introspect')
  t.same(meta.introspection_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post'])
})
