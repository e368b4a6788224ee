import swagger from '@fastify/swagger'
import type { FastifyInstance } from 'fastify'
import type { Tokenline } from '../context.js'

/*
 * The OpenAPI 3 description of Tokenline's routes, served as JSON at GET <prefix>/openapi.json.
 *
 * @fastify/swagger collects the routes of Tokenline's encapsulated context (and only those: not the
 * host's) and builds the document; the descriptions below are merged in by its `transform` hook, for the
 * document only. They are deliberately not handed to Fastify as validation schemas: Tokenline parses and
 * checks its own input (server/http/body.ts, the routes), refusing repeated parameters and arrays, so that
 * every refusal is an RFC 6749 JSON error with a precise description, never Fastify's validation shape.
 * Runtime schemas the routes carry themselves (response serialisation) are kept and documented as well.
 */

const s = (description: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({ type: 'string', description, ...extra })

const ERROR_CODES = ['invalid_request', 'invalid_client', 'invalid_grant', 'unauthorized_client', 'unsupported_grant_type', 'invalid_scope', 'invalid_token', 'unsupported_token_type', 'access_denied', 'temporarily_unavailable', 'server_error']
const REASONS = ['invalid_credentials', 'token_invalid', 'client_mismatch', 'reuse_detected', 'session_revoked', 'session_expired', 'session_idle', 'fingerprint_mismatch', 'account_disabled', 'csrf_rejected']

/** RFC 6749 §5.2, plus Tokenline's stable `reason`. */
const oauthError = (description: string): Record<string, unknown> => ({
  description,
  type: 'object',
  required: ['error'],
  properties: {
    error: s('RFC 6749 §5.2 / RFC 6750 §3.1 / RFC 7009 error code', { enum: ERROR_CODES }),
    error_description: s('short, lowercase, human-readable; never echoes input'),
    reason: s('stable machine-readable cause, on `invalid_grant` and a few others', { enum: REASONS })
  }
})

const clientAuth = {
  client_id: s('the client; public clients send only this. Confidential clients may use HTTP Basic instead (never both)'),
  client_secret: s('confidential clients authenticating in the body (client_secret_post)')
}

const passwordGrant = {
  title: 'password grant',
  type: 'object',
  required: ['grant_type', 'username', 'password'],
  properties: {
    grant_type: s('`password` (RFC 6749 §4.3.2)', { enum: ['password'] }),
    ...clientAuth,
    username: s('the user\'s name'),
    password: s('the user\'s password, verified exactly as sent'),
    scope: s('space-separated subset of the client\'s scopes; default: all of them'),
    device_id: s('binds the session to this device id; later refreshes must send it')
  }
}

const refreshGrant = {
  title: 'refresh_token grant',
  type: 'object',
  required: ['grant_type'],
  properties: {
    grant_type: s('`refresh_token` (RFC 6749 §6)', { enum: ['refresh_token'] }),
    ...clientAuth,
    refresh_token: s('the refresh token (`tlrt_...`); cookie clients send it in the `__Secure-tokenline-rt` cookie instead'),
    scope: s('may only narrow the session\'s scope, for this access token'),
    device_id: s('required when the session is bound to a device id')
  }
}

const tokenResponse = {
  description: 'RFC 6749 §5.1 token response; `Cache-Control: no-store`. `refresh_token` only for `body`/`both` clients; cookie clients get it in `Set-Cookie`',
  type: 'object',
  required: ['access_token', 'token_type', 'expires_in', 'scope'],
  properties: {
    access_token: s('RFC 9068 JWT (`typ: at+jwt`), verifiable with the JWKS'),
    token_type: s('always `Bearer`', { enum: ['Bearer'] }),
    expires_in: { type: 'integer', description: 'access token lifetime, s' },
    scope: s('granted scope'),
    refresh_token: s('the next refresh token: each one is single use')
  }
}

const throttled = oauthError('throttled (per-address budget): retry after the `Retry-After` header, s')
const unavailable = oauthError('`temporarily_unavailable`: too many password checks at once, or a busy database; retry after `Retry-After`, s')
const FORM = ['application/x-www-form-urlencoded', 'application/json']
const bearer = [{ bearerAuth: [] }]
const session = {
  type: 'object',
  properties: {
    id: s('session id (the `sid` claim)'),
    client_id: s('client the session belongs to'),
    created_at: s('login time', { format: 'date-time' }),
    last_used_at: s('last refresh', { format: 'date-time' }),
    user_agent: { type: ['string', 'null'], description: 'user agent of the last request' },
    ip: { type: ['string', 'null'], description: 'address of the last request' },
    current: { type: 'boolean', description: 'the session of the access token making this call' }
  }
}
const health = {
  type: 'object',
  properties: {
    status: s('`ok` or `error`', { enum: ['ok', 'error'] }),
    database: s('`ok` or `unreachable`'),
    migrations: { type: 'object', properties: { applied: { type: 'integer' }, expected: { type: 'integer' } } },
    error: s('what is wrong, when status is error')
  }
}
const jwk = { type: 'object', additionalProperties: true, description: 'public JWK: kty, kid, alg, use and the public parameters only' }

/** Descriptions by `METHOD path` (path without the prefix). */
export const ROUTE_DOCS: Record<string, Record<string, unknown>> = {
  'POST /token': {
    summary: 'Token endpoint: password and refresh_token grants',
    description: 'RFC 6749 §3.2. Form or JSON body of string values; a repeated parameter, an array or object value, a parameter in the query string or an unsupported content type is `400 invalid_request`. Refresh tokens rotate on every use; a consumed one presented again revokes its session (`reuse_detected`).',
    tags: ['token'],
    consumes: FORM,
    security: [{}, { clientBasic: [] }],
    body: { oneOf: [passwordGrant, refreshGrant] },
    response: {
      200: tokenResponse,
      400: oauthError('invalid_request, invalid_grant (with `reason`), invalid_client (body credentials), unauthorized_client, unsupported_grant_type, invalid_scope'),
      401: oauthError('invalid_client after HTTP Basic authentication failed; `WWW-Authenticate: Basic`'),
      403: oauthError('a cookie-borne request from a disallowed origin (CSRF check; `reason: csrf_rejected`)'),
      429: throttled,
      503: unavailable
    }
  },
  'POST /token/revoke': {
    summary: 'Revoke a token (RFC 7009); logout for cookie clients',
    description: 'Revokes the session the token belongs to. 200 for unknown or already revoked tokens. Without `token`, a cookie client\'s refresh cookie is used and cleared.',
    tags: ['token'],
    consumes: FORM,
    security: [{}, { clientBasic: [] }],
    body: {
      type: 'object',
      properties: {
        token: s('refresh or access token; optional when the refresh cookie is sent'),
        token_type_hint: s('`refresh_token` or `access_token`; a wrong hint is ignored'),
        ...clientAuth
      }
    },
    response: {
      200: { description: 'revoked, or nothing to revoke (RFC 7009 §2.2)', type: 'object' },
      400: oauthError('invalid_request, unsupported_token_type, or another client\'s token presented by a confidential client'),
      401: oauthError('invalid_client'),
      429: throttled
    }
  },
  'POST /token/introspect': {
    summary: 'Introspect a token (RFC 7662)',
    description: 'For confidential clients (resource servers). An inactive, unknown or other client\'s token gives `{"active": false}` and nothing else.',
    tags: ['token'],
    consumes: FORM,
    security: [{ clientBasic: [] }, {}],
    body: { type: 'object', required: ['token'], properties: { token: s('refresh or access token'), token_type_hint: s('ignored'), ...clientAuth } },
    response: {
      200: {
        description: 'RFC 7662 §2.2',
        type: 'object',
        required: ['active'],
        properties: {
          active: { type: 'boolean' },
          token_type: s('`access_token` or `refresh_token`'),
          client_id: s(''),
          sub: s('stable user id'),
          scope: s(''),
          sid: s('session id'),
          exp: { type: 'integer' },
          iat: { type: 'integer' },
          iss: s(''),
          aud: s(''),
          jti: s('')
        }
      },
      400: oauthError('invalid_request'),
      401: oauthError('invalid_client: client authentication required'),
      429: throttled
    }
  },
  'GET /sessions': {
    summary: 'The caller\'s live sessions',
    description: 'Bearer access token; the token\'s session must still be live (revocation is immediate here).',
    tags: ['sessions'],
    security: bearer,
    response: {
      200: { description: 'live sessions of the user, newest first', type: 'object', properties: { sessions: { type: 'array', items: session } } },
      401: oauthError('invalid_token; `WWW-Authenticate: Bearer`')
    }
  },
  'DELETE /sessions/:id': {
    summary: 'End one of the caller\'s sessions',
    tags: ['sessions'],
    security: bearer,
    params: { type: 'object', required: ['id'], properties: { id: s('session id, from GET /sessions') } },
    response: {
      204: { description: 'ended', type: 'null' },
      401: oauthError('invalid_token'),
      404: oauthError('no such live session of this user')
    }
  },
  'DELETE /sessions': {
    summary: 'End every session of the caller but the current one',
    tags: ['sessions'],
    security: bearer,
    querystring: { type: 'object', required: ['scope'], properties: { scope: s('must be `others`', { enum: ['others'] }) } },
    response: {
      200: { description: 'how many sessions were ended', type: 'object', properties: { revoked: { type: 'integer' } } },
      400: oauthError('invalid_request: scope=others is required'),
      401: oauthError('invalid_token')
    }
  },
  'GET /.well-known/oauth-authorization-server': {
    summary: 'Authorization server metadata (RFC 8414)',
    tags: ['discovery'],
    response: { 200: { description: 'metadata; URLs built from the configured issuer, never the Host header', type: 'object', additionalProperties: true } }
  },
  'GET /.well-known/jwks.json': {
    summary: 'Public signing keys (RFC 7517 JWK Set)',
    description: 'The signing key and retired keys whose tokens may not have expired yet. Never a private member.',
    tags: ['discovery'],
    response: { 200: { description: 'JWK Set', type: 'object', properties: { keys: { type: 'array', items: jwk } } } }
  },
  'GET /healthz': {
    summary: 'Liveness: database reachable and migrations current',
    tags: ['operations'],
    response: {
      200: { ...health, description: 'healthy' },
      503: { ...health, description: 'database unreachable, or its schema is not this version\'s' }
    }
  },
  'GET /metrics': {
    summary: 'Prometheus metrics (text exposition 0.0.4)',
    description: 'Needs `Authorization: Bearer <TOKENLINE_METRICS_TOKEN>` when that setting is set.',
    tags: ['operations'],
    security: [{}, { metricsToken: [] }],
    response: {
      200: { description: 'metrics', content: { 'text/plain; version=0.0.4': { schema: { type: 'string' } } } },
      401: oauthError('invalid_token: missing or wrong metrics token')
    }
  }
}

/** `METHOD path` of a route, without Tokenline's prefix. */
export const routeKey = (method: string, url: string, prefix: string): string =>
  `${method} ${prefix !== '' && url.startsWith(prefix) ? url.slice(prefix.length) : url}`

/**
 * Registers @fastify/swagger in Tokenline's context (before its routes, so that it sees them) and
 * GET /openapi.json. A host that registered @fastify/swagger itself keeps its own decorator: ours has
 * another name.
 */
export async function registerOpenApi (app: FastifyInstance, tl: Tokenline): Promise<void> {
  await app.register(swagger, {
    decorator: 'tokenlineOpenapi',
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Tokenline',
        description: 'OAuth2-style token endpoint for first-party apps: password and rotating refresh-token grants.',
        version: '1'
      },
      servers: [{ url: tl.opts.issuer }],
      components: {
        securitySchemes: {
          clientBasic: { type: 'http', scheme: 'basic', description: 'client_secret_basic: client id and secret, form-encoded first (RFC 6749 §2.3.1, Appendix B)' },
          bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'an access token from POST /token' },
          metricsToken: { type: 'http', scheme: 'bearer', description: 'TOKENLINE_METRICS_TOKEN' }
        }
      }
    },
    transform: ({ schema, url, route }) => {
      const methods = typeof route.method === 'string' ? [route.method] : route.method
      // Several methods on one route is the 405 answer for /token; OPTIONS is CORS preflight.
      if (methods.length !== 1 || methods[0] === 'OPTIONS' || methods[0] === 'HEAD') return { schema: { ...schema, hide: true }, url }
      const docs = ROUTE_DOCS[routeKey(methods[0] as string, url, tl.prefix)]
      if (docs === undefined) return { schema, url }
      // A status the descriptions do not cover keeps the route's own response schema.
      const own = (schema?.response ?? {}) as Record<string, unknown>
      const response: Record<string, unknown> = { ...own, ...(docs.response as Record<string, unknown>) }
      return { schema: { ...schema, ...docs, response } as never, url }
    }
  })

  app.get('/openapi.json', { schema: { hide: true } }, async (_request, reply) => {
    reply.header('cache-control', 'public, max-age=300')
    return (app as unknown as { tokenlineOpenapi: () => unknown }).tokenlineOpenapi()
  })
}
