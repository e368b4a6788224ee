import { OAuthError } from '../errors.js'

/** RFC 6749 §3.3 scope-token. */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/
const MAX_SCOPES = 64

export function parseScope (scope: string): string[] {
  const parts = scope.split(' ').filter((s) => s !== '')
  if (parts.length > MAX_SCOPES || !parts.every((s) => SCOPE_TOKEN.test(s))) throw new OAuthError('invalid_scope', 'malformed scope')
  return [...new Set(parts)]
}

/**
 * The scope to grant: all of `allowed` when nothing was requested, otherwise the request, which must
 * be a subset (RFC 6749 §3.3 on login, §6 on refresh: a refresh may only narrow).
 */
export function grantScope (requested: string | undefined, allowed: string): string {
  if (requested === undefined) return allowed
  const want = parseScope(requested)
  const have = new Set(allowed.split(' ').filter((s) => s !== ''))
  if (!want.every((s) => have.has(s))) throw new OAuthError('invalid_scope', 'requested scope exceeds what is allowed')
  return want.join(' ')
}
