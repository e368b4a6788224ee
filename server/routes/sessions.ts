import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { SecurityEvent } from '../../db/store.js'
import type { Tokenline } from '../context.js'
import { requestMeta } from '../http/request-meta.js'
import { logEvents } from '../sessions/events.js'
import { OAuthError, invalidRequest } from '../errors.js'
import { authenticateBearer, type Caller } from '../http/bearer-auth.js'
import { oauthError, str, type RouteDoc } from '../api-docs.js'

/** The reason recorded on a session the user ended through the sessions API. */
export const USER_REVOKED = 'user_revoked'

const iso = (ms: number): string => new Date(ms).toISOString()

/** One session of a listing; fast-json-stringify writes a `date-time` string exactly like any other string. */
const sessionSchema = {
  type: 'object',
  required: ['id', 'client_id', 'created_at', 'last_used_at', 'user_agent', 'ip', 'current'],
  properties: {
    id: { type: 'string', description: 'session id (the `sid` claim)' },
    client_id: { type: 'string', description: 'client the session belongs to' },
    created_at: { type: 'string', description: 'login time', format: 'date-time' },
    last_used_at: { type: 'string', description: 'last refresh', format: 'date-time' },
    user_agent: { type: ['string', 'null'], description: 'user agent of the last request' },
    ip: { type: ['string', 'null'], description: 'address of the last request' },
    current: { type: 'boolean', description: 'the session of the access token making this call' }
  }
} as const

/** RFC 6750 §2.1 bearer access token (an access token from POST /token). */
const bearer: RouteDoc['security'] = [{ bearerAuth: [] }]

const listDoc: RouteDoc = {
  summary: 'The caller\'s live sessions',
  description: 'Bearer access token; the token\'s session must still be live (revocation is immediate here).',
  tags: ['sessions'],
  security: bearer,
  // 200 is the route's own schema.response.
  response: { 401: oauthError('invalid_token; `WWW-Authenticate: Bearer`') }
}

const endOneDoc: RouteDoc = {
  summary: 'End one of the caller\'s sessions',
  tags: ['sessions'],
  security: bearer,
  params: { type: 'object', required: ['id'], properties: { id: str('session id, from GET /sessions') } },
  response: {
    204: { description: 'ended', type: 'null' },
    401: oauthError('invalid_token'),
    404: oauthError('no such live session of this user')
  }
}

const endOthersDoc: RouteDoc = {
  summary: 'End every session of the caller but the current one',
  tags: ['sessions'],
  security: bearer,
  querystring: { type: 'object', required: ['scope'], properties: { scope: str('must be `others`', { enum: ['others'] }) } },
  response: {
    200: { description: 'how many sessions were ended', type: 'object', properties: { revoked: { type: 'integer' } } },
    400: oauthError('invalid_request: scope=others is required'),
    401: oauthError('invalid_token')
  }
}

/**
 * The signed-in user's sessions: list them, end one, or end all but the current one, so a user can
 * see where they are signed in and end a login they do not recognise. Any valid access token of the
 * user may do this; the sessions are the user's own.
 */
export function sessionsRoutes (app: FastifyInstance, tl: Tokenline): void {
  app.get('/sessions', {
    schema: {
      response: {
        200: { description: 'live sessions of the user, newest first', type: 'object', required: ['sessions'], properties: { sessions: { type: 'array', items: sessionSchema } } }
      }
    },
    config: { openapi: listDoc }
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

  app.delete<{ Params: { id: string } }>('/sessions/:id', { config: { openapi: endOneDoc } }, async (request, reply) => {
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

  app.delete('/sessions', { config: { openapi: endOthersDoc } }, async (request) => {
    const caller = await authenticateBearer(tl, request)
    const query = request.query as Record<string, unknown>
    if (query.scope !== 'others') throw invalidRequest('scope=others is required: DELETE /sessions/:id ends one session')
    const events = await tl.store.revokeUserSessions({
      userId: caller.claims.sub,
      reason: USER_REVOKED,
      now: tl.opts.now(),
      except: caller.session.id,
      actor: actor(request, caller)
    })
    logEvents(tl, request.log, events)
    return { revoked: events.length }
  })
}

/** Who ended a session through this API, as its `session_revoked` event tells: the caller's request and session. */
function actor (request: FastifyRequest, caller: Caller): Pick<SecurityEvent, 'ip' | 'userAgent' | 'detail'> {
  const meta = requestMeta(request, null)
  return { ip: meta.ip, userAgent: meta.userAgent, detail: { via: 'sessions_api', by_session: caller.session.id } }
}

function revokedEvent (request: FastifyRequest, caller: Caller, sessionId: string, clientId: string): SecurityEvent {
  return { type: 'session_revoked', userId: caller.claims.sub, sessionId, clientId, reason: USER_REVOKED, ...actor(request, caller) }
}
