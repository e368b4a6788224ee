import type { FastifyInstance } from 'fastify'
import type { Tokenline } from '../context.js'
import { grants } from '../grants/index.js'
import { publicOnly } from '../tokens/signing-keys.js'
import type { RouteDoc } from '../api-docs.js'

const metadataDoc: RouteDoc = {
  summary: 'Authorization server metadata (RFC 8414)',
  tags: ['discovery'],
  response: { 200: { description: 'metadata; URLs built from the configured issuer, never the Host header', type: 'object', additionalProperties: true } }
}

const jwksDoc: RouteDoc = {
  summary: 'Public signing keys (RFC 7517 JWK Set)',
  description: 'The signing key and retired keys whose tokens may not have expired yet. Never a private member.',
  tags: ['discovery'],
  response: {
    200: {
      description: 'JWK Set',
      type: 'object',
      properties: {
        keys: { type: 'array', items: { type: 'object', additionalProperties: true, description: 'public JWK: kty, kid, alg, use and the public parameters only' } }
      }
    }
  }
}

/** RFC 8414 metadata and the RFC 7517 JWK Set. URLs come from the configured issuer, never the Host header. */
export function metadataRoutes (app: FastifyInstance, tl: Tokenline): void {
  const base = tl.opts.issuer + tl.prefix
  const metadata = {
    issuer: tl.opts.issuer,
    token_endpoint: `${base}/token`,
    jwks_uri: `${base}/.well-known/jwks.json`,
    grant_types_supported: [...grants.keys()],
    // There is no authorization endpoint; RFC 8414 §2 still requires the member.
    response_types_supported: [],
    token_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post'],
    // RFC 7009: public clients revoke their own tokens (logout) with just their client_id.
    revocation_endpoint: `${base}/token/revoke`,
    revocation_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post'],
    // RFC 7662 §2.1: introspection needs client authentication, so only confidential clients.
    introspection_endpoint: `${base}/token/introspect`,
    introspection_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post']
  }

  app.get('/.well-known/oauth-authorization-server', { config: { openapi: metadataDoc } }, async (_request, reply) => {
    reply.header('cache-control', 'public, max-age=300')
    return metadata
  })

  app.get('/.well-known/jwks.json', { config: { openapi: jwksDoc } }, async (_request, reply) => {
    const keys = await tl.store.publishedKeys(tl.opts.now())
    reply.header('cache-control', 'public, max-age=300')
    reply.type('application/jwk-set+json; charset=utf-8')
    return { keys: keys.map((k) => publicOnly(JSON.parse(k.publicJwk))) }
  })
}
