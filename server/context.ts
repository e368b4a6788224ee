import type { FastifyBaseLogger, preHandlerAsyncHookHandler } from 'fastify'
import type { SecurityEvent, Store } from '../db/store.js'
import type { BindingPolicy } from './security/fingerprint.js'
import type { AccessClaims, KeyMaterial, Sign } from './tokens/signing-keys.js'
import type { ResolvedOptions } from './options.js'
import type { Passwords } from './security/passwords.js'
import type { AuthenticateOptions } from './http/authenticate.js'

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
  /**
   * A preHandler for the host's own routes: verifies the request's `Authorization: Bearer` access
   * token, by default also that its session is still live, and that it has every scope in
   * `options.scopes`; sets `request.tokenline` to its claims, or answers the RFC 6750 §3 refusal itself.
   */
  authenticate: (options: AuthenticateOptions) => preHandlerAsyncHookHandler
  /** Reloads signing keys from the database (after `tokenline keys rotate` in another process). */
  reloadKeys: () => Promise<void>
  log: FastifyBaseLogger
  /** Sees every security event that is logged (the metrics count them); set by server/routes/ops.ts. */
  onEvents?: (events: SecurityEvent[]) => void
}
