import type { FastifyRequest } from 'fastify'
import type { Client, RefreshState, RequestMeta, SecurityEvent } from '../../db/store.js'
import type { Tokenline } from '../context.js'
import { requireGrant } from '../http/client-auth.js'
import { requestMeta } from '../http/request-meta.js'
import { logEvents } from '../sessions/events.js'
import { deviceIdParam } from '../security/device-id.js'
import { OAuthError, invalidGrant, invalidRequest, type GrantReason } from '../errors.js'
import { checkCsrf } from '../http/csrf.js'
import { checkBinding, sameDevice } from '../security/fingerprint.js'
import { COOKIE_NAME, idleTtl, issueTokens, refreshCookie, type TokenResponse } from '../tokens/response.js'
import { digest, isWellFormedRefreshToken, newRefreshToken, openSuccessor, sealSuccessor } from '../tokens/refresh-format.js'
import { grantScope } from '../tokens/scope.js'
import { clientAuthParams, str, type JsonSchema } from '../api-docs.js'
import type { GrantInput } from './index.js'

export const grantType = 'refresh_token'
export const parameters = new Set(['refresh_token', 'scope', 'device_id'])

export const bodyDoc: JsonSchema = {
  title: 'refresh_token grant',
  type: 'object',
  required: ['grant_type'],
  properties: {
    grant_type: str('`refresh_token` (RFC 6749 §6)', { enum: [grantType] }),
    ...clientAuthParams,
    refresh_token: str(`the refresh token (\`tlrt_...\`); cookie clients send it in the \`${COOKIE_NAME}\` cookie instead`),
    scope: str('may only narrow the session\'s scope, for this access token'),
    device_id: str('required when the session is bound to a device id')
  }
}

/** Why a session was revoked, as the `reason` its tokens are refused with afterwards. */
function revokedReason (stored: string | null): GrantReason {
  return stored === 'reuse_detected' || stored === 'fingerprint_mismatch' ? stored : 'session_revoked'
}

/** The refresh grant's verdict: the store writes it, and the handler answers with it. */
export type Decision =
  | { kind: 'reject', error: OAuthError, revoke?: string, events: SecurityEvent[] }
  | { kind: 'rotate', idleExpiresAt: number, scope: string, events: SecurityEvent[] }
  | { kind: 'replay', scope: string, events: SecurityEvent[] }

export interface DecideContext {
  tl: Tokenline
  client: Client
  meta: RequestMeta
  now: number
  requestedScope: string | undefined
  /** Whether the token came in the cookie: an `invalid_grant` answer then clears it. */
  fromCookie: boolean
}

/**
 * The whole refresh decision, as a pure function of the database state. It runs inside the store's
 * `BEGIN IMMEDIATE` transaction, so what it sees cannot change before its verdict is written.
 */
export function decide (c: DecideContext, state: RefreshState): Decision {
  const d = judgeToken(c, state)
  if (d.kind === 'reject') return d
  // Only a token that would be honoured has its scope looked at. A wider scope refuses this request
  // and consumes, revokes and records nothing (RFC 6749 §6: a refresh may only narrow).
  try {
    return { ...d, scope: grantScope(c.requestedScope, state.session.scope) }
  } catch (err) {
    if (err instanceof OAuthError) return { kind: 'reject', error: err, events: [] }
    throw err
  }
}

/** A decision before the scope is looked at. */
type TokenVerdict =
  | Extract<Decision, { kind: 'reject' }>
  | { kind: 'rotate', idleExpiresAt: number, events: SecurityEvent[] }
  | { kind: 'replay', events: SecurityEvent[] }

/** The decision about the token itself: its client, user, session, generation and binding. */
function judgeToken (c: DecideContext, { token, session, user }: RefreshState): TokenVerdict {
  const who = { userId: session.userId, sessionId: session.id, clientId: c.client.id, ip: c.meta.ip, userAgent: c.meta.userAgent }
  const reject = (reason: GrantReason, description: string, revoke?: string, events: SecurityEvent[] = []): TokenVerdict =>
    ({ kind: 'reject', error: invalidGrant(description, reason, c.fromCookie), events, ...(revoke !== undefined && { revoke }) })

  // RFC 6749 §10.4: a refresh token is bound to the client it was issued to. Another client's
  // attempt proves nothing about the token's holder, so the session is left alone.
  if (session.clientId !== c.client.id) return reject('client_mismatch', 'refresh token was issued to another client')
  // Disabling an account also revokes its sessions, so the account is looked at first: its reason is
  // the one that tells the client what happened (and what a new login would meet).
  if (user.disabledAt !== null) return reject('account_disabled', 'account is disabled')
  if (session.revokedAt !== null) return reject(revokedReason(session.revokedReason), 'session has been revoked')
  // Usable while now < expiry: at the boundary itself the session is over.
  if (c.now >= session.expiresAt) return reject('session_expired', 'session has expired')
  if (c.now >= session.idleExpiresAt) return reject('session_idle', 'session expired after inactivity')

  const generations = { replayed: token.generation, live: session.generation }
  if (token.usedAt !== null) {
    const grace = c.tl.opts.reuseGrace * 1000
    const inGrace = grace > 0 &&
      token.generation === session.generation - 1 && // only the immediate parent, never older
      c.now < token.usedAt + grace && // measured from its first use: the window never slides
      token.successorSealed !== null &&
      sameDevice({ userAgent: token.usedUserAgent, ip: token.usedIp, deviceId: token.usedDeviceId }, c.meta, c.tl.binding)
    if (inGrace) return { kind: 'replay', events: [{ type: 'refresh_replayed', ...who, detail: generations }] }
    // RFC 9700 §4.14.2: a consumed token came back. Either party may be the thief: end the session.
    return reject('reuse_detected', 'refresh token was already used', 'reuse_detected', [
      { type: 'reuse_detected', ...who, reason: 'reuse_detected', detail: generations },
      { type: 'session_revoked', ...who, reason: 'reuse_detected' }
    ])
  }

  const verdict = checkBinding(session, c.meta, c.tl.binding)
  if (verdict.mismatched.length > 0) {
    const events: SecurityEvent[] = [{ type: 'fingerprint_mismatch', ...who, reason: verdict.action, detail: { signals: verdict.mismatched, generation: token.generation } }]
    if (verdict.action === 'revoke') {
      events.push({ type: 'session_revoked', ...who, reason: 'fingerprint_mismatch' })
      return reject('fingerprint_mismatch', 'refresh token is bound to another device', 'fingerprint_mismatch', events)
    }
    if (verdict.action === 'reject') return reject('fingerprint_mismatch', 'refresh token is bound to another device', undefined, events)
    return rotate(c, session.expiresAt, [...events, { type: 'token_rotated', ...who, detail: { generation: token.generation + 1 } }])
  }
  return rotate(c, session.expiresAt, [{ type: 'token_rotated', ...who, detail: { generation: token.generation + 1 } }])
}

function rotate (c: DecideContext, expiresAt: number, events: SecurityEvent[]): TokenVerdict {
  // The idle deadline moves with use but never past the absolute expiry.
  return { kind: 'rotate', idleExpiresAt: Math.min(c.now + idleTtl(c.tl, c.client) * 1000, expiresAt), events }
}

/** The refresh token of a request: from the body, or the HttpOnly cookie; both and different is ambiguous. */
export function presentedRefreshToken (request: FastifyRequest, fromBody: string | undefined): { token: string, fromCookie: boolean } | undefined {
  const fromCookie = refreshCookie(request)
  if (fromBody !== undefined && fromCookie !== undefined && fromBody !== fromCookie) {
    throw invalidRequest('refresh token given in both body and cookie, and they differ')
  }
  if (fromBody !== undefined) return { token: fromBody, fromCookie: false }
  if (fromCookie !== undefined) return { token: fromCookie, fromCookie: true }
  return undefined
}

/**
 * RFC 6749 §6 with rotation (RFC 9700 §4.14.2): consume the presented token and issue its child,
 * exactly once, whatever the concurrency.
 */
export async function handler (tl: Tokenline, { request, reply, params, client }: GrantInput): Promise<TokenResponse> {
  const presented = presentedRefreshToken(request, params.refresh_token)
  if (presented === undefined) throw invalidRequest('missing required parameter refresh_token')
  const { token, fromCookie } = presented
  // The cookie is ambient: the browser attaches it to forged requests too, so a cookie-borne token
  // is used only on a request that proves where it came from. Checked before the session is read,
  // so a refused request rotates, revokes and clears nothing.
  if (fromCookie) checkCsrf(tl, request, client)
  requireGrant(client, grantType)
  // The checksum turns away garbage without touching the database.
  if (!isWellFormedRefreshToken(token)) throw invalidGrant('refresh token is malformed', 'token_invalid', fromCookie)
  const meta = requestMeta(request, deviceIdParam(params))
  const now = tl.opts.now()
  const child = newRefreshToken()
  const context: DecideContext = { tl, client, meta, now, requestedScope: params.scope, fromCookie }

  const result = await tl.store.refresh({
    digest: digest(token),
    now,
    meta,
    childDigest: digest(child),
    sealed: sealSuccessor(token, child),
    decide: (state) => decide(context, state)
  })

  switch (result.kind) {
    case 'not_found':
      throw invalidGrant('refresh token not found', 'token_invalid', fromCookie)
    case 'rejected':
      logEvents(tl, request.log, result.decision.events)
      throw result.decision.error
    case 'replayed': {
      logEvents(tl, request.log, result.decision.events)
      const successor = openSuccessor(token, result.sealed)
      /* c8 ignore next 2 -- the seal was made from this very token; failing to open it means corruption */
      if (successor === undefined) throw new OAuthError('server_error')
      return issueTokens(tl, reply, client, result.state.session, result.decision.scope, successor, now)
    }
    case 'rotated':
      logEvents(tl, request.log, result.decision.events)
      return issueTokens(tl, reply, client, result.state.session, result.decision.scope, child, now)
  }
}
