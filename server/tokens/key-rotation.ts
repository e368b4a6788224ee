import type { onRequestHookHandler } from 'fastify'
import type { SigningKey, Store } from '../../db/store.js'
import type { Tokenline } from '../context.js'
import { generateStoredKey } from './signing-keys.js'
import type { ResolvedOptions } from '../options.js'

/**
 * How often a running server asks the database whether its keys changed (a rotation by
 * `tokenline keys rotate` in another process). The question is one query over the tiny key table
 * (about 10 µs measured with better-sqlite3; `PRAGMA data_version` costs about the same), so asking at
 * most every 2 s costs nothing a refresh would notice, and a new key signs within 2 s of its rotation.
 */
export const KEY_CHECK_INTERVAL_MS = 2000

/** Extra time a retired key stays published, for clock differences between processes, s. */
export const RETIRE_MARGIN_S = 60

export interface Rotation {
  key: Pick<SigningKey, 'kid' | 'alg'>
  retired: Array<Pick<SigningKey, 'kid' | 'alg' | 'expiresAt'>>
  /** When the retired keys leave the JWKS, ms since the epoch. */
  retiredUntil: number
}

/**
 * Generates a new signing key (algorithm: the configured one) and retires the current ones. A retired
 * key stays in the JWKS until every access token it may have signed has expired, since resource servers
 * verify with the keys the server publishes (RFC 9068 §4): the longest access-token lifetime in force
 * (the server's setting or any client's override), plus the interval in which a running server may still sign with it before it
 * notices the rotation, plus a margin.
 */
export async function rotateKeys (store: Store, opts: Pick<ResolvedOptions, 'algorithm' | 'accessTokenTtl'>, now: number, { dropOld = false } = {}): Promise<Rotation> {
  const longest = Math.max(opts.accessTokenTtl, (await store.longestClientAccessTtl()) ?? 0)
  // dropOld (a key that may have leaked): unpublished at once, so every token it signed stops
  // verifying as soon as resource servers refetch the JWKS; clients refresh to get new ones.
  const retiredUntil = dropOld ? now : now + (longest + RETIRE_MARGIN_S) * 1000 + KEY_CHECK_INTERVAL_MS
  const key = generateStoredKey(opts.algorithm)
  const retired = await store.rotateSigningKey({ key, now, retiredUntil })
  return { key: { kid: key.kid, alg: key.alg }, retired, retiredUntil }
}

/**
 * An onRequest hook for Tokenline's routes: at most every KEY_CHECK_INTERVAL_MS (by the injected
 * clock), compares the key table's fingerprint with the one the signer was built from, and reloads the
 * keys when it changed. A failed check is logged and the request goes on with the keys it has.
 */
export async function watchKeys (tl: Tokenline): Promise<onRequestHookHandler> {
  let version = await tl.store.keysVersion()
  let checkedAt = tl.opts.now()
  let pending: Promise<void> | undefined

  const check = async (): Promise<void> => {
    const v = await tl.store.keysVersion()
    if (v === version) return
    await tl.reloadKeys()
    version = await tl.store.keysVersion()
  }

  return function keysFresh (request, _reply, done) {
    const now = tl.opts.now()
    // A clock that went backwards also triggers a check rather than postponing it indefinitely.
    if (pending === undefined && now - checkedAt < KEY_CHECK_INTERVAL_MS && now >= checkedAt) { done(); return }
    checkedAt = now
    // Concurrent requests share one check.
    pending ??= check().finally(() => { pending = undefined })
    pending.then(() => done(), (err: unknown) => {
      request.log.warn({ err }, 'tokenline: could not check for rotated signing keys')
      done()
    })
  }
}
