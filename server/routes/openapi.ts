import swagger from '@fastify/swagger'
import type { FastifyInstance } from 'fastify'
import type { Tokenline } from '../context.js'

/*
 * The OpenAPI 3.1 description of Tokenline's routes, served as JSON at GET <prefix>/openapi.json.
 *
 * @fastify/swagger collects the routes of Tokenline's encapsulated context (and only those: not the
 * host's) as they are registered. Each route carries its own description in `config.openapi` (a
 * `RouteDoc`), which the `transform` below merges into what @fastify/swagger sees, for the document
 * only. Tokenline parses and checks its own input (server/http/body.ts, the routes), refusing repeated
 * parameters and arrays so that every refusal is an RFC 6749 §5.2 JSON error with a precise
 * description, and most routes answer with bodies whose members vary (RFC 7662 §2.2 introspection).
 * A `body` or `response` in the route's `schema` would make Fastify validate requests and re-serialise
 * answers instead; `schema` holds only what Fastify should act on.
 */

/**
 * Registers @fastify/swagger in Tokenline's context (before its routes, so that it sees them) and
 * GET /openapi.json. A host that registered @fastify/swagger itself keeps its own decorator: ours has
 * another name.
 */
export async function registerOpenApi (app: FastifyInstance, tl: Tokenline): Promise<void> {
  await app.register(swagger, {
    decorator: 'tokenlineOpenapi',
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Tokenline',
        description: 'OAuth2-style token endpoint for first-party apps: password and rotating refresh-token grants.',
        version: '1'
      },
      servers: [{ url: tl.opts.issuer }],
      components: {
        securitySchemes: {
          clientBasic: { type: 'http', scheme: 'basic', description: 'client_secret_basic: client id and secret, form-encoded first (RFC 6749 §2.3.1, Appendix B)' },
          bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'an access token from POST /token' },
          metricsToken: { type: 'http', scheme: 'bearer', description: 'TOKENLINE_METRICS_TOKEN' }
        }
      }
    },
    transform: ({ schema, url, route }) => {
      const doc = route.config?.openapi
      if (doc === undefined) return { schema, url }
      const { response, ...operation } = doc
      return { schema: { ...schema, ...operation, response: { ...(schema?.response as object | undefined), ...response } } as never, url }
    }
  })

  app.get('/openapi.json', { schema: { hide: true } }, async (_request, reply) => {
    reply.header('cache-control', 'public, max-age=300')
    return (app as unknown as { tokenlineOpenapi: () => unknown }).tokenlineOpenapi()
  })
}
