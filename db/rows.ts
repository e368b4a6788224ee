import type { BudgetCount, Client, CopyBatch, LoginFailures, PublicSigningKey, RefreshTokenRecord, SecurityEvent, Session, SessionView, SigningKey, StoredSecurityEvent, User } from './store.js'

/*
 * The tables' rows as both engines return them (the schema's snake_case names; BLOB/BYTEA as Buffer,
 * integers and BIGINT milliseconds as numbers), and their one mapping to the domain types of store.ts.
 * Rows never leave an engine's module: each one read is mapped here, once. `tokenline copy` maps the
 * other way too (copyRows, at the end), so that an engine inserts exactly the rows another one read.
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

/** A whole row of the budgets table, as a copy reads and writes it. */
export type BudgetCopyRow = BudgetRow & { key: string }

export const toBudget = (r: BudgetRow): BudgetCount => ({ count: r.count, resetAt: r.reset_at })

/*
 * `tokenline copy`: every table in CopyBatch order, with its columns (the same names on both engines)
 * and its primary key, on which an export pages (keyset pagination: `WHERE key > last ORDER BY key`).
 */
export type CopyKind = CopyBatch['kind']

export const COPY_TABLES: Readonly<Record<CopyKind, { columns: readonly string[], key: readonly string[] }>> = {
  users: { columns: ['id', 'username', 'password_hash', 'disabled_at', 'created_at', 'updated_at'], key: ['id'] },
  clients: { columns: ['id', 'secret_digest', 'delivery', 'grants', 'scopes', 'origins', 'access_ttl', 'idle_ttl', 'session_ttl', 'created_at'], key: ['id'] },
  signing_keys: { columns: ['kid', 'alg', 'private_pem', 'public_jwk', 'created_at', 'retired_at', 'expires_at'], key: ['kid'] },
  sessions: {
    columns: ['id', 'user_id', 'client_id', 'scope', 'generation', 'user_agent', 'ip', 'device_id', 'created_at', 'last_used_at', 'idle_expires_at', 'expires_at', 'revoked_at', 'revoked_reason'],
    key: ['id']
  },
  refresh_tokens: {
    columns: ['digest', 'session_id', 'generation', 'parent_generation', 'issued_at', 'issued_ip', 'issued_user_agent', 'used_at', 'used_ip', 'used_user_agent', 'used_device_id', 'successor_sealed'],
    key: ['digest']
  },
  security_events: { columns: ['id', 'at', 'type', 'user_id', 'session_id', 'client_id', 'ip', 'user_agent', 'reason', 'detail'], key: ['id'] },
  login_failures: { columns: ['username', 'source', 'failures', 'locked_until', 'updated_at'], key: ['username', 'source'] },
  budgets: { columns: ['key', 'count', 'reset_at'], key: ['key'] }
}

/** The tables in the order a copy goes through them: a row only refers to rows of earlier tables. */
export const COPY_ORDER = Object.keys(COPY_TABLES) as CopyKind[]

/** Rows read from `kind`'s table (its columns, as listed above) as a batch of domain rows. */
export function copyBatch (kind: CopyKind, rows: unknown[]): CopyBatch {
  switch (kind) {
    case 'users': return { kind, rows: (rows as UserRow[]).map(toUser) }
    case 'clients': return { kind, rows: (rows as ClientRow[]).map(toClient) }
    case 'signing_keys': return { kind, rows: (rows as KeyRow[]).map(toKey) }
    case 'sessions': return { kind, rows: (rows as SessionRow[]).map(toSession) }
    case 'refresh_tokens': return { kind, rows: (rows as TokenRow[]).map(toToken) }
    case 'security_events': return { kind, rows: (rows as EventRow[]).map(toEvent) }
    case 'login_failures': return { kind, rows: (rows as LoginFailureRow[]).map(toLoginFailures) }
    case 'budgets': return { kind, rows: (rows as BudgetCopyRow[]).map((r) => ({ key: r.key, count: r.count, resetAt: r.reset_at })) }
  }
}

/** A batch's rows as its table's rows, every column as exported, for an engine to insert unchanged. */
export function copyRows (batch: CopyBatch): Array<UserRow | ClientRow | KeyRow | SessionRow | TokenRow | EventRow | LoginFailureRow | BudgetCopyRow> {
  switch (batch.kind) {
    case 'users': return batch.rows.map(fromUser)
    case 'clients': return batch.rows.map(fromClient)
    case 'signing_keys': return batch.rows.map(fromKey)
    case 'sessions': return batch.rows.map(fromSession)
    case 'refresh_tokens': return batch.rows.map(fromToken)
    case 'security_events': return batch.rows.map(fromEvent)
    case 'login_failures': return batch.rows.map(fromLoginFailures)
    case 'budgets': return batch.rows.map(fromBudget)
  }
}

const fromUser = (u: User): UserRow => ({
  id: u.id,
  username: u.username,
  password_hash: u.passwordHash,
  disabled_at: u.disabledAt,
  created_at: u.createdAt,
  updated_at: u.updatedAt
})

const fromClient = (c: Client): ClientRow => ({
  id: c.id,
  secret_digest: c.secretDigest,
  delivery: c.delivery,
  grants: c.grants,
  scopes: c.scopes,
  origins: c.origins,
  access_ttl: c.accessTtl,
  idle_ttl: c.idleTtl,
  session_ttl: c.sessionTtl,
  created_at: c.createdAt
})

const fromKey = (k: SigningKey): KeyRow => ({
  kid: k.kid,
  alg: k.alg,
  private_pem: k.privatePem,
  public_jwk: k.publicJwk,
  created_at: k.createdAt,
  retired_at: k.retiredAt,
  expires_at: k.expiresAt
})

const fromSession = (s: Session): SessionRow => ({
  id: s.id,
  user_id: s.userId,
  client_id: s.clientId,
  scope: s.scope,
  generation: s.generation,
  user_agent: s.userAgent,
  ip: s.ip,
  device_id: s.deviceId,
  created_at: s.createdAt,
  last_used_at: s.lastUsedAt,
  idle_expires_at: s.idleExpiresAt,
  expires_at: s.expiresAt,
  revoked_at: s.revokedAt,
  revoked_reason: s.revokedReason
})

const fromToken = (t: RefreshTokenRecord): TokenRow => ({
  digest: t.digest,
  session_id: t.sessionId,
  generation: t.generation,
  parent_generation: t.parentGeneration,
  issued_at: t.issuedAt,
  issued_ip: t.issuedIp,
  issued_user_agent: t.issuedUserAgent,
  used_at: t.usedAt,
  used_ip: t.usedIp,
  used_user_agent: t.usedUserAgent,
  used_device_id: t.usedDeviceId,
  successor_sealed: t.successorSealed
})

/** A security event to record, as its row (without the id the database assigns); the detail as JSON text. */
export const newEventRow = (e: SecurityEvent, at: number): Omit<EventRow, 'id'> => ({
  at,
  type: e.type,
  user_id: e.userId ?? null,
  session_id: e.sessionId ?? null,
  client_id: e.clientId ?? null,
  ip: e.ip ?? null,
  user_agent: e.userAgent ?? null,
  reason: e.reason ?? null,
  detail: e.detail == null ? null : JSON.stringify(e.detail)
})

const fromEvent = (e: StoredSecurityEvent): EventRow => ({
  id: e.id,
  at: e.at,
  type: e.type,
  user_id: e.userId,
  session_id: e.sessionId,
  client_id: e.clientId,
  ip: e.ip,
  user_agent: e.userAgent,
  reason: e.reason,
  detail: e.detail
})

const fromLoginFailures = (f: LoginFailures): LoginFailureRow => ({
  username: f.username,
  source: f.source,
  failures: f.failures,
  locked_until: f.lockedUntil,
  updated_at: f.updatedAt
})

const fromBudget = (b: BudgetCount & { key: string }): BudgetCopyRow => ({ key: b.key, count: b.count, reset_at: b.resetAt })
