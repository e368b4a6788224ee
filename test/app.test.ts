/*
 * Tokenline as a guest in someone else's Fastify app: mounted under a prefix, leaving the host's
 * parsers and error handler alone, and refusing bad options at register time.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import { join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import tokenline, { type TokenlinePluginOptions } from '../server/plugin.js'
import { build, CHEAP_ARGON2, PASSWORD, type TokenBody } from './helpers.js'
import { tempDir } from './processes.js'
import { post } from './session-helpers.js'
import { COOKIE_NAME, refreshCookie } from './set-cookie.js'

const LOGIN = { grant_type: 'password', username: 'alice', password: PASSWORD }

t.test("under prefix '/auth': /auth/token works and the cookie path follows", async (t) => {
  const h = await build(t, { prefix: '/auth', issuer: 'https://example.test' })
  const res = await post(h, '/auth/token', { ...LOGIN, client_id: 'cli' })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['cache-control'], 'no-store', 'the no-store hook applies under the prefix')
  t.equal((res.json() as TokenBody).token_type, 'Bearer')
  t.equal((await post(h, '/token', { ...LOGIN, client_id: 'cli' })).statusCode, 404, 'nothing at the unprefixed path')
  t.equal((await h.app.inject({ method: 'GET', url: '/auth/token' })).statusCode, 405)

  // The refresh cookie is scoped to the prefixed token path, so it reaches /auth/token and below only.
  const web = await post(h, '/auth/token', { ...LOGIN, client_id: 'web' })
  t.equal(web.statusCode, 200)
  const setCookie = String(web.headers['set-cookie'])
  t.match(setCookie, /^__Secure-tokenline-rt=tlrt_[\w-]+;/)
  t.match(setCookie, /; Path=\/auth\/token(;|$)/)
  t.notMatch(setCookie, /Domain=/i)
  const rt = refreshCookie(web)?.value ?? ''
  const refreshed = await post(h, '/auth/token', { grant_type: 'refresh_token', client_id: 'web' }, { cookies: { [COOKIE_NAME]: rt } })
  t.equal(refreshed.statusCode, 200, 'a cookie refresh at /auth/token works')
  t.match(String(refreshed.headers['set-cookie']), /; Path=\/auth\/token(;|$)/, 'and the rotated cookie keeps the path')

  const meta = await h.app.inject({ method: 'GET', url: '/auth/.well-known/oauth-authorization-server' })
  t.equal(meta.statusCode, 200)
  t.equal(meta.json().token_endpoint, 'https://example.test/auth/token')
  t.equal(meta.json().jwks_uri, 'https://example.test/auth/.well-known/jwks.json')
  t.equal((await h.app.inject({ method: 'GET', url: '/auth/.well-known/jwks.json' })).statusCode, 200)
})

async function hostApp (t: Test, setup: (app: FastifyInstance) => void, options: TokenlinePluginOptions = {}): Promise<FastifyInstance> {
  const app = Fastify()
  setup(app)
  app.post('/echo', async (request) => ({ got: request.body }))
  app.get('/boom', async () => { throw new Error('boom') })
  await app.register(tokenline, { database: join(tempDir(t), 'tokenline.db'), argon2: CHEAP_ARGON2, logEvents: false, ...options })
  // Routes added after the plugin are the host's too.
  app.post('/later', async (request) => ({ got: request.body }))
  await app.ready()
  t.teardown(() => app.close())
  return app
}

t.test("the host's parsers and error handler are untouched", async (t) => {
  const app = await hostApp(t, () => {})
  for (const url of ['/echo', '/later']) {
    // Numbers, arrays and nesting: everything Tokenline's own JSON parser refuses.
    const json = await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: '{"n":1,"a":[1,2],"o":{"k":"v"}}' })
    t.equal(json.statusCode, 200, `${url}: the host's JSON parser`)
    t.same(json.json(), { got: { n: 1, a: [1, 2], o: { k: 'v' } } })
    t.equal(json.headers['cache-control'], undefined, `${url}: no no-store hook on host routes`)
    const text = await app.inject({ method: 'POST', url, headers: { 'content-type': 'text/plain' }, payload: 'hello' })
    t.equal(text.statusCode, 200, `${url}: Fastify's text/plain parser is still there`)
    t.same(text.json(), { got: 'hello' })
    const big = await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ s: 'x'.repeat(100_000) }) })
    t.equal(big.statusCode, 200, `${url}: Tokenline's body limit does not apply to the host`)
    // Fastify's own errors keep Fastify's own shape on host routes.
    const bad = await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: '{"n":' })
    t.equal(bad.statusCode, 400)
    t.has(bad.json(), { statusCode: 400, code: 'FST_ERR_CTP_INVALID_JSON_BODY' })
    t.equal(bad.json().error_description, undefined)
    const form = await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'a=1' })
    t.equal(form.statusCode, 415, `${url}: no form parser leaked to the host`)
  }
  const boom = await app.inject({ method: 'GET', url: '/boom' })
  t.equal(boom.statusCode, 500)
  t.same(boom.json(), { statusCode: 500, error: 'Internal Server Error', message: 'boom' }, "a host route's error keeps Fastify's default shape")

  // Meanwhile Tokenline's own routes use Tokenline's parsers and errors.
  const tl = await app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/json' }, payload: '{"grant_type":1}' })
  t.equal(tl.statusCode, 400)
  t.equal(tl.json().error, 'invalid_request')
  t.equal(tl.json().statusCode, undefined)
  t.type(app.tokenline.verify, 'function', 'app.tokenline is decorated on the host')
})

t.test("a host's own error handler stays its own", async (t) => {
  const app = await hostApp(t, (app) => {
    app.setErrorHandler((err: Error, _request, reply) => { reply.code(418).send({ host: true, message: err.message }) })
  })
  const boom = await app.inject({ method: 'GET', url: '/boom' })
  t.equal(boom.statusCode, 418)
  t.same(boom.json(), { host: true, message: 'boom' })
  const tl = await app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'text/plain' }, payload: 'x' })
  t.equal(tl.statusCode, 400, "Tokenline's routes keep Tokenline's handler")
  t.equal(tl.json().error, 'invalid_request')
})

t.test('bad options are refused at register, naming the option', async (t) => {
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['prefix without a leading slash', { prefix: 'auth' }, /prefix/],
    ['prefix with a trailing slash', { prefix: '/auth/' }, /prefix/],
    ['prefix not a string', { prefix: 42 }, /prefix/],
    ['accessTokenTtl 0', { accessTokenTtl: 0 }, /accessTokenTtl/],
    ['accessTokenTtl negative', { accessTokenTtl: -5 }, /accessTokenTtl/],
    ['accessTokenTtl fractional', { accessTokenTtl: 1.5 }, /accessTokenTtl/],
    ['sessionTtl a word', { sessionTtl: 'forever' }, /sessionTtl/],
    ['algorithm HS256', { algorithm: 'HS256' }, /algorithm/],
    ['algorithm none', { algorithm: 'none' }, /algorithm/],
    ['issuer not a URL', { issuer: 'auth.example.com' }, /issuer/],
    ['issuer with a query', { issuer: 'https://auth.example.com/?x=1' }, /issuer/],
    ['issuer with a trailing slash', { issuer: 'https://auth.example.com/' }, /issuer/],
    ['binding unknown', { binding: 'paranoid' }, /binding/],
    ['bindingUserAgent unknown', { bindingUserAgent: 'explode' }, /bindingUserAgent/],
    ['bodyLimit tiny', { bodyLimit: 10 }, /bodyLimit/],
    ['argon2.memoryCost tiny', { argon2: { memoryCost: 8 } }, /argon2\.memoryCost/],
    ['now not a function', { now: 12 }, /\bnow\b/],
    ['logEvents not a boolean', { logEvents: 'yes' }, /logEvents/],
    ['a misspelt option', { acessTokenTtl: 300 }, /acessTokenTtl/]
  ]
  for (const [label, options, message] of cases) {
    const app = Fastify()
    t.teardown(() => app.close())
    const dir = tempDir(t)
    await t.rejects(
      (async () => {
        await app.register(tokenline, { database: join(dir, 'x.db'), ...options } as TokenlinePluginOptions)
        await app.ready()
      })(),
      { message },
      label
    )
  }
})
