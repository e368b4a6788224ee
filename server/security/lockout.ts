import { createHash } from 'node:crypto'
import type { LoginFailures, RequestMeta, SecurityEvent, User } from '../../db/store.js'
import type { Tokenline } from '../context.js'
import { ipPrefix, normaliseUserAgent, sameNetwork } from './fingerprint.js'
import { MAX_USERNAME } from './passwords.js'

/*
 * Per-account failure counting with exponential back-off (RFC 6749 §4.3.2, RFC 6819 §5.1.4.2.3 and
 * the OWASP Authentication Cheat Sheet, "Account Lockout"). Kept in SQLite so a restart does not
 * reset it, and keyed on the normalised username whether or not the account exists, so spraying
 * made-up names costs the same as guessing real ones.
 *
 * A lock is never visible: a locked attempt gets the same status, body and argon2 work as a wrong
 * password (OWASP "Authentication Responses"). Attempts while locked neither extend the lock nor
 * count; each failure after the threshold doubles the lock, from 1 s up to `lockoutMax`.
 *
 * Lockout DoS (ASVS 5.0 6.1.1): an attacker hammering an account must not lock its owner out. A
 * request from a device that has logged into the account before (the same `device_id` as one of its
 * sessions, or the binding of one of its live sessions: same normalised user agent and same /24 or /64)
 * is counted under that device's own key instead of the shared one.
 */

/** The shared counter of an account: every device that is not a known one. */
export const ANY_SOURCE = ''
/** The first lock, ms; each further failure doubles it. */
export const BASE_LOCK_MS = 1000
/** Failures are forgotten this long after the last one (Keycloak calls it the failure reset time). */
export const FORGET_AFTER_MS = 24 * 3600 * 1000

export interface Guard {
  /** Whether this attempt is counted: lockout is on and the name could be an account's. */
  counted: boolean
  username: string
  /** The counter this attempt belongs to (see sourceOf); worked out only when it matters. */
  source: () => Promise<string>
  row: LoginFailures | undefined
  locked: boolean
}

const keyOf = (kind: 'd' | 'b', value: string): string =>
  `${kind}:${createHash('sha256').update(value, 'utf8').digest('base64url')}`

/**
 * Which counter an attempt belongs to: a known device's own one, or the account's shared one. Only
 * digests are stored: a device id or an address is nobody's business in this table.
 */
export async function sourceOf (tl: Tokenline, user: User | undefined, meta: RequestMeta, now: number): Promise<string> {
  if (user === undefined) return ANY_SOURCE
  if (meta.deviceId !== null && await tl.store.deviceKnown(user.id, meta.deviceId)) return keyOf('d', meta.deviceId)
  const ua = normaliseUserAgent(meta.userAgent)
  for (const s of await tl.store.liveSessions(user.id, now)) {
    // A session bound to a device id is recognised by that id only (above), never by a look-alike.
    if (s.deviceId !== null || normaliseUserAgent(s.userAgent ?? '') !== ua) continue
    if (sameNetwork(s.ip, meta.ip) || sameNetwork(s.lastIp, meta.ip)) return keyOf('b', `${ua}\n${ipPrefix(meta.ip)}`)
  }
  return ANY_SOURCE
}

/**
 * Reads the counter of this attempt's source and whether it is locked at `now`. An account with no
 * failure counter from any source (the usual case) is locked for nobody, so which source the attempt
 * belongs to, a walk over the user's live sessions, is left until a failure has to be counted: a
 * successful login costs the same whatever the number of sessions the user has.
 */
export async function check (tl: Tokenline, username: string, user: User | undefined, meta: RequestMeta, now: number): Promise<Guard> {
  const counted = tl.opts.lockoutThreshold > 0 && username.length <= MAX_USERNAME
  if (!counted) return { counted, username, source: async () => ANY_SOURCE, row: undefined, locked: false }
  let resolved: Promise<string> | undefined
  const source = async (): Promise<string> => await (resolved ??= sourceOf(tl, user, meta, now))
  if (!await tl.store.hasLoginFailures(username)) return { counted, username, source, row: undefined, locked: false }
  const row = await tl.store.loginFailures(username, await source())
  return { counted, username, source, row, locked: row !== undefined && now < row.lockedUntil }
}

/** The counter after one more failure at `now`: the lock doubles per failure past the threshold. */
export function nextFailure (prev: LoginFailures | undefined, now: number, threshold: number, maxLockS: number): { failures: number, lockedUntil: number } {
  const failures = prev === undefined || prev.updatedAt < now - FORGET_AFTER_MS ? 1 : prev.failures + 1
  if (failures < threshold) return { failures, lockedUntil: 0 }
  const lockMs = Math.min(BASE_LOCK_MS * 2 ** Math.min(failures - threshold, 40), maxLockS * 1000)
  return { failures, lockedUntil: now + lockMs }
}

/** Counts a failed attempt and records its event in the same transaction; the event gains the counter. */
export async function recordFailure (tl: Tokenline, guard: Guard, event: SecurityEvent, now: number): Promise<void> {
  if (!guard.counted) {
    await tl.store.recordEvents([event], now)
    return
  }
  const source = await guard.source()
  await tl.store.recordLoginFailure({
    username: guard.username,
    source,
    now,
    forgetBefore: now - FORGET_AFTER_MS,
    decide: (prev) => {
      const next = nextFailure(prev, now, tl.opts.lockoutThreshold, tl.opts.lockoutMax)
      const lockedFor = next.lockedUntil === 0 ? 0 : Math.round((next.lockedUntil - now) / 1000)
      event.detail = { ...event.detail, failures: next.failures, known_device: source !== ANY_SOURCE, ...(lockedFor > 0 && { locked_for: lockedFor }) }
      return { ...next, events: [event] }
    }
  })
}

/** A success clears its own source's counter (never the shared one from a known device). */
export async function recordSuccess (tl: Tokenline, guard: Guard, now: number): Promise<void> {
  if (guard.row !== undefined) await tl.store.clearLoginFailures({ username: guard.username, source: await guard.source(), now, events: [] })
}
