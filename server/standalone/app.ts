import fastifyStatic from '@fastify/static'
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { existsSync } from 'node:fs'
import type { Socket } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import tokenline from '../plugin.js'
import type { ServerSettings, TokenlineOptions } from '../options.js'
import { ensureWebClient } from './bootstrap.js'
import { trustProxyFor } from './proxy.js'

/** Headers that carry credentials; the server's log shows them only as [redacted]. */
export const REDACTED_HEADERS = ['req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]']

/**
 * Headers of the demo SPA's files. The page loads only its own scripts and styles and talks only to
 * this origin, so the CSP can be strict: no inline script or style, no framing, no plugins.
 */
export const STATIC_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  // Revalidate every time (ETag): a demo edited in place is never stale.
  'cache-control': 'no-cache'
}

const CLIENT_ERRORS: Record<string, [number, string, string]> = {
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout', 'request timed out'],
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large', 'request headers too large']
}

/**
 * Malformed HTTP (bad chunking, Content-Length with Transfer-Encoding, a body cut short) never reaches
 * a route, so Fastify would answer it in its own shape. It gets the RFC 6749 §5.2 shape and no-store
 * headers like every other refusal, and the connection is closed.
 */
export function clientErrorHandler (err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const [status, text, description] = CLIENT_ERRORS[err.code ?? ''] ?? [400, 'Bad Request', 'malformed http request']
  const body = JSON.stringify({ error: 'invalid_request', error_description: description })
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${text}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
      `Cache-Control: no-store\r\nPragma: no-cache\r\nConnection: close\r\n\r\n${body}`)
  }
  socket.destroy()
}

/**
 * Per-request log lines at `debug` instead of `info`: at the default level a busy server's log holds what
 * needs attention (start, warnings, security events, errors), not a line per request. A request that
 * failed with an error is still logged at `error`, whatever the level.
 */
export class QuietRequestLog extends LogController {
  override incomingRequest (request: FastifyRequest): void {
    if (this.isLogDisabled(request)) return
    request.log.debug({ req: request }, 'incoming request')
  }

  override requestCompleted (error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (this.isLogDisabled(request)) return
    if (error !== null && error !== undefined) reply.log.error({ res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored')
    else reply.log.debug({ res: reply, responseTime: reply.elapsedTime }, 'request completed')
  }

  override defaultErrorLog (error: Error, request: FastifyRequest, reply: FastifyReply): void {
    if (this.isLogDisabled(request)) return
    // A 4xx is the client's mistake, answered as such: a line per request. A 5xx is ours.
    if (reply.statusCode >= 500) reply.log.error({ req: request, res: reply, err: error }, error.message)
    else reply.log.debug({ res: reply, err: error }, error.message)
  }
}

/** public/ beside dist/ (built: dist/server/standalone/app.js) or beside server/ (run from source by tests). */
export function publicDir (): string | undefined {
  return ['../../../public/', '../../public/']
    .map((rel) => fileURLToPath(new URL(rel, import.meta.url)))
    .find((dir) => existsSync(join(dir, 'index.html')))
}

/**
 * The standalone server as a Fastify instance (not yet listening): Tokenline's routes at the root,
 * a log that never carries a credential or a query string, and the `web` client on first start.
 */
export async function buildServer (options: TokenlineOptions, server: Pick<ServerSettings, 'trustProxy' | 'logLevel'>): Promise<FastifyInstance> {
  const app = Fastify({
    // The client IP feeds the fingerprint binding: see server/standalone/proxy.ts for what each setting believes.
    trustProxy: trustProxyFor(server.trustProxy),
    // Slow-loris and stuck uploads are cut off instead of holding a connection forever.
    requestTimeout: 10_000,
    connectionTimeout: 30_000,
    keepAliveTimeout: 5_000,
    clientErrorHandler,
    logController: new QuietRequestLog(),
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
  // The demo SPA at / (README, "The demo SPA"). One route per file present at start, no wildcard: every other path
  // keeps its Tokenline route or the JSON 404 above.
  const root = publicDir()
  if (root !== undefined) {
    await app.register(fastifyStatic, {
      root,
      wildcard: false,
      decorateReply: false,
      dotfiles: 'ignore',
      cacheControl: false,
      setHeaders: (reply) => { reply.headers(STATIC_HEADERS) }
    })
  }
  await ensureWebClient(app.tokenline)
  return app
}
