import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { authenticateClient } from '../http/client-auth.js'
import { bodyParams } from '../http/body.js'
import type { Tokenline } from '../context.js'
import { OAuthError, invalidRequest } from '../errors.js'
import { grantParams, grants } from '../grants/index.js'
import { tokenResponseSchema } from '../tokens/response.js'
import { FORM_OR_JSON, oauthError, throttledResponse, type RouteDoc } from '../api-docs.js'

const UNSUPPORTED = `grant_type must be ${[...grants.keys()].join(' or ')}`

const tokenDoc: RouteDoc = {
  summary: `Token endpoint: ${[...grants.keys()].join(' and ')} grants`,
  description: 'RFC 6749 §3.2. Form or JSON body of string values; a repeated parameter, an array or object value, a parameter in the query string or an unsupported content type is `400 invalid_request`. Refresh tokens rotate on every use; a consumed one presented again revokes its session (`reuse_detected`).',
  tags: ['token'],
  consumes: FORM_OR_JSON,
  security: [{}, { clientBasic: [] }],
  body: { oneOf: [...grants.values()].map((g) => g.bodyDoc) },
  // 200 is the route's own schema.response.
  response: {
    400: oauthError('invalid_request, invalid_grant (with `reason`), invalid_client (body credentials), unauthorized_client, unsupported_grant_type, invalid_scope'),
    401: oauthError('invalid_client after HTTP Basic authentication failed; `WWW-Authenticate: Basic`'),
    403: oauthError('a cookie-borne request from a disallowed origin (CSRF check; `reason: csrf_rejected`)'),
    429: throttledResponse,
    503: oauthError('`temporarily_unavailable`: too many password checks at once, or a busy database; retry after `Retry-After`, s')
  }
}

export function tokenRoute (app: FastifyInstance, tl: Tokenline): void {
  app.post('/token', { schema: { response: { 200: tokenResponseSchema } }, config: { openapi: tokenDoc } }, async (request: FastifyRequest, reply: FastifyReply) => {
    const params = bodyParams(request)
    const grantType = params.grant_type
    if (grantType === undefined) throw invalidRequest('missing required parameter grant_type')
    const client = await authenticateClient(request, params, tl.store)
    const grant = grants.get(grantType)
    if (grant === undefined) throw new OAuthError('unsupported_grant_type', UNSUPPORTED)
    return await grant.handler(tl, { request, reply, params: grantParams(grant, params), client })
  })
}
