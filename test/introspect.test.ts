import { decodeJwt } from 'jose'
import t from 'tap'
import { basicAuth, build, SAME_ORIGIN, sidOf, type Harness } from './helpers.js'
import { post, revoke } from './session-helpers.js'
import { COOKIE_NAME, cookieLogin, cookieValue } from './set-cookie.js'

/*
 * RFC 7662 introspection: confidential clients only (§2.1); any live token this server issued, to any
 * client, gets `active: true` with its claims (§2.2); anything else gets exactly `{ "active": false }`.
 */

const SVC = basicAuth('svc', 'svc-secret')
/** The confidential client `svc` (body delivery), authenticated with its secret in the body. */
const AS_SVC = { client: 'svc', params: { client_secret: 'svc-secret' } }
const INACTIVE = { active: false }

async function introspect (h: Harness, token: string, extra: Record<string, string> = {}): Promise<Record<string, unknown>> {
  const res = await post(h, '/token/introspect', { token, ...extra }, { headers: { authorization: SVC } })
  if (res.statusCode !== 200) throw new Error(`introspection answered ${res.statusCode}: ${res.body}`)
  return res.json()
}

/** A login of `svc`, whose tokens it may introspect. */
async function svcLogin (h: Harness): Promise<{ access_token: string, refresh_token: string }> {
  const body = await h.login(AS_SVC)
  if (body.refresh_token === undefined) throw new Error(JSON.stringify(body))
  return { access_token: body.access_token, refresh_token: body.refresh_token }
}

t.test('a live access token: active, with its claims', async (t) => {
  const h = await build(t)
  const { access_token: at } = await svcLogin(h)
  const res = await post(h, '/token/introspect', { token: at }, { headers: { authorization: SVC } })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(res.headers.pragma, 'no-cache')
  t.match(res.headers['content-type'], /^application\/json/)
  const claims = decodeJwt(at)
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
  const next = (await h.refresh(login.refresh_token, AS_SVC)).body
  const body = await introspect(h, next.refresh_token as string)
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
  t.equal((await h.refresh(next.refresh_token as string, AS_SVC)).body.access_token !== undefined, true, 'introspecting a consumed token did not trigger reuse detection')
})

t.test('everything else is exactly { active: false }', async (t) => {
  const h = await build(t, { accessTokenTtl: 60, idleTtl: 3600, sessionTtl: 7200 })
  const store = h.app.tokenline.store

  t.same(await introspect(h, 'total bs'), INACTIVE, 'garbage')
  t.same(await introspect(h, 'tlrt_' + 'A'.repeat(49)), INACTIVE, 'a refresh token with a bad checksum')

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
  for (let i = 0; i < 2; i++) { h.clock.advance(3000); d.refresh_token = (await h.refresh(d.refresh_token, AS_SVC)).body.refresh_token as string }
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
    ['a public client with Basic', {}, { authorization: basicAuth('cli', '') }, true],
    ['no client at all', {}, {}, false],
    ['a wrong secret in the body', { client_id: 'svc', client_secret: 'nope' }, {}, false],
    ['a wrong secret with Basic', {}, { authorization: basicAuth('svc', 'nope') }, true],
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
  t.equal((await h.refresh('tlrt_x')).status, 400, 'sanity: the token endpoint is unaffected')
})

t.test('any confidential client may introspect any client\'s tokens: a resource server and a browser app', async (t) => {
  const h = await build(t)
  // The resource server: a confidential client that never logs anyone in, only introspects.
  await h.addClient({ id: 'api', secret: 'api-secret', grants: '' })
  const API = { headers: { authorization: basicAuth('api', 'api-secret') } }
  const asApi = async (token: string): Promise<Record<string, unknown>> => (await post(h, '/token/introspect', { token }, API)).json()

  // The browser app `web` (cookie delivery): the access token in the body, the refresh token in the cookie.
  const login = await cookieLogin(h, 'web')
  const at = login.json().access_token as string
  const rt = cookieValue(login)
  const alice = (await h.app.tokenline.store.findUserByUsername('alice'))?.id

  const access = await asApi(at)
  t.match(access, { active: true, sub: alice, client_id: 'web', scope: decodeJwt(at).scope, sid: sidOf(at), token_type: 'access_token' }, 'web\'s access token is active for api')
  t.same(access, { active: true, ...decodeJwt(at), token_type: 'access_token' }, 'with every claim of the token')
  t.match(await asApi(rt), { active: true, sub: alice, client_id: 'web', sid: sidOf(at), token_type: 'refresh_token' }, 'and so is its refresh token')
  t.match(await introspect(h, at), { active: true, client_id: 'web' }, 'any other confidential client (svc) too')
  const cli = await h.login()
  t.match(await asApi(cli.refresh_token as string), { active: true, client_id: 'cli' }, 'a public body client\'s refresh token')

  // The browser logs out (RFC 7009, the refresh cookie): the session ends, and so do both tokens, at once.
  const logout = await post(h, '/token/revoke', { client_id: 'web' }, { headers: SAME_ORIGIN, cookies: { [COOKIE_NAME]: rt } })
  t.equal(logout.statusCode, 200)
  t.same(await asApi(at), INACTIVE, 'its unexpired access token is inactive after the session is revoked')
  t.same(await asApi(rt), INACTIVE, 'and its refresh token')

  // Public clients still may not introspect, not even their own tokens.
  const own = await post(h, '/token/introspect', { client_id: 'cli', token: cli.access_token })
  t.equal(own.statusCode, 401)
  t.same(own.json().error, 'invalid_client')
  const web = await post(h, '/token/introspect', { client_id: 'web', token: at }, { headers: SAME_ORIGIN })
  t.equal(web.statusCode, 401)
  t.notMatch(web.body, /"active"/)
})
