import Fastify, { type FastifyInstance } from 'fastify'
import tokenline from './plugin.js'
import type { ServerSettings, TokenlineOptions } from './options.js'
import { ensureWebClient } from './bootstrap.js'

/** Headers that carry credentials; the server's log shows them only as [redacted]. */
export const REDACTED_HEADERS = ['req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]']

import { trustProxyFor } from './proxy.js'
/**
 * The standalone server as a Fastify instance (not yet listening): Tokenline's routes at the root,
 * a log that never carries a credential or a query string, and the `web` client on first start.
 */
export async function buildServer (options: TokenlineOptions, server: Pick<ServerSettings, 'trustProxy' | 'logLevel'>): Promise<FastifyInstance> {
  const app = Fastify({
    // The client IP feeds the fingerprint binding: see server/proxy.ts for what each setting believes.
    trustProxy: trustProxyFor(server.trustProxy),
    // Slow-loris and stuck uploads are cut off instead of holding a connection forever.
    requestTimeout: 10_000,
    connectionTimeout: 30_000,
    keepAliveTimeout: 5_000,
    logger: server.logLevel === 'silent'
      ? false
      : {
          level: server.logLevel,
          redact: { paths: REDACTED_HEADERS, censor: '[redacted]' },
          serializers: {
            // The path only: a query string may carry a token someone put there by mistake.
            req: (req) => ({ method: req.method, url: req.url.split('?')[0], remoteAddress: req.ip })
          }
        }
  })
  // Unknown paths answer JSON like everything else (the plugin leaves 404s to its host).
  app.setNotFoundHandler((_request, reply) => {
    reply.code(404).type('application/json; charset=utf-8').send({ error: 'not_found', error_description: 'no such route' })
  })
  await app.register(tokenline, options)
  await ensureWebClient(app.tokenline)
  return app
}
