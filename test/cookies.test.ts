import t, { type Test } from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import { build, PASSWORD, type Harness } from './helpers.js'
import { COOKIE_NAME, refreshCookie, SAME_ORIGIN, setCookies, type SetCookie } from './set-cookie.js'

const LOGIN = { grant_type: 'password', username: 'alice', password: PASSWORD }
const DAY = 86400

async function login (h: Harness, client = 'web'): Promise<LightMyRequestResponse> {
  const res = await h.token({ ...LOGIN, client_id: client }, { headers: SAME_ORIGIN })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.body}`)
  return res
}

/** A refresh carrying only the cookie, as the demo SPA sends it. */
async function refreshWithCookie (h: Harness, value: string, client = 'web', extra: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return await h.token({ grant_type: 'refresh_token', client_id: client, ...extra }, { headers: SAME_ORIGIN, cookies: { [COOKIE_NAME]: value } })
}

/** The attributes every refresh cookie carries, set or cleared (browser-apps draft §6.1.3.2; security.md G1, X3). */
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

const maxAge = (c: SetCookie | undefined): number => Number(c?.attrs.get('max-age'))

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
  const rc = await refreshWithCookie(h, refreshCookie(cookie)?.value ?? '')
  t.equal(rc.statusCode, 200)
  t.notOk('refresh_token' in rc.json())
  const rb = await h.token({ grant_type: 'refresh_token', client_id: 'cli', refresh_token: body.json().refresh_token }, { headers: SAME_ORIGIN })
  t.equal(rb.statusCode, 200)
  t.equal(setCookies(rb).length, 0)
  const rd = await refreshWithCookie(h, refreshCookie(both)?.value ?? '', 'duo')
  t.equal(rd.statusCode, 200)
  t.equal(refreshCookie(rd)?.value, rd.json().refresh_token)
})

t.test('a refresh from the cookie alone rotates the cookie', async (t) => {
  const h = await build(t)
  const first = refreshCookie(await login(h))?.value ?? ''
  h.clock.advance(60)
  const res = await refreshWithCookie(h, first)
  t.equal(res.statusCode, 200)
  t.type(res.json().access_token, 'string')
  const next = refreshCookie(res)
  if (next === undefined) throw new Error('no cookie')
  assertShape(t, next)
  t.not(next.value, first, 'a new refresh token')
  t.equal(maxAge(next), 30 * DAY - 60, 'Max-Age counts down with the session; rotation never extends it')
  // The rotated-away cookie is now a replay; the new one works.
  t.equal((await refreshWithCookie(h, next.value)).statusCode, 200)
})

t.test('Max-Age never exceeds the remaining absolute life, to the last second', async (t) => {
  const h = await build(t)
  await h.addClient({ id: 'short', delivery: 'cookie', origins: 'http://localhost:3000', sessionTtl: 3600, idleTtl: 3600 })
  let value = refreshCookie(await login(h, 'short'))?.value ?? ''
  for (const [step, left] of [[1800, 1800], [1700, 100], [99, 1]] as const) {
    h.clock.advance(step)
    const res = await refreshWithCookie(h, value, 'short')
    t.equal(res.statusCode, 200)
    const c = refreshCookie(res)
    t.equal(maxAge(c), left, `${left} s left, Max-Age=${left}`)
    value = c?.value ?? ''
  }
  h.clock.advance(1)
  const over = await refreshWithCookie(h, value, 'short')
  t.equal(over.json().reason, 'session_expired')
  assertCleared(t, over)
})

t.test('body and cookie both present', async (t) => {
  const h = await build(t)
  await h.addClient({ id: 'duo', delivery: 'both', origins: 'http://localhost:3000' })
  const a = await login(h, 'duo')
  const b = await login(h, 'duo')
  const tokenA = a.json().refresh_token as string
  const tokenB = b.json().refresh_token as string

  const diff = await refreshWithCookie(h, tokenA, 'duo', { refresh_token: tokenB })
  t.equal(diff.statusCode, 400)
  t.equal(diff.json().error, 'invalid_request', 'ambiguous credential')
  t.equal(setCookies(diff).length, 0, 'nothing set or cleared')
  // Neither session was touched.
  t.equal((await refreshWithCookie(h, tokenA, 'duo')).statusCode, 200)
  t.equal((await h.token({ grant_type: 'refresh_token', client_id: 'duo', refresh_token: tokenB }, { headers: SAME_ORIGIN })).statusCode, 200)

  const c = await login(h, 'duo')
  const tokenC = c.json().refresh_token as string
  const same = await refreshWithCookie(h, tokenC, 'duo', { refresh_token: tokenC })
  t.equal(same.statusCode, 200, 'the same token twice is not ambiguous')
})

t.test('every invalid_grant caused by the cookie clears it', async (t) => {
  const h = await build(t)
  await h.addClient({ id: 'web2', delivery: 'cookie', origins: 'http://localhost:3000' })
  const cases: Array<[string, () => Promise<LightMyRequestResponse>]> = [
    ['token_invalid', async () => await refreshWithCookie(h, 'tlrt_not-a-token')],
    ['token_invalid', async () => {
      // Well formed (valid checksum) but never issued: swap a login token for a fresh, unknown one.
      const { newRefreshToken } = await import('../server/tokens/refresh-format.js')
      return await refreshWithCookie(h, newRefreshToken())
    }],
    ['client_mismatch', async () => await refreshWithCookie(h, refreshCookie(await login(h))?.value ?? '', 'web2')],
    ['reuse_detected', async () => {
      const v = refreshCookie(await login(h))?.value ?? ''
      await refreshWithCookie(h, v)
      h.clock.advance(11) // past the grace window
      return await refreshWithCookie(h, v)
    }],
    ['session_revoked', async () => {
      const v1 = refreshCookie(await login(h))?.value ?? ''
      const v2 = refreshCookie(await refreshWithCookie(h, v1))?.value ?? ''
      h.clock.advance(11)
      await refreshWithCookie(h, v1) // reuse revokes the session
      // Pretend the legitimate tab still holds v2: it is refused because the session is gone.
      const res = await refreshWithCookie(h, v2)
      t.equal(res.json().reason, 'reuse_detected', 'the stored revocation reason is reported')
      return res
    }],
    ['session_idle', async () => {
      const v = refreshCookie(await login(h))?.value ?? ''
      h.clock.advance(7 * DAY)
      return await refreshWithCookie(h, v)
    }],
    ['session_expired', async () => {
      await h.addClient({ id: 'brief', delivery: 'cookie', origins: 'http://localhost:3000', sessionTtl: 60 })
      const v = refreshCookie(await login(h, 'brief'))?.value ?? ''
      h.clock.advance(60)
      return await refreshWithCookie(h, v, 'brief')
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
      return await refreshWithCookie(h, v)
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
