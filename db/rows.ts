import type { BudgetCount, Client, LoginFailures, PublicSigningKey, RefreshTokenRecord, Session, SessionView, SigningKey, StoredSecurityEvent, User } from './store.js'

/*
 * The tables' rows as both engines return them (the schema's snake_case names; BLOB/BYTEA as Buffer,
 * integers and BIGINT milliseconds as numbers), and their one mapping to the domain types of store.ts.
 * Rows never leave an engine's module: each one read is mapped here, once.
 */

export interface UserRow {
  id: string
  username: string
  password_hash: string
  disabled_at: number | null
  created_at: number
  updated_at: number
}

export interface ClientRow {
  id: string
  secret_digest: Buffer | null
  delivery: Client['delivery']
  grants: string
  scopes: string
  origins: string
  access_ttl: number | null
  idle_ttl: number | null
  session_ttl: number | null
  created_at: number
}

export interface SessionRow {
  id: string
  user_id: string
  client_id: string
  scope: string
  generation: number
  user_agent: string | null
  ip: string | null
  device_id: string | null
  created_at: number
  last_used_at: number
  idle_expires_at: number
  expires_at: number
  revoked_at: number | null
  revoked_reason: string | null
}

export interface SessionViewRow extends SessionRow {
  last_ip: string | null
  last_user_agent: string | null
}

export interface TokenRow {
  digest: Buffer
  session_id: string
  generation: number
  parent_generation: number | null
  issued_at: number
  issued_ip: string | null
  issued_user_agent: string | null
  used_at: number | null
  used_ip: string | null
  used_user_agent: string | null
  used_device_id: string | null
  successor_sealed: Buffer | null
}

export interface KeyRow {
  kid: string
  alg: string
  private_pem: string
  public_jwk: string
  created_at: number
  retired_at: number | null
  expires_at: number | null
}

export type PublicKeyRow = Omit<KeyRow, 'private_pem'>

export interface EventRow {
  id: number
  at: number
  type: string
  user_id: string | null
  session_id: string | null
  client_id: string | null
  ip: string | null
  user_agent: string | null
  reason: string | null
  detail: string | null
}

export interface LoginFailureRow {
  username: string
  source: string
  failures: number
  locked_until: number
  updated_at: number
}

export interface BudgetRow {
  count: number
  reset_at: number
}

export const toUser = (r: UserRow): User => ({
  id: r.id,
  username: r.username,
  passwordHash: r.password_hash,
  disabledAt: r.disabled_at,
  createdAt: r.created_at,
  updatedAt: r.updated_at
})

export const toClient = (r: ClientRow): Client => ({
  id: r.id,
  secretDigest: r.secret_digest,
  delivery: r.delivery,
  grants: r.grants,
  scopes: r.scopes,
  origins: r.origins,
  accessTtl: r.access_ttl,
  idleTtl: r.idle_ttl,
  sessionTtl: r.session_ttl,
  createdAt: r.created_at
})

export const toSession = (r: SessionRow): Session => ({
  id: r.id,
  userId: r.user_id,
  clientId: r.client_id,
  scope: r.scope,
  generation: r.generation,
  userAgent: r.user_agent,
  ip: r.ip,
  deviceId: r.device_id,
  createdAt: r.created_at,
  lastUsedAt: r.last_used_at,
  idleExpiresAt: r.idle_expires_at,
  expiresAt: r.expires_at,
  revokedAt: r.revoked_at,
  revokedReason: r.revoked_reason
})

export const toSessionView = (r: SessionViewRow): SessionView => ({ ...toSession(r), lastIp: r.last_ip, lastUserAgent: r.last_user_agent })

export const toToken = (r: TokenRow): RefreshTokenRecord => ({
  digest: r.digest,
  sessionId: r.session_id,
  generation: r.generation,
  parentGeneration: r.parent_generation,
  issuedAt: r.issued_at,
  issuedIp: r.issued_ip,
  issuedUserAgent: r.issued_user_agent,
  usedAt: r.used_at,
  usedIp: r.used_ip,
  usedUserAgent: r.used_user_agent,
  usedDeviceId: r.used_device_id,
  successorSealed: r.successor_sealed
})

export const toPublicKey = (r: PublicKeyRow): PublicSigningKey => ({
  kid: r.kid,
  alg: r.alg,
  publicJwk: r.public_jwk,
  createdAt: r.created_at,
  retiredAt: r.retired_at,
  expiresAt: r.expires_at
})

export const toKey = (r: KeyRow): SigningKey => ({ ...toPublicKey(r), privatePem: r.private_pem })

export const toEvent = (r: EventRow): StoredSecurityEvent => ({
  id: r.id,
  at: r.at,
  type: r.type,
  userId: r.user_id,
  sessionId: r.session_id,
  clientId: r.client_id,
  ip: r.ip,
  userAgent: r.user_agent,
  reason: r.reason,
  detail: r.detail
})

export const toLoginFailures = (r: LoginFailureRow): LoginFailures => ({
  username: r.username,
  source: r.source,
  failures: r.failures,
  lockedUntil: r.locked_until,
  updatedAt: r.updated_at
})

export const maybe = <R, T>(row: R | undefined, map: (r: R) => T): T | undefined => (row === undefined ? undefined : map(row))

export const toBudget = (r: BudgetRow): BudgetCount => ({ count: r.count, resetAt: r.reset_at })
