import t, { type Test } from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import { build, PASSWORD, SAME_ORIGIN } from './helpers.js'
// Every login here comes from the demo SPA's page, whatever the client's delivery.
import { COOKIE_NAME, cookieLogin as login, cookieRefresh, maxAge, refreshCookie, setCookies, type SetCookie } from './set-cookie.js'

/*
 * The refresh token in an HttpOnly cookie, out of the page's scripts' reach (OAuth 2.0 for
 * Browser-Based Applications, draft, §6.1.3.2): which client gets it where, its attributes
 * (RFC 6265 §4.1.2), its Max-Age against the session's life, and which refusals clear it.
 */

const LOGIN = { grant_type: 'password', username: 'alice', password: PASSWORD }
const DAY = 86400

/** The attributes every refresh cookie carries, set or cleared. */
function assertShape (t: Test, c: SetCookie, path = '/token'): void {
  t.equal(c.name, COOKIE_NAME)
  t.ok(c.name.startsWith('__Secure-'), '__Secure- prefix')
  t.equal(c.attrs.get('httponly'), true, 'HttpOnly')
  t.equal(c.attrs.get('secure'), true, 'Secure')
  t.equal(c.attrs.get('samesite'), 'Strict', 'SameSite=Strict')
  t.equal(c.attrs.get('path'), path, `Path=${path}`)
  t.notOk(c.attrs.has('domain'), 'no Domain: host-only')
  t.ok(Buffer.byteLength(`${c.name}=${c.value}`) <= 4096, 'name and value fit in 4096 bytes (ASVS 5.0 3.3.5)')
}

function assertCleared (t: Test, res: LightMyRequestResponse, path = '/token'): void {
  const c = refreshCookie(res)
  if (c === undefined) { t.fail('the refresh cookie is cleared'); return }
  assertShape(t, c, path)
  t.equal(c.value, '', 'emptied')
  t.equal(c.attrs.get('max-age'), '0', 'Max-Age=0')
}

t.test('login sets exactly one refresh cookie with the exact attributes', async (t) => {
  const h = await build(t)
  const res = await login(h)
  t.equal(setCookies(res).length, 1, 'one Set-Cookie')
  const c = refreshCookie(res)
  if (c === undefined) throw new Error('no cookie')
  assertShape(t, c)
  t.match(c.value, /^tlrt_[\w-]{49}$/, 'the refresh token itself')
  t.equal(maxAge(c), 30 * DAY, 'Max-Age is the whole session at login')
  t.notOk(c.attrs.has('expires'), 'Max-Age only: no Expires computed from a clock other than the server\'s')
})

t.test('with a prefix, the cookie path follows the token endpoint', async (t) => {
  const h = await build(t, { prefix: '/auth' })
  const res = await h.app.inject({
    method: 'POST',
    url: '/auth/token',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...SAME_ORIGIN },
    payload: new URLSearchParams({ ...LOGIN, client_id: 'web' }).toString()
  })
  t.equal(res.statusCode, 200)
  const c = refreshCookie(res)
  if (c === undefined) throw new Error('no cookie')
  assertShape(t, c, '/auth/token')
  const bad = await h.app.inject({
    method: 'POST',
    url: '/auth/token',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...SAME_ORIGIN },
    payload: 'grant_type=refresh_token&client_id=web',
    cookies: { [COOKIE_NAME]: 'tlrt_nonsense' }
  })
  t.equal(bad.statusCode, 400)
  assertCleared(t, bad, '/auth/token')
})

t.test('delivery decides where the refresh token goes', async (t) => {
  const h = await build(t)
  await h.addClient({ id: 'duo', delivery: 'both', origins: 'http://localhost:3000' })

  const cookie = await login(h, 'web')
  t.notOk('refresh_token' in cookie.json(), 'cookie client: never in the body')
  t.ok(refreshCookie(cookie), 'cookie client: in Set-Cookie')

  const body = await login(h, 'cli')
  t.type(body.json().refresh_token, 'string', 'body client: in the body')
  t.equal(setCookies(body).length, 0, 'body client: no Set-Cookie at all')

  const both = await login(h, 'duo')
  t.equal(refreshCookie(both)?.value, both.json().refresh_token, 'both: the same token in body and cookie')

  // The same holds for a refresh.
  const rc = await cookieRefresh(h, refreshCookie(cookie)?.value ?? '')
  t.equal(rc.statusCode, 200)
  t.notOk('refresh_token' in rc.json())
  const rb = await h.token({ grant_type: 'refresh_token', client_id: 'cli', refresh_token: body.json().refresh_token }, { headers: SAME_ORIGIN })
  t.equal(rb.statusCode, 200)
  t.equal(setCookies(rb).length, 0)
  const rd = await cookieRefresh(h, refreshCookie(both)?.value ?? '', { client: 'duo' })
  t.equal(rd.statusCode, 200)
  t.equal(refreshCookie(rd)?.value, rd.json().refresh_token)
})

t.test('a refresh from the cookie alone rotates the cookie', async (t) => {
  const h = await build(t)
  const first = refreshCookie(await login(h))?.value ?? ''
  h.clock.advance(60)
  const res = await cookieRefresh(h, first)
  t.equal(res.statusCode, 200)
  t.type(res.json().access_token, 'string')
  const next = refreshCookie(res)
  if (next === undefined) throw new Error('no cookie')
  assertShape(t, next)
  t.not(next.value, first, 'a new refresh token')
  t.equal(maxAge(next), 30 * DAY - 60, 'Max-Age counts down with the session; rotation never extends it')
  // The rotated-away cookie is now a replay; the new one works.
  t.equal((await cookieRefresh(h, next.value)).statusCode, 200)
})

t.test('Max-Age never exceeds the remaining absolute life, to the last second', async (t) => {
  const h = await build(t)
  await h.addClient({ id: 'short', delivery: 'cookie', origins: 'http://localhost:3000', sessionTtl: 3600, idleTtl: 3600 })
  let value = refreshCookie(await login(h, 'short'))?.value ?? ''
  for (const [step, left] of [[1800, 1800], [1700, 100], [99, 1]] as const) {
    h.clock.advance(step)
    const res = await cookieRefresh(h, value, { client: 'short' })
    t.equal(res.statusCode, 200)
    const c = refreshCookie(res)
    t.equal(maxAge(c), left, `${left} s left, Max-Age=${left}`)
    value = c?.value ?? ''
  }
  h.clock.advance(1)
  const over = await cookieRefresh(h, value, { client: 'short' })
  t.equal(over.json().reason, 'session_expired')
  assertCleared(t, over)
})

t.test('a body token and a different cookie are ambiguous and refused; the same token in both is not', async (t) => {
  const h = await build(t)
  await h.addClient({ id: 'duo', delivery: 'both', origins: 'http://localhost:3000' })
  const a = await login(h, 'duo')
  const b = await login(h, 'duo')
  const tokenA = a.json().refresh_token as string
  const tokenB = b.json().refresh_token as string

  const diff = await cookieRefresh(h, tokenA, { client: 'duo', params: { refresh_token: tokenB } })
  t.equal(diff.statusCode, 400)
  t.equal(diff.json().error, 'invalid_request', 'ambiguous credential')
  t.equal(setCookies(diff).length, 0, 'nothing set or cleared')
  // Neither session was touched.
  t.equal((await cookieRefresh(h, tokenA, { client: 'duo' })).statusCode, 200)
  t.equal((await h.refresh(tokenB, { client: 'duo', headers: SAME_ORIGIN })).status, 200)

  const c = await login(h, 'duo')
  const tokenC = c.json().refresh_token as string
  const same = await cookieRefresh(h, tokenC, { client: 'duo', params: { refresh_token: tokenC } })
  t.equal(same.statusCode, 200, 'the same token twice is not ambiguous')
})

t.test('every invalid_grant caused by the cookie clears it', async (t) => {
  const h = await build(t)
  await h.addClient({ id: 'web2', delivery: 'cookie', origins: 'http://localhost:3000' })
  const cases: Array<[string, () => Promise<LightMyRequestResponse>]> = [
    ['token_invalid', async () => await cookieRefresh(h, 'tlrt_not-a-token')],
    ['token_invalid', async () => {
      // Well formed (valid checksum) but never issued: swap a login token for a fresh, unknown one.
      const { newRefreshToken } = await import('../server/tokens/refresh-format.js')
      return await cookieRefresh(h, newRefreshToken())
    }],
    ['client_mismatch', async () => await cookieRefresh(h, refreshCookie(await login(h))?.value ?? '', { client: 'web2' })],
    ['reuse_detected', async () => {
      const v = refreshCookie(await login(h))?.value ?? ''
      await cookieRefresh(h, v)
      h.clock.advance(11) // past the grace window
      return await cookieRefresh(h, v)
    }],
    ['session_revoked', async () => {
      const v1 = refreshCookie(await login(h))?.value ?? ''
      const v2 = refreshCookie(await cookieRefresh(h, v1))?.value ?? ''
      h.clock.advance(11)
      await cookieRefresh(h, v1) // reuse revokes the session
      // Pretend the legitimate tab still holds v2: it is refused because the session is gone.
      const res = await cookieRefresh(h, v2)
      t.equal(res.json().reason, 'reuse_detected', 'the stored revocation reason is reported')
      return res
    }],
    ['session_idle', async () => {
      const v = refreshCookie(await login(h))?.value ?? ''
      h.clock.advance(7 * DAY)
      return await cookieRefresh(h, v)
    }],
    ['session_expired', async () => {
      await h.addClient({ id: 'brief', delivery: 'cookie', origins: 'http://localhost:3000', sessionTtl: 60 })
      const v = refreshCookie(await login(h, 'brief'))?.value ?? ''
      h.clock.advance(60)
      return await cookieRefresh(h, v, { client: 'brief' })
    }],
    ['fingerprint_mismatch', async () => {
      const v = refreshCookie(await login(h))?.value ?? ''
      return await h.token({ grant_type: 'refresh_token', client_id: 'web' }, {
        headers: { ...SAME_ORIGIN, 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0' },
        cookies: { [COOKIE_NAME]: v }
      })
    }],
    ['account_disabled', async () => {
      await h.addUser('bob')
      const res = await h.token({ ...LOGIN, username: 'bob', client_id: 'web' }, { headers: SAME_ORIGIN })
      const v = refreshCookie(res)?.value ?? ''
      const bob = await h.app.tokenline.store.findUserByUsername('bob')
      // Disabling also revokes the user's sessions; either reason is a refusal caused by the cookie.
      await h.app.tokenline.store.setUserDisabled({ userId: bob?.id ?? '', disabled: true, now: h.clock.now(), events: [] })
      return await cookieRefresh(h, v)
    }]
  ]
  for (const [reason, run] of cases) {
    await t.test(reason, async (t) => {
      const res = await run()
      t.equal(res.statusCode, 400)
      t.equal(res.json().error, 'invalid_grant')
      if (reason === 'account_disabled') t.match(res.json().reason, /^(account_disabled|session_revoked)$/)
      else if (reason !== 'session_revoked') t.equal(res.json().reason, reason)
      assertCleared(t, res)
    })
  }
})

t.test('an invalid_grant for a body token leaves the cookie alone', async (t) => {
  const h = await build(t)
  await h.addClient({ id: 'duo', delivery: 'both', origins: 'http://localhost:3000' })
  const res = await h.token({ grant_type: 'refresh_token', client_id: 'duo', refresh_token: 'tlrt_not-a-token' }, { headers: SAME_ORIGIN })
  t.equal(res.json().error, 'invalid_grant')
  t.equal(setCookies(res).length, 0, 'the body token failed; the cookie may belong to a good session')
  const login = await h.token({ ...LOGIN, client_id: 'web', password: 'wrong' }, { headers: SAME_ORIGIN })
  t.equal(login.json().reason, 'invalid_credentials')
  t.equal(setCookies(login).length, 0, 'a failed login sets no cookie')
})
