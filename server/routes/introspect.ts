import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Client } from '../../db/store.js'
import { bodyParams } from '../http/body.js'
import { authenticateClient, type Params } from '../http/client-auth.js'
import type { Tokenline } from '../context.js'
import { OAuthError, invalidRequest } from '../errors.js'
import { digest, isWellFormedRefreshToken } from '../tokens/refresh-format.js'
import { liveSessionOf, verifyAccessToken } from '../http/bearer-auth.js'
import { isLive } from '../sessions/state.js'
import { FORM_OR_JSON, clientAuthParams, oauthError, str, throttledResponse, type RouteDoc } from '../api-docs.js'

const REALM = 'Basic realm="tokenline"'

/** RFC 7662 §2.2: an inactive token gets this and nothing else, not even why. */
const INACTIVE = Object.freeze({ active: false })

/**
 * RFC 7662 §2.1: the endpoint requires client authentication, so that it cannot be used to scan for
 * tokens; only confidential clients can authenticate. Every failure is 401 invalid_client (§2.3 points
 * to RFC 6749 §5.2), with `WWW-Authenticate` when the client tried HTTP Basic.
 */
async function confidentialClient (request: FastifyRequest, params: Params, tl: Tokenline): Promise<Client> {
  const basic = request.headers.authorization !== undefined
  const refuse = (description: string): OAuthError =>
    new OAuthError('invalid_client', description, { status: 401, ...(basic && { headers: { 'www-authenticate': REALM } }) })
  if (!basic && params.client_id === undefined) throw refuse('client authentication required')
  let client: Client
  try {
    client = await authenticateClient(request, params, tl.store)
  } catch (err) {
    if (err instanceof OAuthError && err.error === 'invalid_client') throw refuse(err.message)
    throw err
  }
  if (client.secretDigest === null) throw refuse('introspection requires a confidential client')
  return client
}

const introspectDoc: RouteDoc = {
  summary: 'Introspect a token (RFC 7662)',
  description: 'For confidential clients (resource servers): any access or refresh token this server issued, to any client. An inactive or unknown token gives `{"active": false}` and nothing else. Public clients get 401 invalid_client.',
  tags: ['token'],
  consumes: FORM_OR_JSON,
  security: [{ clientBasic: [] }, {}],
  body: { type: 'object', required: ['token'], properties: { token: str('refresh or access token'), token_type_hint: str('ignored'), ...clientAuthParams } },
  response: {
    200: {
      description: 'RFC 7662 §2.2',
      type: 'object',
      required: ['active'],
      properties: {
        active: { type: 'boolean' },
        token_type: str('`access_token` or `refresh_token`'),
        client_id: str(''),
        sub: str('stable user id'),
        scope: str(''),
        sid: str('session id'),
        exp: { type: 'integer' },
        iat: { type: 'integer' },
        iss: str(''),
        aud: str(''),
        jti: str('')
      }
    },
    400: oauthError('invalid_request'),
    401: oauthError('invalid_client: client authentication required; public clients may not introspect'),
    429: throttledResponse
  }
}

/**
 * RFC 7662 token introspection for resource servers. A resource server is a confidential client, and
 * the tokens it is handed were issued to other clients (the web app, the mobile app): so any
 * authenticated confidential client may introspect any token this server issued, access or refresh,
 * whichever client it belongs to (RFC 7662 §4 leaves this policy to the server). Public clients cannot
 * authenticate, so they may not introspect at all (§2.1), which keeps the endpoint from being a
 * token-scanning oracle.
 */
export function introspectRoute (app: FastifyInstance, tl: Tokenline): void {
  app.post('/token/introspect', { config: { openapi: introspectDoc } }, async (request) => {
    const params = bodyParams(request)
    await confidentialClient(request, params, tl)
    const token = params.token
    if (token === undefined) throw invalidRequest('missing required parameter token')
    // token_type_hint is optional and only an optimisation (§2.1): the format says which kind it is.
    if (isWellFormedRefreshToken(token)) return await introspectRefreshToken(tl, token)
    return await introspectAccessToken(tl, token)
  })
}

async function introspectRefreshToken (tl: Tokenline, token: string): Promise<object> {
  const state = await tl.store.findRefreshToken(digest(token))
  if (state === undefined) return INACTIVE
  const { token: row, session, user } = state
  // A consumed token is not active, even inside the grace window: its holder must rotate to use it.
  if (row.usedAt !== null || row.generation !== session.generation) return INACTIVE
  if (!isLive(session, user, tl.opts.now())) return INACTIVE
  return {
    active: true,
    client_id: session.clientId,
    sub: session.userId,
    scope: session.scope,
    sid: session.id,
    // The refresh token is good until its session's absolute expiry (idle expiry permitting).
    exp: Math.floor(session.expiresAt / 1000),
    iat: Math.floor(row.issuedAt / 1000),
    token_type: 'refresh_token'
  }
}

async function introspectAccessToken (tl: Tokenline, token: string): Promise<object> {
  const claims = verifyAccessToken(tl, token)
  if (claims === undefined) return INACTIVE
  // Revoking the session ends its access tokens here, even before `exp`.
  if (await liveSessionOf(tl, claims) === undefined) return INACTIVE
  return { active: true, ...claims, token_type: 'access_token' }
}
