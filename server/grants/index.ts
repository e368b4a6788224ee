import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Client } from '../../db/store.js'
import type { Tokenline } from '../context.js'
import type { Params } from '../http/client-auth.js'
import type { JsonSchema } from '../api-docs.js'
import type { TokenResponse } from '../tokens/response.js'
import * as password from './password.js'
import * as refreshToken from './refresh-token.js'

/** One token request, as a grant sees it once its client is authenticated. */
export interface GrantInput {
  request: FastifyRequest
  reply: FastifyReply
  /** The body's parameters that the grant declares, and no others (RFC 6749 §3.2: unknown ones are ignored). */
  params: Params
  client: Client
}

/** What each module of this folder exports: one `grant_type` of the token endpoint (RFC 6749 §4.3, §6). */
export interface Grant {
  readonly grantType: string
  /** The body parameters it reads, besides `grant_type` and the client's credentials. */
  readonly parameters: ReadonlySet<string>
  /** Its branch of POST /token's request body in the OpenAPI document (documentation only: server/http/body.ts parses). */
  readonly bodyDoc: JsonSchema
  handler: (tl: Tokenline, input: GrantInput) => Promise<TokenResponse>
}

/** The grant types the token endpoint serves. A Map: a `grant_type` of `__proto__` or `constructor` finds nothing. */
export const grants: ReadonlyMap<string, Grant> = new Map<string, Grant>([password, refreshToken].map((g) => [g.grantType, g]))

/** Only the parameters `grant` declares, so a handler can never read one it did not ask for. */
export function grantParams (grant: Grant, params: Params): Params {
  const own: Params = Object.create(null)
  for (const name of grant.parameters) {
    const v = params[name]
    if (v !== undefined) own[name] = v
  }
  return own
}
