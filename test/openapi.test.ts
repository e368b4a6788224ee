import swagger from '@fastify/swagger'
import Fastify, { type FastifyInstance } from 'fastify'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { GRANT_REASONS, OAUTH_ERROR_CODES } from '../server/errors.js'
import type { RouteDoc } from '../server/api-docs.js'
import tokenline from '../server/plugin.js'
import { tokenResponseSchema } from '../server/tokens/response.js'
import { CHEAP_ARGON2 } from './helpers.js'

/*
 * GET /openapi.json describes every route Tokenline registers, and nothing else, with its parameters and
 * responses; its error enums are server/errors.ts's lists; and documenting the routes changed nothing
 * about how bad input is refused.
 */

interface Operation {
  summary?: string
  parameters?: Array<{ name: string, in: string, required?: boolean }>
  requestBody?: { content: Record<string, { schema: Record<string, unknown> }> }
  responses: Record<string, { description?: string, content?: Record<string, { schema: Record<string, unknown> }> }>
  security?: unknown[]
}
interface OpenApi { openapi: string, servers: Array<{ url: string }>, paths: Record<string, Record<string, Operation>> }

const PREFIX = '/auth'

/** A registered route, one per method, with the description it carries. */
interface Registered { method: string, url: string, doc: RouteDoc | undefined }

async function app (t: Test, host?: (app: FastifyInstance) => Promise<void>): Promise<{ app: FastifyInstance, routes: Registered[] }> {
  const routes: Registered[] = []
  const a = Fastify()
  // At the root, before Tokenline: sees every route any context registers.
  a.addHook('onRoute', (r) => {
    for (const method of typeof r.method === 'string' ? [r.method] : r.method) routes.push({ method, url: r.url, doc: r.config?.openapi })
  })
  if (host !== undefined) await host(a)
  a.get('/host-route', async () => ({ ok: true }))
  await a.register(tokenline, { database: join(t.testdir({}), 'db.sqlite'), argon2: CHEAP_ARGON2, logEvents: false, prefix: PREFIX, issuer: 'https://auth.example.com' })
  await a.ready()
  t.teardown(() => a.close())
  return { app: a, routes }
}

async function doc (a: FastifyInstance): Promise<OpenApi> {
  const res = await a.inject({ method: 'GET', url: `${PREFIX}/openapi.json` })
  if (res.statusCode !== 200) throw new Error(`openapi.json: ${res.statusCode}`)
  return res.json() as OpenApi
}

/** The properties a request body schema (or any of its oneOf branches) declares. */
function bodyProperties (schema: Record<string, unknown>): Set<string> {
  const branches = (schema.oneOf as Array<Record<string, unknown>> | undefined) ?? [schema]
  return new Set(branches.flatMap((b) => Object.keys((b.properties as object | undefined) ?? {})))
}

t.test('every Tokenline route is in the document, with a summary and its responses', async (t) => {
  const { app: a, routes } = await app(t)
  const d = await doc(a)
  t.equal(d.openapi, '3.1.0')
  t.same(d.servers, [{ url: 'https://auth.example.com' }], 'server URL is the configured issuer')

  const ours = routes.filter((r) => r.url.startsWith(PREFIX) && r.method !== 'HEAD' && r.method !== 'OPTIONS' && r.url !== `${PREFIX}/openapi.json`)
  // The 405 answers for GET/PUT/DELETE/PATCH /token are one route with several methods: not API.
  const api = ours.filter((r) => !(r.url === `${PREFIX}/token` && r.method !== 'POST'))
  t.ok(api.length >= 10, `${api.length} routes`)
  for (const r of api) {
    t.ok(r.doc, `${r.method} ${r.url} carries its description (config.openapi)`)
    const path = r.url.replace(/:(\w+)/g, '{$1}')
    const op = d.paths[path]?.[r.method.toLowerCase()]
    t.ok(op, `${r.method} ${path} is in the document`)
    if (op === undefined) continue
    t.match(op.summary, /\w/, `${r.method} ${path}: summary`)
    const codes = Object.keys(op.responses)
    t.ok(codes.some((c) => c.startsWith('2')), `${r.method} ${path}: a success response`)
    for (const c of codes) t.match(op.responses[c]?.description, /\w/, `${r.method} ${path} ${c}: described`)
  }
  t.notOk(d.paths['/host-route'], 'the host\'s routes are not Tokenline\'s to describe')
  t.notOk(d.paths[`${PREFIX}/openapi.json`], 'the document does not describe itself')
  const documented = Object.entries(d.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`))
  t.same(documented.sort(), api.map((r) => `${r.method} ${r.url.replace(/:(\w+)/g, '{$1}')}`).sort(), 'the document has exactly the registered routes: none undocumented, none that does not exist')
})

t.test('the error enums are server/errors.ts\'s lists, and the token response is the one POST /token serialises with', async (t) => {
  const { app: a } = await app(t)
  const d = await doc(a)
  let errors = 0
  for (const [path, ops] of Object.entries(d.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      for (const [code, response] of Object.entries(op.responses)) {
        const schema = response.content?.['application/json']?.schema as { properties?: Record<string, { enum?: unknown }> } | undefined
        // An RFC 6749 §5.2 body; /healthz's `error` is its own plain string.
        if (schema?.properties?.error_description === undefined) continue
        errors++
        t.same(schema.properties.error?.enum, OAUTH_ERROR_CODES, `${method} ${path} ${code}: error codes`)
        t.same(schema.properties.reason?.enum, GRANT_REASONS, `${method} ${path} ${code}: reasons`)
      }
    }
  }
  t.ok(errors >= 15, `${errors} error responses`)
  const ok = d.paths[`${PREFIX}/token`]?.post?.responses['200']
  t.equal(ok?.description, tokenResponseSchema.description)
  t.same(ok?.content?.['application/json']?.schema, tokenResponseSchema)
})

t.test('parameters: both grants of /token, revocation, introspection, sessions', async (t) => {
  const { app: a } = await app(t)
  const d = await doc(a)
  const token = d.paths[`${PREFIX}/token`]?.post
  t.same(Object.keys(token?.requestBody?.content ?? {}).sort(), ['application/json', 'application/x-www-form-urlencoded'], 'form and JSON bodies')
  const form = token?.requestBody?.content['application/x-www-form-urlencoded']?.schema ?? {}
  for (const p of ['grant_type', 'client_id', 'client_secret', 'username', 'password', 'scope', 'device_id', 'refresh_token']) {
    t.ok(bodyProperties(form).has(p), `/token documents ${p}`)
  }
  const branches = (form.oneOf as Array<{ title: string, required: string[] }>).map((b) => [b.title, b.required])
  t.same(branches, [['password grant', ['grant_type', 'username', 'password']], ['refresh_token grant', ['grant_type']]])
  t.same(Object.keys(token?.responses ?? {}).sort(), ['200', '400', '401', '403', '429', '503'])
  const err = token?.responses['400']?.content?.['application/json']?.schema as { properties: Record<string, { enum?: string[] }> }
  t.ok(err.properties.reason?.enum?.includes('reuse_detected'), 'errors document their reason')
  t.ok(err.properties.error?.enum?.includes('invalid_grant'))
  const ok = token?.responses['200']?.content?.['application/json']?.schema as { properties: Record<string, unknown> }
  t.same(Object.keys(ok.properties).sort(), ['access_token', 'expires_in', 'refresh_token', 'scope', 'token_type'])
  t.same(token?.security, [{}, { clientBasic: [] }], 'public clients need nothing; confidential ones may use Basic')

  t.ok(bodyProperties(d.paths[`${PREFIX}/token/revoke`]?.post?.requestBody?.content['application/x-www-form-urlencoded']?.schema ?? {}).has('token_type_hint'))
  t.ok(bodyProperties(d.paths[`${PREFIX}/token/introspect`]?.post?.requestBody?.content['application/x-www-form-urlencoded']?.schema ?? {}).has('token'))

  const one = d.paths[`${PREFIX}/sessions/{id}`]?.delete
  t.match(one?.parameters, [{ name: 'id', in: 'path', required: true }], 'session id path parameter')
  t.same(one?.security, [{ bearerAuth: [] }])
  const others = d.paths[`${PREFIX}/sessions`]?.delete
  t.match(others?.parameters, [{ name: 'scope', in: 'query', required: true }], 'scope=others query parameter')
  const metrics = d.paths[`${PREFIX}/metrics`]?.get?.responses
  t.same(Object.keys(metrics?.['200']?.content ?? {}), ['text/plain; version=0.0.4'], 'metrics are Prometheus text')
  t.same(Object.keys(metrics?.['401']?.content ?? {}), ['application/json'], 'its refusal is JSON')
})

t.test('documenting the routes changed nothing about refusals', async (t) => {
  const { app: a } = await app(t)
  const post = async (payload: string, type: string): Promise<{ statusCode: number, body: unknown }> => {
    const r = await a.inject({ method: 'POST', url: `${PREFIX}/token`, headers: { 'content-type': type }, payload })
    return { statusCode: r.statusCode, body: r.json() }
  }
  t.same(await post('', 'application/x-www-form-urlencoded'), { statusCode: 400, body: { error: 'invalid_request', error_description: 'missing required parameter grant_type' } })
  t.same(await post('["x"]', 'application/json'), { statusCode: 400, body: { error: 'invalid_request', error_description: 'JSON body must be an object' } })
  t.same(await post('grant_type=password&grant_type=password', 'application/x-www-form-urlencoded'), { statusCode: 400, body: { error: 'invalid_request', error_description: 'grant_type parameter must not be provided twice' } })
  const sessions = await a.inject({ method: 'DELETE', url: `${PREFIX}/sessions?scope=all` })
  t.equal(sessions.statusCode, 401, 'the sessions API still authenticates before anything else')
})

t.test('a host with its own @fastify/swagger keeps it; Tokenline serves its own document', async (t) => {
  const { app: a } = await app(t, async (host) => { await host.register(swagger, { openapi: { info: { title: 'host', version: '1' } } }) })
  const host = (a as unknown as { swagger: () => OpenApi }).swagger()
  t.ok(host.paths['/host-route'], 'the host document has the host route')
  const d = await doc(a)
  t.ok(d.paths[`${PREFIX}/token`], 'Tokenline\'s document has its routes')
  t.notOk(d.paths['/host-route'])
})
