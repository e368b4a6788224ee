import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Client, SecurityEvent } from '../../db/store.js'
import { bodyParams } from '../http/body.js'
import { authenticateClient } from '../http/client-auth.js'
import type { Tokenline } from '../context.js'
import { requestMeta } from '../http/request-meta.js'
import { logEvents } from '../sessions/events.js'
import { checkCsrf } from '../http/csrf.js'
import { invalidRequest } from '../errors.js'
import { clearRefreshCookie, refreshCookie } from '../tokens/response.js'
import { digest, isWellFormedRefreshToken } from '../tokens/refresh-format.js'
import { sessionOf, verifyAccessToken } from '../http/bearer-auth.js'
import { FORM_OR_JSON, clientAuthParams, oauthError, str, throttledResponse, type RouteDoc } from '../api-docs.js'

/** The reason recorded on a session ended through the revocation endpoint. */
export const LOGOUT = 'logout'

/** What a presented token turned out to be: a session it belongs to, or nothing we issued and still know. */
type Found =
  | { kind: 'unknown' }
  | { kind: 'session', sessionId: string, userId: string, clientId: string, tokenType: 'refresh_token' | 'access_token' }

/**
 * Identifies a token without trusting `token_type_hint`: refresh tokens have their own checksummed
 * format, and anything else is tried as one of our access tokens. RFC 7009 §2.1 lets the server
 * search every type it supports; the hint only saves a lookup, and ours costs nothing.
 */
async function identify (tl: Tokenline, token: string): Promise<Found> {
  if (isWellFormedRefreshToken(token)) {
    const state = await tl.store.findRefreshToken(digest(token))
    if (state === undefined) return { kind: 'unknown' }
    const { session } = state
    return { kind: 'session', sessionId: session.id, userId: session.userId, clientId: session.clientId, tokenType: 'refresh_token' }
  }
  // An expired or forged access token is invalid, so revoking it is a no-op (RFC 7009 §2.2).
  const claims = verifyAccessToken(tl, token)
  if (claims === undefined) return { kind: 'unknown' }
  const session = await sessionOf(tl, claims)
  if (session === undefined) return { kind: 'unknown' }
  return { kind: 'session', sessionId: session.id, userId: session.userId, clientId: session.clientId, tokenType: 'access_token' }
}

const revokeDoc: RouteDoc = {
  summary: 'Revoke a token (RFC 7009); logout for cookie clients',
  description: 'Revokes the session the token belongs to. 200 for unknown or already revoked tokens. Without `token`, a cookie client\'s refresh cookie is used and cleared.',
  tags: ['token'],
  consumes: FORM_OR_JSON,
  security: [{}, { clientBasic: [] }],
  body: {
    type: 'object',
    properties: {
      token: str('refresh or access token; optional when the refresh cookie is sent'),
      token_type_hint: str('`refresh_token` or `access_token`; a wrong hint is ignored'),
      ...clientAuthParams
    }
  },
  response: {
    200: { description: 'revoked, or nothing to revoke (RFC 7009 §2.2)', type: 'object' },
    400: oauthError('invalid_request, unsupported_token_type, or another client\'s token presented by a confidential client'),
    401: oauthError('invalid_client'),
    429: throttledResponse
  }
}

/**
 * RFC 7009 token revocation, and the browser's logout. Revoking either kind of token ends its whole
 * session (§2.1: revoking a refresh token SHOULD also invalidate the access tokens of the same grant;
 * here every token of the session dies, and Tokenline's own bearer routes refuse its access tokens).
 *
 * The token comes from the `token` parameter or, when that is absent, from the refresh cookie; a
 * request carrying the cookie must pass the CSRF check, since it can end the cookie's session and
 * clears the cookie. Answers 200 with an empty body for unknown, malformed, expired and already
 * revoked tokens (§2.2). Another client's token is refused to a confidential client (400) and silently
 * ignored for a public one, and stays valid either way (§2.1; node-oidc-provider's behaviour).
 */
export function revokeRoute (app: FastifyInstance, tl: Tokenline): void {
  app.post('/token/revoke', { config: { openapi: revokeDoc } }, async (request: FastifyRequest, reply: FastifyReply) => {
    const params = bodyParams(request)
    const client = await authenticateClient(request, params, tl.store)
    const cookie = refreshCookie(request)
    if (cookie !== undefined) checkCsrf(tl, request, client)
    const token = params.token ?? cookie
    if (token === undefined) throw invalidRequest('missing required parameter token')

    const found = await identify(tl, token)
    if (found.kind === 'session') await revokeFound(tl, request, client, found)
    // Whatever happened to the session, this browser is logged out.
    clearRefreshCookie(tl, reply)
    return reply.code(200).send()
  })
}

async function revokeFound (tl: Tokenline, request: FastifyRequest, client: Client, found: Extract<Found, { kind: 'session' }>): Promise<void> {
  const meta = requestMeta(request, null)
  const now = tl.opts.now()
  const who = { userId: found.userId, sessionId: found.sessionId, ip: meta.ip, userAgent: meta.userAgent }
  if (found.clientId !== client.id) {
    const events: SecurityEvent[] = [{ type: 'revocation_refused', ...who, clientId: client.id, reason: 'client_mismatch', detail: { token_type: found.tokenType } }]
    await tl.store.recordEvents(events, now)
    logEvents(tl, request.log, events)
    // A public client proves nothing by failing, and learns nothing from a 200 (RFC 7009 §2.1, §5).
    if (client.secretDigest === null) return
    throw invalidRequest('token was issued to another client')
  }
  const events: SecurityEvent[] = [{ type: 'session_revoked', ...who, clientId: client.id, reason: LOGOUT, detail: { via: 'revocation_endpoint', token_type: found.tokenType } }]
  // Already revoked or gone: nothing to record; the answer is the same 200.
  if (await tl.store.revokeSession({ sessionId: found.sessionId, reason: LOGOUT, now, events })) logEvents(tl, request.log, events)
}
