import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { SecurityEvent, Session } from '../../db/store.js'
import { logEvents, requestMeta, type Tokenline } from '../context.js'
import { OAuthError, invalidRequest } from '../errors.js'
import type { AccessClaims } from '../tokens/signing-keys.js'
import { liveSessionOf, verifyAccessToken } from '../sessions/state.js'

/** The reason recorded on a session the user ended through the sessions API. */
export const USER_REVOKED = 'user_revoked'

/** Bearer tokens are base64url JWTs: three dot-separated parts (RFC 6750 §2.1 b64token). */
const BEARER = /^bearer +([A-Za-z0-9\-._~+/]+=*)$/i
const MAX_TOKEN = 8192

export interface Caller {
  claims: AccessClaims
  session: Session
}

const invalidToken = (description: string): OAuthError =>
  new OAuthError('invalid_token', description, { headers: { 'www-authenticate': 'Bearer error="invalid_token"' } })

/**
 * RFC 6750 §2.1 bearer authentication, checked against the live session (SPEC §6): a revoked or
 * expired session, or a disabled user, ends the token here at once, whatever its `exp`. A request
 * with no bearer credentials gets a bare challenge (§3.1: no error code when none were sent).
 */
export async function authenticateBearer (tl: Tokenline, request: FastifyRequest): Promise<Caller> {
  // RFC 6750 §2.3 / RFC 9700 §4.3.2: never a token in the URL.
  const query = request.query as Record<string, unknown> | undefined
  if (query !== undefined && query !== null && Object.hasOwn(query, 'access_token')) throw invalidRequest('access tokens must not be sent in the query string')
  const header = request.headers.authorization
  if (header === undefined || !/^bearer(\s|$)/i.test(header)) {
    throw new OAuthError('invalid_token', 'bearer access token required', { headers: { 'www-authenticate': 'Bearer realm="tokenline"' } })
  }
  const m = BEARER.exec(header)
  if (m?.[1] === undefined || m[1].length > MAX_TOKEN) throw invalidToken('malformed bearer token')
  const claims = verifyAccessToken(tl, m[1])
  if (claims === undefined) throw invalidToken('access token is invalid or expired')
  const session = await liveSessionOf(tl, claims)
  if (session === undefined) throw invalidToken('session is no longer active')
  return { claims, session }
}

const iso = (ms: number): string => new Date(ms).toISOString()

const sessionSchema = {
  type: 'object',
  required: ['id', 'client_id', 'created_at', 'last_used_at', 'user_agent', 'ip', 'current'],
  properties: {
    id: { type: 'string' },
    client_id: { type: 'string' },
    created_at: { type: 'string' },
    last_used_at: { type: 'string' },
    user_agent: { type: ['string', 'null'] },
    ip: { type: ['string', 'null'] },
    current: { type: 'boolean' }
  }
} as const

/**
 * The signed-in user's sessions (SPEC §7): list them, end one, or end all but the current one.
 * Any valid access token of the user may do this; the sessions are the user's own.
 */
export function sessionsRoutes (app: FastifyInstance, tl: Tokenline): void {
  app.get('/sessions', {
    schema: { response: { 200: { type: 'object', required: ['sessions'], properties: { sessions: { type: 'array', items: sessionSchema } } } } }
  }, async (request) => {
    const { claims } = await authenticateBearer(tl, request)
    const sessions = await tl.store.liveSessions(claims.sub, tl.opts.now())
    return {
      sessions: sessions.map((s) => ({
        id: s.id,
        client_id: s.clientId,
        created_at: iso(s.createdAt),
        last_used_at: iso(s.lastUsedAt),
        // The last request seen on the session: its login, or the refresh that issued its live token.
        user_agent: s.lastUserAgent ?? s.userAgent,
        ip: s.lastIp ?? s.ip,
        current: s.id === claims.sid
      }))
    }
  })

  app.delete<{ Params: { id: string } }>('/sessions/:id', async (request, reply) => {
    const caller = await authenticateBearer(tl, request)
    const id = request.params.id
    const target = id.length > 64 ? undefined : await tl.store.findSession(id)
    const now = tl.opts.now()
    // Someone else's session, an unknown one and one already over look the same: not found.
    const notFound = (): OAuthError => new OAuthError('invalid_request', 'no such session', { status: 404 })
    if (target === undefined || target.userId !== caller.claims.sub || target.revokedAt !== null || now >= target.expiresAt) throw notFound()
    const events = [revokedEvent(request, caller, target.id, target.clientId)]
    if (!await tl.store.revokeSession({ sessionId: target.id, reason: USER_REVOKED, now, events })) throw notFound()
    logEvents(tl, request.log, events)
    return reply.code(204).send()
  })

  app.delete('/sessions', async (request) => {
    const caller = await authenticateBearer(tl, request)
    const query = request.query as Record<string, unknown>
    if (query.scope !== 'others') throw invalidRequest('scope=others is required: DELETE /sessions/:id ends one session')
    const meta = requestMeta(request, null)
    const events = await tl.store.revokeUserSessions({
      userId: caller.claims.sub,
      reason: USER_REVOKED,
      now: tl.opts.now(),
      except: caller.session.id,
      actor: { ip: meta.ip, userAgent: meta.userAgent, detail: { via: 'sessions_api', by_session: caller.session.id } }
    })
    logEvents(tl, request.log, events)
    return { revoked: events.length }
  })
}

function revokedEvent (request: FastifyRequest, caller: Caller, sessionId: string, clientId: string): SecurityEvent {
  const meta = requestMeta(request, null)
  return {
    type: 'session_revoked',
    userId: caller.claims.sub,
    sessionId,
    clientId,
    ip: meta.ip,
    userAgent: meta.userAgent,
    reason: USER_REVOKED,
    detail: { via: 'sessions_api', by_session: caller.session.id }
  }
}
