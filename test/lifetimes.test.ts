import { decodeJwt } from 'jose'
import t from 'tap'
import { build, sidOf as sid, type TokenBody } from './helpers.js'
import { assertLineage } from './invariants.js'
import { cookieRefresh, maxAge, refreshCookie } from './set-cookie.js'

/*
 * Lifetimes on an injected clock, at their exact boundaries (RFC 9700 §4.14.2: refresh tokens expire,
 * and after a period of inactivity): a session is usable while now < deadline; the idle deadline moves
 * with use but never past the absolute one, which rotation never moves.
 */

const HOUR = 3600
const MIN = 60
const LIMITS = { sessionTtl: 8 * HOUR, idleTtl: HOUR, reuseGrace: 10 }

t.test('the absolute lifetime: refreshing every 50 min works until 8 h and not at 8 h', async (t) => {
  const h = await build(t, LIMITS)
  const store = h.app.tokenline.store
  const start = h.clock.now()
  const login = await h.login()
  let token = login.refresh_token as string
  for (let m = 50; m <= 450; m += 50) {
    h.clock.advance(50 * MIN)
    const r = await h.refresh(token)
    t.equal(r.status, 200, `refresh at ${m} min works`)
    token = r.body.refresh_token as string
  }
  h.clock.advance(20 * MIN)
  const at750 = await h.refresh(token)
  t.equal(at750.status, 200, 'refresh at 7 h 50 m works')
  token = at750.body.refresh_token as string

  const session = await store.findSession(sid(login))
  t.equal(session?.expiresAt, start + 8 * HOUR * 1000, 'rotation never moved the absolute expiry')
  t.equal(session?.idleExpiresAt, start + 8 * HOUR * 1000, 'the idle deadline is capped at the absolute one, not 8 h 50 m')

  h.clock.advance(10 * MIN - 0.001)
  const justBefore = await h.refresh(token)
  t.equal(justBefore.status, 200, 'refresh 1 ms before 8 h works')
  token = justBefore.body.refresh_token as string
  h.clock.advance(0.001)
  const at8 = await h.refresh(token)
  t.equal(at8.status, 400, 'refresh at exactly 8 h fails')
  t.equal(at8.body.error, 'invalid_grant')
  t.equal(at8.body.reason, 'session_expired', 'as expired, not idle: the idle deadline never passed the absolute one')
  await assertLineage(t, h.database)
})

t.test('the idle timeout: exactly 1 h unused ends the session, 1 h - 1 ms does not', async (t) => {
  const h = await build(t, LIMITS)
  const idle = await h.login()
  const fresh = await h.login()
  h.clock.advance(HOUR - 0.001)
  const before = await h.refresh(fresh.refresh_token as string)
  t.equal(before.status, 200, 'unused for 1 h - 1 ms: still works')
  h.clock.advance(0.001)
  const at = await h.refresh(idle.refresh_token as string)
  t.equal(at.status, 400, 'unused for exactly 1 h: refused')
  t.equal(at.body.error, 'invalid_grant')
  t.equal(at.body.reason, 'session_idle')

  // Use moves the idle deadline: the refreshed session now has a full hour again from its last use.
  h.clock.advance(HOUR - 0.002) // 1 h - 1 ms after that refresh
  const again = await h.refresh(before.body.refresh_token as string)
  t.equal(again.status, 200, 'each use restarts the idle hour')
  h.clock.advance(HOUR)
  const late = await h.refresh(again.body.refresh_token as string)
  t.equal(late.body.reason, 'session_idle')
  await assertLineage(t, h.database)
})

t.test('access token exp is iat + accessTokenTtl', async (t) => {
  const h = await build(t, { ...LIMITS, accessTokenTtl: 300 })
  // An instant with a fractional second: iat is whole seconds, exp follows it exactly.
  h.clock.advance(0.750)
  const login = await h.login()
  const check = (body: TokenBody, what: string): void => {
    const claims = decodeJwt(body.access_token)
    t.equal(claims.iat, Math.floor(h.clock.now() / 1000), `${what}: iat is now`)
    t.equal(claims.exp, (claims.iat as number) + 300, `${what}: exp = iat + 300`)
    t.equal(body.expires_in, 300, `${what}: expires_in = 300`)
  }
  check(login, 'login')
  h.clock.advance(100.5)
  check((await h.refresh(login.refresh_token as string)).body, 'refresh')
})

t.test('per-client lifetimes override the server defaults', async (t) => {
  const h = await build(t, LIMITS)
  await h.addClient({ id: 'short', scopes: 'read', accessTtl: 60, idleTtl: 10 * MIN, sessionTtl: 30 * MIN })
  const start = h.clock.now()

  const login = await h.login({ client: 'short' })
  t.equal(login.expires_in, 60, 'access_ttl: expires_in')
  const claims = decodeJwt(login.access_token)
  t.equal((claims.exp as number) - (claims.iat as number), 60, 'access_ttl: exp - iat')
  const session = await h.app.tokenline.store.findSession(sid(login))
  t.equal(session?.expiresAt, start + 30 * MIN * 1000, 'session_ttl sets the absolute expiry')
  t.equal(session?.idleExpiresAt, start + 10 * MIN * 1000, 'idle_ttl sets the idle deadline')

  const idle = await h.login({ client: 'short' })
  let token = login.refresh_token as string
  const step = async (minutes: number, at: string): Promise<void> => {
    h.clock.advance(minutes * MIN)
    const r = await h.refresh(token, { client: 'short' })
    t.equal(r.status, 200, `refresh at ${at} works`)
    t.equal(r.body.expires_in, 60)
    token = r.body.refresh_token as string
  }
  await step(9, '9 min')
  h.clock.advance(1 * MIN)
  t.equal((await h.refresh(idle.refresh_token as string, { client: 'short' })).body.reason, 'session_idle', 'idle_ttl: unused for 10 min ends it')
  await step(8, '18 min')
  await step(9, '27 min')
  h.clock.advance(3 * MIN)
  const end = await h.refresh(token, { client: 'short' })
  t.equal(end.status, 400, 'session_ttl: refused at exactly 30 min')
  t.equal(end.body.reason, 'session_expired')

  // The server defaults still apply to a client without overrides.
  const other = await h.login()
  t.equal(other.expires_in, 900, 'cli keeps the default access token lifetime')
  const otherSession = await h.app.tokenline.store.findSession(sid(other))
  t.equal((otherSession?.expiresAt ?? 0) - h.clock.now(), 8 * HOUR * 1000, 'and the server session lifetime')
  await assertLineage(t, h.database)
})

t.test('the refresh cookie never outlives the session', async (t) => {
  const h = await build(t, LIMITS)
  const login = await h.token({ grant_type: 'password', client_id: 'web', username: 'alice', password: 'correct horse battery staple' })
  t.equal(login.statusCode, 200)
  let cookie = refreshCookie(login)
  t.equal(maxAge(cookie), 8 * HOUR, 'at login: the whole session lifetime')

  for (let m = 50; m <= 450; m += 50) {
    h.clock.advance(50 * MIN)
    // Sent as the login was, without a browser's Origin or Sec-Fetch-* headers.
    const res = await cookieRefresh(h, cookie?.value ?? '', { headers: {} })
    t.equal(res.statusCode, 200, `cookie refresh at ${m} min`)
    const next = refreshCookie(res)
    t.not(next?.value, cookie?.value, 'the cookie value rotates')
    t.equal(maxAge(next), 8 * HOUR - m * MIN, `Max-Age at ${m} min is what is left: ${8 * HOUR - m * MIN} s`)
    cookie = next
  }
})
