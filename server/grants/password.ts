import type { SecurityEvent } from '../../db/store.js'
import { required } from '../http/body.js'
import { checkCsrf } from '../http/csrf.js'
import type { Tokenline } from '../context.js'
import { hasGrant, requireGrant } from '../http/client-auth.js'
import { requestMeta } from '../http/request-meta.js'
import { logEvents } from '../sessions/events.js'
import { Argon2Busy } from '../security/argon2-gate.js'
import { invalidGrant, invalidRequest } from '../errors.js'
import { deviceIdParam } from '../security/device-id.js'
import { digest, newRefreshToken, randomId } from '../tokens/refresh-format.js'
import { idleTtl, sessionTtl, issueTokens, type TokenResponse } from '../tokens/response.js'
import * as lockout from '../security/lockout.js'
import { CONTROL_CHARACTERS, MAX_PASSWORD, MAX_USERNAME, normaliseUsername } from '../security/passwords.js'
import { grantScope } from '../tokens/scope.js'
import { clientAuthParams, str, type JsonSchema } from '../api-docs.js'
import type { GrantInput } from './index.js'

export const grantType = 'password'
export const parameters = new Set(['username', 'password', 'scope', 'device_id'])

export const bodyDoc: JsonSchema = {
  title: 'password grant',
  type: 'object',
  required: ['grant_type', 'username', 'password'],
  properties: {
    grant_type: str('`password` (RFC 6749 §4.3.2)', { enum: [grantType] }),
    ...clientAuthParams,
    username: str('the user\'s name'),
    password: str('the user\'s password, verified exactly as sent'),
    scope: str('space-separated subset of the client\'s scopes; default: all of them'),
    device_id: str('binds the session to this device id; later refreshes must send it')
  }
}

/**
 * RFC 6749 §4.3, for first-party clients allowed it. Unknown users, wrong passwords, disabled
 * accounts and locked accounts (server/security/lockout.ts) give the same `invalid_grant` after the same
 * argon2 work. Per-IP throttling happens before this (server/http/throttle.ts).
 */
export async function handler (tl: Tokenline, { request, reply, params, client }: GrantInput): Promise<TokenResponse> {
  // Login CSRF: a foreign page must not plant its own session cookie in the user's browser.
  if (client.delivery !== 'body') checkCsrf(tl, request, client)
  requireGrant(client, grantType)
  const username = required(params, 'username')
  const password = required(params, 'password')
  // Bounded before any hashing, so a huge password costs nothing (ASVS 5.0 2.4.1).
  if (password.length > MAX_PASSWORD) throw invalidRequest('password too long')
  const scope = grantScope(params.scope, client.scopes)
  const meta = requestMeta(request, deviceIdParam(params))
  const name = normaliseUsername(username)
  // Never an account's name; refused before it reaches the store, or a counter of failures under it.
  if (CONTROL_CHARACTERS.test(name)) throw invalidRequest('username must not contain control characters')

  const user = name.length > MAX_USERNAME ? undefined : await tl.store.findUserByUsername(name)
  const ok = await tl.passwords.verify(user?.passwordHash, password)
  const now = tl.opts.now()
  const who = { clientId: client.id, ip: meta.ip, userAgent: meta.userAgent }
  // Read after the verify, so an attempt that was in flight when a lock began is refused too.
  const guard = await lockout.check(tl, name, user, meta, now)

  if (guard.locked) {
    // The verify above was still paid, and its result is ignored: a lock looks like a wrong password.
    const events: SecurityEvent[] = [{ type: 'login_locked', userId: user?.id ?? null, ...who, reason: 'account_locked', detail: { failures: guard.row?.failures, until: guard.row?.lockedUntil } }]
    await tl.store.recordEvents(events, now)
    logEvents(tl, request.log, events)
    throw invalidGrant('invalid username or password', 'invalid_credentials')
  }

  if (!ok || user === undefined || user.disabledAt !== null) {
    const reason = user === undefined ? 'unknown_user' : !ok ? 'wrong_password' : 'account_disabled'
    const event: SecurityEvent = { type: 'login_failed', userId: user?.id ?? null, ...who, reason }
    await lockout.recordFailure(tl, guard, event, now)
    logEvents(tl, request.log, [event])
    throw invalidGrant('invalid username or password', 'invalid_credentials')
  }
  await lockout.recordSuccess(tl, guard, now)

  if (tl.passwords.needsRehash(user.passwordHash)) {
    // Parameters were raised since this hash was made: upgrade it while we hold the password. With
    // no argon2 slot free, the login goes ahead and a later one upgrades it.
    const hash = await tl.passwords.hash(password).catch((err: unknown) => { if (err instanceof Argon2Busy) return undefined; throw err })
    if (hash !== undefined) await tl.store.setPasswordHash({ userId: user.id, passwordHash: hash, now, events: [{ type: 'password_rehashed', userId: user.id, ...who }] })
  }

  // A client without the refresh_token grant could never use a refresh token: it gets none (RFC 6749
  // §4.3.3 and §5.1 make it optional), in neither the body nor a cookie. The session is still started,
  // so the access token's `sid` names something the sessions API lists and revocation ends; its root
  // token is a fresh random value that is stored only as a digest and handed to no one, so the lineage
  // has the same shape as any other session and nothing can ever refresh it.
  const refreshable = hasGrant(client, 'refresh_token')
  const refreshToken = newRefreshToken()
  const sessionId = randomId()
  const expiresAt = now + sessionTtl(tl, client) * 1000
  const events: SecurityEvent[] = [{ type: 'login_succeeded', userId: user.id, sessionId, ...who, detail: meta.deviceId === null ? null : { device_bound: true } }]
  await tl.store.startSession({
    id: sessionId,
    userId: user.id,
    clientId: client.id,
    scope,
    meta,
    now,
    idleExpiresAt: Math.min(now + idleTtl(tl, client) * 1000, expiresAt),
    expiresAt,
    tokenDigest: digest(refreshToken),
    events
  })
  logEvents(tl, request.log, events)
  return issueTokens(tl, reply, client, { id: sessionId, userId: user.id, expiresAt }, scope, refreshable ? refreshToken : undefined, now)
}
