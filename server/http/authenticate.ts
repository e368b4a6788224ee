import type { FastifyReply, FastifyRequest, onRequestHookHandler, preHandlerAsyncHookHandler } from 'fastify'
import type { Tokenline } from '../context.js'
import { toOAuthError } from '../errors.js'
import { ConfigError } from '../options.js'
import type { AccessClaims } from '../tokens/signing-keys.js'
import { authenticateBearer, bearerClaims } from './bearer-auth.js'

/*
 * `app.tokenline.authenticate(options)`: a preHandler that protects the host application's own routes
 * with Tokenline's access tokens (RFC 6750). It reuses the sessions API's bearer authentication
 * (./bearer-auth.ts) and sends its refusals itself, so that they keep their RFC 6750 §3 shape on routes
 * outside Tokenline's encapsulated context, whatever error handler the host has.
 */

/** Options of `app.tokenline.authenticate()`. */
export interface AuthenticateOptions {
  /**
   * Scopes the route requires: every one must be in the token's `scope`, otherwise `403
   * insufficient_scope` (RFC 6750 §3.1). `[]` accepts any valid access token.
   */
  scopes: readonly string[]
  /**
   * Whether to check that the token's session is still live in the store (not revoked, not expired,
   * user not disabled): logout, reuse detection, a password change or `tokenline sessions revoke` then
   * end the token on this route at once, as on the sessions API and introspection. This costs two
   * indexed reads per request. `false` checks the signature, `iss`, `aud` and `exp` only: a token then
   * works until its `exp` (at most `accessTokenTtl`) after its session ended. @default true
   */
  session?: boolean
}

/** What a protected route knows about its caller: the access token's verified claims. */
export interface VerifiedAccessToken {
  /** The user's stable id. */
  sub: string
  /** The session the token was issued for. */
  sid: string
  /** The client the token was issued to. */
  client_id: string
  /** The token's scopes, parsed. */
  scope: string[]
  /** Expiry, seconds since the epoch. */
  exp: number
  /** Issue time, seconds since the epoch. */
  iat: number
  iss: string
  aud: string
  jti: string
}

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * The verified access token of the request, set by `app.tokenline.authenticate()` on the routes it
     * protects (typed as always present for them; it is `null` on routes without that preHandler).
     */
    tokenline: VerifiedAccessToken
  }
}

/** RFC 6749 §3.3 scope-token. */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/

function checkOptions (options: AuthenticateOptions): { scopes: string[], session: boolean } {
  const o = options as Partial<AuthenticateOptions> | undefined
  if (o === undefined || o === null || typeof o !== 'object') throw new ConfigError('tokenline.authenticate() needs options: { scopes: [...] }')
  for (const key of Object.keys(o)) {
    if (key !== 'scopes' && key !== 'session') throw new ConfigError(`tokenline.authenticate(): unknown option ${key}`)
  }
  if (!Array.isArray(o.scopes) || !o.scopes.every((s) => typeof s === 'string' && SCOPE_TOKEN.test(s))) {
    throw new ConfigError('tokenline.authenticate(): option scopes must be an array of scope names (use [] for any valid token)')
  }
  if (o.session !== undefined && typeof o.session !== 'boolean') throw new ConfigError('tokenline.authenticate(): option session must be true or false')
  return { scopes: [...new Set(o.scopes)], session: o.session ?? true }
}

const verified = (c: AccessClaims): VerifiedAccessToken => ({
  sub: c.sub,
  sid: c.sid,
  client_id: c.client_id,
  scope: typeof c.scope === 'string' ? c.scope.split(' ').filter((s) => s !== '') : [],
  exp: c.exp,
  iat: c.iat,
  iss: c.iss,
  aud: c.aud,
  jti: c.jti
})

/** Sends a refusal from the preHandler itself: the host's error handler never sees it. */
function refuse (request: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply {
  const e = toOAuthError(err)
  if (e.statusCode >= 500) request.log.error({ err: e.cause ?? err }, 'tokenline: could not authenticate the request')
  for (const [k, v] of Object.entries(e.headers)) reply.header(k, v)
  // RFC 6750 §3: every refusal of a protected resource carries a Bearer challenge.
  if (e.error === 'invalid_request' && reply.getHeader('www-authenticate') === undefined) reply.header('www-authenticate', 'Bearer error="invalid_request"')
  return reply.code(e.statusCode).type('application/json; charset=utf-8').send(e.toJSON())
}

/**
 * Builds `app.tokenline.authenticate`. `keysFresh` is the check for signing keys rotated by another
 * process that Tokenline's own routes run (../tokens/key-rotation.ts), so that protected host routes
 * accept tokens signed with a new key as soon as Tokenline's routes do.
 */
export function createAuthenticate (tl: Tokenline, keysFresh: onRequestHookHandler): (options: AuthenticateOptions) => preHandlerAsyncHookHandler {
  return function authenticate (options) {
    const { scopes, session } = checkOptions(options)
    const challenge = `Bearer error="insufficient_scope", scope="${scopes.join(' ')}"`

    return async function tokenlineAuthenticate (request, reply) {
      let claims: AccessClaims
      try {
        await new Promise<void>((resolve) => { keysFresh.call(this, request, reply, () => resolve()) })
        claims = session ? (await authenticateBearer(tl, request)).claims : bearerClaims(tl, request)
      } catch (err) {
        return refuse(request, reply, err)
      }
      const token = verified(claims)
      const missing = scopes.filter((s) => !token.scope.includes(s))
      if (missing.length > 0) {
        // RFC 6750 §3.1: the token is valid but lacks a scope the resource requires.
        reply.header('www-authenticate', challenge)
        return reply.code(403).type('application/json; charset=utf-8').send({
          error: 'insufficient_scope',
          error_description: `access token lacks scope ${missing.join(' ')}`
        })
      }
      request.tokenline = token
    }
  }
}
