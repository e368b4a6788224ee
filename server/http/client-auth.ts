import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyRequest } from 'fastify'
import type { Client, Store } from '../../db/store.js'
import { OAuthError, invalidRequest } from '../errors.js'

export type Params = Record<string, string>

const REALM = 'Basic realm="tokenline"'
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/
const CLIENT_ID = /^[\x21-\x7e]{1,128}$/

export const secretDigest = (secret: string): Buffer => createHash('sha256').update(secret, 'utf8').digest()

/** RFC 6749 Appendix B: client id and secret are form-urlencoded before going into Basic. */
function formDecode (s: string): string {
  return decodeURIComponent(s.replace(/\+/g, ' '))
}

interface Presented { id: string, secret: string | undefined, basic: boolean }

function presented (request: FastifyRequest, params: Params): Presented {
  const header = request.headers.authorization
  if (header === undefined) {
    const id = params.client_id
    if (id === undefined) throw invalidRequest('missing required parameter client_id')
    return { id, secret: params.client_secret, basic: false }
  }
  const m = /^basic +(\S+)$/i.exec(header)
  if (m?.[1] === undefined || !BASE64.test(m[1])) throw invalidRequest('invalid authorization header')
  const decoded = Buffer.from(m[1], 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 1) throw invalidRequest('invalid authorization header')
  let id: string, secret: string
  try {
    id = formDecode(decoded.slice(0, colon))
    secret = formDecode(decoded.slice(colon + 1))
  } catch {
    throw invalidRequest('invalid authorization header')
  }
  // RFC 6749 §2.3: one authentication method per request.
  if (params.client_secret !== undefined) throw invalidRequest('client credentials given twice')
  if (params.client_id !== undefined && params.client_id !== id) throw invalidRequest('client_id does not match the authorization header')
  return { id, secret, basic: true }
}

/**
 * Authenticates the client of a token-endpoint request. Public clients identify with `client_id`;
 * confidential ones prove their secret with Basic or `client_secret`. A failure after Basic answers
 * 401 with `WWW-Authenticate: Basic`; a failure with body credentials answers 400 (RFC 6749 §5.2).
 */
export async function authenticateClient (request: FastifyRequest, params: Params, store: Store): Promise<Client> {
  const p = presented(request, params)
  const fail = (description: string): OAuthError => p.basic
    ? new OAuthError('invalid_client', description, { status: 401, headers: { 'www-authenticate': REALM } })
    : new OAuthError('invalid_client', description, { status: 400 })
  if (!CLIENT_ID.test(p.id)) throw fail('client authentication failed')
  const client = await store.findClient(p.id)
  if (client === undefined) throw fail('client authentication failed')
  if (client.secretDigest === null) {
    if (p.secret !== undefined && p.secret !== '') throw fail('public clients have no secret')
    return client
  }
  if (p.secret === undefined || p.secret === '') throw fail('client authentication failed')
  if (!timingSafeEqual(secretDigest(p.secret), client.secretDigest)) throw fail('client authentication failed')
  return client
}

/**
 * Whether the client was registered for this `grant_type`. Here rather than beside the grant registry
 * (server/grants/index.ts): the grant modules ask it, and the registry imports them.
 */
export const hasGrant = (client: Client, grant: string): boolean => client.grants.split(' ').includes(grant)

/** RFC 6749 §5.2 `unauthorized_client`: the authenticated client may not use this grant type. */
export function requireGrant (client: Client, grant: string): void {
  if (!hasGrant(client, grant)) throw new OAuthError('unauthorized_client', `client may not use the ${grant} grant`)
}
