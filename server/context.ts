import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { ClientRow, EventInput, RequestMeta, Store } from '../db/sqlite/store.js'
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
  onEvents?: (events: EventInput[]) => void
}

/** The request's binding-relevant facts. The IP is the socket's unless the host trusts a proxy. */
export function requestMeta (request: FastifyRequest, deviceId: string | null): RequestMeta {
  const ua = request.headers['user-agent']
  return {
    ip: normaliseIp(request.ip),
    user_agent: (typeof ua === 'string' ? ua : '').slice(0, MAX_USER_AGENT),
    device_id: deviceId
  }
}

/** Logs security events as structured lines. Events never carry a token, password, secret or cookie. */
export function logEvents (tl: Tokenline, log: FastifyBaseLogger, events: EventInput[]): void {
  tl.onEvents?.(events)
  if (!tl.opts.logEvents) return
  for (const e of events) {
    log.info({ event: e.type, user: e.user_id, session: e.session_id, client: e.client_id, ip: e.ip, ua: e.user_agent, reason: e.reason, detail: e.detail }, `security event ${e.type}`)
  }
}

export const hasGrant = (client: ClientRow, grant: string): boolean => client.grants.split(' ').includes(grant)
