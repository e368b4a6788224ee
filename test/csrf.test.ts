import t, { type Test } from 'tap'
import cors from '@fastify/cors'
import Fastify, { type LightMyRequestResponse } from 'fastify'
import { join } from 'node:path'
import tokenline from '../server/plugin.js'
import { build, BROWSER_UA, ORIGIN, PASSWORD, SAME_ORIGIN, type Harness } from './helpers.js'
import { COOKIE_NAME, cookieLogin, cookieRefresh, cookieValue, refreshCookie, setCookies } from './set-cookie.js'

/*
 * Cross-site request forgery against the cookie clients (RFC 6749 §10.12), judged by the headers a
 * browser sends (Origin, RFC 6454 §7, and Sec-Fetch-Site). Every refused request must leave the
 * session exactly as it was: not rotated, not revoked, the cookie not cleared.
 */

const LOGIN = { grant_type: 'password', client_id: 'web', username: 'alice', password: PASSWORD }

/** A hidden auto-submitting form on an attacker's page. */
const CROSS_SITE_FORM = { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate', 'sec-fetch-dest': 'document', 'user-agent': BROWSER_UA }

/** Refused by the CSRF defence (403 csrf_rejected) or before it (400), with nothing set, cleared or readable. */
function assertCsrfRefused (t: Test, res: LightMyRequestResponse, status = 403, allowedOrigin = ORIGIN): void {
  t.equal(res.statusCode, status, `refused with ${status}`)
  t.equal(res.json().error, 'invalid_request')
  if (status === 403) t.equal(res.json().reason, 'csrf_rejected')
  t.equal(setCookies(res).length, 0, 'no Set-Cookie: nothing planted, nothing cleared')
  const acao = res.headers['access-control-allow-origin']
  t.ok(acao === undefined || acao === allowedOrigin, 'no CORS grant to a foreign origin to read the answer')
}

/** The session of `cookie` is as the login left it, and a legitimate same-origin refresh still works. */
async function assertUntouched (t: Test, h: Harness, cookie: string): Promise<void> {
  const events = await h.app.tokenline.store.listEvents({})
  t.same(events.map((e) => e.type), ['login_succeeded'], 'no rotation, revocation or mismatch recorded')
  const ok = await cookieRefresh(h, cookie, { headers: SAME_ORIGIN })
  t.equal(ok.statusCode, 200, 'the same cookie still refreshes from the real page')
  t.ok(refreshCookie(ok)?.value, 'and is rotated then')
}

const REFUSED: Array<[string, Record<string, string>]> = [
  ['cross-site form post', CROSS_SITE_FORM],
  ['cross-site fetch', { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'cors', 'user-agent': BROWSER_UA }],
  ['sibling subdomain (same-site)', { origin: 'https://sibling.example.com', 'sec-fetch-site': 'same-site', 'user-agent': BROWSER_UA }],
  ['same-site from another port of localhost', { origin: 'http://localhost:3001', 'sec-fetch-site': 'same-site', 'user-agent': BROWSER_UA }],
  ['Origin: null (sandboxed iframe, file:)', { origin: 'null', 'user-agent': BROWSER_UA }],
  ['Origin: null with Sec-Fetch-Site cross-site', { origin: 'null', 'sec-fetch-site': 'cross-site', 'user-agent': BROWSER_UA }],
  ['look-alike host suffix', { origin: 'http://localhost:3000.evil.com', 'user-agent': BROWSER_UA }],
  ['look-alike scheme', { origin: 'https://localhost:3000', 'user-agent': BROWSER_UA }],
  ['look-alike trailing slash', { origin: 'http://localhost:3000/', 'user-agent': BROWSER_UA }],
  ['look-alike case', { origin: 'HTTP://LOCALHOST:3000', 'user-agent': BROWSER_UA }],
  ['look-alike port', { origin: 'http://localhost:30000', 'user-agent': BROWSER_UA }],
  // Sec-Fetch-Site passing does not excuse a wrong Origin: both are checked.
  ['look-alike origin with Sec-Fetch-Site same-origin', { origin: 'http://localhost:3000.evil.com', 'sec-fetch-site': 'same-origin', 'user-agent': BROWSER_UA }],
  ['foreign Origin without Sec-Fetch-Site (older browser)', { origin: 'https://evil.example', 'user-agent': BROWSER_UA }],
  ['Sec-Fetch-Site cross-site without Origin', { 'sec-fetch-site': 'cross-site', 'user-agent': BROWSER_UA }],
  ['Sec-Fetch-Site none (typed into the address bar)', { 'sec-fetch-site': 'none', 'user-agent': BROWSER_UA }],
  ['unknown Sec-Fetch-Site value', { origin: ORIGIN, 'sec-fetch-site': 'same-origin, cross-site', 'user-agent': BROWSER_UA }]
]

t.test('a cookie refresh from any page but the client\'s own origin is refused and changes nothing', async (t) => {
  for (const [name, headers] of REFUSED) {
    await t.test(name, async (t) => {
      const h = await build(t)
      const cookie = cookieValue(await cookieLogin(h))
      assertCsrfRefused(t, await cookieRefresh(h, cookie, { headers }))
      await assertUntouched(t, h, cookie)
    })
  }
})

t.test('refused even when the cookie carries garbage: the CSRF check comes first and clears nothing', async (t) => {
  const h = await build(t)
  const res = await cookieRefresh(h, 'tlrt_garbage', { headers: CROSS_SITE_FORM })
  assertCsrfRefused(t, res)
})

t.test('a refused request does not consume the token: no rotation, no reuse later', async (t) => {
  const h = await build(t)
  const cookie = cookieValue(await cookieLogin(h))
  for (let i = 0; i < 3; i++) assertCsrfRefused(t, await cookieRefresh(h, cookie, { headers: CROSS_SITE_FORM }))
  h.clock.advance(60) // past any grace window: a consumed token would now count as reuse
  const ok = await cookieRefresh(h, cookie, { headers: SAME_ORIGIN })
  t.equal(ok.statusCode, 200)
  const session = (await h.app.tokenline.store.listEvents({ limit: 10 })).find((e) => e.type === 'token_rotated')
  t.ok(session, 'the first real rotation is the legitimate one')
})

t.test('text/plain form body (enctype=text/plain) is refused before anything is read', async (t) => {
  const h = await build(t)
  const cookie = cookieValue(await cookieLogin(h))
  for (const headers of [CROSS_SITE_FORM, SAME_ORIGIN, {}]) {
    const res = await h.app.inject({
      method: 'POST',
      url: '/token',
      headers: { ...headers, 'content-type': 'text/plain' },
      cookies: { [COOKIE_NAME]: cookie },
      payload: 'grant_type=refresh_token&client_id=web&x='
    })
    assertCsrfRefused(t, res, 400)
  }
  await assertUntouched(t, h, cookie)
})

t.test('the client\'s own page, an older browser and a non-browser may refresh with the cookie', async (t) => {
  const h = await build(t)
  let cookie = cookieValue(await cookieLogin(h))
  const pass: Array<[string, Record<string, string>]> = [
    ['same-origin fetch', SAME_ORIGIN],
    ['allowed Origin without Sec-Fetch-Site (older browser)', { origin: ORIGIN, 'user-agent': BROWSER_UA }],
    ['neither header: not a browser (curl with a cookie jar)', { 'user-agent': BROWSER_UA }]
  ]
  for (const [name, headers] of pass) {
    const res = await cookieRefresh(h, cookie, { headers })
    t.equal(res.statusCode, 200, name)
    cookie = refreshCookie(res)?.value ?? ''
  }
})

t.test('sibling subdomains with csrfSameSite allow: the Origin must still be listed', async (t) => {
  const h = await build(t, { csrfSameSite: 'allow' })
  const sibling = 'http://app.localhost:5173'
  await h.addClient({ id: 'spa', delivery: 'cookie', origins: sibling })
  const headers = { origin: sibling, 'sec-fetch-site': 'same-site', 'user-agent': BROWSER_UA }
  const login = await h.token({ ...LOGIN, client_id: 'spa' }, { headers })
  t.equal(login.statusCode, 200, 'login from the listed sibling')
  const cookie = refreshCookie(login)?.value ?? ''
  const evil = await cookieRefresh(h, cookie, { client: 'spa', headers: { ...headers, origin: 'http://evil.localhost:5173' } })
  assertCsrfRefused(t, evil)
  const ok = await cookieRefresh(h, cookie, { client: 'spa', headers })
  t.equal(ok.statusCode, 200, 'refresh from the listed sibling')
  const cross = await cookieRefresh(h, refreshCookie(ok)?.value ?? '', { client: 'spa', headers: { ...headers, 'sec-fetch-site': 'cross-site' } })
  assertCsrfRefused(t, cross, 403, sibling)
})

t.test('login CSRF: the password grant of cookie clients', async (t) => {
  const h = await build(t)
  await h.addClient({ id: 'duo', delivery: 'both', origins: ORIGIN })
  for (const client of ['web', 'duo']) {
    for (const [name, headers] of REFUSED) {
      const res = await h.token({ ...LOGIN, client_id: client }, { headers })
      t.equal(res.statusCode, 403, `${client}: ${name}`)
      t.equal(setCookies(res).length, 0, 'no attacker session planted')
    }
  }
  const events = await h.app.tokenline.store.listEvents({})
  t.same(events, [], 'no session started, no password checked')
  t.equal((await h.token(LOGIN, { headers: SAME_ORIGIN })).statusCode, 200, 'the real login page works')
  t.equal((await h.token(LOGIN, { headers: { 'user-agent': 'curl/8.5.0' } })).statusCode, 200, 'curl (no Origin) works')
})

t.test('body clients are not cookie-authenticated: no CSRF check on their grants', async (t) => {
  const h = await build(t)
  // A page cannot read the answer (no CORS grant) and no cookie is planted, so there is nothing to forge.
  const login = await h.token({ ...LOGIN, client_id: 'cli' }, { headers: CROSS_SITE_FORM })
  t.equal(login.statusCode, 200)
  t.notOk(login.headers['access-control-allow-origin'])
  const res = await h.refresh(login.json().refresh_token, { headers: CROSS_SITE_FORM })
  t.equal(res.status, 200, 'the token in the body is not ambient authority')
})

t.test('CORS: only the cookie clients\' origins may read the answers', async (t) => {
  const h = await build(t)
  const preflight = async (origin: string): Promise<LightMyRequestResponse> => await h.app.inject({
    method: 'OPTIONS',
    url: '/token',
    headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, x-requested-with' }
  })
  const varyHasOrigin = (res: LightMyRequestResponse): boolean => String(res.headers.vary ?? '').split(',').map((s) => s.trim().toLowerCase()).includes('origin')

  await t.test('a foreign preflight is not answered', async (t) => {
    for (const origin of ['https://evil.example', 'null', 'http://localhost:3000.evil.com', 'https://localhost:3000', 'http://localhost:3000/']) {
      const res = await preflight(origin)
      t.not(res.statusCode, 204, origin)
      for (const k of Object.keys(res.headers)) t.notOk(k.startsWith('access-control-'), `${origin}: no ${k}`)
      t.ok(varyHasOrigin(res), 'Vary: Origin')
    }
  })

  await t.test('an allowed preflight echoes the exact origin with credentials', async (t) => {
    const res = await preflight(ORIGIN)
    t.equal(res.statusCode, 204)
    t.equal(res.headers['access-control-allow-origin'], ORIGIN)
    t.equal(res.headers['access-control-allow-credentials'], 'true')
    t.match(res.headers['access-control-allow-methods'], /POST/)
    t.match(res.headers['access-control-allow-headers'], /content-type/)
    t.ok(varyHasOrigin(res), 'Vary: Origin')
  })

  await t.test('actual responses: ACAO only for allowed origins, never *', async (t) => {
    const ok = await h.token(LOGIN, { headers: SAME_ORIGIN })
    t.equal(ok.headers['access-control-allow-origin'], ORIGIN)
    t.equal(ok.headers['access-control-allow-credentials'], 'true')
    t.ok(varyHasOrigin(ok))
    const err = await h.token({ ...LOGIN, password: 'wrong' }, { headers: SAME_ORIGIN })
    t.equal(err.headers['access-control-allow-origin'], ORIGIN, 'the SPA can read error bodies too')
    const foreign = await h.token(LOGIN, { headers: CROSS_SITE_FORM })
    t.notOk(foreign.headers['access-control-allow-origin'])
    t.notOk(foreign.headers['access-control-allow-credentials'])
    t.ok(varyHasOrigin(foreign), 'Vary: Origin even when refused, so caches keep the answers apart')
    const none = await h.token(LOGIN, { headers: { 'user-agent': BROWSER_UA } })
    t.notOk(none.headers['access-control-allow-origin'], 'no Origin, no CORS headers')
    for (const res of [ok, err, foreign, none]) t.not(res.headers['access-control-allow-origin'], '*')
  })

  await t.test('metadata is readable cross-origin only by allowed origins too', async (t) => {
    const ok = await h.app.inject({ method: 'GET', url: '/.well-known/oauth-authorization-server', headers: { origin: ORIGIN } })
    t.equal(ok.headers['access-control-allow-origin'], ORIGIN)
    const foreign = await h.app.inject({ method: 'GET', url: '/.well-known/oauth-authorization-server', headers: { origin: 'https://evil.example' } })
    t.notOk(foreign.headers['access-control-allow-origin'])
  })

  await t.test('a client added while the server runs is allowed at once', async (t) => {
    const origin = 'https://app.example.com'
    t.not((await preflight(origin)).statusCode, 204, 'unknown before')
    await h.addClient({ id: 'later', delivery: 'cookie', origins: `https://other.example.com ${origin}` })
    const res = await preflight(origin)
    t.equal(res.statusCode, 204)
    t.equal(res.headers['access-control-allow-origin'], origin)
    // A value spanning two list entries, or a prefix of one, matches nothing.
    t.not((await preflight(`https://other.example.com ${origin}`)).statusCode, 204)
    t.not((await preflight('https://app.example')).statusCode, 204)
  })
})

t.test('a host that registered @fastify/cors first keeps its own policy', async (t) => {
  const app = Fastify()
  await app.register(cors, { origin: ['https://host.example'], credentials: true })
  await app.register(tokenline, { database: join(t.testdir({}), 'tl.db'), logEvents: false })
  t.teardown(() => app.close())
  await app.ready()
  const preflight = async (origin: string): Promise<LightMyRequestResponse> =>
    await app.inject({ method: 'OPTIONS', url: '/token', headers: { origin, 'access-control-request-method': 'POST' } })
  const host = await preflight('https://host.example')
  t.equal(host.statusCode, 204)
  t.equal(host.headers['access-control-allow-origin'], 'https://host.example', 'the host\'s list governs Tokenline\'s routes')
  const foreign = await preflight('https://evil.example')
  t.notOk(foreign.headers['access-control-allow-origin'])
})
