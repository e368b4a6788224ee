import { timingSafeEqual } from 'node:crypto'
import type { FastifyRequest } from 'fastify'
import type { Session } from '../../db/store.js'
import type { Tokenline } from '../context.js'
import { OAuthError, invalidRequest } from '../errors.js'
import { isLive } from '../sessions/state.js'
import type { AccessClaims } from '../tokens/signing-keys.js'
import { secretDigest } from './client-auth.js'

/*
 * Bearer credentials on Tokenline's own routes (RFC 6750): the access tokens POST /token issues, which
 * the sessions API takes and introspection and revocation look up, and the operator's metrics token.
 */

/** RFC 6750 §3: the challenge to a request that sent no bearer credentials carries no error code. */
const CHALLENGE = 'Bearer realm="tokenline"'

/** Bearer tokens are base64url JWTs: three dot-separated parts (RFC 6750 §2.1 b64token). */
const BEARER = /^bearer +([A-Za-z0-9\-._~+/]+=*)$/i
const MAX_TOKEN = 8192

export interface Caller {
  claims: AccessClaims
  session: Session
}

const invalidToken = (description: string): OAuthError =>
  new OAuthError('invalid_token', description, { headers: { 'www-authenticate': 'Bearer error="invalid_token"' } })

/** Verifies an access token with the published keys; undefined for anything that is not a valid one of ours. */
export function verifyAccessToken (tl: Tokenline, token: string): AccessClaims | undefined {
  try {
    return tl.verify(token)
  } catch {
    return undefined
  }
}

/**
 * The session a verified access token was issued for, whatever state it is in now; undefined when no
 * such session exists or it belongs to another user or client than the token says.
 */
export async function sessionOf (tl: Tokenline, claims: AccessClaims): Promise<Session | undefined> {
  const session = await tl.store.findSession(claims.sid)
  if (session === undefined || session.userId !== claims.sub || session.clientId !== claims.client_id) return undefined
  return session
}

/**
 * The live session an already verified access token belongs to, or undefined. An access token is a
 * self-contained JWT (RFC 9068) that a resource server accepts until `exp`; routes that accept one on
 * Tokenline itself also check this, so a revoked session, a password change or a disabled account
 * ends its access tokens there at once.
 */
export async function liveSessionOf (tl: Tokenline, claims: AccessClaims): Promise<Session | undefined> {
  if (typeof claims.sid !== 'string') return undefined
  const session = await sessionOf(tl, claims)
  if (session === undefined) return undefined
  const user = await tl.store.findUserById(session.userId)
  return isLive(session, user, tl.opts.now()) ? session : undefined
}

/**
 * RFC 6750 §2.1 bearer authentication, checked against the live session: a revoked or expired
 * session, or a disabled user, ends the token here at once, whatever its `exp` (§3.1: a revoked
 * token is `invalid_token`). A request with no bearer credentials gets a bare challenge (§3.1: no
 * error code when none were sent).
 */
export async function authenticateBearer (tl: Tokenline, request: FastifyRequest): Promise<Caller> {
  const claims = bearerClaims(tl, request)
  const session = await liveSessionOf(tl, claims)
  if (session === undefined) throw invalidToken('session is no longer active')
  return { claims, session }
}

/**
 * The verified claims of the request's `Authorization: Bearer` access token (RFC 6750 §2.1), without
 * looking at its session: signature, `typ`, `iss`, `aud` and `exp` only. Throws the RFC 6750 §3.1
 * refusal otherwise.
 */
export function bearerClaims (tl: Tokenline, request: FastifyRequest): AccessClaims {
  // RFC 6750 §2.3 / RFC 9700 §4.3.2: never a token in the URL.
  const query = request.query as Record<string, unknown> | undefined
  if (query !== undefined && query !== null && Object.hasOwn(query, 'access_token')) throw invalidRequest('access tokens must not be sent in the query string')
  const header = request.headers.authorization
  if (header === undefined || !/^bearer(\s|$)/i.test(header)) {
    throw new OAuthError('invalid_token', 'bearer access token required', { headers: { 'www-authenticate': CHALLENGE } })
  }
  const m = BEARER.exec(header)
  if (m?.[1] === undefined || m[1].length > MAX_TOKEN) throw invalidToken('malformed bearer token')
  const claims = verifyAccessToken(tl, m[1])
  if (claims === undefined) throw invalidToken('access token is invalid or expired')
  return claims
}

/**
 * `Authorization: Bearer <metricsToken>`, compared in constant time (over digests, so lengths never
 * leak), as client secrets are.
 */
export function checkMetricsToken (expected: string, request: FastifyRequest): void {
  const header = request.headers.authorization
  const m = typeof header === 'string' ? /^Bearer ([\x21-\x7e]+)$/i.exec(header) : null
  if (m?.[1] !== undefined && timingSafeEqual(secretDigest(m[1]), secretDigest(expected))) return
  // RFC 6750 §3: a missing credential gets no error code; a wrong one is invalid_token.
  throw new OAuthError('invalid_token', m === null ? 'bearer token required' : 'wrong metrics token', {
    headers: { 'www-authenticate': m === null ? CHALLENGE : `${CHALLENGE}, error="invalid_token"` }
  })
}
