import { GRANT_REASONS, OAUTH_ERROR_CODES } from './errors.js'

/*
 * The vocabulary of Tokenline's OpenAPI document: the RouteDoc each route carries in `config.openapi`
 * and the schema pieces routes and grants describe themselves with. Plain data, so that a grant can
 * declare its body without importing the routes (server/routes/openapi.ts serves the document).
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
