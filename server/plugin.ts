import cookie from '@fastify/cookie'
import type { FastifyError, FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { openStore } from '../db/open.js'
import type { SigningKey, Store } from '../db/store.js'
import { registerParsers } from './http/body.js'
import type { Tokenline } from './context.js'
import { registerCors } from './http/cors.js'
import { OAuthError, toOAuthError } from './errors.js'
import { clearRefreshCookie } from './tokens/response.js'
import { generateStoredKey, makeSigner, makeVerifier, type KeyMaterial } from './tokens/signing-keys.js'
import { metadataRoutes } from './routes/metadata.js'
import { ConfigError, resolveOptions, type Algorithm, type TokenlineOptions } from './options.js'
import { watchKeys } from './tokens/key-rotation.js'
import { opsRoutes } from './routes/ops.js'
import { registerOpenApi } from './routes/openapi.js'
import { createPasswords } from './security/passwords.js'
import { createGate } from './security/argon2-gate.js'
import { registerThrottles } from './http/throttle.js'
import { availableParallelism } from 'node:os'
import { tokenRoute } from './routes/token.js'
import { introspectRoute } from './routes/introspect.js'
import { startJanitor, type Janitor } from './sessions/janitor.js'
import { revokeRoute } from './routes/revoke.js'
import { sessionsRoutes } from './routes/sessions.js'
import { createAuthenticate, type VerifiedAccessToken } from './http/authenticate.js'

declare module 'fastify' {
  interface FastifyInstance {
    tokenline: Tokenline
    tokenlineJanitor: Janitor
  }
}

export interface TokenlinePluginOptions extends TokenlineOptions {
  /** Path prefix for every Tokenline route, e.g. '/auth'. @default '' */
  prefix?: string
}

const toMaterial = (k: SigningKey): KeyMaterial => ({ kid: k.kid, alg: k.alg as Algorithm, privatePem: k.privatePem, publicJwk: JSON.parse(k.publicJwk) })

async function loadKeys (store: Store, alg: Algorithm, now: number): Promise<{ current: KeyMaterial, published: KeyMaterial[] }> {
  const current = await store.ensureSigningKey(alg, () => generateStoredKey(alg), now)
  const published = (await store.publishedKeys(now)).map(toMaterial)
  return { current: toMaterial(current), published }
}

/** RFC 6749 §5.1: tokens and errors alike are never cached. */
async function noStore (_request: FastifyRequest, reply: FastifyReply): Promise<void> {
  reply.header('cache-control', 'no-store')
  reply.header('pragma', 'no-cache')
}

/** The one place errors on Tokenline's routes are turned into RFC 6749 §5.2 JSON. */
export function errorHandler (tl: Tokenline) {
  return function handle (err: FastifyError | OAuthError, request: FastifyRequest, reply: FastifyReply): void {
    const e = toOAuthError(err)
    if (e.statusCode >= 500) request.log.error({ err: e.cause ?? err }, 'tokenline internal error')
    for (const [k, v] of Object.entries(e.headers)) reply.header(k, v)
    if (e.clearCookie) clearRefreshCookie(tl, reply)
    reply.code(e.statusCode).type('application/json; charset=utf-8').send(e.toJSON())
  }
}

const tokenline: FastifyPluginAsync<TokenlinePluginOptions> = async (fastify, raw) => {
  const { prefix = '', ...rest } = raw ?? {}
  if (typeof prefix !== 'string' || (prefix !== '' && !/^\/[\w\-/]*[^/]$/.test(prefix))) {
    throw new ConfigError(`option prefix must be '' or a path like '/auth', got ${JSON.stringify(prefix)}`)
  }
  const opts = resolveOptions(rest)
  const store = await openStore(opts.database, { pgPoolSize: opts.pgPoolSize, pgStatementTimeoutMs: opts.pgStatementTimeout * 1000 })
  fastify.addHook('onClose', async () => await store.close())

  const keys = await loadKeys(store, opts.algorithm, opts.now())
  const tl: Tokenline = {
    opts,
    store,
    passwords: createPasswords(opts.argon2, createGate({ concurrency: opts.argon2Concurrency || availableParallelism(), maxWaitMs: opts.argon2QueueWait * 1000 })),
    binding: { userAgent: opts.bindingUserAgent, ip: opts.bindingIp, deviceId: opts.bindingDeviceId },
    prefix,
    currentKey: keys.current,
    sign: makeSigner(keys.current),
    verify: makeVerifier(keys.published, { issuer: opts.issuer, audience: opts.audience, now: opts.now }),
    async reloadKeys () {
      const k = await loadKeys(store, opts.algorithm, opts.now())
      tl.currentKey = k.current
      tl.sign = makeSigner(k.current)
      tl.verify = makeVerifier(k.published, { issuer: opts.issuer, audience: opts.audience, now: opts.now })
    },
    // Set below, once the key watcher it shares with Tokenline's routes exists.
    authenticate: () => { throw new Error('tokenline is not ready') },
    log: fastify.log
  }
  fastify.decorate('tokenline', tl)
  // Keys rotated by another process: checked before Tokenline's routes and by app.tokenline.authenticate().
  const keysFresh = await watchKeys(tl)
  tl.authenticate = createAuthenticate(tl, keysFresh)
  // On the host's own routes too (this plugin is not encapsulated): set by app.tokenline.authenticate().
  fastify.decorateRequest('tokenline', null as unknown as VerifiedAccessToken)
  await tl.passwords.prepare()
  const janitor = startJanitor(tl, fastify.log)
  fastify.decorate('tokenlineJanitor', janitor)
  fastify.addHook('onClose', async () => janitor.stop())

  // Tokenline's routes live in their own encapsulated context: their parsers, hooks and error
  // handler never leak into the host application.
  await fastify.register(async (child: FastifyInstance) => {
    if (!child.hasRequestDecorator('cookies')) await child.register(cookie)
    await registerCors(child, tl)
    registerParsers(child, opts.bodyLimit)
    child.setErrorHandler(errorHandler(tl))
    // Before any route, so that they reach every Tokenline route: the check for keys rotated by
    // another process, and the metrics hooks (with /healthz and /metrics).
    child.addHook('onRequest', keysFresh)
    // Before every route: @fastify/swagger collects them as they are added.
    await registerOpenApi(child, tl)
    await opsRoutes(child, tl)

    await child.register(async (tokenScope: FastifyInstance) => {
      tokenScope.addHook('onSend', noStore)
      // Per-IP budgets (RFC 6749 §4.3.2) on every route of the token endpoint.
      registerThrottles(tokenScope, tl)
      tokenRoute(tokenScope, tl)
      // Under /token: the refresh cookie (Path=/token) reaches them, and so do the no-store headers.
      revokeRoute(tokenScope, tl)
      introspectRoute(tokenScope, tl)
      // RFC 6749 §3.2: the token endpoint is POST only.
      tokenScope.route({
        method: ['GET', 'PUT', 'DELETE', 'PATCH'],
        url: '/token',
        // Not an operation of the API: POST /token is the endpoint, these only refuse.
        schema: { hide: true },
        // In onRequest, before any body is parsed: the method is wrong whatever the body is.
        onRequest: async (_request, reply) => {
          reply.header('allow', 'POST')
          throw new OAuthError('invalid_request', 'the token endpoint only accepts POST', { status: 405 })
        },
        /* c8 ignore next -- never reached: onRequest always refuses */
        handler: async () => {}
      })
    })
    metadataRoutes(child, tl)
    // The sessions API: bearer-authenticated, outside /token so the refresh cookie never reaches it.
    await child.register(async (sessionsScope: FastifyInstance) => {
      sessionsScope.addHook('onSend', noStore)
      sessionsRoutes(sessionsScope, tl)
    })
  }, { prefix })
}

export default fp(tokenline, { fastify: '5.x', name: 'tokenline' })
