import type { FastifyReply, FastifyRequest } from 'fastify'
import type { ClientRow, EventInput, RefreshDecision, RefreshState, RequestMeta } from '../../db/sqlite/store.js'
import type { Params } from '../http/client-auth.js'
import { hasGrant, logEvents, requestMeta, type Tokenline } from '../context.js'
import { deviceIdParam } from '../security/device-id.js'
import { OAuthError, invalidGrant, type GrantReason } from '../errors.js'
import { checkBinding, sameDevice } from '../security/fingerprint.js'
import { idleTtl, tokenResponse, type TokenResponse } from '../tokens/response.js'
import { digest, isWellFormedRefreshToken, newRefreshToken, openSuccessor, sealSuccessor } from '../tokens/refresh-format.js'
import { grantScope } from '../tokens/scope.js'

export const grantType = 'refresh_token'
export const parameters = new Set(['refresh_token', 'scope', 'device_id'])

/** Why a session was revoked, as the `reason` its tokens are refused with afterwards. */
function revokedReason (stored: string | null): GrantReason {
  return stored === 'reuse_detected' || stored === 'fingerprint_mismatch' ? stored : 'session_revoked'
}

interface DecideContext {
  tl: Tokenline
  client: ClientRow
  meta: RequestMeta
  now: number
  requestedScope: string | undefined
}

/**
 * The whole refresh decision, as a pure function of the database state. It runs inside the store's
 * `BEGIN IMMEDIATE` transaction, so what it sees cannot change before its verdict is written.
 */
export function decide (c: DecideContext, { token, session, user }: RefreshState): RefreshDecision {
  const who = { user_id: session.user_id, session_id: session.id, client_id: c.client.id, ip: c.meta.ip, user_agent: c.meta.user_agent }
  const reject = (reason: GrantReason, description: string, revoke?: string, events: EventInput[] = []): RefreshDecision =>
    ({ kind: 'reject', reason, description, events, ...(revoke !== undefined && { revoke }) })

  // RFC 6749 §10.4: a refresh token is bound to the client it was issued to. Another client's
  // attempt proves nothing about the token's holder, so the session is left alone.
  if (session.client_id !== c.client.id) return reject('client_mismatch', 'refresh token was issued to another client')
  // Disabling an account also revokes its sessions, so the account is looked at first: its reason is
  // the one that tells the client what happened (and what a new login would meet).
  if (user.disabled_at !== null) return reject('account_disabled', 'account is disabled')
  if (session.revoked_at !== null) return reject(revokedReason(session.revoked_reason), 'session has been revoked')
  // Usable while now < expiry: at the boundary itself the session is over.
  if (c.now >= session.expires_at) return reject('session_expired', 'session has expired')
  if (c.now >= session.idle_expires_at) return reject('session_idle', 'session expired after inactivity')

  const generations = { replayed: token.generation, live: session.generation }
  if (token.used_at !== null) {
    const grace = c.tl.opts.reuseGrace * 1000
    const consumer = { user_agent: token.used_user_agent, ip: token.used_ip, device_id: token.used_device_id }
    const inGrace = grace > 0 &&
      token.generation === session.generation - 1 && // only the immediate parent, never older
      c.now < token.used_at + grace && // measured from its first use: the window never slides
      token.successor_sealed !== null &&
      sameDevice(consumer, fingerprintOf(c.meta), c.tl.binding)
    if (inGrace) return { kind: 'replay', events: [{ type: 'refresh_replayed', ...who, detail: generations }] }
    // RFC 9700 §4.14.2: a consumed token came back. Either party may be the thief: end the session.
    return reject('reuse_detected', 'refresh token was already used', 'reuse_detected', [
      { type: 'reuse_detected', ...who, reason: 'reuse_detected', detail: generations },
      { type: 'session_revoked', ...who, reason: 'reuse_detected' }
    ])
  }

  const verdict = checkBinding(session, fingerprintOf(c.meta), c.tl.binding)
  if (verdict.mismatched.length > 0) {
    const events: EventInput[] = [{ type: 'fingerprint_mismatch', ...who, reason: verdict.action, detail: { signals: verdict.mismatched, generation: token.generation } }]
    if (verdict.action === 'revoke') {
      events.push({ type: 'session_revoked', ...who, reason: 'fingerprint_mismatch' })
      return reject('fingerprint_mismatch', 'refresh token is bound to another device', 'fingerprint_mismatch', events)
    }
    if (verdict.action === 'reject') return reject('fingerprint_mismatch', 'refresh token is bound to another device', undefined, events)
    return rotate(c, session.expires_at, [...events, { type: 'token_rotated', ...who, detail: { generation: token.generation + 1 } }])
  }
  return rotate(c, session.expires_at, [{ type: 'token_rotated', ...who, detail: { generation: token.generation + 1 } }])
}

function rotate (c: DecideContext, expiresAt: number, events: EventInput[]): RefreshDecision {
  // The idle deadline moves with use but never past the absolute expiry.
  return { kind: 'rotate', idle_expires_at: Math.min(c.now + idleTtl(c.tl, c.client) * 1000, expiresAt), events }
}

const fingerprintOf = (m: RequestMeta): { userAgent: string, ip: string, deviceId: string | null } =>
  ({ userAgent: m.user_agent, ip: m.ip, deviceId: m.device_id })

/**
 * RFC 6749 §6 with rotation (RFC 9700 §4.14.2): consume the presented token and issue its child,
 * exactly once, whatever the concurrency.
 */
export async function handler (
  tl: Tokenline, request: FastifyRequest, reply: FastifyReply, params: Params, client: ClientRow, presented: { token: string, fromCookie: boolean }
): Promise<TokenResponse> {
  if (!hasGrant(client, grantType)) throw new OAuthError('unauthorized_client', 'client may not use the refresh_token grant')
  const { token, fromCookie } = presented
  // The checksum turns away garbage without touching the database.
  if (!isWellFormedRefreshToken(token)) throw invalidGrant('refresh token is malformed', 'token_invalid', fromCookie)
  const requestedScope = params.scope
  const meta = requestMeta(request, deviceIdParam(params))
  const now = tl.opts.now()
  const child = newRefreshToken()
  // Scope is checked inside the transaction against the session's scope, but its syntax here.
  let scopeError: OAuthError | undefined
  let narrowed: string | undefined

  const result = await tl.store.refresh({
    digest: digest(token),
    now,
    meta,
    child_digest: digest(child),
    sealed: sealSuccessor(token, child),
    decide: (state) => {
      const d = decide({ tl, client, meta, now, requestedScope }, state)
      if (d.kind === 'reject') return d
      try {
        narrowed = grantScope(requestedScope, state.session.scope)
      } catch (err) {
        // A wider scope refuses this request and consumes nothing (RFC 6749 §6).
        scopeError = err as OAuthError
        return { kind: 'reject', reason: 'token_invalid', description: '', events: [] }
      }
      return d
    }
  })

  if (scopeError !== undefined) throw scopeError
  switch (result.kind) {
    case 'not_found':
      throw invalidGrant('refresh token not found', 'token_invalid', fromCookie)
    case 'rejected':
      logEvents(tl, request.log, result.decision.events)
      throw invalidGrant(result.decision.description, result.decision.reason as GrantReason, fromCookie)
    case 'replayed': {
      logEvents(tl, request.log, result.events)
      const successor = openSuccessor(token, result.sealed)
      /* c8 ignore next 2 -- the seal was made from this very token; failing to open it means corruption */
      if (successor === undefined) throw new OAuthError('server_error')
      return tokenResponse(tl, reply, client, result.state.session, narrowed ?? result.state.session.scope, successor, now)
    }
    case 'rotated':
      logEvents(tl, request.log, result.events)
      return tokenResponse(tl, reply, client, result.state.session, narrowed ?? result.state.session.scope, child, now)
  }
}
