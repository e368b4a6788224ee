import t from 'tap'
import { build, decodeJwt, PASSWORD, type Harness } from './helpers.js'
import { post, refresh, revoke, sidOf } from './session-helpers.js'

/*
 * RFC 7662 introspection (SPEC §3; security.md K1-K2): confidential clients only; a live token of the
 * calling client gets `active: true` with its claims; anything else gets exactly `{ "active": false }`.
 */

const SVC = 'Basic ' + Buffer.from('svc:svc-secret').toString('base64')
const INACTIVE = { active: false }

async function introspect (h: Harness, token: string, extra: Record<string, string> = {}): Promise<Record<string, unknown>> {
  const res = await post(h, '/token/introspect', { token, ...extra }, { headers: { authorization: SVC } })
  if (res.statusCode !== 200) throw new Error(`introspection answered ${res.statusCode}: ${res.body}`)
  return res.json()
}

/** A login of the confidential client `svc` (body delivery). */
async function svcLogin (h: Harness): Promise<{ access_token: string, refresh_token: string }> {
  const res = await h.token({ grant_type: 'password', client_id: 'svc', client_secret: 'svc-secret', username: 'alice', password: PASSWORD })
  if (res.statusCode !== 200) throw new Error(res.body)
  return res.json()
}

async function svcRefresh (h: Harness, rt: string): Promise<{ access_token: string, refresh_token: string }> {
  return (await h.token({ grant_type: 'refresh_token', client_id: 'svc', client_secret: 'svc-secret', refresh_token: rt })).json()
}

t.test('a live access token: active, with its claims', async (t) => {
  const h = await build(t)
  const { access_token: at } = await svcLogin(h)
  const res = await post(h, '/token/introspect', { token: at }, { headers: { authorization: SVC } })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(res.headers.pragma, 'no-cache')
  t.match(res.headers['content-type'], /^application\/json/)
  const claims = decodeJwt(at).payload
  t.same(res.json(), { active: true, ...claims, token_type: 'access_token' }, 'every claim of the token, and its type')
  t.equal(res.json().client_id, 'svc')
  // client_secret_post works as well as Basic, and the hint changes nothing.
  const viaPost = await post(h, '/token/introspect', { client_id: 'svc', client_secret: 'svc-secret', token: at, token_type_hint: 'refresh_token' })
  t.equal(viaPost.json().active, true)
})

t.test('a live refresh token: active, with its session\'s facts', async (t) => {
  const h = await build(t)
  const login = await svcLogin(h)
  h.clock.advance(5)
  const next = await svcRefresh(h, login.refresh_token)
  const body = await introspect(h, next.refresh_token)
  const session = await h.app.tokenline.store.findSession(sidOf(next.access_token))
  t.same(body, {
    active: true,
    client_id: 'svc',
    sub: session?.userId,
    scope: session?.scope,
    sid: session?.id,
    exp: Math.floor((session?.expiresAt as number) / 1000),
    iat: Math.floor(h.clock.now() / 1000),
    token_type: 'refresh_token'
  }, 'exp is the session\'s absolute expiry, iat when this generation was issued')
  t.same(await introspect(h, login.refresh_token), INACTIVE, 'the consumed parent is not active')
  t.equal((await svcRefresh(h, next.refresh_token)).access_token !== undefined, true, 'introspecting a consumed token did not trigger reuse detection')
})

t.test('everything else is exactly { active: false }', async (t) => {
  const h = await build(t, { accessTokenTtl: 60, idleTtl: 3600, sessionTtl: 7200 })
  const store = h.app.tokenline.store

  t.same(await introspect(h, 'total bs'), INACTIVE, 'garbage')
  t.same(await introspect(h, 'tlrt_' + 'A'.repeat(49)), INACTIVE, 'a refresh token with a bad checksum')
  const cli = await h.login()
  t.same(await introspect(h, cli.access_token), INACTIVE, 'another client\'s access token')
  t.same(await introspect(h, cli.refresh_token as string), INACTIVE, 'another client\'s refresh token')

  const a = await svcLogin(h)
  h.clock.advance(61)
  t.same(await introspect(h, a.access_token), INACTIVE, 'an expired access token')
  t.equal((await introspect(h, a.refresh_token)).active, true, 'while its refresh token lives on')

  const b = await svcLogin(h)
  t.equal((await revoke(h, { client_id: 'svc', client_secret: 'svc-secret', token: b.refresh_token })).statusCode, 200)
  t.same(await introspect(h, b.access_token), INACTIVE, 'an unexpired access token of a revoked session')
  t.same(await introspect(h, b.refresh_token), INACTIVE, 'a revoked refresh token')

  const c = await svcLogin(h)
  h.clock.advance(3600)
  t.same(await introspect(h, c.refresh_token), INACTIVE, 'an idle-expired session\'s refresh token')

  const d = await svcLogin(h)
  for (let i = 0; i < 2; i++) { h.clock.advance(3000); d.refresh_token = (await svcRefresh(h, d.refresh_token)).refresh_token }
  t.equal((await introspect(h, d.refresh_token)).active, true, 'kept alive by use...')
  h.clock.advance(1300) // 7300 s after login: within the idle timeout, past the absolute lifetime
  t.same(await introspect(h, d.refresh_token), INACTIVE, 'a refresh token past its session\'s absolute expiry')

  const e = await svcLogin(h)
  const alice = await store.findUserByUsername('alice')
  await store.setUserDisabled({ userId: alice?.id as string, disabled: true, now: h.clock.now(), events: [] })
  t.same(await introspect(h, e.access_token), INACTIVE, 'a disabled user\'s access token')
  t.same(await introspect(h, e.refresh_token), INACTIVE, 'a disabled user\'s refresh token')
})

t.test('only authenticated confidential clients may introspect', async (t) => {
  const h = await build(t)
  const { access_token: at } = await svcLogin(h)
  const cases: Array<[string, Record<string, string>, Record<string, string>, boolean]> = [
    ['a public client', { client_id: 'cli' }, {}, false],
    ['a public client with Basic', {}, { authorization: 'Basic ' + Buffer.from('cli:').toString('base64') }, true],
    ['no client at all', {}, {}, false],
    ['a wrong secret in the body', { client_id: 'svc', client_secret: 'nope' }, {}, false],
    ['a wrong secret with Basic', {}, { authorization: 'Basic ' + Buffer.from('svc:nope').toString('base64') }, true],
    ['an unknown client', { client_id: 'ghost', client_secret: 'x' }, {}, false]
  ]
  for (const [name, params, headers, basic] of cases) {
    const res = await post(h, '/token/introspect', { token: at, ...params }, { headers })
    t.equal(res.statusCode, 401, `${name}: 401`)
    t.equal(res.json().error, 'invalid_client')
    t.notMatch(res.body, /"active"/, 'and nothing about the token')
    if (basic) t.match(res.headers['www-authenticate'], /^Basic realm=/, `${name}: a Basic challenge`)
    else t.notOk(res.headers['www-authenticate'], `${name}: no challenge without Basic`)
    t.equal(res.headers['cache-control'], 'no-store')
  }
  const missing = await post(h, '/token/introspect', {}, { headers: { authorization: SVC } })
  t.equal(missing.statusCode, 400)
  t.match(missing.json(), { error: 'invalid_request', error_description: 'missing required parameter token' })
  const both = await post(h, '/token/introspect', { token: at, client_secret: 'svc-secret' }, { headers: { authorization: SVC } })
  t.equal(both.statusCode, 400, 'two authentication methods are invalid_request')
  t.equal((await refresh(h, 'tlrt_x')).status, 400, 'sanity: the token endpoint is unaffected')
})
