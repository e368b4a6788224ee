import type { Session, User } from '../../db/store.js'

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
