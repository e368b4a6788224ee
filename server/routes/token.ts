import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { authenticateClient } from '../http/client-auth.js'
import { bodyParams } from '../http/body.js'
import type { Tokenline } from '../context.js'
import { OAuthError, invalidRequest } from '../errors.js'
import * as password from '../grants/password.js'
import * as refreshToken from '../grants/refresh-token.js'
import { checkCsrf } from '../http/csrf.js'
import { COOKIE_NAME, tokenResponseSchema } from '../tokens/response.js'

const SUPPORTED = new Set([password.grantType, refreshToken.grantType])

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
  app.post('/token', { schema: { response: { 200: tokenResponseSchema } } }, async (request: FastifyRequest, reply: FastifyReply) => {
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
