import type { Session, User } from '../../db/store.js'
import type { Tokenline } from '../context.js'
import type { AccessClaims } from '../tokens/signing-keys.js'

export type SessionStatus = 'live' | 'revoked' | 'expired' | 'idle'

/**
 * Where a session stands at `now`. Revocation wins over expiry (it is the more telling fact);
 * a session is usable while `now` is before both its absolute and its idle expiry.
 */
export function sessionStatus (s: Pick<Session, 'revokedAt' | 'expiresAt' | 'idleExpiresAt'>, now: number): SessionStatus {
  if (s.revokedAt !== null) return 'revoked'
  if (now >= s.expiresAt) return 'expired'
  if (now >= s.idleExpiresAt) return 'idle'
  return 'live'
}

/** A session that is live and whose user is enabled. */
export function isLive (session: Session, user: User | undefined, now: number): boolean {
  return user !== undefined && user.disabledAt === null && sessionStatus(session, now) === 'live'
}

/**
 * The live session an already verified access token belongs to, or undefined. An access token is
 * stateless until `exp` (SPEC §6); routes that accept one on Tokenline itself also check this, so a
 * revoked session, a password change or a disabled account ends its access tokens there at once.
 */
export async function liveSessionOf (tl: Tokenline, claims: AccessClaims): Promise<Session | undefined> {
  if (typeof claims.sid !== 'string') return undefined
  const session = await tl.store.findSession(claims.sid)
  if (session === undefined || session.userId !== claims.sub || session.clientId !== claims.client_id) return undefined
  const user = await tl.store.findUserById(session.userId)
  return isLive(session, user, tl.opts.now()) ? session : undefined
}

/** Verifies an access token with the published keys; undefined for anything that is not a valid one of ours. */
export function verifyAccessToken (tl: Tokenline, token: string): AccessClaims | undefined {
  try {
    return tl.verify(token)
  } catch {
    return undefined
  }
}
