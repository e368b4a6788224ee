import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { authenticateClient } from '../http/client-auth.js'
import { bodyParams } from '../http/body.js'
import type { Tokenline } from '../context.js'
import { OAuthError, invalidRequest } from '../errors.js'
import * as password from '../grants/password.js'
import * as refreshToken from '../grants/refresh-token.js'
import { checkCsrf } from '../http/csrf.js'
import { COOKIE_NAME, tokenResponseSchema } from '../tokens/response.js'
import { FORM_OR_JSON, clientAuthParams, oauthError, str, throttledResponse, type RouteDoc } from './openapi.js'

const SUPPORTED = new Set([password.grantType, refreshToken.grantType])

const passwordGrantParams = {
  title: 'password grant',
  type: 'object',
  required: ['grant_type', 'username', 'password'],
  properties: {
    grant_type: str('`password` (RFC 6749 §4.3.2)', { enum: ['password'] }),
    ...clientAuthParams,
    username: str('the user\'s name'),
    password: str('the user\'s password, verified exactly as sent'),
    scope: str('space-separated subset of the client\'s scopes; default: all of them'),
    device_id: str('binds the session to this device id; later refreshes must send it')
  }
}

const refreshGrantParams = {
  title: 'refresh_token grant',
  type: 'object',
  required: ['grant_type'],
  properties: {
    grant_type: str('`refresh_token` (RFC 6749 §6)', { enum: ['refresh_token'] }),
    ...clientAuthParams,
    refresh_token: str('the refresh token (`tlrt_...`); cookie clients send it in the `__Secure-tokenline-rt` cookie instead'),
    scope: str('may only narrow the session\'s scope, for this access token'),
    device_id: str('required when the session is bound to a device id')
  }
}

const tokenDoc: RouteDoc = {
  summary: 'Token endpoint: password and refresh_token grants',
  description: 'RFC 6749 §3.2. Form or JSON body of string values; a repeated parameter, an array or object value, a parameter in the query string or an unsupported content type is `400 invalid_request`. Refresh tokens rotate on every use; a consumed one presented again revokes its session (`reuse_detected`).',
  tags: ['token'],
  consumes: FORM_OR_JSON,
  security: [{}, { clientBasic: [] }],
  body: { oneOf: [passwordGrantParams, refreshGrantParams] },
  // 200 is the route's own schema.response.
  response: {
    400: oauthError('invalid_request, invalid_grant (with `reason`), invalid_client (body credentials), unauthorized_client, unsupported_grant_type, invalid_scope'),
    401: oauthError('invalid_client after HTTP Basic authentication failed; `WWW-Authenticate: Basic`'),
    403: oauthError('a cookie-borne request from a disallowed origin (CSRF check; `reason: csrf_rejected`)'),
    429: throttledResponse,
    503: oauthError('`temporarily_unavailable`: too many password checks at once, or a busy database; retry after `Retry-After`, s')
  }
}

/** The refresh token of a request: from the body, or the HttpOnly cookie; both and different is ambiguous. */
export function presentedRefreshToken (request: FastifyRequest, fromBody: string | undefined): { token: string, fromCookie: boolean } | undefined {
  const cookie = request.cookies?.[COOKIE_NAME]
  const fromCookie = cookie === undefined || cookie === '' ? undefined : cookie
  if (fromBody !== undefined && fromCookie !== undefined && fromBody !== fromCookie) {
    throw invalidRequest('refresh token given in both body and cookie, and they differ')
  }
  if (fromBody !== undefined) return { token: fromBody, fromCookie: false }
  if (fromCookie !== undefined) return { token: fromCookie, fromCookie: true }
  return undefined
}

export function tokenRoute (app: FastifyInstance, tl: Tokenline): void {
  app.post('/token', { schema: { response: { 200: tokenResponseSchema } }, config: { openapi: tokenDoc } }, async (request: FastifyRequest, reply: FastifyReply) => {
    const params = bodyParams(request)
    const grant = params.grant_type
    if (grant === undefined) throw invalidRequest('missing required parameter grant_type')
    const client = await authenticateClient(request, params, tl.store)
    if (!SUPPORTED.has(grant)) throw new OAuthError('unsupported_grant_type', 'grant_type must be password or refresh_token')
    if (grant === password.grantType) {
      // Login CSRF: a foreign page must not plant its own session cookie in the user's browser.
      if (client.delivery !== 'body') checkCsrf(tl, request, client)
      return await password.handler(tl, request, reply, params, client)
    }
    const presented = presentedRefreshToken(request, params.refresh_token)
    if (presented === undefined) throw invalidRequest('missing required parameter refresh_token')
    // The cookie is ambient: the browser attaches it to forged requests too, so a cookie-borne token
    // is used only on a request that proves where it came from. Checked before the session is read,
    // so a refused request rotates, revokes and clears nothing.
    if (presented.fromCookie) checkCsrf(tl, request, client)
    return await refreshToken.handler(tl, request, reply, params, client, presented)
  })
}
