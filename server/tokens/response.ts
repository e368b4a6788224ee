import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Client, Session } from '../../db/store.js'
import type { Tokenline } from '../context.js'
import { randomId } from './refresh-format.js'

export interface TokenResponse {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  scope: string
  refresh_token?: string
}

/**
 * The JSON schema of a `TokenResponse`: what POST /token serialises its 200 with (fast-json-stringify
 * ignores the descriptions and the enum) and what the OpenAPI document shows for it.
 */
export const tokenResponseSchema = {
  description: 'RFC 6749 §5.1 token response; `Cache-Control: no-store`. `refresh_token` only for `body`/`both` clients allowed the refresh_token grant; cookie clients get it in `Set-Cookie`',
  type: 'object',
  required: ['access_token', 'token_type', 'expires_in', 'scope'],
  properties: {
    access_token: { type: 'string', description: 'RFC 9068 JWT (`typ: at+jwt`), verifiable with the JWKS' },
    token_type: { type: 'string', description: 'always `Bearer`', enum: ['Bearer'] },
    expires_in: { type: 'integer', description: 'access token lifetime, s' },
    scope: { type: 'string', description: 'granted scope' },
    refresh_token: { type: 'string', description: 'the next refresh token: each one is single use' }
  }
} as const

/** Name of the refresh cookie. `__Secure-` needs `Secure`; `__Host-` would force `Path=/` (see README). */
export const COOKIE_NAME = '__Secure-tokenline-rt'

export const accessTtl = (tl: Tokenline, client: Client): number => client.accessTtl ?? tl.opts.accessTokenTtl
export const idleTtl = (tl: Tokenline, client: Client): number => client.idleTtl ?? tl.opts.idleTtl
export const sessionTtl = (tl: Tokenline, client: Client): number => client.sessionTtl ?? tl.opts.sessionTtl

export function cookiePath (tl: Tokenline): string {
  return `${tl.prefix}/token`
}

/**
 * Signs an RFC 9068 access token for the session and hands both tokens over: the refresh token in
 * the body for `body`/`both` clients and in an HttpOnly cookie for `cookie`/`both` clients. Without a
 * refresh token (a client not allowed the refresh_token grant), the access token alone. Returns the
 * RFC 6749 §5.1 response body.
 */
export function issueTokens (
  tl: Tokenline,
  reply: FastifyReply,
  client: Client,
  session: Pick<Session, 'id' | 'userId' | 'expiresAt'>,
  scope: string,
  refreshToken: string | undefined,
  now: number
): TokenResponse {
  const ttl = accessTtl(tl, client)
  const iat = Math.floor(now / 1000)
  const accessToken = tl.sign({
    iss: tl.opts.issuer,
    sub: session.userId,
    aud: tl.opts.audience,
    exp: iat + ttl,
    iat,
    jti: randomId(),
    client_id: client.id,
    scope,
    sid: session.id
  })
  const body: TokenResponse = { access_token: accessToken, token_type: 'Bearer', expires_in: ttl, scope }
  if (refreshToken === undefined) return body
  if (client.delivery !== 'cookie') body.refresh_token = refreshToken
  if (client.delivery !== 'body') setRefreshCookie(tl, reply, refreshToken, session.expiresAt, now)
  return body
}

/**
 * The refresh cookie's attributes, the same to set and to clear it: a browser replaces a cookie only
 * with one of the same name and path (RFC 6265 §5.3), and takes a `__Secure-` one only with `Secure`.
 */
const cookieAttributes = (tl: Tokenline): { httpOnly: true, secure: true, sameSite: 'strict', path: string } =>
  ({ httpOnly: true, secure: true, sameSite: 'strict', path: cookiePath(tl) })

export function setRefreshCookie (tl: Tokenline, reply: FastifyReply, token: string, expiresAt: number, now: number): void {
  // Max-Age never exceeds what is left of the session's absolute lifetime.
  const maxAge = Math.max(0, Math.floor((expiresAt - now) / 1000))
  reply.setCookie(COOKIE_NAME, token, { ...cookieAttributes(tl), maxAge })
}

export function clearRefreshCookie (tl: Tokenline, reply: FastifyReply): void {
  reply.clearCookie(COOKIE_NAME, cookieAttributes(tl))
}

/** The refresh cookie a request carries; an empty one counts as none, as an empty parameter does (RFC 6749 §3.2). */
export function refreshCookie (request: FastifyRequest): string | undefined {
  const cookie = request.cookies?.[COOKIE_NAME]
  return cookie === undefined || cookie === '' ? undefined : cookie
}
