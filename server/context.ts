import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { Client, RequestMeta, SecurityEvent, Store } from '../db/store.js'
import type { BindingPolicy } from './security/fingerprint.js'
import { MAX_USER_AGENT, normaliseIp } from './security/fingerprint.js'
import type { AccessClaims, KeyMaterial, Sign } from './tokens/signing-keys.js'
import type { ResolvedOptions } from './options.js'
import type { Passwords } from './security/passwords.js'

/** Everything a Tokenline route needs, built once at register time. */
export interface Tokenline {
  readonly opts: ResolvedOptions
  readonly store: Store
  readonly passwords: Passwords
  readonly binding: BindingPolicy
  /** Path prefix the routes are mounted under ('' by default). */
  readonly prefix: string
  /** Signs with the current key. */
  sign: Sign
  currentKey: KeyMaterial
  /** Verifies one of our access tokens (signature, typ, iss, aud, exp); throws otherwise. */
  verify: (token: string) => AccessClaims
  /** Reloads signing keys from the database (after `tokenline keys rotate` in another process). */
  reloadKeys: () => Promise<void>
  log: FastifyBaseLogger
  /** Sees every security event that is logged (the metrics count them); set by server/routes/ops.ts. */
  onEvents?: (events: SecurityEvent[]) => void
}

/** The request's binding-relevant facts. The IP is the socket's unless the host trusts a proxy. */
export function requestMeta (request: FastifyRequest, deviceId: string | null): RequestMeta {
  const ua = request.headers['user-agent']
  return {
    ip: normaliseIp(request.ip),
    userAgent: (typeof ua === 'string' ? ua : '').slice(0, MAX_USER_AGENT),
    deviceId
  }
}

/** Logs security events as structured lines. Events never carry a token, password, secret or cookie. */
export function logEvents (tl: Tokenline, log: FastifyBaseLogger, events: SecurityEvent[]): void {
  tl.onEvents?.(events)
  if (!tl.opts.logEvents) return
  for (const e of events) {
    log.info({ event: e.type, user: e.userId, session: e.sessionId, client: e.clientId, ip: e.ip, ua: e.userAgent, reason: e.reason, detail: e.detail }, `security event ${e.type}`)
  }
}

export const hasGrant = (client: Client, grant: string): boolean => client.grants.split(' ').includes(grant)
