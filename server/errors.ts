import { StoreError } from '../db/store.js'
/**
 * RFC 6749 §5.2 error codes, plus the RFC 7009 / RFC 6750 ones Tokenline's other routes use. A list,
 * not only a type, so that the OpenAPI document's enum is this list (server/api-docs.ts).
 */
export const OAUTH_ERROR_CODES = [
  'invalid_request',
  'invalid_client',
  'invalid_grant',
  'unauthorized_client',
  'unsupported_grant_type',
  'invalid_scope',
  'invalid_token',
  'unsupported_token_type',
  'access_denied',
  'temporarily_unavailable',
  'server_error'
] as const
export type OAuthErrorCode = typeof OAUTH_ERROR_CODES[number]

/**
 * Stable machine-readable reasons carried beside `invalid_grant` (and a few other errors), so
 * clients can tell a lost race from a real logout.
 */
export const GRANT_REASONS = [
  'invalid_credentials',
  'token_invalid',
  'client_mismatch',
  'reuse_detected',
  'session_revoked',
  'session_expired',
  'session_idle',
  'fingerprint_mismatch',
  'account_disabled',
  'csrf_rejected'
] as const
export type GrantReason = typeof GRANT_REASONS[number]

const STATUS: Record<OAuthErrorCode, number> = {
  invalid_request: 400,
  invalid_client: 401,
  invalid_grant: 400,
  unauthorized_client: 400,
  unsupported_grant_type: 400,
  invalid_scope: 400,
  invalid_token: 401,
  unsupported_token_type: 400,
  access_denied: 403,
  temporarily_unavailable: 503,
  server_error: 500
}

export interface OAuthErrorOptions {
  status?: number
  reason?: GrantReason
  /** Extra response headers (e.g. `WWW-Authenticate`, `Retry-After`). */
  headers?: Record<string, string>
  /** Clear the refresh cookie on this response (an `invalid_grant` caused by a cookie-borne token). */
  clearCookie?: boolean
  cause?: unknown
}

export class OAuthError extends Error {
  readonly error: OAuthErrorCode
  readonly statusCode: number
  readonly reason: GrantReason | undefined
  readonly headers: Record<string, string>
  clearCookie: boolean

  constructor (error: OAuthErrorCode, description = '', options: OAuthErrorOptions = {}) {
    super(description, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'OAuthError'
    this.error = error
    this.statusCode = options.status ?? STATUS[error]
    this.reason = options.reason
    this.headers = options.headers ?? {}
    this.clearCookie = options.clearCookie ?? false
  }

  /** Whether the message may be shown to the caller; 5xx never expose their cause. */
  get expose (): boolean {
    return this.statusCode < 500
  }

  toJSON (): { error: OAuthErrorCode, error_description?: string, reason?: GrantReason } {
    if (!this.expose) return { error: this.error }
    return {
      error: this.error,
      ...(this.message !== '' && { error_description: this.message }),
      ...(this.reason !== undefined && { reason: this.reason })
    }
  }
}

export const invalidRequest = (description: string): OAuthError => new OAuthError('invalid_request', description)

export const invalidGrant = (description: string, reason: GrantReason, clearCookie = false): OAuthError =>
  new OAuthError('invalid_grant', description, { reason, clearCookie })

/** Fastify error codes that mean the request itself was malformed. */
const REQUEST_ERRORS = new Set([
  'FST_ERR_CTP_INVALID_MEDIA_TYPE',
  'FST_ERR_CTP_INVALID_CONTENT_LENGTH',
  'FST_ERR_CTP_EMPTY_JSON_BODY',
  'FST_ERR_CTP_BODY_TOO_LARGE',
  'FST_ERR_CTP_INVALID_JSON_BODY',
  'FST_ERR_CTP_MALFORMED_JSON',
  'FST_ERR_VALIDATION',
  'FST_ERR_BAD_URL',
  'FST_ERR_ASYNC_CONSTRAINT'
])

/**
 * The one choke point that turns anything thrown on a Tokenline route into an OAuthError.
 * Unknown errors become a bare `server_error` (the caller sees no message; the log has the cause).
 */
export function toOAuthError (err: unknown): OAuthError {
  if (err instanceof OAuthError) return err
  const e = err as { code?: string, statusCode?: number, message?: string } | null
  if (e?.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return invalidRequest('request body too large')
  if (e?.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return invalidRequest('unsupported content type')
  if (e?.code !== undefined && REQUEST_ERRORS.has(e.code)) return invalidRequest('malformed request')
  // JSON.parse failures and client-side HTTP framing problems surface as 400s from Fastify.
  if (e?.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500) return invalidRequest('malformed request')
  // The database is unreachable or too slow (db/store.ts 'unavailable'): nothing was written; retry.
  if (err instanceof StoreError && err.code === 'unavailable') {
    return new OAuthError('temporarily_unavailable', 'database unavailable, retry', { headers: { 'retry-after': '1' }, cause: err })
  }
  // SQLITE_BUSY and its extended codes (SQLITE_BUSY_SNAPSHOT, ...): the write lock stayed taken past busy_timeout.
  if (typeof e?.code === 'string' && e.code.startsWith('SQLITE_BUSY')) {
    return new OAuthError('temporarily_unavailable', 'database busy, retry', { headers: { 'retry-after': '1' }, cause: err })
  }
  return new OAuthError('server_error', '', { cause: err })
}
