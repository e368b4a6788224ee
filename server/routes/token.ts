import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { authenticateClient } from '../http/client-auth.js'
import { bodyParams } from '../http/body.js'
import type { Tokenline } from '../context.js'
import { OAuthError, invalidRequest } from '../errors.js'
import { grantParams, grants } from '../grants/index.js'

const UNSUPPORTED = `grant_type must be ${[...grants.keys()].join(' or ')}`

/** RFC 6749 §5.1 success body, serialised by fast-json-stringify. */
const tokenResponseSchema = {
  type: 'object',
  required: ['access_token', 'token_type', 'expires_in', 'scope'],
  properties: {
    access_token: { type: 'string' },
    token_type: { type: 'string' },
    expires_in: { type: 'integer' },
    scope: { type: 'string' },
    refresh_token: { type: 'string' }
  }
} as const

export function tokenRoute (app: FastifyInstance, tl: Tokenline): void {
  app.post('/token', { schema: { response: { 200: tokenResponseSchema } } }, async (request: FastifyRequest, reply: FastifyReply) => {
    const params = bodyParams(request)
    const grantType = params.grant_type
    if (grantType === undefined) throw invalidRequest('missing required parameter grant_type')
    const client = await authenticateClient(request, params, tl.store)
    const grant = grants.get(grantType)
    if (grant === undefined) throw new OAuthError('unsupported_grant_type', UNSUPPORTED)
    return await grant.handler(tl, { request, reply, params: grantParams(grant, params), client })
  })
}
