import swagger from '@fastify/swagger'
import type { FastifyInstance } from 'fastify'
import type { Tokenline } from '../context.js'
import { GRANT_REASONS, OAUTH_ERROR_CODES } from '../errors.js'

/*
 * The OpenAPI 3.1 description of Tokenline's routes, served as JSON at GET <prefix>/openapi.json.
 *
 * @fastify/swagger collects the routes of Tokenline's encapsulated context (and only those: not the
 * host's) as they are registered. Each route carries its own description in `config.openapi` (a
 * `RouteDoc`), which the `transform` below merges into what @fastify/swagger sees, for the document
 * only. Tokenline parses and checks its own input (server/http/body.ts, the routes), refusing repeated
 * parameters and arrays so that every refusal is an RFC 6749 §5.2 JSON error with a precise
 * description, and most routes answer with bodies whose members vary (RFC 7662 §2.2 introspection).
 * A `body` or `response` in the route's `schema` would make Fastify validate requests and re-serialise
 * answers instead; `schema` holds only what Fastify should act on.
 */

export type JsonSchema = Record<string, unknown>

/** The schemes declared in the document's `components.securitySchemes`, below. */
type SecurityScheme = 'clientBasic' | 'bearerAuth' | 'metricsToken'

/** A route's OpenAPI operation: what @fastify/swagger reads from a route schema, kept out of Fastify's way. */
export interface RouteDoc {
  summary: string
  description?: string
  tags: Array<'token' | 'sessions' | 'discovery' | 'operations'>
  /** Alternatives; `{}` is "no authentication". */
  security?: Array<Partial<Record<SecurityScheme, []>>>
  /** Request body media types. */
  consumes?: string[]
  body?: JsonSchema
  params?: JsonSchema
  querystring?: JsonSchema
  /** By status. A status listed here replaces the route's own `schema.response` in the document only. */
  response: Record<number, JsonSchema>
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Documentation only (see above): in `schema`, Fastify would validate and serialise with it. */
    openapi?: RouteDoc
  }
}

/** A string property with its description. */
export const str = (description: string, extra: JsonSchema = {}): JsonSchema => ({ type: 'string', description, ...extra })

/** RFC 6749 §5.2 error body plus Tokenline's `reason`; both enums are errors.ts's lists. */
export const oauthError = (description: string): JsonSchema => ({
  description,
  type: 'object',
  required: ['error'],
  properties: {
    error: str('RFC 6749 §5.2 / RFC 6750 §3.1 / RFC 7009 error code', { enum: [...OAUTH_ERROR_CODES] }),
    error_description: str('short, lowercase, human-readable; never echoes input'),
    reason: str('stable machine-readable cause, on `invalid_grant` and a few others', { enum: [...GRANT_REASONS] })
  }
})

/** The 429 of the per-address budgets (server/http/throttle.ts), on every route under /token. */
export const throttledResponse = oauthError('throttled (per-address budget): retry after the `Retry-After` header, s')

/** The bodies server/http/body.ts parses. */
export const FORM_OR_JSON = ['application/x-www-form-urlencoded', 'application/json']

/** RFC 6749 §2.3.1 client authentication in the body; `clientBasic` is the other way. */
export const clientAuthParams = {
  client_id: str('the client; public clients send only this. Confidential clients may use HTTP Basic instead (never both)'),
  client_secret: str('confidential clients authenticating in the body (client_secret_post)')
}

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
      const doc = route.config?.openapi
      if (doc === undefined) return { schema, url }
      const { response, ...operation } = doc
      return { schema: { ...schema, ...operation, response: { ...(schema?.response as object | undefined), ...response } } as never, url }
    }
  })

  app.get('/openapi.json', { schema: { hide: true } }, async (_request, reply) => {
    reply.header('cache-control', 'public, max-age=300')
    return (app as unknown as { tokenlineOpenapi: () => unknown }).tokenlineOpenapi()
  })
}
