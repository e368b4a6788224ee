import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import { decodeJwt, decodeProtectedHeader } from 'jose'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { secretDigest } from '../server/http/client-auth.js'
import tokenline, { type TokenlinePluginOptions } from '../server/plugin.js'
import { ConfigError } from '../server/options.js'
import { createPasswords } from '../server/security/passwords.js'
import { KEY_CHECK_INTERVAL_MS, rotateKeys } from '../server/tokens/key-rotation.js'
import { randomId } from '../server/tokens/refresh-format.js'
import type { AuthenticateOptions, VerifiedAccessToken } from '../server/index.js'
import { CHEAP_ARGON2, form, PASSWORD, TestClock, type TokenBody } from './helpers.js'

/*
 * app.tokenline.authenticate(): the preHandler that protects the host application's own routes with
 * Tokenline's access tokens (RFC 6750). Its refusals keep their RFC 6750 §3 shape on host routes
 * outside Tokenline's encapsulated context, whatever the host's error handler; with the session check
 * (the default) a revoked session is refused at once.
 */

interface Host {
  app: FastifyInstance
  clock: TestClock
  /** A password grant of alice with client `cli` (scopes read write); `scope` narrows it. */
  login: (scope?: string) => Promise<TokenBody>
  /** GET `url` with `Authorization: Bearer <token>` (no header when token is undefined). */
  get: (url: string, token?: string, headers?: Record<string, string>) => Promise<LightMyRequestResponse>
  aliceId: string
}

/**
 * A host app: its own error handler (which would reshape any error it is given), Tokenline registered
 * with `options`, then the host's routes, added by `routes` outside Tokenline's context.
 */
async function host (t: Test, routes: (app: FastifyInstance) => void | Promise<void>, options: Partial<TokenlinePluginOptions> = {}, database?: string, clock = new TestClock()): Promise<Host> {
  const app = Fastify()
  app.setErrorHandler(async (_err, _request, reply) => await reply.code(418).send({ host: 'error handler' }))
  await app.register(tokenline, {
    database: database ?? join(t.testdir({}), 'tokenline.db'),
    argon2: CHEAP_ARGON2,
    now: clock.now,
    logEvents: false,
    throttlePassword: 0,
    throttleFailures: 0,
    ...options
  })
  await routes(app)
  await app.ready()
  t.teardown(() => app.close())
  const store = app.tokenline.store
  let alice = (await store.findUserByUsername('alice'))?.id
  if (alice === undefined) {
    alice = randomId()
    await store.createUser({ id: alice, username: 'alice', passwordHash: await createPasswords(CHEAP_ARGON2).hash(PASSWORD), now: clock.now() })
    await store.createClient({ id: 'cli', secretDigest: null, delivery: 'body', grants: 'password refresh_token', scopes: 'read write', origins: '', accessTtl: null, idleTtl: null, sessionTtl: null, now: clock.now() })
    await store.createClient({ id: 'svc', secretDigest: secretDigest('svc-secret'), delivery: 'body', grants: 'password refresh_token', scopes: '', origins: '', accessTtl: null, idleTtl: null, sessionTtl: null, now: clock.now() })
  }
  const prefix = options.prefix ?? ''
  return {
    app,
    clock,
    aliceId: alice,
    async login (scope) {
      const params: Record<string, string> = { grant_type: 'password', client_id: 'cli', username: 'alice', password: PASSWORD }
      if (scope !== undefined) params.scope = scope
      const res = await app.inject({ method: 'POST', url: `${prefix}/token`, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form(params) })
      if (res.statusCode !== 200) throw new Error(`login: ${res.statusCode} ${res.body}`)
      return res.json() as TokenBody
    },
    get: async (url, token, headers = {}) => await app.inject({ method: 'GET', url, headers: { ...(token !== undefined && { authorization: `Bearer ${token}` }), ...headers } })
  }
}

/** The host's routes of most tests: one per kind of protection, each answering with request.tokenline. */
function hostRoutes (app: FastifyInstance): void {
  const echo = async (request: { tokenline: VerifiedAccessToken }): Promise<VerifiedAccessToken> => request.tokenline
  app.get('/api/me', { preHandler: app.tokenline.authenticate({ scopes: ['read'] }) }, echo)
  app.get('/api/stateless', { preHandler: app.tokenline.authenticate({ scopes: ['read'], session: false }) }, echo)
  app.get('/api/admin', { preHandler: app.tokenline.authenticate({ scopes: ['read', 'admin'] }) }, echo)
  app.get('/api/any', { preHandler: app.tokenline.authenticate({ scopes: [] }) }, echo)
  app.get('/api/boom', async () => { throw new Error('boom') })
  // A route with its own type parameters takes the same preHandler, and reads the typed claims.
  app.get<{ Params: { id: string } }>('/api/items/:id', { preHandler: app.tokenline.authenticate({ scopes: ['write'] }) }, async (request) => {
    const sub: string = request.tokenline.sub
    const scope: string[] = request.tokenline.scope
    return { id: request.params.id, sub, scope }
  })
}

t.test('a valid token: the route runs with the verified claims in request.tokenline', async (t) => {
  const h = await host(t, hostRoutes)
  const body = await h.login()
  const claims = decodeJwt(body.access_token)
  for (const url of ['/api/me', '/api/stateless', '/api/any']) {
    const res = await h.get(url, body.access_token)
    t.equal(res.statusCode, 200, url)
    t.same(res.json(), {
      sub: h.aliceId,
      sid: claims.sid,
      client_id: 'cli',
      scope: ['read', 'write'],
      exp: claims.exp,
      iat: claims.iat,
      iss: claims.iss,
      aud: claims.aud,
      jti: claims.jti
    }, `${url}: sub, sid, client_id, scope as an array, and the other claims`)
  }
  const item = await h.get('/api/items/42', body.access_token)
  t.same(item.json(), { id: '42', sub: h.aliceId, scope: ['read', 'write'] })
  t.equal((await h.get('/api/me', body.access_token, {})).headers['www-authenticate'], undefined, 'no challenge on success')
  // The scheme is case-insensitive (RFC 6750 §2.1 / RFC 9110 §11.1).
  const lower = await h.app.inject({ method: 'GET', url: '/api/me', headers: { authorization: `bearer ${body.access_token}` } })
  t.equal(lower.statusCode, 200)
})

t.test('refusals: RFC 6750 §3 challenges and JSON bodies, sent by the preHandler itself', async (t) => {
  const h = await host(t, hostRoutes, { accessTokenTtl: 60 })
  const body = await h.login()

  const none = await h.get('/api/me')
  t.equal(none.statusCode, 401, 'no credentials: 401')
  t.equal(none.headers['www-authenticate'], 'Bearer realm="tokenline"', 'a bare challenge, no error code (§3.1)')
  t.match(none.headers['content-type'], /^application\/json/)
  t.match(none.json(), { error: 'invalid_token' })
  t.notOk('host' in none.json(), 'the host\'s error handler never saw it')
  t.same((await h.get('/api/boom')).json(), { host: 'error handler' }, 'control: the host\'s error handler does reshape what reaches it')

  const basic = await h.get('/api/me', undefined, { authorization: 'Basic ' + Buffer.from('a:b').toString('base64') })
  t.equal(basic.statusCode, 401, 'another scheme is no bearer credential')
  t.equal(basic.headers['www-authenticate'], 'Bearer realm="tokenline"')

  const INVALID = 'Bearer error="invalid_token"'
  for (const [name, token] of [['garbage', 'not-a-jwt'], ['a malformed value', 'a b'], ['a forged signature', body.access_token.slice(0, -4) + 'AAAA']]) {
    const res = await h.app.inject({ method: 'GET', url: '/api/me', headers: { authorization: `Bearer ${token}` } })
    t.equal(res.statusCode, 401, `${name}: 401`)
    t.equal(res.headers['www-authenticate'], INVALID, `${name}: invalid_token challenge`)
    t.equal(res.json().error, 'invalid_token')
  }

  // Never a token in the URL (RFC 6750 §2.3 is not offered): a query-string token is a bad request.
  const query = await h.get(`/api/me?access_token=${body.access_token}`)
  t.equal(query.statusCode, 400)
  t.equal(query.json().error, 'invalid_request')
  t.equal(query.headers['www-authenticate'], 'Bearer error="invalid_request"', '§3.1 invalid_request')
  t.equal((await h.get(`/api/me?access_token=${body.access_token}`, body.access_token)).statusCode, 400, 'even beside a good header')

  const admin = await h.get('/api/admin', body.access_token)
  t.equal(admin.statusCode, 403, 'a valid token without a required scope: 403')
  t.equal(admin.headers['www-authenticate'], 'Bearer error="insufficient_scope", scope="read admin"', 'the scope the route requires (§3)')
  t.match(admin.json(), { error: 'insufficient_scope', error_description: /admin/ })
  const narrow = await h.login('write')
  t.equal((await h.get('/api/me', narrow.access_token)).statusCode, 403, 'a token narrowed to write cannot read')
  t.equal((await h.get('/api/items/1', narrow.access_token)).statusCode, 200, 'but can write')

  h.clock.advance(61)
  for (const url of ['/api/me', '/api/stateless']) {
    const expired = await h.get(url, body.access_token)
    t.equal(expired.statusCode, 401, `${url}: an expired token is refused with or without the session check`)
    t.equal(expired.headers['www-authenticate'], INVALID)
  }
})

t.test('the session check: a revoked session or a disabled user is refused at once', async (t) => {
  const h = await host(t, hostRoutes)
  const body = await h.login()
  t.equal((await h.get('/api/me', body.access_token)).statusCode, 200)

  // Logout (RFC 7009): the session ends; the access token has most of its 15 minutes left.
  const logout = await h.app.inject({ method: 'POST', url: '/token/revoke', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ client_id: 'cli', token: body.refresh_token as string }) })
  t.equal(logout.statusCode, 200)
  const me = await h.get('/api/me', body.access_token)
  t.equal(me.statusCode, 401, 'session: true (the default) refuses the token at once')
  t.equal(me.headers['www-authenticate'], 'Bearer error="invalid_token"')
  t.match(me.json(), { error: 'invalid_token', error_description: 'session is no longer active' })
  const sessions = await h.get('/sessions', body.access_token)
  t.equal(sessions.statusCode, 401, 'exactly as the sessions API does')

  // The stateless form is what app.tokenline.verify() gives: the token lives until its exp.
  t.equal((await h.get('/api/stateless', body.access_token)).statusCode, 200, 'session: false accepts it until exp')
  t.ok(h.app.tokenline.verify(body.access_token), 'as app.tokenline.verify() does')

  const other = await h.login()
  await h.app.tokenline.store.setUserDisabled({ userId: h.aliceId, disabled: true, now: h.clock.now(), events: [] })
  t.equal((await h.get('/api/me', other.access_token)).statusCode, 401, 'a disabled user\'s token is refused')
})

t.test('routes in the host\'s own plugins, and Tokenline under a prefix', async (t) => {
  const h = await host(t, async (app) => {
    // An encapsulated host plugin with its own prefix and error handler.
    await app.register(async (api) => {
      api.setErrorHandler(async (_err, _request, reply) => await reply.code(500).send({ reshaped: true }))
      api.get('/me', { preHandler: app.tokenline.authenticate({ scopes: ['read'] }) }, async (request) => ({ sub: request.tokenline.sub }))
    }, { prefix: '/v1' })
  }, { prefix: '/auth' })
  const body = await h.login()
  t.equal(decodeJwt(body.access_token).sub, h.aliceId)
  const ok = await h.get('/v1/me', body.access_token)
  t.equal(ok.statusCode, 200)
  t.same(ok.json(), { sub: h.aliceId })
  const none = await h.get('/v1/me')
  t.equal(none.statusCode, 401)
  t.same(Object.keys(none.json()).sort(), ['error', 'error_description'], 'the refusal keeps its shape under the plugin\'s error handler')
  t.equal(none.headers['www-authenticate'], 'Bearer realm="tokenline"')
  const logout = await h.app.inject({ method: 'POST', url: '/auth/token/revoke', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ client_id: 'cli', token: body.access_token }) })
  t.equal(logout.statusCode, 200)
  t.equal((await h.get('/v1/me', body.access_token)).statusCode, 401, 'revoked through /auth/token/revoke: refused')
})

t.test('a key rotated by another process: protected routes take its tokens, as Tokenline\'s own routes do', async (t) => {
  const clock = new TestClock()
  const a = await host(t, hostRoutes, {}, undefined, clock)
  const database = a.app.tokenline.opts.database
  // Another instance on the same database rotates the key and signs with the new one.
  const b = await host(t, () => {}, {}, database, clock)
  const rotation = await rotateKeys(b.app.tokenline.store, b.app.tokenline.opts, clock.now())
  await b.app.tokenline.reloadKeys()
  const body = await b.login()
  t.equal(decodeProtectedHeader(body.access_token).kid, rotation.key.kid)
  t.throws(() => a.app.tokenline.verify(body.access_token), 'instance a does not know the new key yet')
  clock.advance(KEY_CHECK_INTERVAL_MS / 1000)
  const res = await a.get('/api/me', body.access_token)
  t.equal(res.statusCode, 200, 'a protected host route of instance a checked for rotated keys first')
})

t.test('a failing store: a server error from the preHandler, never the token\'s claims', async (t) => {
  const h = await host(t, hostRoutes)
  const body = await h.login()
  const store = h.app.tokenline.store as { findSession: (id: string) => Promise<unknown> }
  store.findSession = async () => { throw new Error('disk on fire') }
  const res = await h.get('/api/me', body.access_token)
  t.equal(res.statusCode, 500)
  t.same(res.json(), { error: 'server_error' }, 'no cause shown to the caller')
  t.equal((await h.get('/api/stateless', body.access_token)).statusCode, 200, 'the stateless check does not read the store')
})

t.test('options are checked when the route is defined', async (t) => {
  const h = await host(t, () => {})
  const authenticate = h.app.tokenline.authenticate
  const bad: Array<[string, unknown]> = [
    ['no options', undefined],
    ['no scopes', {}],
    ['scopes as a string', { scopes: 'read' }],
    ['a scope with a space', { scopes: ['read write'] }],
    ['an empty scope name', { scopes: [''] }],
    ['a session that is not a boolean', { scopes: [], session: 'yes' }],
    ['an unknown option', { scopes: [], scope: 'read' }]
  ]
  for (const [name, options] of bad) t.throws(() => authenticate(options as AuthenticateOptions), ConfigError, name)
  t.type(authenticate({ scopes: ['read'] }), 'function')
  t.type(authenticate({ scopes: [], session: false }), 'function')
})
